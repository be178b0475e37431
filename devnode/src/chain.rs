//! The chain itself: blocks, the active chain, side branches, the synthetic mempool and the
//! consensus checks `submitblock` runs — pure logic with time passed in.
//!
//! Guarantees:
//! - Checks run in Bitcoin Core's order (`CheckBlock`, `ContextualCheckBlockHeader`,
//!   `ContextualCheckBlock`, `ConnectBlock`) and fail with Core's BIP22 strings, so the first
//!   problem a block has is reported exactly as a real node reports it.
//! - A block is stored only after every check passed; the active chain is always the longest
//!   valid chain (constant `bits`, so longest is most work), the first seen winning a tie.
//! - The same seed, parameters and sequence of calls (with the same `now` values) give the same
//!   genesis, mempool, templates and blocks, byte for byte.
//!
//! Deliberate simplifications: no scripts are run (transactions are synthetic), blocks may
//! spend only transactions this chain generated, difficulty never retargets, and blocks built
//! by [`Chain::reorg_to`] carry only a coinbase.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use powerpool_core::encode::{bip34_height, push_data};
use powerpool_core::hash::{Hash256, sha256d};
use powerpool_core::merkle::{
    find_witness_commitment, merkle_root, witness_commitment, witness_commitment_script,
    witness_root,
};
use powerpool_core::target::{CompactError, Target};
use powerpool_core::tx::{Block, BlockHeader, OutPoint, Transaction, TxIn, TxOut};
use ruint::aliases::U256;
use serde::{Deserialize, Serialize};

use crate::mempool::{MempoolTx, TxFactory, legacy_sigops};

pub const COIN: u64 = 100_000_000;
pub const MAX_MONEY: u64 = 21_000_000 * COIN;
pub const MAX_BLOCK_WEIGHT: u64 = 4_000_000;
pub const MAX_BLOCK_SIGOPS_COST: u64 = 80_000;
/// Bitcoin Core's `MAX_FUTURE_BLOCK_TIME`.
pub const MAX_FUTURE_BLOCK_TIME: u64 = 2 * 60 * 60;
/// What a template's version is: BIP9 top bits with no deployment signalling (as regtest
/// below height 144).
pub const TEMPLATE_VERSION: i32 = 0x2000_0000;
/// Weight and sigops the template leaves for the coinbase, as Bitcoin Core's block assembler.
const COINBASE_RESERVED_WEIGHT: u64 = 4_000;
const COINBASE_RESERVED_SIGOPS: u64 = 400;
const MEDIAN_TIME_SPAN: usize = 11;

/// How a chain is built. `bits` never changes (no retargeting, like regtest).
#[derive(Debug, Clone)]
pub struct ChainParams {
    /// Feeds the genesis block, the synthetic transactions and the chain's own payout script.
    pub seed: u64,
    /// Compact target of every block.
    pub bits: u32,
    /// Subsidy of the first halving era in satoshis.
    pub initial_subsidy: u64,
    /// Blocks per halving era (regtest: 150).
    pub halving_interval: u64,
    /// Genesis header time.
    pub genesis_time: u32,
    /// Mean seconds between synthetic transactions (a Poisson process); `None` keeps the
    /// mempool empty unless transactions are added with [`Chain::add_synthetic_txs`].
    pub tx_interval_secs: Option<f64>,
    /// The generator pauses while the mempool holds this many transactions.
    pub max_mempool_txs: usize,
    /// Bitcoin Core's `submitblock` silently adds a missing coinbase witness reserved value
    /// before validating (`UpdateUncommittedBlockStructures`), so a pool that forgets it is
    /// never told. `true` behaves like Core; `false` makes `submitblock` reject such a block
    /// with `bad-witness-nonce-size`, as proposal mode always does.
    pub submit_adds_witness_nonce: bool,
}

impl ChainParams {
    /// Regtest-like: `bits` 0x207fffff (about every second hash is a block), 50 coins halving
    /// every 150 blocks, a transaction every 2 s on average.
    pub fn regtest(seed: u64) -> Self {
        ChainParams {
            seed,
            bits: 0x207f_ffff,
            initial_subsidy: 50 * COIN,
            halving_interval: 150,
            genesis_time: 1_296_688_602,
            tx_interval_secs: Some(2.0),
            max_mempool_txs: 300,
            submit_adds_witness_nonce: true,
        }
    }
}

/// Why a block was not accepted. [`BlockRejection::as_bip22`] is the exact string Bitcoin
/// Core's `submitblock` returns; a pool should log it and drop the block (only `Inconclusive`
/// means the block is valid but not on the best chain).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockRejection {
    #[error("duplicate: block already known")]
    Duplicate,
    #[error("duplicate-invalid: block already known to be invalid")]
    DuplicateInvalid,
    #[error("inconclusive-not-best-prevblk: proposal does not build on the tip")]
    InconclusiveNotBestPrevblk,
    #[error("high-hash: proof of work failed")]
    HighHash,
    #[error("bad-txnmrklroot: hashMerkleRoot mismatch")]
    BadTxnMrklRoot,
    #[error("bad-txns-duplicate: duplicate transaction")]
    BadTxnsDuplicate,
    #[error("bad-blk-length: size limits failed")]
    BadBlkLength,
    #[error("bad-cb-missing: first tx is not coinbase")]
    BadCbMissing,
    #[error("bad-cb-multiple: more than one coinbase")]
    BadCbMultiple,
    #[error("bad-cb-length: coinbase scriptSig must be 2 to 100 bytes")]
    BadCbLength,
    #[error("bad-txns-vin-empty")]
    BadTxnsVinEmpty,
    #[error("bad-txns-vout-empty")]
    BadTxnsVoutEmpty,
    #[error("bad-txns-oversize")]
    BadTxnsOversize,
    #[error("bad-txns-vout-toolarge")]
    BadTxnsVoutTooLarge,
    #[error("bad-txns-txouttotal-toolarge")]
    BadTxnsTxoutTotalTooLarge,
    #[error("bad-txns-inputs-duplicate")]
    BadTxnsInputsDuplicate,
    #[error("bad-txns-prevout-null")]
    BadTxnsPrevoutNull,
    #[error("bad-blk-sigops: out-of-bounds SigOpCount")]
    BadBlkSigops,
    #[error("prev-blk-not-found: the previous block is unknown")]
    PrevBlkNotFound,
    #[error("bad-prevblk: the previous block is invalid")]
    BadPrevBlk,
    #[error("bad-diffbits: incorrect proof of work")]
    BadDiffBits,
    #[error("time-too-old: block's timestamp is too early")]
    TimeTooOld,
    #[error("time-too-new: block timestamp too far in the future")]
    TimeTooNew,
    #[error("bad-version(0x{0:08x}): rejected nVersion block")]
    BadVersion(i32),
    #[error("bad-txns-nonfinal: non-final transaction")]
    BadTxnsNonfinal,
    #[error("bad-cb-height: block height mismatch in coinbase")]
    BadCbHeight,
    #[error("bad-witness-nonce-size: invalid witness reserved value size")]
    BadWitnessNonceSize,
    #[error("bad-witness-merkle-match: witness merkle commitment mismatch")]
    BadWitnessMerkleMatch,
    #[error("unexpected-witness: witness data without a commitment")]
    UnexpectedWitness,
    #[error("bad-blk-weight: weight limit failed")]
    BadBlkWeight,
    #[error("bad-txns-inputs-missingorspent: a transaction spends unknown or spent outputs")]
    BadTxnsInputsMissingOrSpent,
    #[error("bad-cb-amount: coinbase pays too much (actual={actual} vs limit={limit})")]
    BadCbAmount { actual: u64, limit: u64 },
}

impl BlockRejection {
    /// The BIP22 reject reason, verbatim as Bitcoin Core's `submitblock` result.
    pub fn as_bip22(&self) -> String {
        let s = match self {
            Self::Duplicate => "duplicate",
            Self::DuplicateInvalid => "duplicate-invalid",
            Self::InconclusiveNotBestPrevblk => "inconclusive-not-best-prevblk",
            Self::HighHash => "high-hash",
            Self::BadTxnMrklRoot => "bad-txnmrklroot",
            Self::BadTxnsDuplicate => "bad-txns-duplicate",
            Self::BadBlkLength => "bad-blk-length",
            Self::BadCbMissing => "bad-cb-missing",
            Self::BadCbMultiple => "bad-cb-multiple",
            Self::BadCbLength => "bad-cb-length",
            Self::BadTxnsVinEmpty => "bad-txns-vin-empty",
            Self::BadTxnsVoutEmpty => "bad-txns-vout-empty",
            Self::BadTxnsOversize => "bad-txns-oversize",
            Self::BadTxnsVoutTooLarge => "bad-txns-vout-toolarge",
            Self::BadTxnsTxoutTotalTooLarge => "bad-txns-txouttotal-toolarge",
            Self::BadTxnsInputsDuplicate => "bad-txns-inputs-duplicate",
            Self::BadTxnsPrevoutNull => "bad-txns-prevout-null",
            Self::BadBlkSigops => "bad-blk-sigops",
            Self::PrevBlkNotFound => "prev-blk-not-found",
            Self::BadPrevBlk => "bad-prevblk",
            Self::BadDiffBits => "bad-diffbits",
            Self::TimeTooOld => "time-too-old",
            Self::TimeTooNew => "time-too-new",
            Self::BadVersion(v) => return format!("bad-version(0x{v:08x})"),
            Self::BadTxnsNonfinal => "bad-txns-nonfinal",
            Self::BadCbHeight => "bad-cb-height",
            Self::BadWitnessNonceSize => "bad-witness-nonce-size",
            Self::BadWitnessMerkleMatch => "bad-witness-merkle-match",
            Self::UnexpectedWitness => "unexpected-witness",
            Self::BadBlkWeight => "bad-blk-weight",
            Self::BadTxnsInputsMissingOrSpent => "bad-txns-inputs-missingorspent",
            Self::BadCbAmount { .. } => "bad-cb-amount",
        };
        s.to_owned()
    }

    /// Core marks a block failed (so a resubmission says `duplicate-invalid`) only for
    /// failures after its header was stored that cannot be a mutated copy of a valid block.
    fn marks_invalid(&self) -> bool {
        matches!(
            self,
            Self::BadTxnsNonfinal
                | Self::BadCbHeight
                | Self::BadBlkWeight
                | Self::BadTxnsInputsMissingOrSpent
                | Self::BadCbAmount { .. }
        )
    }
}

/// Why [`Chain::reorg_to`] could not build the competing branch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReorgError {
    #[error("fork height {fork_height} is above the tip height {tip_height}")]
    ForkAboveTip { fork_height: u64, tip_height: u64 },
    #[error(
        "a branch of {blocks} blocks from height {fork_height} does not pass the tip at {tip_height}: use at least {needed}"
    )]
    TooShort {
        fork_height: u64,
        blocks: u64,
        tip_height: u64,
        needed: u64,
    },
    #[error("the chain rejected its own block ({0}); this is a bug in the node")]
    OwnBlockRejected(BlockRejection),
}

/// Where an accepted block went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// It is the new tip (`submitblock` returns null).
    Tip,
    /// Valid but on a branch not longer than the active one (`submitblock` returns
    /// `inconclusive`).
    SideBranch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    pub height: u64,
    pub hash: Hash256,
}

/// One stored, fully validated block.
#[derive(Debug, Clone)]
pub struct BlockEntry {
    pub block: Block,
    pub hash: Hash256,
    pub height: u64,
    /// Median of this block's and its ten predecessors' times.
    pub median_time_past: u32,
    pub chainwork: U256,
    pub size: usize,
    pub stripped_size: usize,
    pub weight: u64,
}

/// One `transactions[]` element of a template, in Core's field names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TemplateTx {
    pub data: String,
    pub txid: String,
    pub hash: String,
    pub depends: Vec<u32>,
    pub fee: u64,
    pub sigops: u64,
    pub weight: u64,
}

/// A `getblocktemplate {"rules":["segwit"]}` result with Bitcoin Core's field names and formats.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockTemplate {
    pub capabilities: Vec<String>,
    pub version: i32,
    pub rules: Vec<String>,
    pub vbavailable: BTreeMap<String, u32>,
    pub vbrequired: u32,
    pub previousblockhash: String,
    pub transactions: Vec<TemplateTx>,
    pub coinbaseaux: BTreeMap<String, String>,
    pub coinbasevalue: u64,
    pub longpollid: String,
    pub target: String,
    pub mintime: u64,
    pub mutable: Vec<String>,
    pub noncerange: String,
    pub sigoplimit: u64,
    pub sizelimit: u64,
    pub weightlimit: u64,
    pub curtime: u64,
    pub bits: String,
    pub height: u64,
    pub default_witness_commitment: String,
}

/// Bitcoin Core's `CheckBlock`: everything that needs no other block. `check_pow` is off for
/// proposals.
pub fn check_block(block: &Block, target: &Target, check_pow: bool) -> Result<(), BlockRejection> {
    use BlockRejection as R;
    if check_pow && !target.is_met_by(&block.header.block_hash()) {
        return Err(R::HighHash);
    }
    let txids = block.txids();
    if merkle_root(&txids) != block.header.merkle_root {
        return Err(R::BadTxnMrklRoot);
    }
    // Core flags the merkle-duplication mutation here; any repeated txid is as invalid.
    let mut seen = HashSet::with_capacity(txids.len());
    if !txids.iter().all(|t| seen.insert(*t)) {
        return Err(R::BadTxnsDuplicate);
    }
    let stripped: u64 = block
        .txs
        .iter()
        .map(|t| t.serialize(false).len() as u64)
        .sum::<u64>()
        + 80
        + 9;
    if block.txs.is_empty()
        || block.txs.len() as u64 * 4 > MAX_BLOCK_WEIGHT
        || stripped * 4 > MAX_BLOCK_WEIGHT
    {
        return Err(R::BadBlkLength);
    }
    if !block.txs[0].is_coinbase() {
        return Err(R::BadCbMissing);
    }
    if block.txs[1..].iter().any(Transaction::is_coinbase) {
        return Err(R::BadCbMultiple);
    }
    for tx in &block.txs {
        check_transaction(tx)?;
    }
    let sigops: u64 = block
        .txs
        .iter()
        .flat_map(|t| {
            t.inputs
                .iter()
                .map(|i| legacy_sigops(&i.script_sig))
                .chain(t.outputs.iter().map(|o| legacy_sigops(&o.script_pubkey)))
        })
        .sum();
    if sigops * 4 > MAX_BLOCK_SIGOPS_COST {
        return Err(R::BadBlkSigops);
    }
    Ok(())
}

/// Bitcoin Core's `CheckTransaction`.
fn check_transaction(tx: &Transaction) -> Result<(), BlockRejection> {
    use BlockRejection as R;
    if tx.inputs.is_empty() {
        return Err(R::BadTxnsVinEmpty);
    }
    if tx.outputs.is_empty() {
        return Err(R::BadTxnsVoutEmpty);
    }
    if tx.serialize(false).len() as u64 * 4 > MAX_BLOCK_WEIGHT {
        return Err(R::BadTxnsOversize);
    }
    let mut total: u64 = 0;
    for out in &tx.outputs {
        if out.value > MAX_MONEY {
            return Err(R::BadTxnsVoutTooLarge);
        }
        total += out.value;
        if total > MAX_MONEY {
            return Err(R::BadTxnsTxoutTotalTooLarge);
        }
    }
    let mut prevouts = HashSet::with_capacity(tx.inputs.len());
    if !tx.inputs.iter().all(|i| prevouts.insert(i.prevout)) {
        return Err(R::BadTxnsInputsDuplicate);
    }
    if tx.is_coinbase() {
        if !(2..=100).contains(&tx.inputs[0].script_sig.len()) {
            return Err(R::BadCbLength);
        }
    } else if tx.inputs.iter().any(|i| i.prevout.is_null()) {
        return Err(R::BadTxnsPrevoutNull);
    }
    Ok(())
}

/// The witness part of Bitcoin Core's `ContextualCheckBlock` (`CheckWitnessMalleation` with
/// segwit active): a commitment needs exactly one 32-byte reserved value and must match;
/// without a commitment no transaction may carry witness data.
pub fn check_witness_commitment(block: &Block) -> Result<(), BlockRejection> {
    let coinbase = first_coinbase(block)?;
    if let Some((_, committed)) = find_witness_commitment(&coinbase.outputs) {
        let stack = &coinbase.inputs[0].witness;
        let reserved: [u8; 32] = match stack.as_slice() {
            [item] => item
                .as_slice()
                .try_into()
                .map_err(|_| BlockRejection::BadWitnessNonceSize)?,
            _ => return Err(BlockRejection::BadWitnessNonceSize),
        };
        let wtxids: Vec<Hash256> = block.txs[1..].iter().map(Transaction::wtxid).collect();
        if witness_commitment(&witness_root(&wtxids), &reserved) != committed {
            return Err(BlockRejection::BadWitnessMerkleMatch);
        }
        return Ok(());
    }
    if block.txs.iter().any(Transaction::has_witness) {
        return Err(BlockRejection::UnexpectedWitness);
    }
    Ok(())
}

/// Bitcoin Core's `ContextualCheckBlock` for a block at `height` whose parent has median time
/// past `prev_mtp`: finality (BIP113), BIP34 height, witness commitment, weight.
pub fn contextual_check_block(
    block: &Block,
    height: u64,
    prev_mtp: u32,
) -> Result<(), BlockRejection> {
    for tx in &block.txs {
        if !is_final(tx, height, prev_mtp) {
            return Err(BlockRejection::BadTxnsNonfinal);
        }
    }
    if !first_coinbase(block)?.inputs[0]
        .script_sig
        .starts_with(&bip34_height(height))
    {
        return Err(BlockRejection::BadCbHeight);
    }
    check_witness_commitment(block)?;
    if block_weight(block) > MAX_BLOCK_WEIGHT {
        return Err(BlockRejection::BadBlkWeight);
    }
    Ok(())
}

/// The coinbase, for checks that may be called on blocks `check_block` has not seen.
fn first_coinbase(block: &Block) -> Result<&Transaction, BlockRejection> {
    match block.txs.first() {
        Some(tx) if tx.is_coinbase() => Ok(tx),
        _ => Err(BlockRejection::BadCbMissing),
    }
}

fn is_final(tx: &Transaction, height: u64, cutoff: u32) -> bool {
    const LOCKTIME_THRESHOLD: u32 = 500_000_000;
    let lock = tx.lock_time;
    if lock == 0 {
        return true;
    }
    let limit = if lock < LOCKTIME_THRESHOLD {
        height
    } else {
        u64::from(cutoff)
    };
    u64::from(lock) < limit || tx.inputs.iter().all(|i| i.sequence == u32::MAX)
}

pub fn block_weight(block: &Block) -> u64 {
    let stripped = stripped_size(block) as u64;
    let total = block.serialize().len() as u64;
    3 * stripped + total
}

fn stripped_size(block: &Block) -> usize {
    let mut n = 80 + varint_size(block.txs.len() as u64);
    for tx in &block.txs {
        n += tx.serialize(false).len();
    }
    n
}

fn varint_size(n: u64) -> usize {
    powerpool_core::encode::varint_len(n)
}

/// Core's `UpdateUncommittedBlockStructures`, run by `submitblock` before validation: a
/// coinbase with a witness commitment but no witness gets the all-zero reserved value.
fn add_missing_witness_nonce(block: &mut Block) {
    let Some(coinbase) = block.txs.first_mut() else {
        return;
    };
    if coinbase.inputs.is_empty() || coinbase.has_witness() {
        return;
    }
    if find_witness_commitment(&coinbase.outputs).is_some() {
        coinbase.inputs[0].witness = vec![vec![0u8; 32]];
    }
}

/// Median of up to the last eleven block times ending at (and including) `last`.
fn median_time(times: &mut [u32]) -> u32 {
    times.sort_unstable();
    times[times.len() / 2]
}

/// `2^256 / (target + 1)`, Core's `GetBlockProof`.
fn block_work(target: &Target) -> U256 {
    let t = target.as_u256();
    (!t / (t + U256::from(1u8))) + U256::from(1u8)
}

/// A self-contained chain with real block rules. See the module docs for what it checks.
#[derive(Debug)]
pub struct Chain {
    params: ChainParams,
    target: Target,
    work: U256,
    blocks: HashMap<Hash256, BlockEntry>,
    /// Hashes that are some stored block's parent (for chain tips).
    parents: HashSet<Hash256>,
    active: Vec<Hash256>,
    invalid: HashSet<Hash256>,
    /// Every transaction this chain generated, by txid: what blocks may spend.
    known: HashMap<Hash256, Arc<MempoolTx>>,
    /// Unconfirmed transactions in arrival order.
    mempool: Vec<Hash256>,
    /// Txid → height, for transactions confirmed on the active chain.
    confirmed: HashMap<Hash256, u64>,
    factory: TxFactory,
    next_tx_at: Option<f64>,
    now: u64,
    /// Bumped whenever the mempool or the tip changes (the `longpollid` counter).
    updates: u64,
    own_extranonce: u64,
    own_payout: Vec<u8>,
}

impl Chain {
    /// Builds the genesis block (mined to `bits`) and an empty mempool; `now` is the wall
    /// clock in unix seconds.
    pub fn new(params: ChainParams, now: u64) -> Result<Chain, CompactError> {
        let target = Target::from_compact(params.bits)?;
        let mut payout = vec![0x00, 0x14];
        payout.extend_from_slice(&sha256d(&params.seed.to_le_bytes()).0[..20]);
        let mut chain = Chain {
            target,
            work: block_work(&target),
            blocks: HashMap::new(),
            parents: HashSet::new(),
            active: Vec::new(),
            invalid: HashSet::new(),
            known: HashMap::new(),
            mempool: Vec::new(),
            confirmed: HashMap::new(),
            factory: TxFactory::new(params.seed),
            next_tx_at: None,
            now,
            updates: 0,
            own_extranonce: 0,
            own_payout: payout,
            params,
        };
        let genesis = chain.genesis();
        let hash = genesis.header.block_hash();
        let entry = BlockEntry {
            hash,
            height: 0,
            median_time_past: genesis.header.time,
            chainwork: chain.work,
            size: genesis.serialize().len(),
            stripped_size: stripped_size(&genesis),
            weight: block_weight(&genesis),
            block: genesis,
        };
        chain.blocks.insert(hash, entry);
        chain.active.push(hash);
        chain.next_tx_at = chain
            .params
            .tx_interval_secs
            .map(|mean| now as f64 + chain.factory.gap(mean));
        Ok(chain)
    }

    fn genesis(&self) -> Block {
        let mut script_sig = vec![0x04, 0xff, 0xff, 0x00, 0x1d, 0x01, 0x04];
        let msg = format!("powerpool node genesis, seed {}", self.params.seed);
        push_data(&mut script_sig, msg.as_bytes());
        let coinbase = Transaction {
            version: 1,
            inputs: vec![TxIn {
                prevout: OutPoint::NULL,
                script_sig,
                sequence: u32::MAX,
                witness: Vec::new(),
            }],
            outputs: vec![TxOut {
                value: self.params.initial_subsidy,
                script_pubkey: self.own_payout.clone(),
            }],
            lock_time: 0,
        };
        let header = BlockHeader {
            version: 1,
            prev_blockhash: Hash256::ZERO,
            merkle_root: coinbase.txid(),
            time: self.params.genesis_time,
            bits: self.params.bits,
            nonce: 0,
        };
        // The genesis block is trusted, as Bitcoin Core trusts its hard-coded genesis: nothing
        // checks its proof of work, and not mining it keeps start-up instant at any bits.
        Block {
            header,
            txs: vec![coinbase],
        }
    }

    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    pub fn target(&self) -> Target {
        self.target
    }

    /// The current wall clock as last given to the chain.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Moves the clock forward (never back) and lets synthetic transactions arrive up to
    /// `now`. Returns whether the mempool changed.
    pub fn advance_time(&mut self, now: u64) -> bool {
        self.now = self.now.max(now);
        let Some(mean) = self.params.tx_interval_secs else {
            return false;
        };
        let mut changed = false;
        while let Some(at) = self.next_tx_at {
            if at > self.now as f64 {
                break;
            }
            if self.mempool.len() >= self.params.max_mempool_txs {
                // Full: skip arrivals until there is room, without replaying the backlog.
                self.next_tx_at = Some(self.now as f64 + self.factory.gap(mean));
                break;
            }
            self.add_one_synthetic();
            changed = true;
            self.next_tx_at = Some(at + self.factory.gap(mean));
        }
        changed
    }

    /// Adds `n` synthetic transactions now, whatever the arrival schedule says.
    pub fn add_synthetic_txs(&mut self, n: usize) -> Vec<Hash256> {
        (0..n).map(|_| self.add_one_synthetic()).collect()
    }

    fn add_one_synthetic(&mut self) -> Hash256 {
        // One in five spends an unconfirmed transaction, so templates carry `depends`.
        let parent = if !self.mempool.is_empty() && self.factory.pick(5) == 0 {
            Some(self.mempool[self.factory.pick(self.mempool.len())])
        } else {
            None
        };
        let tx = self.factory.next_tx(self.height(), parent);
        let txid = tx.txid;
        self.known.insert(txid, Arc::new(tx));
        self.mempool.push(txid);
        self.updates += 1;
        txid
    }

    pub fn tip(&self) -> Tip {
        Tip {
            height: self.height(),
            hash: *self.active.last().expect("genesis is always active"),
        }
    }

    pub fn height(&self) -> u64 {
        self.active.len() as u64 - 1
    }

    pub fn tip_entry(&self) -> &BlockEntry {
        &self.blocks[&self.tip().hash]
    }

    /// Hash of the active chain's block at `height`.
    pub fn block_hash(&self, height: u64) -> Option<Hash256> {
        usize::try_from(height)
            .ok()
            .and_then(|h| self.active.get(h))
            .copied()
    }

    pub fn block(&self, hash: &Hash256) -> Option<&BlockEntry> {
        self.blocks.get(hash)
    }

    pub fn is_active(&self, hash: &Hash256) -> bool {
        self.blocks
            .get(hash)
            .is_some_and(|e| self.block_hash(e.height) == Some(*hash))
    }

    /// Block count on the active chain after `hash` plus one (Core's `confirmations`), or -1
    /// for a block on a side branch.
    pub fn confirmations(&self, hash: &Hash256) -> i64 {
        match self.blocks.get(hash) {
            Some(e) if self.is_active(hash) => (self.height() - e.height + 1) as i64,
            _ => -1,
        }
    }

    /// Chain tips as `getchaintips` lists them: (height, hash, branch length, status).
    pub fn chain_tips(&self) -> Vec<(u64, Hash256, u64, &'static str)> {
        let mut tips: Vec<_> = self
            .blocks
            .values()
            .filter(|e| !self.parents.contains(&e.hash))
            .map(|e| {
                let mut branchlen = 0;
                let mut cur = e;
                while !self.is_active(&cur.hash) {
                    branchlen += 1;
                    cur = &self.blocks[&cur.block.header.prev_blockhash];
                }
                let status = if branchlen == 0 {
                    "active"
                } else {
                    "valid-fork"
                };
                (e.height, e.hash, branchlen, status)
            })
            .collect();
        tips.sort_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(&b.2)));
        tips
    }

    /// The subsidy of a block at `height`.
    pub fn subsidy(&self, height: u64) -> u64 {
        let halvings = height / self.params.halving_interval.max(1);
        if halvings >= 64 {
            0
        } else {
            self.params.initial_subsidy >> halvings
        }
    }

    /// Unconfirmed transactions in arrival order.
    pub fn mempool(&self) -> impl Iterator<Item = &MempoolTx> {
        self.mempool.iter().map(|t| &*self.known[t])
    }

    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// Changes whenever the mempool or the tip does.
    pub fn update_counter(&self) -> u64 {
        self.updates
    }

    /// The mempool as a template takes it: highest fee rate first, within the weight and
    /// sigop limits left after the coinbase reservation.
    fn select_txs(&self) -> Vec<Arc<MempoolTx>> {
        let mut txs: Vec<Arc<MempoolTx>> =
            self.mempool.iter().map(|t| self.known[t].clone()).collect();
        // Stable sort keeps arrival order between equal fee rates.
        txs.sort_by(|a, b| {
            if a.pays_more_than(b) {
                std::cmp::Ordering::Less
            } else if b.pays_more_than(a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        // Each transaction comes with its unconfirmed ancestors, parents first, as one
        // package that fits whole or not at all.
        let unconfirmed: HashSet<Hash256> = self.mempool.iter().copied().collect();
        let (mut weight, mut sigops) = (COINBASE_RESERVED_WEIGHT, COINBASE_RESERVED_SIGOPS);
        let mut chosen: Vec<Arc<MempoolTx>> = Vec::new();
        let mut taken = HashSet::new();
        for t in txs {
            let mut package = Vec::new();
            let mut cur = Some(t);
            while let Some(x) = cur {
                if taken.contains(&x.txid) {
                    break;
                }
                cur = x
                    .parent
                    .filter(|p| unconfirmed.contains(p))
                    .map(|p| self.known[&p].clone());
                package.push(x);
            }
            let w: u64 = package.iter().map(|x| x.weight).sum();
            let s: u64 = package.iter().map(|x| x.sigops_cost).sum();
            if weight + w <= MAX_BLOCK_WEIGHT && sigops + s <= MAX_BLOCK_SIGOPS_COST {
                weight += w;
                sigops += s;
                for x in package.into_iter().rev() {
                    taken.insert(x.txid);
                    chosen.push(x);
                }
            }
        }
        chosen
    }

    /// `getblocktemplate {"rules":["segwit"]}` at wall-clock `now`.
    pub fn template(&mut self, now: u64) -> BlockTemplate {
        self.advance_time(now);
        let tip = self.tip_entry();
        let height = tip.height + 1;
        let mintime = u64::from(tip.median_time_past) + 1;
        let txs = self.select_txs();
        let fees: u64 = txs.iter().map(|t| t.fee).sum();
        let wtxids: Vec<Hash256> = txs.iter().map(|t| t.wtxid).collect();
        let commitment = witness_commitment(&witness_root(&wtxids), &[0u8; 32]);
        let position: HashMap<Hash256, u32> = txs
            .iter()
            .enumerate()
            .map(|(i, t)| (t.txid, i as u32 + 1))
            .collect();
        let strs = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        BlockTemplate {
            capabilities: strs(&["proposal"]),
            version: TEMPLATE_VERSION,
            rules: strs(&["csv", "!segwit", "taproot"]),
            vbavailable: BTreeMap::new(),
            vbrequired: 0,
            previousblockhash: tip.hash.to_display_hex(),
            transactions: txs
                .iter()
                .map(|t| TemplateTx {
                    data: hex::encode(&t.data),
                    txid: t.txid.to_display_hex(),
                    hash: t.wtxid.to_display_hex(),
                    depends: t
                        .parent
                        .and_then(|p| position.get(&p).copied())
                        .into_iter()
                        .collect(),
                    fee: t.fee,
                    sigops: t.sigops_cost,
                    weight: t.weight,
                })
                .collect(),
            coinbaseaux: BTreeMap::new(),
            coinbasevalue: self.subsidy(height) + fees,
            longpollid: format!("{}{}", tip.hash.to_display_hex(), self.updates),
            target: self.target.to_be_hex(),
            mintime,
            mutable: strs(&["time", "transactions", "prevblock"]),
            noncerange: "00000000ffffffff".to_owned(),
            sigoplimit: MAX_BLOCK_SIGOPS_COST,
            sizelimit: MAX_BLOCK_WEIGHT,
            weightlimit: MAX_BLOCK_WEIGHT,
            curtime: self.now.max(mintime),
            bits: format!("{:08x}", self.params.bits),
            height,
            default_witness_commitment: hex::encode(witness_commitment_script(&commitment)),
        }
    }

    /// `submitblock`: validates, stores and (if it makes the longest chain) activates the
    /// block. `now` is the wall clock used for `time-too-new`.
    pub fn submit_block(&mut self, mut block: Block, now: u64) -> Result<Accepted, BlockRejection> {
        self.advance_time(now);
        let hash = block.header.block_hash();
        if self.blocks.contains_key(&hash) {
            return Err(BlockRejection::Duplicate);
        }
        if self.invalid.contains(&hash) {
            return Err(BlockRejection::DuplicateInvalid);
        }
        if self.params.submit_adds_witness_nonce {
            add_missing_witness_nonce(&mut block);
        }
        check_block(&block, &self.target, true)?;
        let entry = match self.validate_in_context(&block) {
            Ok(entry) => entry,
            Err(e) => {
                if e.marks_invalid() {
                    self.invalid.insert(hash);
                }
                return Err(e);
            }
        };
        let height = entry.height;
        self.parents.insert(block.header.prev_blockhash);
        self.blocks.insert(hash, BlockEntry { block, ..entry });
        if height > self.height() {
            self.activate(hash);
            Ok(Accepted::Tip)
        } else {
            Ok(Accepted::SideBranch)
        }
    }

    /// `getblocktemplate {"mode":"proposal"}`: every check except proof of work, on a block
    /// that must build on the tip; nothing is stored.
    pub fn check_proposal(&mut self, block: &Block, now: u64) -> Result<(), BlockRejection> {
        self.advance_time(now);
        let hash = block.header.block_hash();
        if self.blocks.contains_key(&hash) {
            return Err(BlockRejection::Duplicate);
        }
        if self.invalid.contains(&hash) {
            return Err(BlockRejection::DuplicateInvalid);
        }
        if block.header.prev_blockhash != self.tip().hash {
            return Err(BlockRejection::InconclusiveNotBestPrevblk);
        }
        check_block(block, &self.target, false)?;
        self.validate_in_context(block).map(|_| ())
    }

    /// Header context, block context and inputs; returns the entry to store (with an empty
    /// block that the caller fills, to avoid a copy).
    fn validate_in_context(&self, block: &Block) -> Result<BlockEntry, BlockRejection> {
        let prev_hash = block.header.prev_blockhash;
        let Some(parent) = self.blocks.get(&prev_hash) else {
            return Err(if self.invalid.contains(&prev_hash) {
                BlockRejection::BadPrevBlk
            } else {
                BlockRejection::PrevBlkNotFound
            });
        };
        let height = parent.height + 1;
        // ContextualCheckBlockHeader.
        if block.header.bits != self.params.bits {
            return Err(BlockRejection::BadDiffBits);
        }
        if block.header.time <= parent.median_time_past {
            return Err(BlockRejection::TimeTooOld);
        }
        if u64::from(block.header.time) > self.now + MAX_FUTURE_BLOCK_TIME {
            return Err(BlockRejection::TimeTooNew);
        }
        // BIP34, BIP66 and BIP65 are active from height 1 (regtest), so version 4 at least.
        if block.header.version < 4 {
            return Err(BlockRejection::BadVersion(block.header.version));
        }
        contextual_check_block(block, height, parent.median_time_past)?;
        // ConnectBlock: every spend must be a generated transaction not yet confirmed on this
        // branch; the coinbase may claim at most subsidy plus those fees.
        let confirmed_on_branch = self.branch_confirmed(&prev_hash);
        let mut fees = 0u64;
        let mut earlier = HashSet::new();
        for tx in &block.txs[1..] {
            let txid = tx.txid();
            let known = self
                .known
                .get(&txid)
                .filter(|_| !confirmed_on_branch(&txid))
                .ok_or(BlockRejection::BadTxnsInputsMissingOrSpent)?;
            // A child needs its parent confirmed before it, on this branch or in this block.
            if let Some(parent) = known.parent
                && !earlier.contains(&parent)
                && !confirmed_on_branch(&parent)
            {
                return Err(BlockRejection::BadTxnsInputsMissingOrSpent);
            }
            earlier.insert(txid);
            fees += known.fee;
        }
        let actual = block.txs[0]
            .outputs
            .iter()
            .fold(0u64, |acc, o| acc.saturating_add(o.value));
        let limit = self.subsidy(height) + fees;
        if actual > limit {
            return Err(BlockRejection::BadCbAmount { actual, limit });
        }
        let mut times: Vec<u32> = std::iter::once(block.header.time)
            .chain(self.ancestors(prev_hash).map(|e| e.block.header.time))
            .take(MEDIAN_TIME_SPAN)
            .collect();
        Ok(BlockEntry {
            block: Block::default(),
            hash: block.header.block_hash(),
            height,
            median_time_past: median_time(&mut times),
            chainwork: parent.chainwork + self.work,
            size: block.serialize().len(),
            stripped_size: stripped_size(block),
            weight: block_weight(block),
        })
    }

    /// `from` and its ancestors, newest first.
    fn ancestors(&self, from: Hash256) -> impl Iterator<Item = &BlockEntry> {
        let mut cur = self.blocks.get(&from);
        std::iter::from_fn(move || {
            let e = cur?;
            cur = if e.height == 0 {
                None
            } else {
                self.blocks.get(&e.block.header.prev_blockhash)
            };
            Some(e)
        })
    }

    /// A predicate telling whether a txid is confirmed in `tip` or its ancestors: side-branch
    /// blocks are walked, the shared part of the active chain is looked up by height.
    fn branch_confirmed(&self, tip: &Hash256) -> impl Fn(&Hash256) -> bool + '_ {
        let mut side = HashSet::new();
        let mut fork_height = 0;
        for e in self.ancestors(*tip) {
            if self.is_active(&e.hash) {
                fork_height = e.height;
                break;
            }
            side.extend(e.block.txs[1..].iter().map(Transaction::txid));
        }
        move |txid| {
            side.contains(txid) || self.confirmed.get(txid).is_some_and(|h| *h <= fork_height)
        }
    }

    /// Makes the branch ending at `new_tip` active: disconnects the old blocks above the fork
    /// (their transactions go back to the mempool) and connects the new ones.
    fn activate(&mut self, new_tip: Hash256) {
        let mut branch = Vec::new();
        let mut cur = new_tip;
        while !self.is_active(&cur) {
            branch.push(cur);
            cur = self.blocks[&cur].block.header.prev_blockhash;
        }
        let fork_height = self.blocks[&cur].height;
        while self.height() > fork_height {
            let old = self.active.pop().expect("above the fork");
            for tx in &self.blocks[&old].block.txs[1..] {
                let txid = tx.txid();
                self.confirmed.remove(&txid);
                self.mempool.push(txid);
            }
        }
        let mut confirmed_now = HashSet::new();
        for hash in branch.into_iter().rev() {
            let height = self.active.len() as u64;
            self.active.push(hash);
            for tx in &self.blocks[&hash].block.txs[1..] {
                let txid = tx.txid();
                self.confirmed.insert(txid, height);
                confirmed_now.insert(txid);
            }
        }
        self.mempool.retain(|t| !confirmed_now.contains(t));
        self.updates += 1;
    }

    /// Builds and mines a valid block on `parent` paying this chain's own script (another
    /// pool's block), with `txs`.
    fn build_block_on(&mut self, parent: Hash256, txs: &[Arc<MempoolTx>]) -> Block {
        let entry = &self.blocks[&parent];
        let height = entry.height + 1;
        let time = u32::try_from(self.now)
            .unwrap_or(u32::MAX)
            .max(entry.median_time_past.saturating_add(1));
        let mut script_sig = bip34_height(height);
        push_data(&mut script_sig, b"/powerpool-node/");
        push_data(&mut script_sig, &self.own_extranonce.to_le_bytes());
        self.own_extranonce += 1;
        let wtxids: Vec<Hash256> = txs.iter().map(|t| t.wtxid).collect();
        let commitment = witness_commitment(&witness_root(&wtxids), &[0u8; 32]);
        let coinbase = Transaction {
            version: 2,
            inputs: vec![TxIn {
                prevout: OutPoint::NULL,
                script_sig,
                sequence: u32::MAX,
                witness: vec![vec![0u8; 32]],
            }],
            outputs: vec![
                TxOut {
                    value: self.subsidy(height) + txs.iter().map(|t| t.fee).sum::<u64>(),
                    script_pubkey: self.own_payout.clone(),
                },
                TxOut {
                    value: 0,
                    script_pubkey: witness_commitment_script(&commitment),
                },
            ],
            lock_time: 0,
        };
        let mut block = Block {
            header: BlockHeader {
                version: TEMPLATE_VERSION,
                prev_blockhash: parent,
                merkle_root: Hash256::ZERO,
                time,
                bits: self.params.bits,
                nonce: 0,
            },
            txs: std::iter::once(coinbase)
                .chain(txs.iter().map(|t| t.tx.clone()))
                .collect(),
        };
        block.header.merkle_root = block.compute_merkle_root();
        block
    }

    /// Another miner's next block on the tip, taking the mempool as a template would, not yet
    /// mined: [`grind`] it (outside any lock) and submit it.
    pub fn external_block(&mut self, now: u64) -> Block {
        self.advance_time(now);
        let txs = self.select_txs();
        self.build_block_on(self.tip().hash, &txs)
    }

    /// Another miner finds the next block on the tip.
    pub fn mine_block(&mut self, now: u64) -> Result<Hash256, BlockRejection> {
        let mut block = self.external_block(now);
        grind(&self.target, &mut block.header);
        let hash = block.header.block_hash();
        self.submit_block(block, now)?;
        Ok(hash)
    }

    /// A competing branch of `blocks` coinbase-only blocks on top of the active block at
    /// `fork_height` replaces everything above it: the replaced blocks become stale and their
    /// transactions return to the mempool. Returns the new branch's hashes, lowest first.
    pub fn reorg_to(
        &mut self,
        fork_height: u64,
        blocks: u64,
        now: u64,
    ) -> Result<Vec<Hash256>, ReorgError> {
        self.advance_time(now);
        let tip_height = self.height();
        if fork_height > tip_height {
            return Err(ReorgError::ForkAboveTip {
                fork_height,
                tip_height,
            });
        }
        if fork_height + blocks <= tip_height {
            return Err(ReorgError::TooShort {
                fork_height,
                blocks,
                tip_height,
                needed: tip_height - fork_height + 1,
            });
        }
        let mut parent = self.active[fork_height as usize];
        let mut hashes = Vec::new();
        for _ in 0..blocks {
            let mut block = self.build_block_on(parent, &[]);
            grind(&self.target, &mut block.header);
            parent = block.header.block_hash();
            self.submit_block(block, now)
                .map_err(ReorgError::OwnBlockRejected)?;
            hashes.push(parent);
        }
        Ok(hashes)
    }
}

/// Finds a nonce meeting `target`, bumping the time when the nonce space runs out. Unbounded:
/// for easy targets (a hard one holds the calling thread for as long as it takes).
pub fn grind(target: &Target, header: &mut BlockHeader) {
    loop {
        for nonce in 0..=u32::MAX {
            header.nonce = nonce;
            if target.is_met_by(&header.block_hash()) {
                return;
            }
        }
        header.time = header.time.wrapping_add(1);
    }
}

/// Nonces between checks of `stop` and updates of the hash counter.
const GRIND_CHUNK: u64 = 4096;

/// Tries positions `from..from + count` of the sequence [`grind`] walks (position `n` is nonce
/// `n mod 2^32` with the header's time plus `n / 2^32` seconds). Returns whether the header now
/// meets `target`; when it does not, the header is as it came in. Gives up early once `stop`
/// is set; adds the nonces tried to `tried` as it goes.
pub(crate) fn grind_range(
    target: &Target,
    header: &mut BlockHeader,
    from: u64,
    count: u64,
    stop: &AtomicBool,
    tried: &AtomicU64,
) -> bool {
    let (time, nonce) = (header.time, header.nonce);
    let end = from.saturating_add(count);
    let mut n = from;
    while n < end && !stop.load(Ordering::Relaxed) {
        let chunk_end = end.min(n.saturating_add(GRIND_CHUNK));
        let chunk_start = n;
        while n < chunk_end {
            // Truncation is the point: the low 32 bits are the nonce, the rest bumps the time.
            header.nonce = n as u32;
            header.time = time.wrapping_add((n >> 32) as u32);
            n += 1;
            if target.is_met_by(&header.block_hash()) {
                tried.fetch_add(n - chunk_start, Ordering::Relaxed);
                return true;
            }
        }
        tried.fetch_add(n - chunk_start, Ordering::Relaxed);
    }
    header.time = time;
    header.nonce = nonce;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grind_range_walks_the_sequence_of_grind() {
        let target = Target::from_compact(0x207f_ffff).unwrap();
        let base = BlockHeader {
            version: 0x2000_0000,
            prev_blockhash: Hash256([3; 32]),
            merkle_root: Hash256([4; 32]),
            time: 1_700_000_000,
            bits: 0x207f_ffff,
            nonce: 0,
        };
        let mut whole = base;
        grind(&target, &mut whole);
        let winner = u64::from(whole.nonce);
        let (never, tried) = (AtomicBool::new(false), AtomicU64::new(0));
        // A range before the winner finds nothing and leaves the header alone.
        let mut h = base;
        if winner > 0 {
            assert!(!grind_range(&target, &mut h, 0, winner, &never, &tried));
            assert_eq!(h, base);
            assert_eq!(tried.load(Ordering::Relaxed), winner);
        }
        // The range holding it finds the same header, counting the nonces up to the winner.
        assert!(grind_range(&target, &mut h, winner, 10, &never, &tried));
        assert_eq!(h, whole);
        assert_eq!(tried.load(Ordering::Relaxed), winner + 1);
        // Past the nonce space the time goes up by one second per wrap.
        let mut h = base;
        let hard = Target::from_compact(0x0300_0001).unwrap();
        assert!(!grind_range(&hard, &mut h, 1 << 32, 1, &never, &tried));
        assert_eq!(h, base);
        assert!(grind_range(&target, &mut h, 1 << 32, 64, &never, &tried));
        assert_eq!(h.time, base.time + 1);
        // A raised stop flag ends the range before any hashing.
        let stopped = AtomicBool::new(true);
        let counted = tried.load(Ordering::Relaxed);
        assert!(!grind_range(&target, &mut h, 0, 1 << 20, &stopped, &tried));
        assert_eq!(tried.load(Ordering::Relaxed), counted);
    }

    #[test]
    fn work_of_regtest_bits_is_two() {
        // Regtest blocks (bits 207fffff) add 2 to chainwork: block 123 of the captured
        // regtest chain reports chainwork 0xf8 = 2 * 124.
        let t = Target::from_compact(0x207f_ffff).unwrap();
        assert_eq!(block_work(&t), U256::from(2u8));
        // Mainnet difficulty 1 (bits 1d00ffff): 0x100010001, as Core's GetBlockProof.
        let t = Target::from_compact(0x1d00_ffff).unwrap();
        assert_eq!(block_work(&t), U256::from(0x1_0001_0001u64));
    }

    #[test]
    fn median_of_eleven() {
        let mut v = vec![5, 1, 9, 3, 7];
        assert_eq!(median_time(&mut v), 5);
        let mut v = vec![4, 2];
        assert_eq!(median_time(&mut v), 4);
    }
}
