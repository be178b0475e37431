//! JSON-RPC to coinservers, over a small transport trait.
//!
//! Request building, reply parsing and authentication live here and know nothing of the HTTP
//! library: [`RpcTransport`] posts bytes and returns a status and bytes. Production uses
//! [`ReqwestTransport`]; the simulator plugs a hyper client over simulated sockets.
//!
//! ## Guarantees
//! - Requests are JSON-RPC 1.0 as Bitcoin Core's `bitcoin-cli` sends them
//!   (`{"jsonrpc":"1.0","id":N,"method":M,"params":[...]}`). With 1.0, Bitcoin Core reports an
//!   RPC error as HTTP 500 (404 for an unknown method) with the JSON error object in the body;
//!   [`decode_reply`] reads the body whatever the status, so the node's code and message
//!   reach the caller.
//! - Authentication is user/password or Bitcoin Core's `.cookie` file. The cookie is re-read
//!   when the node answers 401, since bitcoind writes a new one at every start; the call is
//!   then retried once.
//! - Every call has a timeout. Replies are parsed without panicking; anything that is not a
//!   JSON-RPC reply with our id is [`RpcError::Malformed`].
//! - A full work queue is [`RpcError::Busy`], not a transport failure: bitcoind answers HTTP
//!   503 with the plain-text body "Work queue depth exceeded" when `-rpcworkqueue` calls are
//!   already waiting, without running the call. The coinserver machine retries such calls and
//!   never counts them against the node's health.
//! - The production transport speaks plain HTTP: Bitcoin Core's RPC server has had no TLS
//!   since 0.12 and is meant to be reached on a trusted network or through a tunnel.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use powerpool_core::coinserver::{Reply, ReplyError};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// What came back from one HTTP POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Could not connect, or the connection failed mid-request: the node is unreachable.
    #[error("http: {0}")]
    Io(String),
    #[error("timed out")]
    Timeout,
}

/// Posts a JSON-RPC body to one node's endpoint.
pub trait RpcTransport: Send + Sync + 'static {
    /// `authorization` is the full `Authorization` header value, when there is one.
    fn post(
        &self,
        body: Vec<u8>,
        authorization: Option<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<HttpReply, TransportError>> + Send;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcAuth {
    None,
    UserPass {
        user: String,
        password: String,
    },
    /// Path of bitcoind's `.cookie` (`__cookie__:<random>`), re-read when refused.
    Cookie(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The node could not be reached; try again later or another node.
    #[error("transport: {0}")]
    Transport(String),
    #[error("timed out")]
    Timeout,
    /// The node is alive but its RPC work queue is full; it did not run the call. Retry later.
    #[error("busy: {0}")]
    Busy(String),
    /// Credentials were refused: fix rpcuser/rpcpassword or the cookie path.
    #[error("authentication refused: {0}")]
    Auth(String),
    /// The cookie file could not be read: is the node running and the path right?
    #[error("cannot read cookie {path}: {reason}")]
    Cookie { path: String, reason: String },
    /// The node answered with a JSON-RPC error.
    #[error("rpc error {code}: {message}")]
    Rpc { code: i64, message: String },
    /// The reply was not a JSON-RPC reply to this request; the endpoint is not a coinserver or
    /// is broken.
    #[error("malformed reply: {0}")]
    Malformed(String),
}

impl From<RpcError> for ReplyError {
    fn from(e: RpcError) -> Self {
        match e {
            RpcError::Timeout => ReplyError::Timeout,
            RpcError::Busy(m) => ReplyError::Busy(m),
            // The queue-full text inside an error object (a proxy passing it on) is still busy.
            RpcError::Rpc { message, .. } if message.contains(WORK_QUEUE_FULL) => {
                ReplyError::Busy(message)
            }
            RpcError::Rpc { code, message } => ReplyError::Rpc { code, message },
            other => ReplyError::Transport(other.to_string()),
        }
    }
}

/// What bitcoind's HTTP server says when its work queue is full (`httpserver.cpp`).
const WORK_QUEUE_FULL: &str = "Work queue depth exceeded";

/// The body of one JSON-RPC 1.0 request.
pub fn encode_request(id: u64, method: &str, params: &Value) -> Vec<u8> {
    let v = json!({ "jsonrpc": "1.0", "id": id, "method": method, "params": params });
    serde_json::to_vec(&v).expect("a JSON value always serializes")
}

/// Reads a JSON-RPC reply to request `id`, whatever the HTTP status.
pub fn decode_reply(status: u16, body: &[u8], id: u64) -> Result<Value, RpcError> {
    if status == 401 || status == 403 {
        return Err(RpcError::Auth(format!("HTTP {status}")));
    }
    let snippet = || {
        let end = body.len().min(120);
        String::from_utf8_lossy(&body[..end]).into_owned()
    };
    if status == 503 {
        // bitcoind's queue-full answer is plain text, not a JSON-RPC reply.
        return Err(RpcError::Busy(format!("HTTP 503: {}", snippet().trim())));
    }
    let mut reply: Value = serde_json::from_slice(body).map_err(|_| {
        RpcError::Malformed(format!("HTTP {status}, body is not JSON: {:?}", snippet()))
    })?;
    let Some(obj) = reply.as_object_mut() else {
        return Err(RpcError::Malformed(format!("HTTP {status}, not an object")));
    };
    match obj.get("error") {
        None | Some(Value::Null) => {}
        Some(err) => {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(-1);
            let message = match err.get("message") {
                Some(Value::String(s)) => s.clone(),
                _ => err.to_string(),
            };
            return Err(RpcError::Rpc { code, message });
        }
    }
    if obj.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(RpcError::Malformed(format!(
            "reply id {:?} does not match request {id}",
            obj.get("id")
        )));
    }
    if status != 200 {
        return Err(RpcError::Malformed(format!(
            "HTTP {status} without an error object"
        )));
    }
    obj.remove("result")
        .ok_or_else(|| RpcError::Malformed("reply has no result".into()))
}

/// A JSON-RPC client for one node.
#[derive(Debug)]
pub struct RpcClient<T> {
    transport: T,
    auth: RpcAuth,
    timeout: Duration,
    next_id: AtomicU64,
    /// The `Authorization` header last built from the cookie file.
    cookie_header: Mutex<Option<String>>,
}

impl<T: RpcTransport> RpcClient<T> {
    pub fn new(transport: T, auth: RpcAuth, timeout: Duration) -> Self {
        RpcClient {
            transport,
            auth,
            timeout,
            next_id: AtomicU64::new(1),
            cookie_header: Mutex::new(None),
        }
    }

    pub async fn call(&self, method: &str, params: &Value) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = encode_request(id, method, params);
        let header = self.authorization(false)?;
        let reply = self.post(body.clone(), header).await?;
        if reply.status == 401 && matches!(self.auth, RpcAuth::Cookie(_)) {
            // bitcoind restarted and wrote a new cookie.
            let header = self.authorization(true)?;
            let reply = self.post(body, header).await?;
            return decode_reply(reply.status, &reply.body, id);
        }
        decode_reply(reply.status, &reply.body, id)
    }

    async fn post(&self, body: Vec<u8>, header: Option<String>) -> Result<HttpReply, RpcError> {
        self.transport
            .post(body, header, self.timeout)
            .await
            .map_err(|e| match e {
                TransportError::Timeout => RpcError::Timeout,
                TransportError::Io(m) => RpcError::Transport(m),
            })
    }

    fn authorization(&self, reread: bool) -> Result<Option<String>, RpcError> {
        match &self.auth {
            RpcAuth::None => Ok(None),
            RpcAuth::UserPass { user, password } => Ok(Some(basic(&format!("{user}:{password}")))),
            RpcAuth::Cookie(path) => {
                let mut cached = self
                    .cookie_header
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if reread || cached.is_none() {
                    let text = std::fs::read_to_string(path).map_err(|e| RpcError::Cookie {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    let text = text.trim_end();
                    if !text.contains(':') {
                        return Err(RpcError::Cookie {
                            path: path.display().to_string(),
                            reason: "expected `user:password`".into(),
                        });
                    }
                    *cached = Some(basic(text));
                }
                Ok(cached.clone())
            }
        }
    }
}

fn basic(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// Plain-HTTP transport on reqwest, one per node URL.
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    client: reqwest::Client,
    url: String,
}

impl ReqwestTransport {
    /// `url` such as `http://127.0.0.1:8332/`.
    pub fn new(url: impl Into<String>) -> Result<Self, RpcError> {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        Ok(ReqwestTransport {
            client,
            url: url.into(),
        })
    }
}

impl RpcTransport for ReqwestTransport {
    fn post(
        &self,
        body: Vec<u8>,
        authorization: Option<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<HttpReply, TransportError>> + Send {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .timeout(timeout)
            .body(body);
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        async move {
            let map = |e: reqwest::Error| {
                if e.is_timeout() {
                    TransportError::Timeout
                } else {
                    TransportError::Io(e.to_string())
                }
            };
            let resp = req.send().await.map_err(map)?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await.map_err(map)?.to_vec();
            Ok(HttpReply { status, body })
        }
    }
}

/// Makes one call on a task of its own and sends `(id, reply)` to `tx`: a driver never waits on
/// a node, and one that stopped meanwhile just drops the reply.
pub fn spawn_call<T: RpcTransport>(
    client: Arc<RpcClient<T>>,
    id: u64,
    method: &'static str,
    params: Value,
    tx: mpsc::UnboundedSender<(u64, Reply)>,
) {
    tokio::spawn(async move {
        let reply = client.call(method, &params).await.map_err(ReplyError::from);
        let _ = tx.send((id, reply));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_json_rpc_1_0() {
        let body = encode_request(7, "getblocktemplate", &json!([{"rules": ["segwit"]}]));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc": "1.0", "id": 7, "method": "getblocktemplate",
                   "params": [{"rules": ["segwit"]}]})
        );
    }

    #[test]
    fn success_reply() {
        // Shape of Bitcoin Core's reply to getbestblockhash (mainnet block 100000's hash).
        let body = br#"{"result":"000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506","error":null,"id":3}"#;
        assert_eq!(
            decode_reply(200, body, 3).unwrap(),
            json!("000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506")
        );
        // submitblock's success is a null result, which must not read as "missing".
        assert_eq!(
            decode_reply(200, br#"{"result":null,"error":null,"id":4}"#, 4).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn error_reply_in_http_500_body() {
        // What Bitcoin Core sends for a JSON-RPC 1.0 request while loading.
        let body =
            br#"{"result":null,"error":{"code":-28,"message":"Loading block index..."},"id":1}"#;
        assert_eq!(
            decode_reply(500, body, 1),
            Err(RpcError::Rpc {
                code: -28,
                message: "Loading block index...".into()
            })
        );
        let body =
            br#"{"result":null,"error":{"code":-32601,"message":"Method not found"},"id":2}"#;
        assert!(matches!(
            decode_reply(404, body, 2),
            Err(RpcError::Rpc { code: -32601, .. })
        ));
    }

    #[test]
    fn broken_replies_are_typed_errors() {
        assert!(matches!(decode_reply(401, b"", 1), Err(RpcError::Auth(_))));
        assert!(matches!(
            decode_reply(200, b"<html>", 1),
            Err(RpcError::Malformed(_))
        ));
        assert!(matches!(
            decode_reply(200, b"[1,2]", 1),
            Err(RpcError::Malformed(_))
        ));
        assert!(matches!(
            decode_reply(200, br#"{"result":1,"error":null,"id":9}"#, 1),
            Err(RpcError::Malformed(_))
        ));
        assert!(matches!(
            decode_reply(200, br#"{"error":null,"id":1}"#, 1),
            Err(RpcError::Malformed(_))
        ));
        assert!(matches!(
            decode_reply(502, br#"{"result":1,"error":null,"id":1}"#, 1),
            Err(RpcError::Malformed(_))
        ));
    }

    #[test]
    fn a_full_work_queue_is_busy_not_broken() {
        // Bitcoin Core's exact answer when -rpcworkqueue calls are already waiting.
        let e = decode_reply(503, b"Work queue depth exceeded", 1).unwrap_err();
        assert_eq!(
            e,
            RpcError::Busy("HTTP 503: Work queue depth exceeded".into())
        );
        assert_eq!(
            ReplyError::from(e),
            ReplyError::Busy("HTTP 503: Work queue depth exceeded".into())
        );
        // Any 503, whatever its body, means the call was not run.
        assert!(matches!(decode_reply(503, b"", 1), Err(RpcError::Busy(_))));
        assert!(matches!(
            ReplyError::from(RpcError::Rpc {
                code: -1,
                message: "Work queue depth exceeded".into()
            }),
            ReplyError::Busy(_)
        ));
    }

    #[test]
    fn errors_map_onto_the_core_reply() {
        assert_eq!(ReplyError::from(RpcError::Timeout), ReplyError::Timeout);
        assert!(matches!(
            ReplyError::from(RpcError::Auth("x".into())),
            ReplyError::Transport(_)
        ));
    }
}
