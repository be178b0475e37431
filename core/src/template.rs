//! `getblocktemplate` results, parsed and checked once at the edge.
//!
//! The original ignored `default_witness_commitment`, `mintime` and the template's txids, and
//! required a `fee` on every transaction (reference §5.4). Here every field the pool depends on
//! is validated into typed values; the witness commitment is taken from the node when given
//! and computed from the transactions' wtxids when a segwit template omits it.

use std::sync::Arc;

use serde::Deserialize;

use crate::hash::Hash256;
use crate::merkle::{witness_commitment, witness_commitment_script, witness_root};
use crate::target::Target;
use crate::tx::Transaction;

/// One transaction of a template, shared by every job built from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateTx {
    /// Serialized as the node gave it (with witness where it has one): copied into blocks as is.
    pub data: Vec<u8>,
    pub txid: Hash256,
    pub wtxid: Hash256,
    pub fee: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockTemplate {
    pub version: u32,
    pub prev_hash: Hash256,
    pub bits: u32,
    pub target: Target,
    pub height: u64,
    pub curtime: u32,
    /// Earliest ntime the node accepts (median time past + 1); `curtime` when not given.
    pub mintime: u32,
    pub coinbase_value: u64,
    pub txs: Arc<[TemplateTx]>,
    /// scriptPubKey of the coinbase's witness commitment output, when the block needs one.
    pub witness_commitment_script: Option<Vec<u8>>,
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("getblocktemplate result is not a template: {0}")]
    Shape(String),
    #[error("template field `{field}` is invalid: {detail}")]
    Field { field: &'static str, detail: String },
    #[error("template transaction {index} is invalid: {detail}")]
    Tx { index: usize, detail: String },
}

/// Bitcoin's money supply limit in satoshis: no fee or coinbase value can exceed it.
pub const MAX_MONEY: u64 = 21_000_000 * 100_000_000;

#[derive(Deserialize)]
struct RawTemplate {
    version: i64,
    previousblockhash: String,
    #[serde(default)]
    transactions: Vec<RawTx>,
    coinbasevalue: u64,
    bits: String,
    height: u64,
    curtime: u64,
    #[serde(default)]
    mintime: Option<u64>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    default_witness_commitment: Option<String>,
    #[serde(default)]
    rules: Vec<String>,
}

#[derive(Deserialize)]
struct RawTx {
    data: String,
    #[serde(default)]
    txid: Option<String>,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    fee: Option<i64>,
}

fn field(field: &'static str, detail: impl ToString) -> TemplateError {
    TemplateError::Field {
        field,
        detail: detail.to_string(),
    }
}

impl BlockTemplate {
    pub fn from_json(value: &serde_json::Value) -> Result<Self, TemplateError> {
        let raw: RawTemplate = serde_json::from_value(value.clone())
            .map_err(|e| TemplateError::Shape(e.to_string()))?;
        // Version is a signed 32-bit value on the wire; keep its bit pattern.
        let version = i32::try_from(raw.version)
            .map(|v| v as u32)
            .or_else(|_| u32::try_from(raw.version))
            .map_err(|_| field("version", "does not fit 32 bits"))?;
        let prev_hash = Hash256::from_display_hex(&raw.previousblockhash)
            .map_err(|e| field("previousblockhash", e))?;
        if raw.bits.len() != 8 {
            return Err(field("bits", "expected 8 hex digits"));
        }
        let bits = u32::from_str_radix(&raw.bits, 16).map_err(|e| field("bits", e))?;
        let target = Target::from_compact(bits).map_err(|e| field("bits", e))?;
        if let Some(t) = &raw.target {
            let given = Target::from_be_hex(t).map_err(|e| field("target", e))?;
            if given != target {
                return Err(field("target", "disagrees with bits"));
            }
        }
        let curtime = u32::try_from(raw.curtime).map_err(|_| field("curtime", "out of range"))?;
        let mintime = match raw.mintime {
            Some(m) => u32::try_from(m).map_err(|_| field("mintime", "out of range"))?,
            None => curtime,
        };
        let mut txs = Vec::with_capacity(raw.transactions.len());
        for (index, t) in raw.transactions.iter().enumerate() {
            let bad = |detail: String| TemplateError::Tx { index, detail };
            let data = hex::decode(&t.data).map_err(|e| bad(format!("data: {e}")))?;
            let tx = Transaction::from_bytes(&data).map_err(|e| bad(format!("data: {e}")))?;
            let txid = tx.txid();
            let wtxid = tx.wtxid();
            // The node's ids must describe the bytes it sent; a mismatch means a broken node.
            if let Some(s) = &t.txid {
                let given = Hash256::from_display_hex(s).map_err(|e| bad(format!("txid: {e}")))?;
                if given != txid {
                    return Err(bad(format!("txid {s} does not match its data")));
                }
            }
            if let Some(s) = &t.hash {
                let given = Hash256::from_display_hex(s).map_err(|e| bad(format!("hash: {e}")))?;
                if given != wtxid {
                    return Err(bad(format!("hash {s} does not match its data")));
                }
            }
            let fee = match t.fee {
                Some(f) if (0..=MAX_MONEY as i64).contains(&f) => f as u64,
                Some(f) => return Err(bad(format!("fee {f} is outside 0..=21e14 satoshis"))),
                None => 0,
            };
            txs.push(TemplateTx {
                data,
                txid,
                wtxid,
                fee,
            });
        }
        let segwit = raw
            .rules
            .iter()
            .any(|r| r.trim_start_matches('!') == "segwit");
        let witness_commitment_script = match &raw.default_witness_commitment {
            Some(h) => {
                let script = hex::decode(h).map_err(|e| field("default_witness_commitment", e))?;
                if script.len() != 38 || script[..6] != crate::merkle::WITNESS_COMMITMENT_HEADER {
                    return Err(field(
                        "default_witness_commitment",
                        "not an OP_RETURN aa21a9ed commitment",
                    ));
                }
                Some(script)
            }
            None if segwit => {
                let wtxids: Vec<Hash256> = txs.iter().map(|t| t.wtxid).collect();
                let root = witness_root(&wtxids);
                Some(witness_commitment_script(&witness_commitment(
                    &root, &[0u8; 32],
                )))
            }
            None => None,
        };
        Ok(BlockTemplate {
            version,
            prev_hash,
            bits,
            target,
            height: raw.height,
            curtime,
            mintime,
            coinbase_value: raw.coinbasevalue,
            txs: txs.into(),
            witness_commitment_script,
            rules: raw.rules,
        })
    }

    pub fn fees(&self) -> u64 {
        // Each fee is at most MAX_MONEY, so the sum of any template's fees fits easily; still,
        // a node's numbers are not trusted to add up.
        self.txs.iter().fold(0u64, |a, t| a.saturating_add(t.fee))
    }

    pub fn txids(&self) -> Vec<Hash256> {
        self.txs.iter().map(|t| t.txid).collect()
    }
}
