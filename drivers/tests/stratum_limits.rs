//! The stratum server's limits, against the real server on port 0 fed by an in-process
//! coinserver: the total and per-address connection caps under a burst of connects, the
//! authorization and idle timeouts, a miner that never reads, and ports with different
//! difficulty policies side by side, PROXY protocol ports, TLS ports, and an IPv6 listener.

mod common {
    pub mod wait;
}

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::wait::wait_until;
use powerpool_core::pool::BanKey;
use powerpool_core::session::PortPolicy;
use powerpool_core::vardiff::VardiffConfig;
use powerpool_devnode::{Node, NodeConfig};
use powerpool_drivers::app::{Launched, launch};
use powerpool_drivers::client::{ClientError, StratumClient};
use powerpool_drivers::config::{
    CoinserverEntry, Config, Network, ProxyProtocolConfig, StratumPortConfig, TlsConfig,
};
use powerpool_drivers::stratum::Limits;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

const USER: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080.rig1";
/// Hang guard for anything that should happen well within it.
const LIMIT: Duration = Duration::from_secs(10);

struct Pool {
    launched: Launched,
    stop: watch::Sender<bool>,
    _node_stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
    _node: Arc<Node>,
}

impl Pool {
    fn addr(&self, port: usize) -> SocketAddr {
        self.launched.stratum_addrs[port]
    }

    fn open(&self) -> usize {
        self.launched.handle.stratum.connection_count()
    }

    /// Shuts the pool down without waiting for its report: these tests are about
    /// connections, and the shutdown path has its own tests.
    fn stop(self) {
        self.stop.send_replace(true);
    }
}

fn port(name: &str, policy: PortPolicy) -> StratumPortConfig {
    StratumPortConfig {
        name: name.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        policy,
        proxy_protocol: Default::default(),
        tls: Default::default(),
    }
}

fn fixed(difficulty: f64) -> PortPolicy {
    PortPolicy {
        start_difficulty: difficulty,
        min_difficulty: 1e-9,
        vardiff: None,
        ..PortPolicy::default()
    }
}

async fn start(limits: Limits, ports: Vec<StratumPortConfig>) -> Pool {
    start_with(limits, ports, false).await
}

async fn start_with(limits: Limits, ports: Vec<StratumPortConfig>, monitor: bool) -> Pool {
    let node = Node::new(NodeConfig::test(5)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rpc = listener.local_addr().unwrap();
    let (node_stop, mut rx) = watch::channel(false);
    tokio::spawn(powerpool_devnode::serve(
        node.clone(),
        listener,
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config {
        coinservers: vec![CoinserverEntry {
            name: "node0".into(),
            url: format!("http://{rpc}"),
            username: None,
            password: None,
            cookie_file: None,
            priority: 0,
        }],
        limits,
        stratum: ports,
        ..Config::default()
    };
    c.coin.network = Network::Regtest;
    c.coin.payout_address = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".into();
    c.new_blocks.poll_interval_ms = 50;
    c.store.embedded_path = dir.path().join("pool.redb");
    c.store.spool_path = dir.path().join("spool");
    c.monitor.enabled = monitor;
    c.monitor.bind = "127.0.0.1:0".parse().unwrap();
    let (stop, rx) = watch::channel(false);
    let launched = launch(c, rx).await.unwrap();
    Pool {
        launched,
        stop,
        _node_stop: node_stop,
        _dir: dir,
        _node: node,
    }
}

async fn miner(addr: SocketAddr) -> StratumClient {
    let mut m = StratumClient::connect(addr).await.unwrap();
    m.subscribe("limits/1.0").await.unwrap();
    m.authorize(USER, "x").await.unwrap();
    m.wait_for_work().await.unwrap();
    m
}

/// A plain TCP connection from `from` (any 127/8 address works on loopback).
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(from, 0)).unwrap();
    s.connect(to).await.unwrap()
}

/// Whether the pool serves `stream`: a subscribe is answered (admitted) or the connection is
/// closed without an answer (refused). Takes the stream so an admitted one stays open only
/// as long as the caller keeps what is returned.
async fn probe(stream: TcpStream) -> Option<BufReader<TcpStream>> {
    let mut s = BufReader::new(stream);
    let req = b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"probe/1\"]}\n";
    // A refused connection may already be reset: that is an answer too.
    if s.get_mut().write_all(req).await.is_err() {
        return None;
    }
    let mut line = String::new();
    match tokio::time::timeout(LIMIT, s.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => {
            assert!(line.contains("\"result\""), "subscribe answer: {line}");
            Some(s)
        }
        Ok(_) => None,
        Err(_) => panic!("neither answered nor closed within {LIMIT:?}"),
    }
}

/// Opens `n` connections from `from` at once, then probes them all; returns the admitted.
async fn burst(n: usize, from: IpAddr, to: SocketAddr) -> Vec<BufReader<TcpStream>> {
    let mut connects = JoinSet::new();
    for _ in 0..n {
        connects.spawn(connect_from(from, to));
    }
    let mut probes = JoinSet::new();
    while let Some(s) = connects.join_next().await {
        probes.spawn(probe(s.unwrap()));
    }
    let mut admitted = Vec::new();
    while let Some(p) = probes.join_next().await {
        admitted.extend(p.unwrap());
    }
    admitted
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_connection_cap_is_exact_under_a_burst() {
    let limits = Limits {
        max_connections: 4,
        ..Limits::default()
    };
    let pool = start(limits, vec![port("a", fixed(1.0)), port("b", fixed(2.0))]).await;
    // Both ports draw on one cap; the bursts race each other as well as themselves.
    let (a, b) = tokio::join!(
        burst(24, loopback(1), pool.addr(0)),
        burst(24, loopback(1), pool.addr(1))
    );
    assert_eq!(a.len() + b.len(), 4, "admitted connections");
    assert_eq!(pool.open(), 4);

    // Slots come back when connections end.
    drop(a);
    drop(b);
    wait_until("every connection released", LIMIT, || pool.open() == 0).await;
    assert_eq!(burst(6, loopback(1), pool.addr(0)).await.len(), 4);
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_cap_leaves_other_addresses_alone() {
    let limits = Limits {
        max_connections_per_ip: 3,
        ..Limits::default()
    };
    let pool = start(limits, vec![port("a", fixed(1.0))]).await;
    let first = burst(12, loopback(1), pool.addr(0)).await;
    assert_eq!(first.len(), 3, "admitted from 127.0.0.1");
    let other = burst(2, loopback(2), pool.addr(0)).await;
    assert_eq!(other.len(), 2, "127.0.0.2 has its own allowance");
    assert_eq!(pool.open(), 5);

    drop(first);
    wait_until("127.0.0.1's connections released", LIMIT, || {
        pool.open() == 2
    })
    .await;
    assert_eq!(burst(4, loopback(1), pool.addr(0)).await.len(), 3);
    drop(other);
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_after_the_idle_timeout() {
    let limits = Limits {
        idle_timeout_secs: 1,
        ..Limits::default()
    };
    let pool = start(limits, vec![port("a", fixed(1.0))]).await;
    let mut silent = miner(pool.addr(0)).await;
    let mut chatty = miner(pool.addr(0)).await;
    silent.timeout = LIMIT;
    let closed = tokio::spawn(async move {
        loop {
            match silent.read_message().await {
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    });
    // The chatty one talks well within the idle timeout throughout, and is still served
    // after the silent one was let go and another full idle period has passed.
    let end = tokio::time::Instant::now() + LIMIT;
    while !closed.is_finished() {
        assert!(tokio::time::Instant::now() < end, "silent miner still open");
        chatty
            .request("mining.extranonce.subscribe", serde_json::json!([]))
            .await
            .expect("chatty miner served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let why = closed.await.unwrap();
    assert!(
        matches!(why, ClientError::Closed),
        "closed by the pool: {why}"
    );
    for _ in 0..15 {
        let r = chatty
            .request("mining.extranonce.subscribe", serde_json::json!([]))
            .await
            .expect("chatty miner served");
        assert_eq!(r["result"], serde_json::json!(true));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pool.open(), 1);
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_that_never_authorizes_is_closed_despite_talking() {
    let limits = Limits {
        auth_timeout_secs: 1,
        ..Limits::default()
    };
    let pool = start(limits, vec![port("a", fixed(1.0))]).await;
    let mut m = StratumClient::connect(pool.addr(0)).await.unwrap();
    m.subscribe("limits/1.0").await.unwrap();
    let end = tokio::time::Instant::now() + LIMIT;
    let why = loop {
        assert!(
            tokio::time::Instant::now() < end,
            "unauthorized miner still open"
        );
        match m
            .request("mining.extranonce.subscribe", serde_json::json!([]))
            .await
        {
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(why, ClientError::Closed | ClientError::Io(_)),
        "closed by the pool: {why}"
    );
    wait_until("connection released", LIMIT, || pool.open() == 0).await;
    pool.stop();
}

/// A miner that sends requests without ever reading the answers: the pool must cut it off
/// after `write_timeout` rather than queue answers for it without bound, and stay open to
/// others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miner_that_never_reads_is_disconnected() {
    let limits = Limits {
        write_timeout_secs: 1,
        ..Limits::default()
    };
    let pool = start(limits, vec![port("a", fixed(1.0))]).await;
    let socket = TcpSocket::new_v4().unwrap();
    // A small fixed receive window, so the pool's answers back up soon.
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(pool.addr(0)).await.unwrap();
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n")
        .await
        .unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    assert!(line.contains("\"result\""), "{line}");
    wait_until("the connection admitted", LIMIT, || pool.open() == 1).await;

    let mut stream = stream.into_inner();
    let flood = tokio::spawn(async move {
        let req = b"{\"id\":2,\"method\":\"mining.get_transactions\",\"params\":[]}\n".repeat(64);
        let mut sent = 0usize;
        loop {
            match stream.write_all(&req).await {
                Ok(()) => sent += req.len(),
                Err(e) => return (sent, e, stream),
            }
        }
    });
    let (sent, err, _stream) = tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("the pool cut the non-reading miner off")
        .unwrap();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "after {sent} bytes: {err}"
    );
    wait_until("the connection released", LIMIT, || pool.open() == 0).await;
    // Others are served as before.
    let m = miner(pool.addr(0)).await;
    assert!(m.work.is_some());
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_announce_their_own_difficulty_and_share_extranonce1_space() {
    let vardiff = PortPolicy {
        start_difficulty: 0.002,
        min_difficulty: 1e-9,
        vardiff: Some(VardiffConfig::default()),
        ..PortPolicy::default()
    };
    let pool = start(
        Limits::default(),
        vec![port("fixed", fixed(0.5)), port("vardiff", vardiff)],
    )
    .await;
    let mut en1 = HashSet::new();
    // All held open at once, so no extranonce1 is freed and handed out again.
    let mut held = Vec::new();
    for (p, want) in [(0, 0.5), (1, 0.002)] {
        for _ in 0..4 {
            let m = miner(pool.addr(p)).await;
            assert_eq!(m.difficulty, want, "difficulty announced on port {p}");
            assert_eq!(m.extranonce2_size, 4);
            assert!(
                en1.insert(m.extranonce1.clone()),
                "extranonce1 {} handed out twice",
                hex::encode(&m.extranonce1)
            );
            held.push(m);
        }
    }
    assert_eq!(pool.open(), 8);
    drop(held);
    pool.stop();
}

/// Sends shares that cannot be valid (ntime 0: refused before hashing) as fast as the
/// connection takes them, until the pool closes it; returns how many replies came back.
async fn flood_until_closed(m: &mut StratumClient, job: &str) -> usize {
    let mut replies = 0;
    for i in 0u32..100_000 {
        let line = format!(
            "{{\"id\":{},\"method\":\"mining.submit\",\"params\":[\"{USER}\",\"{job}\",\"{i:08x}\",\"00000000\",\"00000000\"]}}\n",
            i + 10
        );
        if m.send_raw(line.as_bytes()).await.is_err() {
            return replies;
        }
        match tokio::time::timeout(LIMIT, m.read_message()).await {
            Ok(Ok(_)) => replies += 1,
            Ok(Err(_)) => return replies,
            Err(_) => panic!("no reply and no close within {LIMIT:?}"),
        }
    }
    panic!("100,000 refused shares and the connection is still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_share_flood_bans_the_ip_and_address_until_lifted() {
    use powerpool_core::session::RefusalLimit;
    let mut limits = Limits::default();
    limits.bans.refusals = RefusalLimit {
        enabled: true,
        window_shares: 50,
        max_refused_ratio: 0.9,
        max_refused_per_minute: 1_000_000,
    };
    let pool = start_with(limits, vec![port("a", fixed(1.0))], true).await;
    let addr = pool.addr(0);
    let mut m = miner(addr).await;
    let job = m.wait_for_work().await.unwrap().job_id.clone();
    let replies = flood_until_closed(&mut m, &job).await;
    assert_eq!(
        replies, 50,
        "every share of the window is answered, then the close"
    );

    // The IP is banned: a new connection from it is closed unanswered.
    let refused = probe(connect_from(loopback(1), addr).await).await;
    assert!(refused.is_none(), "a banned IP is not served");
    // Another IP is served, but the banned payout address cannot authorize there.
    let mut other = StratumClient::from_stream(connect_from(loopback(2), addr).await).unwrap();
    other.subscribe("limits/1.0").await.unwrap();
    assert!(
        other.authorize(USER, "x").await.is_err(),
        "a banned address is refused"
    );

    // The monitor lists both bans and lifts them.
    let mon = pool.launched.monitor_addr.expect("monitor");
    let http = reqwest::Client::new();
    let bans: serde_json::Value = http
        .get(format!("http://{mon}/bans"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut keys: Vec<String> = bans["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["banned"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    let address = USER.split('.').next().unwrap();
    assert_eq!(
        keys,
        [format!("address:{address}"), "ip:127.0.0.1".to_string()]
    );
    for k in &keys {
        let r = http
            .delete(format!("http://{mon}/bans/{k}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "lifting {k}");
    }
    let r = http
        .delete(format!("http://{mon}/bans/ip:127.0.0.1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "nothing left to lift");
    let r = http
        .delete(format!("http://{mon}/bans/nonsense"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Served again.
    let _back = miner(addr).await;
    assert_eq!(
        pool.launched.handle.metrics.snapshot().connections_banned,
        1
    );
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_come_back_byte_for_byte() {
    let pool = start(Limits::default(), vec![port("a", fixed(1.0))]).await;
    let stream = connect_from(loopback(1), pool.addr(0)).await;
    let mut s = BufReader::new(stream);
    let long = format!("\"{}\"", "i".repeat(4_000));
    for id in [
        "10000000000000000000000000000000000000000",
        "1.50",
        "1e400",
        r#""\u0041\/""#,
        &long,
    ] {
        let req = format!(r#"{{"id":{id},"method":"mining.extranonce.subscribe","params":[]}}"#);
        s.get_mut()
            .write_all(format!("{req}\n").as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        tokio::time::timeout(LIMIT, s.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(line.starts_with(&format!("{{\"id\":{id},")), "{id}: {line}");
    }
    pool.stop();
}

// ---------------------------------------------------------------------------------------------
// PROXY protocol ports
// ---------------------------------------------------------------------------------------------

/// A port whose connections must come through a PROXY protocol balancer at `trusted`.
fn proxy_port(name: &str, trusted: &[&str], header_timeout_ms: u64) -> StratumPortConfig {
    let mut p = port(name, fixed(1.0));
    p.proxy_protocol = ProxyProtocolConfig {
        enabled: true,
        trusted: trusted.iter().map(|t| (*t).to_owned()).collect(),
        header_timeout_ms,
    };
    p
}

fn v1(source: SocketAddr) -> Vec<u8> {
    let proto = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    let dst = if source.is_ipv4() { "127.0.0.1" } else { "::1" };
    format!(
        "PROXY {proto} {} {dst} {} 3333\r\n",
        source.ip(),
        source.port()
    )
    .into_bytes()
}

/// A version 2 PROXY command over TCP, with an ALPN TLV the pool must skip.
fn v2(source: SocketAddr) -> Vec<u8> {
    let mut payload = Vec::new();
    let fam = match source.ip() {
        IpAddr::V4(ip) => {
            payload.extend_from_slice(&ip.octets());
            payload.extend_from_slice(&[127, 0, 0, 1]);
            0x11
        }
        IpAddr::V6(ip) => {
            payload.extend_from_slice(&ip.octets());
            payload.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
            0x21
        }
    };
    payload.extend_from_slice(&source.port().to_be_bytes());
    payload.extend_from_slice(&3333u16.to_be_bytes());
    payload.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, fam]);
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&payload);
    h
}

/// A connection from `from` that has sent `header`.
async fn via_proxy(from: IpAddr, to: SocketAddr, header: &[u8]) -> TcpStream {
    let mut s = connect_from(from, to).await;
    s.write_all(header).await.unwrap();
    s
}

async fn proxied_miner(to: SocketAddr, header: &[u8]) -> StratumClient {
    let s = via_proxy(loopback(1), to, header).await;
    let mut m = StratumClient::from_stream(s).unwrap();
    m.subscribe("limits/1.0").await.unwrap();
    m.authorize(USER, "x").await.unwrap();
    m.wait_for_work().await.unwrap();
    m
}

fn peers(pool: &Pool) -> HashSet<String> {
    pool.launched
        .handle
        .stratum
        .clients()
        .into_iter()
        .map(|c| c.peer)
        .collect()
}

fn refused(pool: &Pool, reason: &str) -> u64 {
    let s = pool.launched.handle.metrics.snapshot();
    s.connections.refused.get(reason).copied().unwrap_or(0)
}

/// Whether the pool closes `s` without a word, within `LIMIT`.
async fn closed_unanswered(s: TcpStream) -> bool {
    let mut s = BufReader::new(s);
    let mut line = String::new();
    match tokio::time::timeout(LIMIT, s.read_line(&mut line)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("answered: {line}"),
        Err(_) => panic!("still open after {LIMIT:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_and_v2_admit_and_ban_by_the_miners_address() {
    let pool = start(
        Limits::default(),
        vec![proxy_port("lb", &["127.0.0.1"], 5000)],
    )
    .await;
    let addr = pool.addr(0);
    let v4: SocketAddr = "203.0.113.7:4000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::7]:4001".parse().unwrap();
    let v2v4: SocketAddr = "198.51.100.20:4002".parse().unwrap();
    let _a = proxied_miner(addr, &v1(v4)).await;
    let _b = proxied_miner(addr, &v2(v6)).await;
    let _c = proxied_miner(addr, &v2(v2v4)).await;
    let want: HashSet<String> = [v4, v6, v2v4].iter().map(ToString::to_string).collect();
    assert_eq!(
        peers(&pool),
        want,
        "the monitor shows the miners, not the proxy"
    );

    // A ban on the miner's address refuses it through the proxy; others behind it are served.
    pool.launched.handle.hub.with(|p, now| {
        p.handle_ban(now, BanKey::Ip(v4.ip()), "test");
    });
    let again = via_proxy(loopback(1), addr, &v1("203.0.113.7:5000".parse().unwrap())).await;
    assert!(probe(again).await.is_none(), "the banned miner is refused");
    assert_eq!(refused(&pool, "banned"), 1);
    let other = via_proxy(loopback(1), addr, &v1("203.0.113.8:5000".parse().unwrap())).await;
    assert!(
        probe(other).await.is_some(),
        "another miner through the same proxy is served"
    );
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_port_closes_untrusted_headerless_and_slow_connections() {
    let pool = start(
        Limits::default(),
        vec![
            proxy_port("lb", &["127.0.0.1", "10.0.0.0/8"], 400),
            port("plain", fixed(1.0)),
        ],
    )
    .await;
    let (lb, plain) = (pool.addr(0), pool.addr(1));
    let miner_addr: SocketAddr = "203.0.113.7:4000".parse().unwrap();

    // Not a trusted proxy: closed at once, whatever it sends.
    let s = via_proxy(loopback(3), lb, &v1(miner_addr)).await;
    assert!(closed_unanswered(s).await, "an untrusted proxy is closed");
    assert_eq!(refused(&pool, "untrusted_proxy"), 1);

    // Trusted, but stratum with no header: closed.
    assert!(probe(connect_from(loopback(1), lb).await).await.is_none());
    assert_eq!(refused(&pool, "proxy_header"), 1);

    // Trusted, and a header that never ends: closed at the header timeout, not before.
    let t0 = std::time::Instant::now();
    let s = via_proxy(loopback(1), lb, b"PROXY TCP4 203.0.113.7").await;
    assert!(closed_unanswered(s).await);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "closed after {waited:?}, before the 400 ms header timeout"
    );
    assert_eq!(refused(&pool, "proxy_header"), 2);
    assert_eq!(pool.open(), 0, "none of them was admitted");

    // A port without the PROXY protocol is unchanged: plain stratum, the transport address.
    let _m = miner(plain).await;
    let seen = peers(&pool);
    assert_eq!(seen.len(), 1);
    assert!(seen.iter().all(|p| p.starts_with("127.0.0.1:")), "{seen:?}");
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_split_over_writes_or_sharing_a_packet_with_stratum() {
    let pool = start(
        Limits::default(),
        vec![proxy_port("lb", &["127.0.0.0/24"], 5000)],
    )
    .await;
    let addr = pool.addr(0);

    // The header in pieces, sent at once (no Nagle) with pauses, so the pool reads them apart.
    let split: SocketAddr = "[2001:db8::9]:4100".parse().unwrap();
    let header = v2(split);
    let mut s = connect_from(loopback(1), addr).await;
    s.set_nodelay(true).unwrap();
    for piece in [&header[..5], &header[5..14], &header[14..20], &header[20..]] {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let _kept = probe(s).await.expect("answered after a header in pieces");

    // The header and the first stratum line in one write: the line is answered.
    let packed: SocketAddr = "198.51.100.1:4200".parse().unwrap();
    let mut bytes = v1(packed);
    bytes.extend_from_slice(b"{\"id\":7,\"method\":\"mining.subscribe\",\"params\":[\"one/1\"]}\n");
    let s = via_proxy(loopback(1), addr, &bytes).await;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    tokio::time::timeout(LIMIT, r.read_line(&mut line))
        .await
        .expect("an answer in time")
        .unwrap();
    assert!(
        line.contains("\"id\":7") && line.contains("\"result\""),
        "{line}"
    );
    let want: HashSet<String> = [split, packed].iter().map(ToString::to_string).collect();
    assert_eq!(peers(&pool), want);
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener_serves_miners() {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        eprintln!("!!! SKIPPED ipv6_listener_serves_miners: cannot bind [::1]:0 here ({e}) !!!");
        return;
    }
    let mut p = port("v6", fixed(1.0));
    p.bind = "[::1]:0".parse().unwrap();
    let pool = start(Limits::default(), vec![p]).await;
    let _m = miner(pool.addr(0)).await;
    let seen = peers(&pool);
    assert!(
        seen.len() == 1 && seen.iter().all(|p| p.starts_with("[::1]:")),
        "{seen:?}"
    );
    pool.stop();
}

// ---------------------------------------------------------------------------------------------
// TLS ports
// ---------------------------------------------------------------------------------------------

/// A test CA and a certificate for `localhost` it signed, written as PEM files in `dir`:
/// (the CA certificate, the certificate file, the key file).
fn test_certs(dir: &std::path::Path) -> (CertificateDer<'static>, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (ca.der().clone(), cert_file, key_file)
}

/// A TLS client trusting only `ca`, over `tcp`.
async fn tls_connect(
    ca: &CertificateDer<'static>,
    tcp: TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    #[allow(deprecated)]
    let provider = ring::default_provider();
    let cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_port_serves_subscribe_authorize_and_shares() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert_file, key_file) = test_certs(certs.path());
    let mut tls = port("tls", fixed(1e-6));
    tls.tls = TlsConfig {
        cert_file: Some(cert_file.clone()),
        key_file: Some(key_file.clone()),
    };
    let mut both = proxy_port("tls+proxy", &["127.0.0.1"], 5000);
    both.policy = fixed(1e-6);
    both.tls = tls.tls.clone();
    let pool = start(Limits::default(), vec![tls, both]).await;

    let tcp = TcpStream::connect(pool.addr(0)).await.unwrap();
    let mut m = StratumClient::from_io(tls_connect(&ca, tcp).await.unwrap());
    m.subscribe("tls/1.0").await.unwrap();
    m.authorize(USER, "x").await.unwrap();
    m.wait_for_work().await.unwrap();
    let found = m
        .search(powerpool_core::pow::Algorithm::Sha256d, 1, 10_000_000)
        .expect("a share within ten million hashes");
    let r = m.submit(USER, &found).await.unwrap();
    assert_eq!(r["result"], true, "{r}");

    // Plain stratum on the TLS port is not served.
    let mut plain = TcpStream::connect(pool.addr(0)).await.unwrap();
    plain
        .write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(
        LIMIT,
        tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut got),
    )
    .await
    .expect("closed in time");
    assert!(
        !String::from_utf8_lossy(&got).contains("result"),
        "answered in the clear"
    );

    // Behind a PROXY protocol balancer: the header first, then the handshake.
    let miner_addr: SocketAddr = "203.0.113.50:6000".parse().unwrap();
    let tcp = via_proxy(loopback(1), pool.addr(1), &v1(miner_addr)).await;
    let mut p = StratumClient::from_io(tls_connect(&ca, tcp).await.unwrap());
    p.subscribe("tls/1.0").await.unwrap();
    p.authorize(USER, "x").await.unwrap();
    p.wait_for_work().await.unwrap();
    assert!(peers(&pool).contains(&miner_addr.to_string()));
    pool.stop();
}

/// A farm's proxy or a rental service puts thousands of miners behind one address: with the
/// default limits, 2,000 connections from 127.0.0.1 that authorize as they come are all
/// served, and one more is too (the accept rate and the cap on unauthorized connections pace
/// them, they do not refuse them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_miners_behind_one_address_are_served_by_default() {
    let pool = start(Limits::default(), vec![port("a", fixed(1.0))]).await;
    let addr = pool.addr(0);
    let mut miners: Vec<BufReader<TcpStream>> = Vec::new();
    // In waves of 400 (under the 500 unauthorized connections one IP may hold), each wave
    // authorized before the next; a refused connect is retried, as a proxy's would be.
    let mut refused = 0;
    while miners.len() < 2_000 {
        let mut wave = JoinSet::new();
        for _ in 0..400.min(2_000 - miners.len()) {
            wave.spawn(async move {
                let s = connect_from(loopback(1), addr).await;
                let mut s = probe(s).await?;
                let auth = format!(
                    "{{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"{USER}\",\"x\"]}}\n"
                );
                s.get_mut().write_all(auth.as_bytes()).await.ok()?;
                let mut line = String::new();
                loop {
                    line.clear();
                    let n = tokio::time::timeout(LIMIT, s.read_line(&mut line))
                        .await
                        .ok()?
                        .ok()?;
                    if n == 0 {
                        return None;
                    }
                    if line.contains("\"id\":2") {
                        assert!(line.contains("\"result\":true"), "{line}");
                        return Some(s);
                    }
                }
            });
        }
        while let Some(m) = wave.join_next().await {
            match m.unwrap() {
                Some(s) => miners.push(s),
                None => refused += 1,
            }
        }
        assert!(refused < 4_000, "refused again and again: {refused}");
        if miners.len() < 2_000 {
            // The accept rate refills at 200 a second.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert_eq!(pool.open(), 2_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let one_more = probe(connect_from(loopback(1), addr).await).await;
    assert!(one_more.is_some(), "the 2,001st is served too");
    println!("2,000 miners from one address served; {refused} connects paced by the accept rate");
    pool.stop();
}

/// SIGHUP reads a TLS port's certificate files again: new handshakes get the renewed
/// certificate; a broken file keeps the one in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificates_are_read_again_on_reload() {
    let certs = tempfile::tempdir().unwrap();
    let (old_ca, cert_file, key_file) = test_certs(certs.path());
    let mut tls = port("tls", fixed(1e-6));
    tls.tls = TlsConfig {
        cert_file: Some(cert_file.clone()),
        key_file: Some(key_file.clone()),
    };
    let cfg = Config {
        stratum: vec![tls.clone()],
        ..Config::default()
    };
    let pool = start(Limits::default(), vec![tls]).await;
    let addr = pool.addr(0);
    let subscribe = |ca: CertificateDer<'static>| async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let s = tls_connect(&ca, tcp).await?;
        let mut m = StratumClient::from_io(s);
        m.subscribe("tls/1.0")
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    subscribe(old_ca.clone())
        .await
        .expect("the first certificate");

    // Renewed in place, under the same file names.
    let renewed = tempfile::tempdir().unwrap();
    let (new_ca, new_cert, new_key) = test_certs(renewed.path());
    std::fs::copy(&new_cert, &cert_file).unwrap();
    std::fs::copy(&new_key, &key_file).unwrap();
    let r = pool.launched.handle.stratum.reload_tls(&cfg);
    assert_eq!(r, [("tls".to_string(), Ok(()))]);
    subscribe(new_ca.clone())
        .await
        .expect("the renewed certificate");
    assert!(
        subscribe(old_ca.clone()).await.is_err(),
        "the old certificate is no longer served"
    );

    // A broken file is refused and the certificate in use stays.
    std::fs::write(&cert_file, "not a certificate").unwrap();
    let r = pool.launched.handle.stratum.reload_tls(&cfg);
    assert_eq!(r.len(), 1);
    let e = r[0].1.as_ref().unwrap_err();
    assert!(e.contains("stratum[0].tls.cert_file"), "{e}");
    subscribe(new_ca)
        .await
        .expect("still the renewed certificate");
    pool.stop();
}

/// A miner that has had no job for `keepalive_secs` gets the current one again, not clean, so
/// its receive timeout never fires on a quiet chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_connection_gets_its_job_again_after_keepalive_secs() {
    let pool = start(
        Limits::default(),
        vec![port(
            "a",
            PortPolicy {
                keepalive_secs: 1,
                ..fixed(1.0)
            },
        )],
    )
    .await;
    let mut m = miner(pool.addr(0)).await;
    let first = m.work.clone().unwrap();
    let notifies = m
        .notifications
        .iter()
        .filter(|n| *n == "mining.notify")
        .count();
    // Nothing but the keepalive sends a notify here: the node's chain does not move. (When it
    // comes is checked on virtual time in the core harness.)
    loop {
        m.read_message().await.unwrap();
        let now = m
            .notifications
            .iter()
            .filter(|n| *n == "mining.notify")
            .count();
        if now > notifies {
            break;
        }
    }
    let again = m.work.clone().unwrap();
    assert_eq!(again.job_id, first.job_id, "the same job");
    assert!(!again.clean, "not flagged clean");
    pool.stop();
}
