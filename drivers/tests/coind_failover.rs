//! The coinserver driver and JSON-RPC client against in-process JSON-RPC HTTP servers that
//! answer like Bitcoin Core (JSON-RPC 1.0: errors as HTTP 500 with a JSON body, 401 on bad
//! credentials), over real sockets on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use powerpool_core::coinserver::{
    BlockOutcome, CoinserverConfig, Coinservers, Event, NodeConfig, SubmitResult,
};
use powerpool_core::hash::Hash256;
use powerpool_core::record::RecordId;
use powerpool_drivers::coind::{self, FoundBlockMsg};
use powerpool_drivers::net::{Net, TokioNet};
use powerpool_drivers::rpc::{ReqwestTransport, RpcAuth, RpcClient, RpcError};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

// Mainnet block 100000 and its parent, 99999: real hashes, so hash parsing is exercised on
// chain data.
const TIP: &str = "000000000002d01c1fccc21636b607dfd930d31d01c3a62104612a1719011250";
const BLOCK: &str = "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506";

#[derive(Default)]
struct NodeState {
    submits: AtomicU64,
    /// `Authorization` header the server demands, if any.
    required_auth: Mutex<Option<String>>,
    /// Delay before answering, to provoke client timeouts.
    delay_ms: AtomicU64,
}

async fn handle(
    State(st): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let required = st.required_auth.lock().unwrap().clone();
    if let Some(req) = required {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if given != Some(req.as_str()) {
            return (StatusCode::UNAUTHORIZED, String::new());
        }
    }
    let delay = st.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(req["jsonrpc"], "1.0");
    let id = req["id"].clone();
    let ok = |result: Value| {
        (
            StatusCode::OK,
            json!({"result": result, "error": null, "id": id}).to_string(),
        )
    };
    match req["method"].as_str().unwrap_or("") {
        "getblockchaininfo" => ok(json!({
            "chain": "main", "blocks": 99_999, "headers": 99_999,
            "bestblockhash": TIP, "initialblockdownload": false,
        })),
        "getbestblockhash" => ok(json!(TIP)),
        "getblockcount" => ok(json!(99_999)),
        "getblocktemplate" => {
            assert_eq!(req["params"], json!([{"rules": ["segwit"]}]));
            ok(json!({
                "version": 1, "previousblockhash": TIP, "height": 100_000,
                "transactions": [], "coinbasevalue": 5_000_000_000u64,
                "bits": "1b04864c", "curtime": 1_293_623_863, "rules": ["segwit"],
            }))
        }
        "submitblock" => {
            st.submits.fetch_add(1, Ordering::SeqCst);
            ok(Value::Null)
        }
        other => (
            StatusCode::NOT_FOUND,
            json!({"result": null, "error": {"code": -32601, "message": format!("Method not found: {other}")}, "id": id})
                .to_string(),
        ),
    }
}

/// A server that can be stopped and started again on the same address.
struct Server {
    addr: SocketAddr,
    state: Arc<NodeState>,
    stop: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Server {
    async fn start(addr: SocketAddr, state: Arc<NodeState>) -> Server {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/", post(handle))
            .with_state(state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Server {
            addr,
            state,
            stop: Some((tx, task)),
        }
    }

    async fn stop(&mut self) {
        if let Some((tx, task)) = self.stop.take() {
            let _ = tx.send(());
            task.await.unwrap();
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn next_matching(rx: &mut mpsc::Receiver<Event>, f: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let e = rx.recv().await.expect("driver running");
            if f(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event within 20 s")
}

#[tokio::test]
async fn failover_failback_and_fan_out_over_http() {
    let mut a = Server::start(any_port(), Arc::default()).await;
    let b = Server::start(any_port(), Arc::default()).await;

    let cfg = CoinserverConfig {
        nodes: vec![
            NodeConfig {
                name: "a".into(),
                priority: 0,
            },
            NodeConfig {
                name: "b".into(),
                priority: 1,
            },
        ],
        poll_interval: Duration::from_millis(50),
        health_interval: Duration::from_millis(100),
        peer_check_interval: Duration::from_millis(200),
        rpc_timeout: Duration::from_secs(2),
        submit_retry_delay: Duration::from_millis(100),
        ..CoinserverConfig::default()
    };
    let wall = || TokioNet.unix_ms();
    let (origin, now) = coind::start_time(wall());
    let machine = Coinservers::new(cfg, now).unwrap();
    let clients: Vec<_> = [&a, &b]
        .iter()
        .map(|s| {
            Arc::new(RpcClient::new(
                ReqwestTransport::new(s.url()).unwrap(),
                RpcAuth::None,
                Duration::from_secs(2),
            ))
        })
        .collect();
    let (_push_tx, push_rx) = mpsc::channel(8);
    let (found_tx, found_rx) = mpsc::unbounded_channel();
    let (ev_tx, mut ev) = mpsc::channel(64);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let driver = tokio::spawn(coind::run(
        machine,
        origin,
        wall,
        clients,
        push_rx,
        found_rx,
        ev_tx,
        async {
            let _ = stop_rx.await;
        },
    ));

    // Work comes from the preferred node.
    let e = next_matching(&mut ev, |e| matches!(e, Event::Template { .. })).await;
    let Event::Template {
        node,
        value,
        new_tip,
    } = e
    else {
        unreachable!()
    };
    assert_eq!((node, new_tip), (0, true));
    assert_eq!(value["height"], 100_000);

    // The preferred node stops: work continues from the other one.
    a.stop().await;
    next_matching(&mut ev, |e| matches!(e, Event::NodeDown { node: 0, .. })).await;
    let e = next_matching(&mut ev, |e| matches!(e, Event::Template { .. })).await;
    assert!(
        matches!(
            e,
            Event::Template {
                node: 1,
                new_tip: false,
                ..
            }
        ),
        "{e:?}"
    );

    // It comes back on the same address: preferred again.
    let a = Server::start(a.addr, a.state.clone()).await;
    next_matching(&mut ev, |e| {
        *e == Event::PrimaryChanged {
            from: Some(1),
            to: Some(0),
        }
    })
    .await;
    let e = next_matching(&mut ev, |e| matches!(e, Event::Template { .. })).await;
    assert!(matches!(e, Event::Template { node: 0, .. }), "{e:?}");

    // A found block goes once to each live node; the outcome is reported once.
    let block_id = RecordId {
        server: 1,
        boot: 2,
        seq: 3,
    };
    found_tx
        .send(FoundBlockMsg {
            block_id,
            hex: "00".repeat(80).into(),
            hash: Hash256::from_display_hex(BLOCK).unwrap(),
            height: 100_000,
        })
        .unwrap();
    let mut submitted = Vec::new();
    let mut outcomes = 0;
    while submitted.len() < 2 {
        match next_matching(&mut ev, |e| {
            matches!(e, Event::BlockSubmitted { .. } | Event::BlockOutcome { .. })
        })
        .await
        {
            Event::BlockSubmitted { node, result, .. } => {
                assert_eq!(result, SubmitResult::Ok);
                submitted.push(node);
            }
            Event::BlockOutcome { status, .. } => {
                assert_eq!(status, BlockOutcome::Accepted);
                outcomes += 1;
            }
            _ => unreachable!(),
        }
    }
    submitted.sort_unstable();
    assert_eq!(submitted, vec![0, 1]);
    assert_eq!(outcomes, 1);
    assert_eq!(a.state.submits.load(Ordering::SeqCst), 1);
    assert_eq!(b.state.submits.load(Ordering::SeqCst), 1);

    stop_tx.send(()).unwrap();
    let machine = driver.await.unwrap().unwrap();
    assert_eq!(machine.primary(), Some(0));
}

#[tokio::test]
async fn rpc_errors_come_through_an_http_500_body() {
    let s = Server::start(any_port(), Arc::default()).await;
    let c = RpcClient::new(
        ReqwestTransport::new(s.url()).unwrap(),
        RpcAuth::None,
        Duration::from_secs(5),
    );
    assert_eq!(c.call("getblockcount", &json!([])).await, Ok(json!(99_999)));
    assert!(matches!(
        c.call("getinfo", &json!([])).await,
        Err(RpcError::Rpc { code: -32601, .. })
    ));
}

#[tokio::test]
async fn cookie_is_reread_when_the_node_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cookie = dir.path().join(".cookie");
    std::fs::write(&cookie, "__cookie__:first").unwrap();
    let state = Arc::new(NodeState::default());
    // "__cookie__:first" and "__cookie__:second", base64.
    *state.required_auth.lock().unwrap() = Some("Basic X19jb29raWVfXzpmaXJzdA==".into());
    let s = Server::start(any_port(), state.clone()).await;
    let c = RpcClient::new(
        ReqwestTransport::new(s.url()).unwrap(),
        RpcAuth::Cookie(cookie.clone()),
        Duration::from_secs(5),
    );
    assert_eq!(c.call("getblockcount", &json!([])).await, Ok(json!(99_999)));

    // bitcoind restarts with a new cookie.
    std::fs::write(&cookie, "__cookie__:second\n").unwrap();
    *state.required_auth.lock().unwrap() = Some("Basic X19jb29raWVfXzpzZWNvbmQ=".into());
    assert_eq!(c.call("getblockcount", &json!([])).await, Ok(json!(99_999)));

    // Wrong user/password stays refused.
    let wrong = RpcClient::new(
        ReqwestTransport::new(s.url()).unwrap(),
        RpcAuth::UserPass {
            user: "u".into(),
            password: "p".into(),
        },
        Duration::from_secs(5),
    );
    assert!(matches!(
        wrong.call("getblockcount", &json!([])).await,
        Err(RpcError::Auth(_))
    ));
}

#[tokio::test]
async fn a_slow_node_times_out() {
    let state = Arc::new(NodeState::default());
    state.delay_ms.store(2_000, Ordering::Relaxed);
    let s = Server::start(any_port(), state).await;
    let c = RpcClient::new(
        ReqwestTransport::new(s.url()).unwrap(),
        RpcAuth::None,
        Duration::from_millis(100),
    );
    assert_eq!(
        c.call("getblockcount", &json!([])).await,
        Err(RpcError::Timeout)
    );
}

#[tokio::test]
async fn a_closed_port_is_a_transport_error() {
    let l = TcpListener::bind(any_port()).await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let c = RpcClient::new(
        ReqwestTransport::new(format!("http://{addr}/")).unwrap(),
        RpcAuth::None,
        Duration::from_secs(2),
    );
    assert!(matches!(
        c.call("getblockcount", &json!([])).await,
        Err(RpcError::Transport(_))
    ));
}
