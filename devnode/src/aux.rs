//! Aux mode: the node acts as a merge-mined (AuxPoW) chain, as Namecoin Core or Dogecoin Core
//! do for a pool, through `createauxblock`, `submitauxblock` and `getauxblock`.
//!
//! The chain itself is deliberately small: its blocks are exactly the ones the node hands out
//! and a pool then proves, one header each (no transactions are validated). What is real is the
//! proof check: `submitauxblock` runs core's [`AuxPow::verify`] (Namecoin Core's rules in its
//! order, including the parent's SHA-256d work against this chain's target), so a pool that
//! builds a wrong commitment, slot, branch or parent header is refused here as by a real node.
//!
//! Behaviour copied from Namecoin Core's `AuxpowMiner` (and Dogecoin's `getauxblock`):
//! - `createauxblock <address>` answers `{hash, chainid, previousblockhash, coinbasevalue,
//!   bits, height, _target}`; `hash` and `previousblockhash` in display order, `_target` the
//!   256-bit target as little-endian hex. Asked again for the same address on the same tip
//!   with nothing new, it hands out the same block.
//! - A node accepts only blocks it handed out itself: any other hash is RPC error -8 "block
//!   hash unknown". A node that did not create the block therefore refuses it even when the
//!   proof is good.
//! - `submitauxblock` returns `true` when the block became the tip and `false` when the proof
//!   fails or the block no longer builds on the tip (a stale or already accepted block).
//! - `getauxblock` without arguments is `createauxblock` with the node's own address;
//!   `getauxblock <hash> <auxpow>` is `submitauxblock`.
//!
//! Every submission is recorded ([`Node::submitted_aux`]) so tests can count what each node
//! received.

use std::collections::HashMap;

use powerpool_core::address::{AddressParams, parse_address};
use powerpool_core::auxpow::{AuxPow, VERSION_AUXPOW};
use powerpool_core::hash::{Hash256, sha256d};
use powerpool_core::pow::Algorithm;
use powerpool_core::target::{CompactError, Target};
use powerpool_core::tx::BlockHeader;
use serde_json::{Value, json};

use crate::rpc::RpcError;
use crate::{ChainParams, Node};

/// Base block version of the aux chain's headers (the chain id and the AuxPoW bit are added).
const BASE_VERSION: i32 = 4;
/// The address `getauxblock` pays to when the caller gives none (the node's "wallet").
const WALLET_ADDRESS: &str = "node-wallet";
/// How many heights below the tip handed-out blocks are remembered.
const STALE_KEPT: u64 = 16;

/// One block of the aux chain (handed out, or accepted with its proof).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxBlock {
    pub hash: Hash256,
    pub height: u64,
    pub header: BlockHeader,
    pub coinbase_value: u64,
    /// Who the block pays (as given to `createauxblock`).
    pub address: String,
    /// The serialized AuxPoW it was accepted with (empty for genesis).
    pub auxpow: Vec<u8>,
}

/// One `submitauxblock` (or two-argument `getauxblock`) call as the node saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedAux {
    /// The hash parameter, when it parsed.
    pub hash: Option<Hash256>,
    /// The AuxPoW hex exactly as sent.
    pub auxpow_hex: String,
    /// `Ok(true)` accepted as the new tip, `Ok(false)` refused, `Err` an RPC error.
    pub reply: Result<bool, RpcError>,
    /// `submitauxblock` or `getauxblock`.
    pub method: &'static str,
    /// Node clock (unix seconds) at submission.
    pub at: u64,
}

/// The aux chain and what the node has handed out on its current tip.
#[derive(Debug)]
pub(super) struct AuxChain {
    chain_id: u32,
    params: ChainParams,
    target: Target,
    /// Active chain, genesis first.
    blocks: Vec<AuxBlock>,
    /// Blocks handed out on recent tips (including accepted ones), by hash.
    pending: HashMap<Hash256, AuxBlock>,
    /// The block handed out per address on the current tip and transaction generation.
    by_address: HashMap<String, Hash256>,
    /// Bumped whenever new transactions arrive: the next block handed out differs.
    generation: u64,
    submitted: Vec<SubmittedAux>,
}

impl AuxChain {
    pub(super) fn new(chain_id: u32, params: ChainParams) -> Result<AuxChain, CompactError> {
        let target = Target::from_compact(params.bits)?;
        let header = BlockHeader {
            version: BASE_VERSION | VERSION_AUXPOW | ((chain_id as i32) << 16),
            prev_blockhash: Hash256::ZERO,
            merkle_root: sha256d(&params.seed.to_le_bytes()),
            time: params.genesis_time,
            bits: params.bits,
            nonce: 0,
        };
        let genesis = AuxBlock {
            hash: header.block_hash(),
            height: 0,
            header,
            coinbase_value: params.initial_subsidy,
            address: String::new(),
            auxpow: Vec::new(),
        };
        Ok(AuxChain {
            chain_id,
            params,
            target,
            blocks: vec![genesis],
            pending: HashMap::new(),
            by_address: HashMap::new(),
            generation: 0,
            submitted: Vec::new(),
        })
    }

    fn tip(&self) -> &AuxBlock {
        self.blocks.last().expect("the chain always holds genesis")
    }

    fn subsidy(&self, height: u64) -> u64 {
        let halvings = height / self.params.halving_interval.max(1);
        if halvings >= 64 {
            0
        } else {
            self.params.initial_subsidy >> halvings
        }
    }

    /// The block for `address` on the current tip (the same one until the tip or the
    /// transactions change).
    fn create(&mut self, address: &str, now: u64) -> AuxBlock {
        if let Some(b) = self
            .by_address
            .get(address)
            .and_then(|h| self.pending.get(h))
        {
            return b.clone();
        }
        let tip = self.tip();
        let height = tip.height + 1;
        // Stands for the coinbase and transactions: distinct per chain, height, payee and
        // transaction generation.
        let mut commit = Vec::new();
        commit.extend_from_slice(&self.params.seed.to_le_bytes());
        commit.extend_from_slice(&height.to_le_bytes());
        commit.extend_from_slice(&self.generation.to_le_bytes());
        commit.extend_from_slice(address.as_bytes());
        let time = u32::try_from(now)
            .unwrap_or(u32::MAX)
            .max(tip.header.time.saturating_add(1));
        let header = BlockHeader {
            version: BASE_VERSION | VERSION_AUXPOW | ((self.chain_id as i32) << 16),
            prev_blockhash: tip.hash,
            merkle_root: sha256d(&commit),
            time,
            bits: self.params.bits,
            nonce: 0,
        };
        let block = AuxBlock {
            hash: header.block_hash(),
            height,
            header,
            coinbase_value: self.subsidy(height),
            address: address.to_owned(),
            auxpow: Vec::new(),
        };
        self.pending.insert(block.hash, block.clone());
        self.by_address.insert(address.to_owned(), block.hash);
        block
    }

    fn work_json(&self, b: &AuxBlock) -> Value {
        let mut le = self.target.to_be_bytes();
        le.reverse();
        json!({
            "hash": b.hash.to_display_hex(),
            "chainid": self.chain_id,
            "previousblockhash": b.header.prev_blockhash.to_display_hex(),
            "coinbasevalue": b.coinbase_value,
            "bits": format!("{:08x}", self.params.bits),
            "height": b.height,
            "_target": hex::encode(le),
        })
    }

    fn submit(&mut self, hash: &Hash256, auxpow: &[u8]) -> Result<bool, RpcError> {
        let tip_hash = self.tip().hash;
        let Some(block) = self.pending.get(hash).cloned() else {
            return Err(RpcError::new(
                RpcError::INVALID_PARAMETER,
                "block hash unknown",
            ));
        };
        let proof = AuxPow::parse(auxpow)
            .map_err(|e| RpcError::deserialization(&format!("AuxPoW decode failed: {e}")))?;
        if proof
            .verify(hash, self.chain_id, Algorithm::Sha256d, &self.target)
            .is_err()
        {
            return Ok(false);
        }
        if block.header.prev_blockhash != tip_hash {
            return Ok(false);
        }
        let mut block = block;
        block.auxpow = auxpow.to_vec();
        let height = block.height;
        self.blocks.push(block);
        // Blocks handed out on older tips stay known (a late proof for one answers false, not
        // "unknown"), for a while.
        self.pending.retain(|_, b| b.height + STALE_KEPT > height);
        self.by_address.clear();
        Ok(true)
    }
}

/// Aux RPC methods; `None` for a method this module does not serve (or a node not in aux mode),
/// which the caller then dispatches as usual.
pub(super) fn dispatch(
    node: &Node,
    method: &str,
    params: &Value,
) -> Option<Result<Value, RpcError>> {
    node.aux.as_ref()?;
    let arg = |i: usize, name: &str| -> Result<&str, RpcError> {
        let v = match params {
            Value::Array(a) => a.get(i),
            Value::Object(o) => o.get(name),
            _ => None,
        };
        match v {
            Some(Value::String(s)) => Ok(s),
            Some(Value::Null) | None => Err(RpcError::new(
                RpcError::MISC_ERROR,
                format!("missing required parameter {name}"),
            )),
            Some(_) => Err(RpcError::new(
                RpcError::TYPE_ERROR,
                format!("{name} must be a string"),
            )),
        }
    };
    let given = |i: usize, name: &str| match params {
        Value::Array(a) => a.get(i).is_some_and(|v| !v.is_null()),
        Value::Object(o) => o.get(name).is_some_and(|v| !v.is_null()),
        _ => false,
    };
    Some(match method {
        "createauxblock" => arg(0, "address").and_then(|a| node.create_aux_block(a)),
        "submitauxblock" => arg(0, "hash").and_then(|h| {
            let p = arg(1, "auxpow")?;
            node.submit_aux_block(h, p, "submitauxblock")
                .map(Value::Bool)
        }),
        "getauxblock" if given(0, "hash") => arg(0, "hash").and_then(|h| {
            let p = arg(1, "auxpow")?;
            node.submit_aux_block(h, p, "getauxblock").map(Value::Bool)
        }),
        "getauxblock" => node.create_aux_block_for(WALLET_ADDRESS),
        "getblockcount" => node.aux_tip().map(|t| json!(t.height)),
        "getbestblockhash" => node.aux_tip().map(|t| json!(t.hash.to_display_hex())),
        _ => return None,
    })
}

impl Node {
    fn aux_chain(&self) -> Result<std::sync::MutexGuard<'_, AuxChain>, RpcError> {
        let m = self
            .aux
            .as_ref()
            .ok_or_else(|| RpcError::new(RpcError::METHOD_NOT_FOUND, "Method not found"))?;
        Ok(m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The merged-mining chain id when the node runs in aux mode.
    pub fn aux_chain_id(&self) -> Option<u32> {
        self.config.aux_chain_id
    }

    /// `createauxblock <address>`: the address must be valid for the node's network.
    pub fn create_aux_block(&self, address: &str) -> Result<Value, RpcError> {
        if parse_address(address, &AddressParams::REGTEST).is_err() {
            return Err(RpcError::new(
                RpcError::INVALID_ADDRESS_OR_KEY,
                "Invalid coinbase payout address",
            ));
        }
        self.create_aux_block_for(address)
    }

    fn create_aux_block_for(&self, address: &str) -> Result<Value, RpcError> {
        let now = self.now();
        let mut c = self.aux_chain()?;
        let b = c.create(address, now);
        Ok(c.work_json(&b))
    }

    /// `submitauxblock <hash> <auxpow>` through the Rust API, recorded like an RPC call.
    pub fn submit_aux_block(
        &self,
        hash_hex: &str,
        auxpow_hex: &str,
        method: &'static str,
    ) -> Result<bool, RpcError> {
        let hash = Hash256::from_display_hex(hash_hex).ok();
        let reply = match (hash, hex::decode(auxpow_hex.trim())) {
            (None, _) => Err(RpcError::new(
                RpcError::INVALID_PARAMETER,
                format!("hash must be of length 64 hexadecimal (not '{hash_hex}')"),
            )),
            (Some(_), Err(_)) => Err(RpcError::new(
                RpcError::INVALID_PARAMETER,
                "auxpow must be hexadecimal string",
            )),
            (Some(h), Ok(bytes)) => self.aux_chain().and_then(|mut c| c.submit(&h, &bytes)),
        };
        let rec = SubmittedAux {
            hash,
            auxpow_hex: auxpow_hex.to_owned(),
            reply: reply.clone(),
            method,
            at: self.now(),
        };
        if let Ok(mut c) = self.aux_chain() {
            c.submitted.push(rec);
        }
        reply
    }

    /// Every aux submission so far, oldest first (empty when not in aux mode).
    pub fn submitted_aux(&self) -> Vec<SubmittedAux> {
        self.aux_chain()
            .map(|c| c.submitted.clone())
            .unwrap_or_default()
    }

    /// The aux chain's tip block.
    pub fn aux_tip(&self) -> Result<AuxBlock, RpcError> {
        Ok(self.aux_chain()?.tip().clone())
    }

    /// The aux chain's active blocks, genesis first.
    pub fn aux_blocks(&self) -> Vec<AuxBlock> {
        self.aux_chain()
            .map(|c| c.blocks.clone())
            .unwrap_or_default()
    }

    /// How many blocks the node has handed out on its current tip.
    pub fn aux_pending(&self) -> usize {
        self.aux_chain()
            .map(|c| {
                let tip = c.tip().hash;
                c.pending
                    .values()
                    .filter(|b| b.header.prev_blockhash == tip)
                    .count()
            })
            .unwrap_or(0)
    }

    /// New transactions reach the aux chain: the next block handed out differs at the same
    /// height (blocks already handed out stay valid, as in Namecoin Core).
    pub fn aux_new_transactions(&self) {
        if let Ok(mut c) = self.aux_chain() {
            c.generation += 1;
            c.by_address.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeConfig;
    use powerpool_core::merged::{AuxCommitment, AuxWork};
    use powerpool_core::tx::{OutPoint, Transaction, TxIn, TxOut};

    const ADDR: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

    fn aux_node(chain_id: u32) -> std::sync::Arc<Node> {
        let mut nc = NodeConfig::test(5);
        nc.aux_chain_id = Some(chain_id);
        Node::new(nc).unwrap()
    }

    /// An AuxPoW for `chain` from a parent block of version `parent_version` committing to
    /// `c`, its header ground to meet bits 207fffff.
    fn prove(c: &AuxCommitment, chain: &str, parent_version: i32) -> String {
        let mut script = vec![0x01, 0x01, 44];
        script.extend_from_slice(&c.commitment_bytes());
        let coinbase = Transaction {
            version: 1,
            inputs: vec![TxIn {
                prevout: OutPoint {
                    txid: Hash256::ZERO,
                    vout: u32::MAX,
                },
                script_sig: script,
                sequence: u32::MAX,
                witness: Vec::new(),
            }],
            outputs: vec![TxOut {
                value: 0,
                script_pubkey: vec![0x51],
            }],
            lock_time: 0,
        };
        let raw = coinbase.serialize(false);
        let mut header = BlockHeader {
            version: parent_version,
            prev_blockhash: Hash256([7; 32]),
            merkle_root: coinbase.txid(),
            time: 1_700_000_000,
            bits: 0x207f_ffff,
            nonce: 0,
        };
        let target = Target::from_compact(0x207f_ffff).unwrap();
        while !target.is_met_by(&header.block_hash()) {
            header.nonce += 1;
        }
        let aux = c
            .build_auxpow(chain, &raw, &[], &header.to_bytes())
            .unwrap();
        hex::encode(aux.serialize())
    }

    #[test]
    fn create_verify_and_advance() {
        let n = aux_node(1);
        let w = n.create_aux_block(ADDR).unwrap();
        // Same address, same tip: the same block.
        assert_eq!(n.create_aux_block(ADDR).unwrap(), w);
        assert_eq!(w["chainid"], json!(1));
        assert_eq!(w["height"], json!(1));
        assert_eq!(w["bits"], json!("207fffff"));
        // The fixture's little-endian `_target` for bits 207fffff (Namecoin Core regtest).
        assert_eq!(
            w["_target"],
            json!("0000000000000000000000000000000000000000000000000000000000ffff7f")
        );
        let work = AuxWork::from_rpc("NMC", &w).unwrap();
        let c = AuxCommitment::new(vec![work.clone()]).unwrap();
        let hash = w["hash"].as_str().unwrap();

        // Unknown hash: an RPC error, recorded.
        let other = Hash256([9; 32]).to_display_hex();
        let e = n
            .submit_aux_block(&other, "00", "submitauxblock")
            .unwrap_err();
        assert_eq!(e.code, RpcError::INVALID_PARAMETER);
        // A parent carrying our own chain id (version 0x00010000) is refused (Namecoin's
        // rule), and bytes that are not an AuxPoW are an error.
        let bad = prove(&c, "NMC", 0x0001_0000);
        assert_eq!(n.submit_aux_block(hash, &bad, "submitauxblock"), Ok(false));
        assert!(n.submit_aux_block(hash, "00", "submitauxblock").is_err());
        assert_eq!(n.aux_tip().unwrap().height, 0);

        let good = prove(&c, "NMC", 0x2000_0000);
        assert_eq!(n.submit_aux_block(hash, &good, "submitauxblock"), Ok(true));
        let tip = n.aux_tip().unwrap();
        assert_eq!((tip.height, tip.hash), (1, work.hash));
        // Accepted once; again it no longer builds on the tip.
        assert_eq!(n.submit_aux_block(hash, &good, "getauxblock"), Ok(false));
        // New work on the new tip.
        let w2 = n.create_aux_block(ADDR).unwrap();
        assert_eq!(w2["height"], json!(2));
        assert_eq!(w2["previousblockhash"], json!(hash));
        assert_eq!(n.submitted_aux().len(), 5);
    }

    #[test]
    fn new_transactions_change_the_block_not_the_height() {
        let n = aux_node(98);
        let a = n.create_aux_block(ADDR).unwrap();
        n.aux_new_transactions();
        let b = n.create_aux_block(ADDR).unwrap();
        assert_ne!(a["hash"], b["hash"]);
        assert_eq!(a["height"], b["height"]);
        assert_eq!(n.aux_pending(), 2);
        assert!(n.create_aux_block("not an address").is_err());
    }

    #[tokio::test]
    async fn served_over_rpc() {
        let n = aux_node(7);
        let w = dispatch(&n, "getauxblock", &json!([])).unwrap().unwrap();
        assert_eq!(w["chainid"], json!(7));
        let r = dispatch(&n, "createauxblock", &json!([ADDR]))
            .unwrap()
            .unwrap();
        assert_eq!(r["height"], json!(1));
        let r = dispatch(&n, "getauxblock", &json!([r["hash"], "00"])).unwrap();
        assert!(r.is_err());
        assert_eq!(
            dispatch(&n, "getblockcount", &json!([])).unwrap().unwrap(),
            json!(0)
        );
        assert!(dispatch(&n, "getblocktemplate", &json!([])).is_none());
        // A node not in aux mode serves none of it.
        let plain = Node::new(NodeConfig::test(1)).unwrap();
        assert!(dispatch(&plain, "createauxblock", &json!([ADDR])).is_none());
    }
}
