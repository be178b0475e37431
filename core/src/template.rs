//! `getblocktemplate` results, parsed and checked once at the edge.
//!
//! The original ignored `default_witness_commitment`, `mintime` and the template's txids, and
//! required a `fee` on every transaction. Here every field the pool depends on
//! is validated into typed values; the witness commitment is taken from the node when given
//! and computed from the transactions' wtxids when a segwit template omits it.
//!
//! # Coin formats
//! A template's transactions are read in one of three formats ([`TxFormat`]), chosen from the
//! template itself:
//! - **Bitcoin** (default): Bitcoin Core's serialization, parsed by [`crate::tx`].
//! - **MWEB** (Litecoin Core 0.21.2+, a template with an `mweb` field or an `mweb` rule):
//!   Litecoin's `SerializeTransaction` adds flag bit `0x08`; the flagged part is an optional MWEB
//!   body (one byte `00` when absent) written after the witnesses and before the lock time. A
//!   flagged transaction with no body is the HogEx (integrating transaction); Litecoin's
//!   `MWEB::Node::CheckBlock` rejects any block transaction carrying a body, and any HogEx that
//!   is not the last transaction (`bad-hogex-position`), so both are template errors here. txid
//!   and wtxid leave the MWEB part out (`SERIALIZE_NO_MWEB` in `CTransaction::ComputeHash`).
//!   The template's `mweb` field is `mweb_block.m_block->Serialized()` — the inner `mw::Block`;
//!   the block for `submitblock` carries it after the transactions (see [`crate::job`]).
//! - **Dash** (a template with `coinbase_payload`, `masternode` or `superblock`): Dash Core's
//!   `CTransaction::Serialize` writes a 32-bit `nVersion | nType << 16`, no segwit, and after
//!   the lock time the extra payload as a CompactSize-prefixed byte vector when
//!   `nVersion >= 3 && nType != 0`. The txid covers the payload (the whole serialization).
//!
//! Dash templates also list the payments the coinbase must make (`masternode`, then
//! `superblock`, each `{payee, script, amount}`) out of `coinbasevalue`, and the coinbase's CbTx
//! payload (`coinbase_payload`). The original read only the single `payee`/`payee_amount` of
//! 2014-era Dash and built every script as P2PKH; here the node's own scripts
//! are used as given, in the order Dash Core's miner writes them.

use std::sync::Arc;

use serde::Deserialize;

use crate::encode::{read_varint, write_varint};
use crate::hash::{Hash256, sha256d};
use crate::merkle::{witness_commitment, witness_commitment_script, witness_root};
use crate::target::Target;
use crate::tx::{OutPoint, Transaction, TxError, TxIn, TxOut};

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
    /// How this chain serializes transactions.
    pub format: TxFormat,
    /// Dash: masternode then superblock payments the coinbase must make, taken out of
    /// `coinbase_value`. Empty elsewhere.
    pub required_payments: Vec<RequiredPayment>,
    /// Dash (DIP4): the CbTx payload. When set, the coinbase is a special transaction of
    /// version 3, type 5 carrying it after the lock time.
    pub coinbase_payload: Option<Vec<u8>>,
    /// Litecoin: the serialized `mw::Block` of the template's `mweb` field. When set, the last
    /// template transaction is the HogEx.
    pub mweb: Option<Arc<[u8]>>,
    /// Script bytes the node asks to see in the coinbase scriptSig (`coinbaseaux`, e.g. a
    /// `/P2SH/` flag), values concatenated in key order. Modern Bitcoin Core sends none.
    pub coinbase_aux: Vec<u8>,
}

/// A coinbase output the node requires (Dash masternode and superblock payments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredPayment {
    pub script: Vec<u8>,
    pub amount: u64,
}

/// How a chain serializes its transactions (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxFormat {
    #[default]
    Bitcoin,
    /// Litecoin with the MWEB extension block.
    Mweb,
    /// Dash with DIP2 special transactions.
    Dash,
}

/// Dash's `TRANSACTION_COINBASE` special-transaction type (DIP4).
pub const DASH_TX_TYPE_COINBASE: u16 = 5;
/// Dash's special-transaction version (`CTransaction::SPECIAL_VERSION`).
pub const DASH_SPECIAL_VERSION: i16 = 3;
/// Dash's `TRANSACTION_ASSET_UNLOCK` type, whose txid may leave part of the payload out.
const DASH_TX_TYPE_ASSET_UNLOCK: u16 = 9;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("getblocktemplate result is not a template: {0}")]
    Shape(String),
    #[error("template field `{field}` is invalid: {detail}")]
    Field { field: &'static str, detail: String },
    #[error("template transaction {index} is invalid: {detail}")]
    Tx { index: usize, detail: String },
    #[error("template's MWEB parts disagree: {0}; the node's template is unusable, fetch another")]
    Mweb(&'static str),
    #[error("required payments total {total}, more than coinbasevalue {coinbase_value}")]
    PaymentsExceedValue { total: u64, coinbase_value: u64 },
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
    #[serde(default)]
    mweb: Option<String>,
    #[serde(default)]
    masternode: Option<serde_json::Value>,
    #[serde(default)]
    superblock: Option<serde_json::Value>,
    #[serde(default)]
    coinbase_payload: Option<String>,
    #[serde(default)]
    coinbaseaux: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RawPayment {
    script: String,
    amount: i64,
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
        let has_rule = |name: &str| raw.rules.iter().any(|r| r.trim_start_matches('!') == name);
        let format = if raw.coinbase_payload.is_some()
            || raw.masternode.is_some()
            || raw.superblock.is_some()
        {
            TxFormat::Dash
        } else if raw.mweb.is_some() || has_rule("mweb") {
            TxFormat::Mweb
        } else {
            TxFormat::Bitcoin
        };
        let mut txs = Vec::with_capacity(raw.transactions.len());
        let mut hogex_at = None;
        for (index, t) in raw.transactions.iter().enumerate() {
            let bad = |detail: String| TemplateError::Tx { index, detail };
            let data = hex::decode(&t.data).map_err(|e| bad(format!("data: {e}")))?;
            let (mut txid, mut wtxid, node_may_differ) = match format {
                TxFormat::Bitcoin => {
                    let tx =
                        Transaction::from_bytes(&data).map_err(|e| bad(format!("data: {e}")))?;
                    (tx.txid(), tx.wtxid(), false)
                }
                TxFormat::Mweb | TxFormat::Dash => {
                    let tx = CoinTx::parse(format, &data).map_err(|e| bad(format!("data: {e}")))?;
                    if tx.hogex {
                        hogex_at = Some(index);
                    }
                    let unlock = tx.dash_type() == DASH_TX_TYPE_ASSET_UNLOCK;
                    (tx.txid(), tx.wtxid(), unlock)
                }
            };
            // The node's ids must describe the bytes it sent; a mismatch means a broken node.
            // (Dash asset unlocks may hash a payload with its signature left out: the node's
            // id is taken for those.)
            if let Some(s) = &t.txid {
                let given = Hash256::from_display_hex(s).map_err(|e| bad(format!("txid: {e}")))?;
                if given != txid {
                    if !node_may_differ {
                        return Err(bad(format!("txid {s} does not match its data")));
                    }
                    txid = given;
                }
            }
            if let Some(s) = &t.hash {
                let given = Hash256::from_display_hex(s).map_err(|e| bad(format!("hash: {e}")))?;
                if given != wtxid {
                    if !node_may_differ {
                        return Err(bad(format!("hash {s} does not match its data")));
                    }
                    wtxid = given;
                    if t.txid.is_none() {
                        // Dash sends only `hash`, which is its txid.
                        txid = given;
                    }
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
        let mweb = match &raw.mweb {
            Some(h) => {
                let bytes = hex::decode(h).map_err(|e| field("mweb", e))?;
                if bytes.is_empty() {
                    return Err(field("mweb", "empty"));
                }
                Some(Arc::<[u8]>::from(bytes))
            }
            None => None,
        };
        // Litecoin writes the MWEB block only behind a HogEx in last place and reads a block
        // the same way, so one without the other cannot make a valid block.
        match (hogex_at, &mweb) {
            (Some(i), Some(_)) if i + 1 == txs.len() => {}
            (Some(_), Some(_)) => {
                return Err(TemplateError::Mweb("HogEx is not the last transaction"));
            }
            (Some(_), None) => return Err(TemplateError::Mweb("HogEx without an `mweb` block")),
            (None, Some(_)) => return Err(TemplateError::Mweb("`mweb` block without a HogEx")),
            (None, None) => {}
        }
        let mut required_payments = Vec::new();
        for (name, list) in [
            ("masternode", &raw.masternode),
            ("superblock", &raw.superblock),
        ] {
            required_payments.extend(parse_payments(name, list.as_ref())?);
        }
        let total = required_payments
            .iter()
            .fold(0u64, |a, p| a.saturating_add(p.amount));
        if total > raw.coinbasevalue {
            return Err(TemplateError::PaymentsExceedValue {
                total,
                coinbase_value: raw.coinbasevalue,
            });
        }
        let coinbase_payload = match raw.coinbase_payload.as_deref() {
            // Before DIP3 activation Dash Core sends an empty payload: a plain coinbase.
            None | Some("") => None,
            Some(h) => Some(hex::decode(h).map_err(|e| field("coinbase_payload", e))?),
        };
        let mut coinbase_aux = Vec::new();
        for (key, h) in raw.coinbaseaux.iter().flatten() {
            let bytes = hex::decode(h).map_err(|e| field("coinbaseaux", format!("{key}: {e}")))?;
            coinbase_aux.extend_from_slice(&bytes);
        }
        let segwit = has_rule("segwit");
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
            format,
            required_payments,
            coinbase_payload,
            mweb,
            coinbase_aux,
        })
    }

    /// What the pool's own output receives: the coinbase value less the required payments.
    pub fn pool_value(&self) -> u64 {
        let paid = self
            .required_payments
            .iter()
            .fold(0u64, |a, p| a.saturating_add(p.amount));
        self.coinbase_value.saturating_sub(paid)
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

/// Reads Dash's `masternode`/`superblock`: an array of `{payee, script, amount}` (a single
/// object in Dash Core 0.12), `payee` being optional (burn outputs have no address).
fn parse_payments(
    name: &'static str,
    value: Option<&serde_json::Value>,
) -> Result<Vec<RequiredPayment>, TemplateError> {
    let items: Vec<serde_json::Value> = match value {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Array(a)) => a.clone(),
        Some(obj @ serde_json::Value::Object(_)) => vec![obj.clone()],
        Some(_) => return Err(field(name, "not an array of payments")),
    };
    items
        .into_iter()
        .map(|v| {
            let p: RawPayment = serde_json::from_value(v).map_err(|e| field(name, e))?;
            let script = hex::decode(&p.script).map_err(|e| field(name, e))?;
            let amount = u64::try_from(p.amount)
                .ok()
                .filter(|a| *a <= MAX_MONEY)
                .ok_or_else(|| field(name, format!("amount {} out of range", p.amount)))?;
            Ok(RequiredPayment { script, amount })
        })
        .collect()
}

/// A transaction in a chain's own format: the Bitcoin-shaped parts plus what that chain adds.
///
/// `serialize()` gives back exactly the bytes [`CoinTx::parse`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinTx {
    pub format: TxFormat,
    /// For Dash, `version` is the whole 32-bit field (`nVersion | nType << 16`).
    pub tx: Transaction,
    /// Litecoin: flagged MWEB with no MWEB body — the HogEx.
    pub hogex: bool,
    /// Dash: the special transaction's extra payload.
    pub extra_payload: Option<Vec<u8>>,
}

/// Bounds-checked reading for [`CoinTx::parse`]; counts are checked against the bytes left.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TxError> {
        if n > self.b.len() - self.pos {
            return Err(TxError::Truncated(what));
        }
        let out = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, TxError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn count(&mut self, what: &'static str, min_size: usize) -> Result<usize, TxError> {
        let rest = &self.b[self.pos..];
        let (n, used) = read_varint(rest).ok_or(if rest.is_empty() {
            TxError::Truncated(what)
        } else {
            TxError::NonCanonicalVarint(what)
        })?;
        self.pos += used;
        let remaining = self.b.len() - self.pos;
        match usize::try_from(n) {
            Ok(c) if c.saturating_mul(min_size) <= remaining => Ok(c),
            _ => Err(TxError::CountTooLarge {
                what,
                count: n,
                remaining,
            }),
        }
    }

    fn var_bytes(&mut self, what: &'static str) -> Result<Vec<u8>, TxError> {
        let n = self.count(what, 1)?;
        Ok(self.take(n, what)?.to_vec())
    }

    fn inputs(&mut self) -> Result<Vec<TxIn>, TxError> {
        let n = self.count("input count", 41)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let mut txid = [0u8; 32];
            txid.copy_from_slice(self.take(32, "input prevout txid")?);
            let vout = self.u32("input prevout index")?;
            let script_sig = self.var_bytes("input scriptSig")?;
            let sequence = self.u32("input sequence")?;
            v.push(TxIn {
                prevout: OutPoint {
                    txid: Hash256(txid),
                    vout,
                },
                script_sig,
                sequence,
                witness: Vec::new(),
            });
        }
        Ok(v)
    }

    fn outputs(&mut self) -> Result<Vec<TxOut>, TxError> {
        let n = self.count("output count", 9)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let b = self.take(8, "output value")?;
            let value = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            let script_pubkey = self.var_bytes("output scriptPubKey")?;
            v.push(TxOut {
                value,
                script_pubkey,
            });
        }
        Ok(v)
    }
}

/// Why a chain-format transaction or block cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoinTxError {
    #[error(transparent)]
    Tx(#[from] TxError),
    #[error("transaction carries an MWEB body; blocks hold MWEB data only in the extension block")]
    MwebBody,
    #[error("HogEx without outputs (Litecoin: \"Missing HogEx output\")")]
    HogExWithoutOutputs,
    #[error("MWEB extension block missing its presence byte or bytes")]
    MwebBlock,
}

const MWEB_FLAG: u8 = 0x08;

impl CoinTx {
    /// Reads one transaction from the front of `bytes`; returns it and the bytes used.
    pub fn parse_prefix(format: TxFormat, bytes: &[u8]) -> Result<(CoinTx, usize), CoinTxError> {
        let mut c = Cursor { b: bytes, pos: 0 };
        let version = c.u32("version")? as i32;
        match format {
            TxFormat::Bitcoin => {
                let (tx, used) = Transaction::parse(bytes)?;
                Ok((
                    CoinTx {
                        format,
                        tx,
                        hogex: false,
                        extra_payload: None,
                    },
                    used,
                ))
            }
            TxFormat::Dash => {
                // No segwit in Dash: an empty input list is just that (quorum commitments).
                let inputs = c.inputs()?;
                let outputs = c.outputs()?;
                let lock_time = c.u32("lock time")?;
                let tx = Transaction {
                    version,
                    inputs,
                    outputs,
                    lock_time,
                };
                let mut ctx = CoinTx {
                    format,
                    tx,
                    hogex: false,
                    extra_payload: None,
                };
                if ctx.has_dash_payload() {
                    ctx.extra_payload = Some(c.var_bytes("extra payload")?);
                }
                Ok((ctx, c.pos))
            }
            TxFormat::Mweb => {
                let mut flags = 0u8;
                let mut inputs = c.inputs()?;
                let outputs;
                if inputs.is_empty() {
                    flags = c.take(1, "flags")?[0];
                    if flags != 0 {
                        inputs = c.inputs()?;
                        outputs = c.outputs()?;
                    } else {
                        outputs = Vec::new();
                    }
                } else {
                    outputs = c.outputs()?;
                }
                if flags & 1 != 0 {
                    flags ^= 1;
                    for i in &mut inputs {
                        let n = c.count("witness item count", 1)?;
                        let mut items = Vec::with_capacity(n);
                        for _ in 0..n {
                            items.push(c.var_bytes("witness item")?);
                        }
                        i.witness = items;
                    }
                    if inputs.iter().all(|i| i.witness.is_empty()) {
                        return Err(TxError::SuperfluousWitness.into());
                    }
                }
                let mut hogex = false;
                if flags & MWEB_FLAG != 0 {
                    flags ^= MWEB_FLAG;
                    // `WrapOptionalPtr`: one presence byte, then the MWEB transaction.
                    if c.take(1, "MWEB body presence")?[0] != 0 {
                        return Err(CoinTxError::MwebBody);
                    }
                    if outputs.is_empty() {
                        return Err(CoinTxError::HogExWithoutOutputs);
                    }
                    hogex = true;
                }
                if flags != 0 {
                    return Err(TxError::UnknownFlags(flags).into());
                }
                let lock_time = c.u32("lock time")?;
                let tx = Transaction {
                    version,
                    inputs,
                    outputs,
                    lock_time,
                };
                Ok((
                    CoinTx {
                        format,
                        tx,
                        hogex,
                        extra_payload: None,
                    },
                    c.pos,
                ))
            }
        }
    }

    /// Parses exactly one transaction; trailing bytes are an error.
    pub fn parse(format: TxFormat, bytes: &[u8]) -> Result<CoinTx, CoinTxError> {
        let (tx, used) = Self::parse_prefix(format, bytes)?;
        match bytes.len() - used {
            0 => Ok(tx),
            extra => Err(TxError::TrailingBytes(extra).into()),
        }
    }

    /// Dash's `nVersion` (low 16 bits, signed).
    pub fn dash_version(&self) -> i16 {
        self.tx.version as u32 as u16 as i16
    }

    /// Dash's `nType` (high 16 bits); 0 for other formats.
    pub fn dash_type(&self) -> u16 {
        match self.format {
            TxFormat::Dash => (self.tx.version as u32 >> 16) as u16,
            _ => 0,
        }
    }

    fn has_dash_payload(&self) -> bool {
        self.format == TxFormat::Dash
            && self.dash_version() >= DASH_SPECIAL_VERSION
            && self.dash_type() != 0
    }

    /// The serialization the node uses on the wire and in blocks.
    pub fn serialize(&self) -> Vec<u8> {
        match self.format {
            TxFormat::Bitcoin => self.tx.serialize(true),
            TxFormat::Dash => self.dash_bytes(),
            TxFormat::Mweb => self.mweb_bytes(true, true),
        }
    }

    fn dash_bytes(&self) -> Vec<u8> {
        let mut out = self.tx.serialize(false);
        if let Some(p) = &self.extra_payload {
            write_varint(&mut out, p.len() as u64);
            out.extend_from_slice(p);
        }
        out
    }

    /// Litecoin's `SerializeTransaction` with or without witnesses and MWEB.
    fn mweb_bytes(&self, with_witness: bool, with_mweb: bool) -> Vec<u8> {
        let witness = with_witness && self.tx.has_witness();
        let mweb = with_mweb && self.hogex;
        if !mweb {
            return self.tx.serialize(witness);
        }
        // The witness-form serialization with the flag byte amended and the null MWEB body
        // (the single `00` byte) written just before the lock time.
        let base = self.tx.serialize(witness);
        let mut out = Vec::with_capacity(base.len() + 3);
        out.extend_from_slice(&base[..4]);
        let flags = MWEB_FLAG | u8::from(witness);
        out.extend_from_slice(&[0x00, flags]);
        let body_start = if witness { 6 } else { 4 };
        out.extend_from_slice(&base[body_start..base.len() - 4]);
        out.push(0x00);
        out.extend_from_slice(&base[base.len() - 4..]);
        out
    }

    /// The txid: Dash hashes the whole serialization; Litecoin leaves witness and MWEB out.
    pub fn txid(&self) -> Hash256 {
        match self.format {
            TxFormat::Dash => sha256d(&self.dash_bytes()),
            _ => self.tx.txid(),
        }
    }

    /// The wtxid (Litecoin: `SERIALIZE_NO_MWEB`; Dash has no witnesses, so its txid).
    pub fn wtxid(&self) -> Hash256 {
        match self.format {
            TxFormat::Dash => self.txid(),
            _ => self.tx.wtxid(),
        }
    }
}

/// A block in a chain's own format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinBlock {
    pub header: crate::tx::BlockHeader,
    pub txs: Vec<CoinTx>,
    /// Litecoin: the serialized `mw::Block` after the transactions (present byte stripped).
    pub mweb: Option<Vec<u8>>,
}

impl CoinBlock {
    /// Parses a whole block. Litecoin's `CBlock` reads the MWEB block (its presence byte, then
    /// the `mw::Block`) only when there are at least two transactions and the last is the
    /// HogEx; the MWEB block's own structure is not parsed: it runs to the end of the input.
    pub fn parse(format: TxFormat, bytes: &[u8]) -> Result<CoinBlock, CoinTxError> {
        if bytes.len() < 80 {
            return Err(TxError::Truncated("block header").into());
        }
        let mut h = [0u8; 80];
        h.copy_from_slice(&bytes[..80]);
        let header = crate::tx::BlockHeader::from_bytes(&h);
        let mut c = Cursor { b: bytes, pos: 80 };
        let n = c.count("transaction count", 10)?;
        let mut txs = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, used) = CoinTx::parse_prefix(format, &bytes[c.pos..])?;
            c.pos += used;
            txs.push(tx);
        }
        let rest = &bytes[c.pos..];
        let mweb = if format == TxFormat::Mweb && txs.len() >= 2 && txs[txs.len() - 1].hogex {
            match rest.split_first() {
                Some((1, body)) if !body.is_empty() => Some(body.to_vec()),
                _ => return Err(CoinTxError::MwebBlock),
            }
        } else if rest.is_empty() {
            None
        } else {
            return Err(TxError::TrailingBytes(rest.len()).into());
        };
        Ok(CoinBlock { header, txs, mweb })
    }

    /// The serialization `submitblock` takes.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = self.header.to_bytes().to_vec();
        write_varint(&mut out, self.txs.len() as u64);
        for t in &self.txs {
            out.extend_from_slice(&t.serialize());
        }
        if let Some(m) = &self.mweb {
            out.push(1);
            out.extend_from_slice(m);
        }
        out
    }

    pub fn txids(&self) -> Vec<Hash256> {
        self.txs.iter().map(CoinTx::txid).collect()
    }
}
