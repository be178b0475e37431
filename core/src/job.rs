//! Jobs: immutable units of work built from one template, shared as `Arc<Job>` by every
//! session so thousands of miners read new work without locks.
//!
//! A job holds the two coinbase halves around the extranonces, the merkle branch of the
//! coinbase, the header fields, and its `mining.notify` line rendered once (both clean-jobs
//! variants) — broadcasting a job copies no bytes per miner.
//!
//! Coinbase layout (PowerPool's, with its bugs fixed):
//! ```text
//! version 2 | 1 input: null prevout, scriptSig, sequence ffffffff | outputs | locktime 0
//! scriptSig = push(height)            BIP34, exactly `CScript() << height`
//!           [ coinbaseaux bytes ]     when the node sends any (the original ignored them)
//!           [ push(aux commitment) ]  merged mining, when configured
//!           [ push(pool tag) ]        optional, operator's text
//!           push-opcode(n) extranonce1 ‖ extranonce2    n = their total size; coinb1 ends here
//! outputs   = pool payout (coinbase value less the required payments, any address type)
//!             [ required payments ]                     Dash masternode/superblock, as listed
//!             [ witness commitment (value 0) ]          when the template is segwit
//! witness   = one 32-byte zero item (the witness reserved value), only in the block
//! ```
//! The original used input sequence 0, P2PKH-only outputs and no witness commitment; a modern node
//! rejects such a block once it carries witness transactions.
//!
//! Other chains (see [`crate::template`] for the formats):
//! - Dash: with a `coinbase_payload`, the coinbase is a DIP2 special transaction — version
//!   field `3 | 5 << 16` — and `coinb2` ends with the payload (CompactSize length, bytes)
//!   after the lock time, so the coinbase txid, hence the merkle root, covers it as Dash Core's
//!   does. Masternode and superblock payments follow the pool output, the order Dash Core's
//!   `FillBlockPayments` appends them in (the original put the payee first; consensus accepts
//!   either, and following the node keeps the pool's blocks shaped like the node's own).
//! - Litecoin: the block is `header | transactions (HogEx last, as the node gave it) | 0x01 |
//!   mw::Block`. Litecoin's `CBlock` serializes `mweb_block` (a `WrapOptionalPtr`: presence
//!   byte `01`, then the block) after `vtx` whenever the last transaction is the HogEx, and the
//!   template's `mweb` is only the inner `mw::Block` (`m_block->Serialized()` in
//!   `getblocktemplate`), so the presence byte is added here.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::encode::{bip34_height, push_data, read_bip34_height, write_varint};
use crate::hash::{Hash256, sha256d};
use crate::merged::AuxCommitment;
use crate::merkle::{
    WITNESS_COMMITMENT_HEADER, coinbase_branch, fold_branch, merkle_root, witness_commitment,
    witness_root,
};
use crate::pow::Algorithm;
use crate::stratum::{NotifyParams, write_notify};
use crate::target::Target;
use crate::template::{
    BlockTemplate, CoinBlock, CoinTx, DASH_SPECIAL_VERSION, DASH_TX_TYPE_COINBASE, RequiredPayment,
    TemplateTx, TxFormat,
};
use crate::time::Now;

/// Identifies a job within one pool instance; rendered as lowercase hex on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

impl JobId {
    pub fn to_hex(self) -> String {
        format!("{:x}", self.0)
    }

    pub fn parse(s: &str) -> Option<JobId> {
        if s.is_empty() || s.len() > 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(JobId)
    }
}

/// What a coinbase is built from, besides the template.
#[derive(Debug, Clone, PartialEq)]
pub struct CoinbaseParams {
    pub payout_script: Vec<u8>,
    /// Pushed into the scriptSig when non-empty (e.g. `/powerpool/`).
    pub pool_tag: Vec<u8>,
    /// The aux chains' work, committed after the height when aux chains are merge-mined.
    pub aux: Option<Arc<AuxCommitment>>,
    pub extranonce1_size: usize,
    pub extranonce2_size: usize,
}

/// The longest scriptSig consensus allows in a coinbase.
pub const MAX_COINBASE_SCRIPT_SIG: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error(
        "coinbase scriptSig would be {0} bytes, over the 100-byte consensus limit: shorten pool_tag"
    )]
    ScriptSigTooLong(usize),
}

#[derive(Debug)]
pub struct Job {
    pub id: JobId,
    pub id_hex: String,
    pub currency: Arc<str>,
    pub algo: Algorithm,
    pub height: u64,
    pub prev_hash: Hash256,
    pub version: u32,
    pub bits: u32,
    pub ntime: u32,
    pub mintime: u32,
    pub network_target: Target,
    pub coinbase_value: u64,
    pub fees: u64,
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub extranonce1_size: usize,
    pub extranonce2_size: usize,
    pub merkle_branch: Vec<Hash256>,
    pub txs: Arc<[TemplateTx]>,
    /// The block needs the coinbase witness reserved value (the template has a commitment).
    pub segwit: bool,
    /// When the job was built: the wall clock at that moment bounds ntime.
    pub created: Now,
    /// The aux work this job's coinbase commits to: shares on this job are checked against
    /// it, not against whatever aux work is current when they arrive.
    pub aux: Option<Arc<AuxCommitment>>,
    /// The aux chains' names, for share records (built once per job, not per share).
    pub aux_chains: Vec<Arc<str>>,
    /// How the chain serializes transactions and blocks.
    pub format: TxFormat,
    /// Payments the coinbase makes besides the pool's (Dash masternode/superblock).
    pub required_payments: Vec<RequiredPayment>,
    /// Dash: the coinbase's special-transaction payload (already at the end of `coinb2`).
    pub coinbase_payload: Option<Vec<u8>>,
    /// Litecoin: the `mw::Block` appended to every block built from this job.
    pub mweb: Option<Arc<[u8]>>,
    /// SHA-256 state after absorbing `coinb1`: each share hashes only the tail of its coinbase.
    coinb1_state: Sha256,
    notify_clean: Arc<[u8]>,
    notify_update: Arc<[u8]>,
}

impl Job {
    /// Builds a job from a template. `id` must be unique within the instance.
    pub fn build(
        id: JobId,
        currency: Arc<str>,
        algo: Algorithm,
        tpl: &BlockTemplate,
        params: &CoinbaseParams,
        created: Now,
    ) -> Result<Job, JobError> {
        let en_len = params.extranonce1_size + params.extranonce2_size;
        let mut script_sig = bip34_height(tpl.height);
        // Already script bytes: appended as they are, as the node's own block assembly did.
        script_sig.extend_from_slice(&tpl.coinbase_aux);
        if let Some(aux) = &params.aux {
            push_data(&mut script_sig, &aux.commitment_bytes());
        }
        if !params.pool_tag.is_empty() {
            push_data(&mut script_sig, &params.pool_tag);
        }
        // A direct push opcode (length < 76) keeps the extranonces one contiguous push.
        script_sig.push(en_len as u8);
        let script_len = script_sig.len() + en_len;
        if script_len > MAX_COINBASE_SCRIPT_SIG || en_len >= 76 {
            return Err(JobError::ScriptSigTooLong(script_len));
        }

        let tx_version = match tpl.coinbase_payload {
            Some(_) => i32::from(DASH_SPECIAL_VERSION) | (i32::from(DASH_TX_TYPE_COINBASE) << 16),
            None => 2,
        };
        let mut coinb1 = Vec::with_capacity(64 + script_sig.len());
        coinb1.extend_from_slice(&tx_version.to_le_bytes());
        coinb1.push(1);
        coinb1.extend_from_slice(&[0u8; 32]);
        coinb1.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
        write_varint(&mut coinb1, script_len as u64);
        coinb1.extend_from_slice(&script_sig);

        let mut coinb2 = Vec::with_capacity(128);
        coinb2.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
        let n_outputs =
            1 + tpl.required_payments.len() + usize::from(tpl.witness_commitment_script.is_some());
        write_varint(&mut coinb2, n_outputs as u64);
        coinb2.extend_from_slice(&tpl.pool_value().to_le_bytes());
        write_varint(&mut coinb2, params.payout_script.len() as u64);
        coinb2.extend_from_slice(&params.payout_script);
        for p in &tpl.required_payments {
            coinb2.extend_from_slice(&p.amount.to_le_bytes());
            write_varint(&mut coinb2, p.script.len() as u64);
            coinb2.extend_from_slice(&p.script);
        }
        if let Some(wc) = &tpl.witness_commitment_script {
            coinb2.extend_from_slice(&0u64.to_le_bytes());
            write_varint(&mut coinb2, wc.len() as u64);
            coinb2.extend_from_slice(wc);
        }
        coinb2.extend_from_slice(&0u32.to_le_bytes());
        if let Some(payload) = &tpl.coinbase_payload {
            write_varint(&mut coinb2, payload.len() as u64);
            coinb2.extend_from_slice(payload);
        }

        let merkle_branch = coinbase_branch(&tpl.txids());
        let id_hex = id.to_hex();
        let prevhash_stratum = stratum_prevhash(&tpl.prev_hash);
        let coinb1_hex = hex::encode(&coinb1);
        let coinb2_hex = hex::encode(&coinb2);
        let branch_hex: Vec<String> = merkle_branch.iter().map(|h| h.to_internal_hex()).collect();
        let render = |clean: bool| -> Arc<[u8]> {
            let mut out = Vec::with_capacity(256 + coinb1_hex.len() + coinb2_hex.len());
            write_notify(
                &mut out,
                &NotifyParams {
                    job_id: &id_hex,
                    prevhash_hex: &prevhash_stratum,
                    coinb1_hex: &coinb1_hex,
                    coinb2_hex: &coinb2_hex,
                    merkle_branch_hex: &branch_hex,
                    version: tpl.version,
                    nbits: tpl.bits,
                    ntime: tpl.curtime,
                    clean_jobs: clean,
                },
            );
            out.into()
        };
        let notify_clean = render(true);
        let notify_update = render(false);
        let coinb1_state = Sha256::new().chain_update(&coinb1);

        Ok(Job {
            id,
            id_hex,
            currency,
            algo,
            height: tpl.height,
            prev_hash: tpl.prev_hash,
            version: tpl.version,
            bits: tpl.bits,
            ntime: tpl.curtime,
            mintime: tpl.mintime,
            network_target: tpl.target,
            coinbase_value: tpl.coinbase_value,
            fees: tpl.fees(),
            coinb1,
            coinb2,
            extranonce1_size: params.extranonce1_size,
            extranonce2_size: params.extranonce2_size,
            merkle_branch,
            txs: tpl.txs.clone(),
            segwit: tpl.witness_commitment_script.is_some(),
            created,
            aux: params.aux.clone(),
            aux_chains: params
                .aux
                .as_ref()
                .map(|a| a.works().map(|w| Arc::from(w.chain.as_str())).collect())
                .unwrap_or_default(),
            format: tpl.format,
            required_payments: tpl.required_payments.clone(),
            coinbase_payload: tpl.coinbase_payload.clone(),
            mweb: tpl.mweb.clone(),
            coinb1_state,
            notify_clean,
            notify_update,
        })
    }

    /// The `mining.notify` line for this job, already rendered.
    pub fn notify(&self, clean_jobs: bool) -> &Arc<[u8]> {
        if clean_jobs {
            &self.notify_clean
        } else {
            &self.notify_update
        }
    }

    /// The coinbase without witness (its txid serialization).
    pub fn coinbase(&self, extranonce1: &[u8], extranonce2: &[u8]) -> Vec<u8> {
        let mut cb = Vec::with_capacity(
            self.coinb1.len() + extranonce1.len() + extranonce2.len() + self.coinb2.len(),
        );
        cb.extend_from_slice(&self.coinb1);
        cb.extend_from_slice(extranonce1);
        cb.extend_from_slice(extranonce2);
        cb.extend_from_slice(&self.coinb2);
        cb
    }

    /// txid of the coinbase for these extranonces, hashing only what follows `coinb1`.
    pub fn coinbase_txid(&self, extranonce1: &[u8], extranonce2: &[u8]) -> Hash256 {
        let first = self
            .coinb1_state
            .clone()
            .chain_update(extranonce1)
            .chain_update(extranonce2)
            .chain_update(&self.coinb2)
            .finalize();
        Hash256(Sha256::digest(first).into())
    }

    pub fn merkle_root(&self, extranonce1: &[u8], extranonce2: &[u8]) -> Hash256 {
        fold_branch(
            self.coinbase_txid(extranonce1, extranonce2),
            &self.merkle_branch,
            0,
        )
    }

    /// The 80-byte header a miner hashed. `version` is the full version after rolling.
    pub fn header(
        &self,
        extranonce1: &[u8],
        extranonce2: &[u8],
        ntime: u32,
        nonce: u32,
        version: u32,
    ) -> [u8; 80] {
        let root = self.merkle_root(extranonce1, extranonce2);
        let mut h = [0u8; 80];
        h[0..4].copy_from_slice(&version.to_le_bytes());
        h[4..36].copy_from_slice(&self.prev_hash.0);
        h[36..68].copy_from_slice(&root.0);
        h[68..72].copy_from_slice(&ntime.to_le_bytes());
        h[72..76].copy_from_slice(&self.bits.to_le_bytes());
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        h
    }

    /// The full block for `submitblock`: header, transaction count, the coinbase (with its
    /// witness reserved value when the block commits to witnesses), then the template's
    /// transactions as the node gave them, then (Litecoin) the MWEB block behind its
    /// presence byte.
    pub fn block(&self, header: &[u8; 80], extranonce1: &[u8], extranonce2: &[u8]) -> Vec<u8> {
        let cb = self.coinbase(extranonce1, extranonce2);
        let tx_bytes: usize = self.txs.iter().map(|t| t.data.len()).sum();
        let mweb_len = self.mweb.as_ref().map_or(0, |m| 1 + m.len());
        let mut out = Vec::with_capacity(80 + 9 + cb.len() + 40 + tx_bytes + mweb_len);
        out.extend_from_slice(header);
        write_varint(&mut out, 1 + self.txs.len() as u64);
        if self.segwit {
            out.extend_from_slice(&cb[..4]);
            out.extend_from_slice(&[0x00, 0x01]);
            out.extend_from_slice(&cb[4..cb.len() - 4]);
            out.push(1);
            out.push(32);
            out.extend_from_slice(&[0u8; 32]);
            out.extend_from_slice(&cb[cb.len() - 4..]);
        } else {
            out.extend_from_slice(&cb);
        }
        for t in self.txs.iter() {
            out.extend_from_slice(&t.data);
        }
        if let Some(m) = &self.mweb {
            out.push(1);
            out.extend_from_slice(m);
        }
        out
    }
}

/// The stratum form of a previous-block hash: internal byte order with each 4-byte word
/// byte-swapped (equivalently: the display hex with its eight words in reverse order).
pub fn stratum_prevhash(prev: &Hash256) -> String {
    let mut b = prev.0;
    for w in b.chunks_exact_mut(4) {
        w.reverse();
    }
    hex::encode(b)
}

/// Why a block would be refused. The variants carry Bitcoin Core's reject strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockCheckError {
    #[error("block does not parse: {0}")]
    Parse(String),
    #[error("high-hash: proof of work does not meet the target")]
    HighHash,
    #[error("bad-txnmrklroot: merkle root does not match the transactions")]
    MerkleRoot,
    #[error("bad-cb-missing: first transaction is not a coinbase")]
    CoinbaseMissing,
    #[error("bad-cb-height: coinbase height {found:?}, block height {expected}")]
    Height { expected: u64, found: Option<u64> },
    #[error("bad-cb-amount: coinbase pays {paid}, limit {limit}")]
    Amount { paid: u64, limit: u64 },
    #[error("bad-witness-nonce-size: coinbase witness must be one 32-byte item")]
    WitnessNonceSize,
    #[error("bad-witness-merkle-match: witness commitment does not match")]
    WitnessMerkleMatch,
    #[error("missing witness commitment for a segwit template")]
    WitnessCommitmentMissing,
    #[error("transactions differ from the template")]
    Transactions,
    #[error("coinbase does not pay the pool's payout script")]
    Payout,
    #[error("bad-cb-payee: coinbase lacks a payment the template requires")]
    RequiredPayment,
    #[error("bad-cbtx-payload: coinbase special-transaction payload differs from the template")]
    CoinbasePayload,
    #[error("mweb-mismatch: the block's MWEB extension differs from the template's")]
    Mweb,
}

impl BlockCheckError {
    /// The BIP22 reject string Bitcoin Core gives for the same fault, where there is one.
    pub fn reject_string(&self) -> &'static str {
        match self {
            BlockCheckError::Parse(_) => "bad-blk-length",
            BlockCheckError::HighHash => "high-hash",
            BlockCheckError::MerkleRoot => "bad-txnmrklroot",
            BlockCheckError::CoinbaseMissing => "bad-cb-missing",
            BlockCheckError::Height { .. } => "bad-cb-height",
            BlockCheckError::Amount { .. } => "bad-cb-amount",
            BlockCheckError::WitnessNonceSize => "bad-witness-nonce-size",
            BlockCheckError::WitnessMerkleMatch => "bad-witness-merkle-match",
            BlockCheckError::WitnessCommitmentMissing => "bad-witness-commitment-missing",
            BlockCheckError::Transactions => "bad-txns-template-mismatch",
            BlockCheckError::Payout => "bad-cb-payout",
            BlockCheckError::RequiredPayment => "bad-cb-payee",
            BlockCheckError::CoinbasePayload => "bad-cbtx-payload",
            BlockCheckError::Mweb => "mweb-mismatch",
        }
    }
}

/// Checks a block against the template it claims to extend, with the rules a pool can know
/// before the node says anything: the negative regtest fixtures (`bad-cb-amount`,
/// `bad-cb-height`, `bad-witness-merkle-match`, `bad-witness-nonce-size`, `high-hash`) are
/// caught here. Run on every found block before submission (rare, so its cost does not matter).
/// What a block built for one template must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct BlockExpectation<'a> {
    pub txs: &'a [TemplateTx],
    pub height: u64,
    pub coinbase_value: u64,
    /// The template asked for a witness commitment.
    pub segwit: bool,
    /// When given, some coinbase output must pay exactly this script.
    pub payout_script: Option<&'a [u8]>,
    pub algo: Algorithm,
    pub target: &'a Target,
    pub format: TxFormat,
    /// Outputs (script and amount) the coinbase must contain.
    pub required_payments: &'a [RequiredPayment],
    /// The coinbase's special-transaction payload (Dash).
    pub coinbase_payload: Option<&'a [u8]>,
    /// The MWEB block that must follow the transactions (Litecoin).
    pub mweb: Option<&'a [u8]>,
}

impl<'a> BlockExpectation<'a> {
    pub fn from_template(
        tpl: &'a BlockTemplate,
        algo: Algorithm,
        payout_script: Option<&'a [u8]>,
    ) -> Self {
        BlockExpectation {
            txs: &tpl.txs,
            height: tpl.height,
            coinbase_value: tpl.coinbase_value,
            segwit: tpl.witness_commitment_script.is_some(),
            payout_script,
            algo,
            target: &tpl.target,
            format: tpl.format,
            required_payments: &tpl.required_payments,
            coinbase_payload: tpl.coinbase_payload.as_deref(),
            mweb: tpl.mweb.as_deref(),
        }
    }
}

pub fn check_block(exp: &BlockExpectation<'_>, block_bytes: &[u8]) -> Result<(), BlockCheckError> {
    let BlockExpectation {
        txs: tpl_txs,
        height,
        coinbase_value,
        segwit,
        payout_script,
        algo,
        target,
        format,
        required_payments,
        coinbase_payload,
        mweb,
    } = *exp;
    let block =
        CoinBlock::parse(format, block_bytes).map_err(|e| BlockCheckError::Parse(e.to_string()))?;
    let header = block.header.to_bytes();
    if !target.is_met_by(&algo.pow_hash(&header)) {
        return Err(BlockCheckError::HighHash);
    }
    let cb_full = block
        .txs
        .first()
        .filter(|t| t.tx.is_coinbase())
        .ok_or(BlockCheckError::CoinbaseMissing)?;
    let cb = &cb_full.tx;
    let txids = block.txids();
    if merkle_root(&txids) != block.header.merkle_root {
        return Err(BlockCheckError::MerkleRoot);
    }
    let found = read_bip34_height(&cb.inputs[0].script_sig);
    if found != Some(height) {
        return Err(BlockCheckError::Height {
            expected: height,
            found,
        });
    }
    let paid = cb
        .outputs
        .iter()
        .try_fold(0u64, |acc, o| acc.checked_add(o.value))
        .unwrap_or(u64::MAX);
    if paid > coinbase_value {
        return Err(BlockCheckError::Amount {
            paid,
            limit: coinbase_value,
        });
    }
    if block.txs.len() != tpl_txs.len() + 1
        || txids[1..].iter().zip(tpl_txs).any(|(b, t)| *b != t.txid)
    {
        return Err(BlockCheckError::Transactions);
    }
    if required_payments.iter().any(|p| {
        !cb.outputs
            .iter()
            .any(|o| o.value == p.amount && o.script_pubkey == p.script)
    }) {
        return Err(BlockCheckError::RequiredPayment);
    }
    if cb_full.extra_payload.as_deref() != coinbase_payload {
        return Err(BlockCheckError::CoinbasePayload);
    }
    if block.mweb.as_deref() != mweb {
        return Err(BlockCheckError::Mweb);
    }
    if let Some(script) = payout_script
        && !cb.outputs.iter().any(|o| o.script_pubkey == script)
    {
        return Err(BlockCheckError::Payout);
    }
    // BIP141: the commitment is the LAST output starting with the commitment header.
    let commitment =
        cb.outputs.iter().rev().find(|o| {
            o.script_pubkey.len() >= 38 && o.script_pubkey[..6] == WITNESS_COMMITMENT_HEADER
        });
    match commitment {
        Some(out) => {
            let w = &cb.inputs[0].witness;
            if w.len() != 1 || w[0].len() != 32 {
                return Err(BlockCheckError::WitnessNonceSize);
            }
            let mut reserved = [0u8; 32];
            reserved.copy_from_slice(&w[0]);
            let wtxids: Vec<Hash256> = block.txs[1..].iter().map(CoinTx::wtxid).collect();
            let expected = witness_commitment(&witness_root(&wtxids), &reserved);
            if out.script_pubkey[6..38] != expected.0 {
                return Err(BlockCheckError::WitnessMerkleMatch);
            }
        }
        None if segwit => return Err(BlockCheckError::WitnessCommitmentMissing),
        None => {}
    }
    Ok(())
}

impl Job {
    /// [`check_block`] with this job's template facts.
    pub fn check_block(
        &self,
        payout_script: Option<&[u8]>,
        block_bytes: &[u8],
    ) -> Result<(), BlockCheckError> {
        check_block(
            &BlockExpectation {
                txs: &self.txs,
                height: self.height,
                coinbase_value: self.coinbase_value,
                segwit: self.segwit,
                payout_script,
                algo: self.algo,
                target: &self.network_target,
                format: self.format,
                required_payments: &self.required_payments,
                coinbase_payload: self.coinbase_payload.as_deref(),
                mweb: self.mweb.as_deref(),
            },
            block_bytes,
        )
    }

    /// Block hash as explorers show it (sha256d of the header, whatever the PoW algorithm).
    pub fn block_hash(header: &[u8; 80]) -> Hash256 {
        sha256d(header)
    }

    /// The id the chain gives this block: Dash-format chains name blocks by their X11 hash,
    /// every other supported chain by sha256d.
    pub fn block_id(&self, header: &[u8; 80]) -> Hash256 {
        match (self.format, self.algo) {
            (TxFormat::Dash, Algorithm::X11) => Algorithm::X11.pow_hash(header),
            _ => sha256d(header),
        }
    }
}
