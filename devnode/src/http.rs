//! The HTTP side: Bitcoin Core's JSON-RPC-over-HTTP conventions plus fault injection.
//!
//! A crash ([`Answering::Down`]) drops every open connection and closes new ones right after
//! accepting them, so clients see resets and "connection closed" errors; the listening socket
//! stays bound so the node can come back on the same port.
//!
//! While it serves, the node runs two tasks of its own: a clock tick (synthetic transactions
//! arrive) and, when [`crate::NodeConfig::block_interval`] is set, the outside miner, whose
//! hashing runs on tokio's blocking pool in bounded rounds, never on a runtime thread.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::rpc::{RpcError, dispatch};
use crate::{Answering, Node, OUTSIDE_ROUND};

/// Core's `MAX_SIZE` for an HTTP request body.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// A source of incoming connections: tokio's [`TcpListener`] here, a simulated listener in
/// the simulator. The node needs nothing else of a listener, so it does not borrow a runtime
/// abstraction from the pool's crates.
pub trait Accept: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (s, a) = TcpListener::accept(self).await?;
        // A reply must leave at once rather than wait for the client's ACK of the last one.
        let _ = s.set_nodelay(true);
        Ok((s, a))
    }
}

/// Serves JSON-RPC on `listener` until `shutdown` completes; also runs the node's clock tick
/// (synthetic transactions arrive) and, when configured, the background miner. Open
/// connections are dropped at shutdown.
pub async fn serve<F>(node: Arc<Node>, listener: TcpListener, shutdown: F)
where
    F: Future<Output = ()> + Send,
{
    serve_listener(node, listener, shutdown).await;
}

/// [`serve`] over any [`Accept`] (the simulator passes its own).
pub async fn serve_listener<L, F>(node: Arc<Node>, mut listener: L, shutdown: F)
where
    L: Accept,
    F: Future<Output = ()> + Send,
{
    let _background = Background::start(&node);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if node.answering() == Answering::Down {
                        drop(stream);
                        continue;
                    }
                    conns.spawn(serve_connection(node.clone(), stream));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "node: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

/// Serves one connection (any byte stream, e.g. a simulated one) until the client closes it
/// or the node goes [`Answering::Down`].
pub async fn serve_connection<IO>(node: Arc<Node>, io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut mode = node.answering.subscribe();
    let handler_node = node.clone();
    let service = hyper::service::service_fn(move |req| {
        let node = handler_node.clone();
        async move { Ok::<_, Infallible>(handle(node, req).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            biased;
            _ = &mut conn => return,
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow_and_update() == Answering::Down {
                    return;
                }
            }
        }
    }
}

/// The node's own tasks while it serves: the clock tick and, when configured, the outside
/// miner. Dropping it (the server returning or being cancelled) ends both and tells a round
/// in progress on the blocking pool to give up.
struct Background {
    tasks: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Background {
    fn start(node: &Arc<Node>) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = vec![tokio::spawn(tick(node.clone()))];
        if let Some(every) = node.config.block_interval {
            tasks.push(tokio::spawn(outside_miner(
                node.clone(),
                every,
                stop.clone(),
            )));
        }
        Background { tasks, stop }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn tick(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        node.tick();
    }
}

/// How long the outside miner rests after a round that found nothing: caps the CPU a hard
/// target costs and lets the next round start from a fresh template.
const ROUND_REST: Duration = Duration::from_secs(1);

/// Another pool finding a block every `every`. Hashing happens only inside
/// `spawn_blocking`, in rounds of [`OUTSIDE_ROUND`] nonces: the runtime thread only waits for
/// a round's verdict, so however hard the target, RPC keeps being answered. A block found
/// late does not move the schedule (the next one is still due `every` after the one before).
async fn outside_miner(node: Arc<Node>, every: Duration, stop: Arc<AtomicBool>) {
    let mut due = Instant::now() + every;
    let mut next_round = due;
    let mut from = 0;
    loop {
        tokio::time::sleep_until(next_round).await;
        let (n, s) = (node.clone(), stop.clone());
        let start = from;
        let round =
            tokio::task::spawn_blocking(move || n.mine_round(start, OUTSIDE_ROUND, &s)).await;
        match round {
            Ok(Ok(Some(hash))) => {
                tracing::info!(%hash, "node: background miner found a block");
            }
            Ok(Ok(None)) => {
                from += OUTSIDE_ROUND;
                next_round = Instant::now() + ROUND_REST;
                continue;
            }
            Ok(Err(e)) => tracing::error!(error = %e, "node: background block rejected"),
            // The runtime is shutting down: nothing left to mine for.
            Err(e) if e.is_cancelled() => return,
            Err(e) => {
                tracing::error!(error = %e, "node: background miner panicked");
                return;
            }
        }
        from = 0;
        due += every;
        next_round = due;
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

fn json_reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut s = body.to_string();
    s.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(s)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn authorized(node: &Node, req: &Request<Incoming>) -> bool {
    let Some((user, pass)) = &node.config.auth else {
        return true;
    };
    let Some(encoded) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .is_ok_and(|raw| raw == format!("{user}:{pass}").as_bytes())
}

async fn handle(node: Arc<Node>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if !authorized(&node, &req) {
        let mut r = text(StatusCode::UNAUTHORIZED, "");
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"jsonrpc\""),
        );
        return r;
    }
    let latency = node.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match node.answering() {
        Answering::Overloaded | Answering::Down => {
            return text(StatusCode::SERVICE_UNAVAILABLE, "Work queue depth exceeded");
        }
        Answering::Normal | Answering::Warmup => {}
    }
    if req.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "JSONRPC server handles only POST requests",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "Request body too large or broken"),
    };
    let parse_error = |msg: &str| {
        json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"result": null, "error": {"code": RpcError::PARSE_ERROR, "message": msg}, "id": null}),
        )
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return parse_error("Parse error"),
    };
    match request {
        Value::Object(_) => match call(&node, &request).await {
            None => text(StatusCode::NO_CONTENT, ""),
            Some((status, reply)) => json_reply(status, &reply),
        },
        Value::Array(items) => {
            let mut replies = Vec::with_capacity(items.len());
            for item in &items {
                if let Some((_, reply)) = call(&node, item).await {
                    replies.push(reply);
                }
            }
            json_reply(StatusCode::OK, &Value::Array(replies))
        }
        _ => parse_error("Top-level object parse error"),
    }
}

/// One request object → its reply and the HTTP status Core would use for it alone; `None`
/// for a JSON-RPC 2.0 notification (no reply).
async fn call(node: &Arc<Node>, request: &Value) -> Option<(StatusCode, Value)> {
    let v2 = request.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
    let id = request.get("id").cloned();
    let result = run(node, request).await;
    if v2 && id.is_none() {
        return None;
    }
    let id = id.unwrap_or(Value::Null);
    Some(match result {
        Ok(r) if v2 => (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "result": r, "id": id}),
        ),
        Ok(r) => (
            StatusCode::OK,
            json!({"result": r, "error": null, "id": id}),
        ),
        Err(e) if v2 => (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "error": e, "id": id}),
        ),
        Err(e) => {
            let status = match e.code {
                RpcError::INVALID_REQUEST => StatusCode::BAD_REQUEST,
                RpcError::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, json!({"result": null, "error": e, "id": id}))
        }
    })
}

async fn run(node: &Arc<Node>, request: &Value) -> Result<Value, RpcError> {
    let Value::Object(obj) = request else {
        return Err(RpcError::new(
            RpcError::INVALID_REQUEST,
            "Invalid Request object",
        ));
    };
    let method = match obj.get("method") {
        None => return Err(RpcError::new(RpcError::INVALID_REQUEST, "Missing method")),
        Some(Value::String(m)) => m.as_str(),
        Some(_) => {
            return Err(RpcError::new(
                RpcError::INVALID_REQUEST,
                "Method must be a string",
            ));
        }
    };
    let empty = Value::Array(Vec::new());
    let params = match obj.get("params") {
        None | Some(Value::Null) => &empty,
        Some(p @ (Value::Array(_) | Value::Object(_))) => p,
        Some(_) => {
            return Err(RpcError::new(
                RpcError::INVALID_REQUEST,
                "Params must be an array or object",
            ));
        }
    };
    if node.answering() == Answering::Warmup {
        return Err(RpcError::new(RpcError::IN_WARMUP, "Loading block index…"));
    }
    dispatch(node, method, params).await
}
