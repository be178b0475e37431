//! The JSON-RPC method table: Bitcoin Core's names, parameters, result shapes and error codes
//! for the calls a pool makes.

use std::sync::Arc;

use powerpool_core::address::{AddressKind, AddressParams, parse_address};
use powerpool_core::hash::Hash256;
use powerpool_core::target::Target;
use powerpool_core::tx::Block;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Node;
use crate::chain::{BlockEntry, Chain};

/// A JSON-RPC error object, with Bitcoin Core's codes. The message says what was wrong with
/// the call; retrying the same call gives the same error (except -28, node still starting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("RPC error {code}: {message}")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub const MISC_ERROR: i64 = -1;
    pub const TYPE_ERROR: i64 = -3;
    pub const INVALID_ADDRESS_OR_KEY: i64 = -5;
    pub const INVALID_PARAMETER: i64 = -8;
    pub const DESERIALIZATION_ERROR: i64 = -22;
    pub const IN_WARMUP: i64 = -28;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const PARSE_ERROR: i64 = -32700;

    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn deserialization(message: &str) -> Self {
        Self::new(Self::DESERIALIZATION_ERROR, message)
    }

    fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(Self::INVALID_PARAMETER, message)
    }

    fn type_error(message: impl Into<String>) -> Self {
        Self::new(Self::TYPE_ERROR, message)
    }
}

/// Positional (array) or named (object) parameters, as Core accepts both.
struct Params<'a>(&'a Value);

impl Params<'_> {
    fn get(&self, index: usize, name: &str) -> Option<&Value> {
        let v = match self.0 {
            Value::Array(a) => a.get(index),
            Value::Object(o) => o.get(name),
            _ => None,
        };
        v.filter(|v| !v.is_null())
    }

    fn str(&self, index: usize, name: &str) -> Result<&str, RpcError> {
        match self.get(index, name) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(RpcError::type_error(format!("{name} must be a string"))),
            None => Err(RpcError::new(
                RpcError::MISC_ERROR,
                format!("missing required parameter {name}"),
            )),
        }
    }

    fn int(&self, index: usize, name: &str) -> Result<Option<i64>, RpcError> {
        match self.get(index, name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| RpcError::type_error(format!("{name} must be an integer"))),
        }
    }

    fn hash(&self, index: usize, name: &str) -> Result<Hash256, RpcError> {
        let s = self.str(index, name)?;
        if s.len() != 64 {
            return Err(RpcError::invalid_parameter(format!(
                "{name} must be of length 64 (not {}, for '{s}')",
                s.len()
            )));
        }
        Hash256::from_display_hex(s).map_err(|_| {
            RpcError::invalid_parameter(format!("{name} must be hexadecimal string (not '{s}')"))
        })
    }
}

const SEGWIT_REQUIRED: &str = "getblocktemplate must be called with the segwit rule set (call with {\"rules\": [\"segwit\"]})";

/// Runs one call. Only `getblocktemplate` with a `longpollid` ever waits.
pub(crate) async fn dispatch(
    node: &Arc<Node>,
    method: &str,
    params: &Value,
) -> Result<Value, RpcError> {
    if let Some(reply) = crate::aux::dispatch(node, method, params) {
        return reply;
    }
    let p = Params(params);
    match method {
        "getblocktemplate" => getblocktemplate(node, &p).await,
        "submitblock" => {
            let hex = p.str(0, "hexdata")?;
            Ok(node
                .submit_block_hex(hex)?
                .map_or(Value::Null, Value::String))
        }
        "getbestblockhash" => Ok(json!(node.tip().hash.to_display_hex())),
        "getblockcount" => Ok(json!(node.tip().height)),
        "getblockhash" => {
            let h = p.int(0, "height")?.ok_or_else(|| {
                RpcError::new(RpcError::MISC_ERROR, "missing required parameter height")
            })?;
            u64::try_from(h)
                .ok()
                .and_then(|h| node.block_hash(h))
                .map(|hash| json!(hash.to_display_hex()))
                .ok_or_else(|| RpcError::invalid_parameter("Block height out of range"))
        }
        "getblockheader" => {
            let hash = p.hash(0, "blockhash")?;
            let verbose = p
                .get(1, "verbose")
                .is_none_or(|v| v.as_bool().unwrap_or(true));
            node.with_chain(|c| {
                let e = c.block(&hash).ok_or_else(block_not_found)?;
                Ok(if verbose {
                    Value::Object(header_json(c, e))
                } else {
                    json!(hex::encode(e.block.header.to_bytes()))
                })
            })
        }
        "getblock" => {
            let hash = p.hash(0, "blockhash")?;
            let verbosity = match p.get(1, "verbosity") {
                None => 1,
                Some(Value::Bool(b)) => i64::from(*b),
                Some(v) => v
                    .as_i64()
                    .ok_or_else(|| RpcError::type_error("verbosity must be an integer"))?,
            };
            node.with_chain(|c| {
                let e = c.block(&hash).ok_or_else(block_not_found)?;
                Ok(block_json(c, e, verbosity))
            })
        }
        "getblockchaininfo" => node.with_chain(|c| {
            let e = c.tip_entry();
            Ok(json!({
                "chain": "regtest",
                "blocks": e.height,
                "headers": e.height,
                "bestblockhash": e.hash.to_display_hex(),
                "bits": format!("{:08x}", c.params().bits),
                "target": c.target().to_be_hex(),
                "difficulty": difficulty(c),
                "time": e.block.header.time,
                "mediantime": e.median_time_past,
                "verificationprogress": 1,
                "initialblockdownload": false,
                "chainwork": chainwork_hex(e),
                "size_on_disk": 0,
                "pruned": false,
                "warnings": [],
            }))
        }),
        "getnetworkinfo" => Ok(json!({
            "version": 290000,
            "subversion": format!("/powerpool-node:{}/", env!("CARGO_PKG_VERSION")),
            "protocolversion": 70016,
            "localservices": "0000000000000409",
            "localservicesnames": ["NETWORK", "WITNESS", "NETWORK_LIMITED"],
            "localrelay": true,
            "timeoffset": 0,
            "networkactive": true,
            "connections": 0,
            "connections_in": 0,
            "connections_out": 0,
            "networks": [],
            "relayfee": 0.00001,
            "incrementalfee": 0.00001,
            "localaddresses": [],
            "warnings": [],
        })),
        "getmininginfo" => node.with_chain(|c| {
            Ok(json!({
                "blocks": c.height(),
                "bits": format!("{:08x}", c.params().bits),
                "difficulty": difficulty(c),
                "target": c.target().to_be_hex(),
                "networkhashps": network_hashps(c),
                "pooledtx": c.mempool_len(),
                "chain": "regtest",
                "warnings": [],
            }))
        }),
        "getdifficulty" => node.with_chain(|c| Ok(json!(difficulty(c)))),
        "getrawmempool" => node.with_chain(|c| {
            Ok(json!(
                c.mempool()
                    .map(|t| t.txid.to_display_hex())
                    .collect::<Vec<_>>()
            ))
        }),
        "getchaintips" => node.with_chain(|c| {
            Ok(json!(
                c.chain_tips()
                    .into_iter()
                    .map(|(height, hash, branchlen, status)| json!({
                        "height": height,
                        "hash": hash.to_display_hex(),
                        "branchlen": branchlen,
                        "status": status,
                    }))
                    .collect::<Vec<_>>()
            ))
        }),
        "getconnectioncount" => Ok(json!(0)),
        "validateaddress" => Ok(validate_address(p.str(0, "address")?)),
        "uptime" => Ok(json!(node.uptime())),
        _ => Err(RpcError::new(
            RpcError::METHOD_NOT_FOUND,
            "Method not found",
        )),
    }
}

fn block_not_found() -> RpcError {
    RpcError::new(RpcError::INVALID_ADDRESS_OR_KEY, "Block not found")
}

async fn getblocktemplate(node: &Arc<Node>, p: &Params<'_>) -> Result<Value, RpcError> {
    let request = match p.get(0, "template_request") {
        None => Value::Object(Default::default()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err(RpcError::type_error("template_request must be an object")),
    };
    let mode = match request.get("mode") {
        None | Some(Value::Null) => "template",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(RpcError::invalid_parameter("Invalid mode")),
    };
    if mode == "proposal" {
        let Some(Value::String(data)) = request.get("data") else {
            return Err(RpcError::type_error("Missing data String key for proposal"));
        };
        let block = hex::decode(data)
            .ok()
            .and_then(|b| Block::parse(&b).ok())
            .ok_or_else(|| RpcError::deserialization("Block decode failed"))?;
        let now = node.now();
        return Ok(node
            .with_chain(|c| c.check_proposal(&block, now))
            .err()
            .map_or(Value::Null, |e| Value::String(e.as_bip22())));
    }
    if mode != "template" {
        return Err(RpcError::invalid_parameter("Invalid mode"));
    }
    let segwit = request
        .get("rules")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|x| x.as_str() == Some("segwit")));
    if !segwit {
        return Err(RpcError::invalid_parameter(SEGWIT_REQUIRED));
    }
    if let Some(lp) = request.get("longpollid") {
        let lp = lp
            .as_str()
            .ok_or_else(|| RpcError::type_error("longpollid must be a string"))?;
        // The id is the watched tip followed by an update counter; only a tip change (or the
        // timeout) ends the wait.
        if let Some(Ok(watched)) = lp.get(..64).map(Hash256::from_display_hex) {
            let mut rx = node.tip_watch.subscribe();
            let wait = rx.wait_for(|tip| *tip != watched);
            let _ = tokio::time::timeout(node.config.longpoll_timeout, wait).await;
        }
    }
    serde_json::to_value(node.template())
        .map_err(|e| RpcError::new(RpcError::MISC_ERROR, e.to_string()))
}

fn difficulty(c: &Chain) -> f64 {
    c.target().difficulty(&Target::SHA256D_DIFF1)
}

fn chainwork_hex(e: &BlockEntry) -> String {
    hex::encode(e.chainwork.to_be_bytes::<32>())
}

/// Work per second over the last 120 blocks, as Core's `getnetworkhashps` default.
fn network_hashps(c: &Chain) -> f64 {
    let tip = c.tip_entry();
    let back = tip.height.min(120);
    if back == 0 {
        return 0.0;
    }
    let Some(start) = c.block_hash(tip.height - back).and_then(|h| c.block(&h)) else {
        return 0.0;
    };
    let span = i64::from(tip.block.header.time) - i64::from(start.block.header.time);
    if span <= 0 {
        return 0.0;
    }
    let work = tip.chainwork - start.chainwork;
    let work_f: f64 = work
        .as_limbs()
        .iter()
        .rev()
        .fold(0.0, |acc, l| acc * 2f64.powi(64) + *l as f64);
    work_f / span as f64
}

fn header_json(c: &Chain, e: &BlockEntry) -> serde_json::Map<String, Value> {
    let h = &e.block.header;
    let mut m = serde_json::Map::new();
    m.insert("hash".into(), json!(e.hash.to_display_hex()));
    m.insert("confirmations".into(), json!(c.confirmations(&e.hash)));
    m.insert("height".into(), json!(e.height));
    m.insert("version".into(), json!(h.version));
    m.insert("versionHex".into(), json!(format!("{:08x}", h.version)));
    m.insert("merkleroot".into(), json!(h.merkle_root.to_display_hex()));
    m.insert("time".into(), json!(h.time));
    m.insert("mediantime".into(), json!(e.median_time_past));
    m.insert("nonce".into(), json!(h.nonce));
    m.insert("bits".into(), json!(format!("{:08x}", h.bits)));
    m.insert("target".into(), json!(c.target().to_be_hex()));
    m.insert("difficulty".into(), json!(difficulty(c)));
    m.insert("chainwork".into(), json!(chainwork_hex(e)));
    m.insert("nTx".into(), json!(e.block.txs.len()));
    if e.height > 0 {
        m.insert(
            "previousblockhash".into(),
            json!(h.prev_blockhash.to_display_hex()),
        );
    }
    if c.is_active(&e.hash)
        && let Some(next) = c.block_hash(e.height + 1)
    {
        m.insert("nextblockhash".into(), json!(next.to_display_hex()));
    }
    m
}

fn block_json(c: &Chain, e: &BlockEntry, verbosity: i64) -> Value {
    if verbosity <= 0 {
        return json!(hex::encode(e.block.serialize()));
    }
    let mut m = header_json(c, e);
    m.insert("strippedsize".into(), json!(e.stripped_size));
    m.insert("size".into(), json!(e.size));
    m.insert("weight".into(), json!(e.weight));
    let txs: Vec<Value> = e
        .block
        .txs
        .iter()
        .map(|tx| {
            if verbosity == 1 {
                json!(tx.txid().to_display_hex())
            } else {
                let size = tx.serialize(true).len();
                let weight = tx.weight();
                json!({
                    "txid": tx.txid().to_display_hex(),
                    "hash": tx.wtxid().to_display_hex(),
                    "version": tx.version,
                    "size": size,
                    "vsize": weight.div_ceil(4),
                    "weight": weight,
                    "locktime": tx.lock_time,
                    "hex": hex::encode(tx.serialize(true)),
                })
            }
        })
        .collect();
    m.insert("tx".into(), Value::Array(txs));
    Value::Object(m)
}

fn validate_address(addr: &str) -> Value {
    match parse_address(addr, &AddressParams::REGTEST) {
        Ok(a) => {
            let spk = &a.script_pubkey;
            let mut m = serde_json::Map::new();
            m.insert("isvalid".into(), json!(true));
            m.insert("address".into(), json!(addr));
            m.insert("scriptPubKey".into(), json!(hex::encode(spk)));
            m.insert(
                "isscript".into(),
                json!(matches!(a.kind, AddressKind::P2sh | AddressKind::P2wsh)),
            );
            let witness = !matches!(a.kind, AddressKind::P2pkh | AddressKind::P2sh);
            m.insert("iswitness".into(), json!(witness));
            if witness && spk.len() >= 2 {
                let version = if spk[0] == 0 { 0 } else { spk[0] - 0x50 };
                m.insert("witness_version".into(), json!(version));
                m.insert("witness_program".into(), json!(hex::encode(&spk[2..])));
            }
            Value::Object(m)
        }
        Err(e) => json!({
            "isvalid": false,
            "error_locations": [],
            "error": e.to_string(),
        }),
    }
}
