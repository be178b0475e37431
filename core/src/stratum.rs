//! Stratum v1 wire codec: request parsing and byte-exact reply/notification rendering.
//!
//! Sans-IO: [`parse_request`] takes one line (as produced by
//! [`LineReader`](crate::framing::LineReader)) and the `write_*` functions append one
//! `\n`-terminated line to a caller-owned buffer, so a connection can reuse one allocation.
//!
//! # Guarantees
//!
//! * **No input panics.** Any bytes give either a [`Request`] or a [`ParseError`] carrying
//!   the request id whenever one could be recovered, so every bad request can be answered
//!   with an error reply. (The Python PowerPool raised inside handlers on short params,
//!   non-string passwords, JSON arrays and the like and sent no reply at all; here those are
//!   [`ParseErrorKind::BadParams`] and friends.)
//! * **Ids echo back byte for byte.** [`Id`] keeps the exact JSON text of the id a miner
//!   sent, so a reply carries it unchanged: `1.50`, `1e2`, integers beyond 64 bits and beyond
//!   what a double holds, and strings with their escapes as written. (Decoding a number and
//!   printing it again gave `1e+40` for `10**40`.)
//! * **Fixed output.** Compact JSON with a fixed key order (`id` first), strings escaped per
//!   RFC 8259, one line per call. The output is a pure function of the arguments. The
//!   original wrote `error` first (Python dict order) and a spaced subscribe reply; miners
//!   parse JSON rather than match bytes, so the conventional `id, result, error` order is used.
//!
//! # Parsing rules
//!
//! * Method names are matched ASCII case-insensitively (`MINING.SUBMIT` works, as in the
//!   original); [`Method::Unknown`] keeps the name as sent.
//! * Missing or `null` params mean `[]`; surplus params are ignored.
//! * A missing id is [`Id::Null`]. The original substituted `1`; a notification-style
//!   request has no id to echo, and `null` is what JSON-RPC prescribes for that. Likewise a
//!   line that is not JSON is answered with id `null` (the original used `1`).
//! * `mining.authorize` with a single parameter is a username with no password. The original
//!   discarded the username in that case and credited the donation address.
//! * Known methods check the types of the params they use: a number where a string is
//!   expected, a `null` password or too few params is [`ParseErrorKind::BadParams`] with a
//!   detail naming the offending position. Field contents (hex, lengths, ranges) are left to
//!   the session, which validates them in its own order.

use std::fmt;

use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};
use thiserror::Error;

/// A JSON-RPC request id, kept as the exact JSON text received so replies echo it byte for
/// byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    /// `null`, or no id at all.
    Null,
    /// An unsigned integer written plainly (digits only, no leading zero): what miners send,
    /// kept without an allocation. Its text is exactly what it was sent as.
    Int(u64),
    /// Any other number: its JSON text as sent (e.g. `1.50`, `-3`, `1e400`).
    Number(Box<str>),
    /// A string id: its JSON text as sent, quotes and escapes included (e.g. `"a\u0041"`).
    String(Box<str>),
}

impl Id {
    /// A numeric id (for callers that make requests).
    pub fn number(n: u64) -> Id {
        Id::Int(n)
    }

    /// A string id, escaped as this codec writes strings.
    pub fn string(s: &str) -> Id {
        let mut out = Vec::with_capacity(s.len() + 2);
        push_json_str(&mut out, s);
        Id::String(String::from_utf8_lossy(&out).into())
    }

    /// The id's JSON text.
    pub fn as_json(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Id::Null => "null".into(),
            Id::Int(n) => n.to_string().into(),
            Id::Number(t) | Id::String(t) => (&**t).into(),
        }
    }

    /// From a member's raw JSON text; `None` for a type an id cannot have.
    fn from_raw(raw: Option<&RawValue>) -> Option<Id> {
        let Some(raw) = raw else {
            return Some(Id::Null);
        };
        let t = raw.get();
        match t.as_bytes().first() {
            Some(b'n') => Some(Id::Null),
            Some(b'"') => Some(Id::String(t.into())),
            Some(b'0'..=b'9')
                if (t.len() == 1 || !t.starts_with('0'))
                    && t.bytes().all(|b| b.is_ascii_digit()) =>
            {
                // Plain digits beyond u64 keep their text.
                Some(t.parse().map_or_else(|_| Id::Number(t.into()), Id::Int))
            }
            Some(b'-' | b'0'..=b'9') => Some(Id::Number(t.into())),
            _ => None,
        }
    }
}

/// One parsed stratum request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echo this in the reply.
    pub id: Id,
    /// What the miner asked for.
    pub method: Method,
}

/// The stratum methods the pool understands, with their typed params.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// `mining.subscribe [user_agent?, session_id?, ...]`.
    Subscribe {
        /// The miner's software name, shown in monitoring.
        user_agent: Option<String>,
        /// A previous extranonce1 the miner would like back.
        session_id: Option<String>,
    },
    /// `mining.authorize [username, password?]`.
    Authorize {
        /// `address[.worker]`.
        username: String,
        /// Password field; carries per-connection options.
        password: Option<String>,
    },
    /// `mining.submit [worker, job_id, extranonce2, ntime, nonce, version_bits?]`.
    Submit(Submit),
    /// `mining.configure [extensions, params]` (BIP310).
    Configure {
        /// Requested extension names, e.g. `version-rolling`.
        extensions: Vec<String>,
        /// Extension parameters, e.g. `version-rolling.mask`.
        params: Map<String, Value>,
    },
    /// `mining.suggest_difficulty [difficulty]`; always finite and positive.
    SuggestDifficulty {
        /// The difficulty the miner would like.
        difficulty: f64,
    },
    /// `mining.suggest_target [target_hex]`; the hex is not checked here.
    SuggestTarget {
        /// The target as sent.
        target: String,
    },
    /// `mining.extranonce.subscribe`.
    ExtranonceSubscribe,
    /// `mining.get_transactions`.
    GetTransactions,
    /// Any other method name; answer with error 20.
    Unknown {
        /// The method name exactly as sent.
        method: String,
    },
}

/// `mining.submit` params as raw strings; the session checks them in its own order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    /// Worker name as sent: names which of the connection's authorized workers is credited
    /// (with a single worker, any name credits it).
    pub worker: String,
    /// Job id as sent by the pool in `mining.notify`.
    pub job_id: String,
    /// Hex extranonce2.
    pub extranonce2: String,
    /// Hex ntime.
    pub ntime: String,
    /// Hex nonce.
    pub nonce: String,
    /// Hex version bits when version rolling is in use.
    pub version_bits: Option<String>,
}

/// A line that could not be turned into a [`Request`].
///
/// Reply with `write_error(out, &err.id, ErrorCode::Other.code(), &err.message())` (or
/// [`ParseError::write_reply`]) and keep the connection: the framing is intact.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind}")]
pub struct ParseError {
    /// The request id if the line was an object with a usable id, else [`Id::Null`].
    pub id: Id,
    /// What was wrong.
    pub kind: ParseErrorKind,
}

/// Why a line was rejected. Every variant is answered with error 20 and the connection kept.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseErrorKind {
    /// Not valid JSON (or not UTF-8).
    #[error("invalid JSON")]
    NotJson,
    /// Valid JSON, but not an object.
    #[error("request must be a JSON object")]
    NotAnObject,
    /// The `id` is neither a string, a number nor null.
    #[error("id must be a string, a number or null")]
    BadId,
    /// No `method` member.
    #[error("missing method")]
    MissingMethod,
    /// `method` is not a string.
    #[error("method must be a string")]
    MethodNotString,
    /// `params` is neither an array nor null for a known method.
    #[error("{method}: params must be an array")]
    ParamsNotArray {
        /// Canonical method name.
        method: &'static str,
    },
    /// A param of a known method is missing or has the wrong type or value.
    #[error("{method}: {detail}")]
    BadParams {
        /// Canonical method name.
        method: &'static str,
        /// Which param and what was expected.
        detail: String,
    },
}

impl ParseError {
    /// A short human-readable message for the stratum error reply.
    #[must_use]
    pub fn message(&self) -> String {
        self.kind.to_string()
    }

    /// Appends the error-20 reply for this error.
    pub fn write_reply(&self, out: &mut Vec<u8>) {
        write_error(out, &self.id, ErrorCode::Other.code(), &self.message());
    }
}

/// Stratum error codes, as used by the original pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    /// Anything else, including malformed requests and unknown methods.
    Other = 20,
    /// The job id is unknown or no longer valid.
    StaleJob = 21,
    /// The share was already accepted.
    Duplicate = 22,
    /// The share does not meet the connection's difficulty.
    LowDifficulty = 23,
    /// The connection is not (or already) authorized.
    Unauthorized = 24,
    /// The connection has not subscribed.
    NotSubscribed = 25,
}

impl ErrorCode {
    /// The numeric code on the wire.
    #[must_use]
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The message the original pool sent with this code.
    #[must_use]
    pub fn default_message(self) -> &'static str {
        match self {
            Self::Other => "Other/Unknown",
            Self::StaleJob => "Job not found (=stale)",
            Self::Duplicate => "Duplicate share",
            Self::LowDifficulty => "Low difficulty share",
            Self::Unauthorized => "Unauthorized worker",
            Self::NotSubscribed => "Not subscribed",
        }
    }
}

const SUBSCRIBE: &str = "mining.subscribe";
const AUTHORIZE: &str = "mining.authorize";
const SUBMIT: &str = "mining.submit";
const CONFIGURE: &str = "mining.configure";
const SUGGEST_DIFFICULTY: &str = "mining.suggest_difficulty";
const SUGGEST_TARGET: &str = "mining.suggest_target";
const EXTRANONCE_SUBSCRIBE: &str = "mining.extranonce.subscribe";
const GET_TRANSACTIONS: &str = "mining.get_transactions";

/// Parses one line (without its terminator) into a request. Never panics.
pub fn parse_request(line: &[u8]) -> Result<Request, ParseError> {
    let fail = |id: &Id, kind| ParseError {
        id: id.clone(),
        kind,
    };
    // Well-formed requests (the share path) deserialize straight into the three members they
    // use, without building a map of the whole object; anything else takes the general path
    // below, which also tells apart the ways a line can be wrong.
    // (Serde would also read a JSON array into the struct by position: objects only.)
    let is_object = line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let fast = if is_object {
        serde_json::from_slice::<Envelope<'_>>(line).ok()
    } else {
        None
    };
    let (id, method, params) = match fast {
        Some(e) => (Id::from_raw(e.id), e.method, e.params),
        None => {
            let value: Value = serde_json::from_slice(line)
                .map_err(|_| fail(&Id::Null, ParseErrorKind::NotJson))?;
            let Value::Object(mut obj) = value else {
                return Err(fail(&Id::Null, ParseErrorKind::NotAnObject));
            };
            // The id's text, read again from the line (the map above holds decoded values).
            // An object serde cannot read as one (a repeated member) has its last id.
            let id = match serde_json::from_slice::<IdOnly<'_>>(line) {
                Ok(i) => Id::from_raw(i.id),
                Err(_) => match obj.get("id") {
                    None | Some(Value::Null) => Some(Id::Null),
                    Some(v @ Value::Number(_)) => Some(Id::Number(v.to_string().into())),
                    Some(v @ Value::String(_)) => Some(Id::String(v.to_string().into())),
                    Some(_) => None,
                },
            };
            (id, obj.remove("method"), obj.remove("params"))
        }
    };
    let Some(id) = id else {
        return Err(fail(&Id::Null, ParseErrorKind::BadId));
    };
    let name = match method {
        None => return Err(fail(&id, ParseErrorKind::MissingMethod)),
        Some(Value::String(s)) => s,
        Some(_) => return Err(fail(&id, ParseErrorKind::MethodNotString)),
    };
    let Some(canonical) = canonical_method(&name) else {
        return Ok(Request {
            id,
            method: Method::Unknown { method: name },
        });
    };
    let params = match params {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(fail(
                &id,
                ParseErrorKind::ParamsNotArray { method: canonical },
            ));
        }
    };
    match parse_method(canonical, params) {
        Ok(method) => Ok(Request { id, method }),
        Err(detail) => Err(fail(
            &id,
            ParseErrorKind::BadParams {
                method: canonical,
                detail,
            },
        )),
    }
}

/// The members of a request object the pool reads; others are ignored.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    method: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    params: Option<Value>,
}

/// The id member alone, as raw text.
#[derive(serde::Deserialize)]
struct IdOnly<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
}

/// A member that is present is `Some`, even when it is `null` (`"method": null` is a wrong
/// type, not a missing method).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(d).map(Some)
}

fn canonical_method(name: &str) -> Option<&'static str> {
    [
        SUBSCRIBE,
        AUTHORIZE,
        SUBMIT,
        CONFIGURE,
        SUGGEST_DIFFICULTY,
        SUGGEST_TARGET,
        EXTRANONCE_SUBSCRIBE,
        GET_TRANSACTIONS,
    ]
    .into_iter()
    .find(|m| m.eq_ignore_ascii_case(name))
}

/// Takes params out by position so strings move instead of being copied.
struct Params {
    items: std::vec::IntoIter<Value>,
    position: usize,
}

impl Params {
    fn next(&mut self) -> Option<Value> {
        self.position += 1;
        self.items.next()
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let index = self.position;
        match self.next() {
            Some(Value::String(s)) => Ok(s),
            None => Err(format!("missing param {index} ({what})")),
            Some(other) => Err(format!(
                "param {index} ({what}) must be a string, got {}",
                type_name(&other)
            )),
        }
    }

    /// `Ok(None)` only when the param is absent; `null` is a type error.
    fn optional_string(&mut self, what: &str) -> Result<Option<String>, String> {
        let index = self.position;
        match self.next() {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "param {index} ({what}) must be a string, got {}",
                type_name(&other)
            )),
        }
    }

    /// Absent and `null` are both `None`, for params miners commonly send as `null`.
    fn nullable_string(&mut self, what: &str) -> Result<Option<String>, String> {
        let index = self.position;
        match self.next() {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "param {index} ({what}) must be a string or null, got {}",
                type_name(&other)
            )),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_method(canonical: &'static str, params: Vec<Value>) -> Result<Method, String> {
    let mut p = Params {
        items: params.into_iter(),
        position: 0,
    };
    Ok(match canonical {
        SUBSCRIBE => Method::Subscribe {
            user_agent: p.nullable_string("user agent")?,
            session_id: p.nullable_string("session id")?,
        },
        AUTHORIZE => Method::Authorize {
            username: p.string("username")?,
            password: p.optional_string("password")?,
        },
        SUBMIT => Method::Submit(Submit {
            worker: p.string("worker name")?,
            job_id: p.string("job id")?,
            extranonce2: p.string("extranonce2")?,
            ntime: p.string("ntime")?,
            nonce: p.string("nonce")?,
            version_bits: p.optional_string("version bits")?,
        }),
        CONFIGURE => {
            let extensions = match p.next() {
                Some(Value::Array(items)) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s),
                        other => Err(format!(
                            "extension {i} must be a string, got {}",
                            type_name(&other)
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                None => return Err("missing param 0 (extension list)".to_owned()),
                Some(other) => {
                    return Err(format!(
                        "param 0 (extension list) must be an array, got {}",
                        type_name(&other)
                    ));
                }
            };
            let params = match p.next() {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m,
                Some(other) => {
                    return Err(format!(
                        "param 1 (extension params) must be an object, got {}",
                        type_name(&other)
                    ));
                }
            };
            Method::Configure { extensions, params }
        }
        SUGGEST_DIFFICULTY => {
            let difficulty = match p.next() {
                Some(Value::Number(n)) => n.as_f64(),
                None => return Err("missing param 0 (difficulty)".to_owned()),
                Some(other) => {
                    return Err(format!(
                        "param 0 (difficulty) must be a number, got {}",
                        type_name(&other)
                    ));
                }
            };
            match difficulty {
                Some(d) if d.is_finite() && d > 0.0 => Method::SuggestDifficulty { difficulty: d },
                _ => return Err("param 0 (difficulty) must be finite and positive".to_owned()),
            }
        }
        SUGGEST_TARGET => Method::SuggestTarget {
            target: p.string("target")?,
        },
        EXTRANONCE_SUBSCRIBE => Method::ExtranonceSubscribe,
        GET_TRANSACTIONS => Method::GetTransactions,
        // `canonical_method` only returns the names matched above.
        other => Method::Unknown {
            method: other.to_owned(),
        },
    })
}

// ---------------------------------------------------------------------------------------
// Writers

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..i]);
        run_start = i + 1;
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

fn push_id(out: &mut Vec<u8>, id: &Id) {
    match id {
        Id::Null => out.extend_from_slice(b"null"),
        Id::Int(n) => {
            use std::io::Write;
            let _ = write!(out, "{n}");
        }
        Id::Number(t) | Id::String(t) => out.extend_from_slice(t.as_bytes()),
    }
}

fn push_hex_u32(out: &mut Vec<u8>, v: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for shift in (0..8).rev() {
        out.push(HEX[((v >> (shift * 4)) & 0xf) as usize]);
    }
    out.push(b'"');
}

fn push_usize(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(v.to_string().as_bytes());
}

/// `{"id":ID,"result":true,"error":null}`
pub fn write_result_true(out: &mut Vec<u8>, id: &Id) {
    write_result_raw(out, id, "true");
}

/// `{"id":ID,"result":RAW,"error":null}` with `raw_json` inserted unchanged.
///
/// `raw_json` must be valid JSON produced by the pool; it is not checked.
pub fn write_result_raw(out: &mut Vec<u8>, id: &Id, raw_json: &str) {
    out.extend_from_slice(b"{\"id\":");
    push_id(out, id);
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(raw_json.as_bytes());
    out.extend_from_slice(b",\"error\":null}\n");
}

/// `{"id":ID,"result":null,"error":[CODE,"MESSAGE",null]}`
pub fn write_error(out: &mut Vec<u8>, id: &Id, code: i32, message: &str) {
    out.extend_from_slice(b"{\"id\":");
    push_id(out, id);
    out.extend_from_slice(b",\"result\":null,\"error\":[");
    out.extend_from_slice(code.to_string().as_bytes());
    out.push(b',');
    push_json_str(out, message);
    out.extend_from_slice(b",null]}\n");
}

/// [`write_error`] with the code's default message.
pub fn write_error_code(out: &mut Vec<u8>, id: &Id, code: ErrorCode) {
    write_error(out, id, code.code(), code.default_message());
}

/// `{"id":ID,"result":[[["mining.set_difficulty","SUB"],["mining.notify","SUB"]],"EN1",N],"error":null}`
pub fn write_subscribe_result(
    out: &mut Vec<u8>,
    id: &Id,
    subscription_id: &str,
    extranonce1_hex: &str,
    extranonce2_size: usize,
) {
    out.extend_from_slice(b"{\"id\":");
    push_id(out, id);
    out.extend_from_slice(b",\"result\":[[[\"mining.set_difficulty\",");
    push_json_str(out, subscription_id);
    out.extend_from_slice(b"],[\"mining.notify\",");
    push_json_str(out, subscription_id);
    out.extend_from_slice(b"]],");
    push_json_str(out, extranonce1_hex);
    out.push(b',');
    push_usize(out, extranonce2_size);
    out.extend_from_slice(b"],\"error\":null}\n");
}

/// `{"id":null,"method":"mining.set_difficulty","params":[D]}` with D from
/// [`format_difficulty`].
pub fn write_set_difficulty(out: &mut Vec<u8>, difficulty: f64) {
    out.extend_from_slice(b"{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[");
    out.extend_from_slice(format_difficulty(difficulty).as_bytes());
    out.extend_from_slice(b"]}\n");
}

/// `{"id":null,"method":"mining.set_extranonce","params":["EN1",N]}`
pub fn write_set_extranonce(out: &mut Vec<u8>, extranonce1_hex: &str, extranonce2_size: usize) {
    out.extend_from_slice(b"{\"id\":null,\"method\":\"mining.set_extranonce\",\"params\":[");
    push_json_str(out, extranonce1_hex);
    out.push(b',');
    push_usize(out, extranonce2_size);
    out.extend_from_slice(b"]}\n");
}

/// `{"id":null,"method":"mining.set_version_mask","params":["1fffe000"]}`
pub fn write_set_version_mask(out: &mut Vec<u8>, mask: u32) {
    out.extend_from_slice(b"{\"id\":null,\"method\":\"mining.set_version_mask\",\"params\":[");
    push_hex_u32(out, mask);
    out.extend_from_slice(b"]}\n");
}

/// Renders a difficulty as a JSON number.
///
/// Integral values below 2^63 in magnitude are written as integers (`128`, not `128.0`,
/// matching the original's Python ints); everything else in shortest round-trip form
/// (`0.5`, `0.0001`, `1e-10`). The result is always valid JSON: NaN becomes `0` and
/// infinities become `±1.7976931348623157e+308`, since a miner cannot parse `NaN`/`inf`.
#[must_use]
pub fn format_difficulty(d: f64) -> String {
    let d = if d.is_nan() {
        0.0
    } else {
        d.clamp(f64::MIN, f64::MAX)
    };
    if d.fract() == 0.0 && d.abs() < 9_223_372_036_854_775_808.0 {
        // Exact: integral and within i64 range.
        let i = d as i64;
        return i.to_string();
    }
    match Number::from_f64(d) {
        Some(n) => n.to_string(),
        None => "0".to_owned(),
    }
}

/// The fields of a `mining.notify`, already in wire form except the three integers.
#[derive(Debug, Clone, Copy)]
pub struct NotifyParams<'a> {
    /// Per-connection job id.
    pub job_id: &'a str,
    /// Previous block hash in stratum word order, hex.
    pub prevhash_hex: &'a str,
    /// Coinbase part before the extranonces, hex.
    pub coinb1_hex: &'a str,
    /// Coinbase part after the extranonces, hex.
    pub coinb2_hex: &'a str,
    /// Merkle branch hashes, hex.
    pub merkle_branch_hex: &'a [String],
    /// Block version, written as 8 hex digits.
    pub version: u32,
    /// Compact target, written as 8 hex digits.
    pub nbits: u32,
    /// Block time, written as 8 hex digits.
    pub ntime: u32,
    /// Whether the miner must drop all earlier jobs.
    pub clean_jobs: bool,
}

/// `{"id":null,"method":"mining.notify","params":["JOB","PREV","CB1","CB2",[...],"VER","BITS","TIME",CLEAN]}`
pub fn write_notify(out: &mut Vec<u8>, p: &NotifyParams<'_>) {
    out.extend_from_slice(b"{\"id\":null,\"method\":\"mining.notify\",\"params\":[");
    for s in [p.job_id, p.prevhash_hex, p.coinb1_hex, p.coinb2_hex] {
        push_json_str(out, s);
        out.push(b',');
    }
    out.push(b'[');
    for (i, h) in p.merkle_branch_hex.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, h);
    }
    out.extend_from_slice(b"],");
    for v in [p.version, p.nbits, p.ntime] {
        push_hex_u32(out, v);
        out.push(b',');
    }
    out.extend_from_slice(if p.clean_jobs {
        b"true]}\n"
    } else {
        b"false]}\n"
    });
}

impl fmt::Display for Id {
    /// The id as it appears on the wire.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        push_id(&mut out, self);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_control_and_quote_characters() {
        let mut out = Vec::new();
        push_json_str(&mut out, "a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}é/\u{7f}");
        assert_eq!(
            s(&out),
            r#""a\"b\\c\n\r\t\b\f\u0001\u001fé/"#.to_owned() + "\u{7f}\""
        );
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, "a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}é/\u{7f}");
    }

    #[test]
    fn numeric_ids_echo_their_text() {
        for text in [
            "1",
            "0",
            "-3",
            "1.5",
            "1.0",
            "18446744073709551615",
            "-9223372036854775808",
            "0.1",
        ] {
            let line = format!(r#"{{"id":{text},"method":"mining.extranonce.subscribe"}}"#);
            let req = parse_request(line.as_bytes()).unwrap();
            let mut out = Vec::new();
            write_result_true(&mut out, &req.id);
            assert_eq!(
                s(&out),
                format!("{{\"id\":{text},\"result\":true,\"error\":null}}\n")
            );
        }
    }

    #[test]
    fn hex_u32_is_zero_padded_lowercase() {
        let mut out = Vec::new();
        push_hex_u32(&mut out, 0x0000_00ab);
        push_hex_u32(&mut out, 0xDEAD_BEEF);
        assert_eq!(s(&out), "\"000000ab\"\"deadbeef\"");
    }

    #[test]
    fn canonical_method_matches_any_case_only_whole_names() {
        assert_eq!(canonical_method("MINING.SUBMIT"), Some(SUBMIT));
        assert_eq!(
            canonical_method("Mining.Extranonce.Subscribe"),
            Some(EXTRANONCE_SUBSCRIBE)
        );
        assert_eq!(canonical_method("mining.submit "), None);
        assert_eq!(canonical_method("mining.submi"), None);
    }
}
