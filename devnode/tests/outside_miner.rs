//! The outside miner ("another pool finds a block every `block_interval`") never grinds on the
//! runtime thread: with a hard target (bits 1d00ffff, about 2^32 hashes a block) a node served
//! on a single-threaded runtime keeps answering JSON-RPC while the miner works.
//!
//! The node runs on its own thread and runtime; the client is plain blocking TCP with a
//! read timeout on the test thread, so a node whose runtime is stuck in a hashing loop makes a
//! call fail by timeout instead of hanging the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use powerpool_devnode::{Node, NodeConfig};
use serde_json::{Value, json};

/// Generous: an idle node answers in milliseconds. Only a blocked runtime takes this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const CALLS: usize = 40;

/// One HTTP JSON-RPC call over a fresh connection, or why it failed (timeouts included).
fn call(addr: SocketAddr, method: &str, params: Value) -> Result<Value, String> {
    let mut s = TcpStream::connect_timeout(&addr, CALL_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(CALL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(CALL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let body = json!({"version": "1.1", "method": method, "params": params, "id": 1}).to_string();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("{method}: no reply within {CALL_TIMEOUT:?}: {e}"))?;
    let (_, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method}: not an HTTP reply: {reply:?}"))?;
    let v: Value = serde_json::from_str(body).map_err(|e| format!("{method}: {e}: {body:?}"))?;
    match &v["error"] {
        Value::Null => Ok(v["result"].clone()),
        e => Err(format!("{method}: {e}")),
    }
}

#[test]
fn rpc_answers_while_the_outside_miner_grinds_a_hard_target() {
    let mut cfg = NodeConfig::demo(7);
    cfg.chain.bits = 0x1d00_ffff;
    // Due at once: the miner starts with the first tick.
    cfg.block_interval = Some(Duration::from_millis(1));
    let node = Node::new(cfg).unwrap();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = node.clone();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            std_listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            powerpool_devnode::serve(served, listener, async {
                let _ = stopped.await;
            })
            .await;
        });
    });

    // The miner has started grinding (bounded wait, not a speed claim).
    let mut waited = Duration::ZERO;
    while node.outside_hashes() == 0 {
        assert!(
            waited < Duration::from_secs(60),
            "the outside miner never started"
        );
        std::thread::sleep(Duration::from_millis(20));
        waited += Duration::from_millis(20);
    }
    let before = node.outside_hashes();

    for i in 0..CALLS {
        if i % 2 == 0 {
            let t = call(addr, "getblocktemplate", json!([{"rules": ["segwit"]}]))
                .unwrap_or_else(|e| panic!("call {i}: {e}"));
            assert_eq!(t["bits"], json!("1d00ffff"));
        } else {
            let h = call(addr, "getbestblockhash", json!([]))
                .unwrap_or_else(|e| panic!("call {i}: {e}"));
            assert_eq!(h.as_str().map(str::len), Some(64));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // The calls were answered while the miner kept working, not because it had stopped.
    let after = node.outside_hashes();
    println!("outside miner: {before} hashes before the calls, {after} after");
    assert!(
        after > before,
        "the outside miner made no progress during the calls ({before} hashes)"
    );

    stop.send(()).unwrap();
    server.join().unwrap();
}
