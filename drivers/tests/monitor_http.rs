//! The HTTP monitor over real HTTP on loopback, Prometheus output parsed line by line, and the
//! statsd forwarder read back from a real UDP socket.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use powerpool_core::coinserver::PushSource;
use powerpool_core::record::{BlockStatus, ShareKind};
use powerpool_core::stratum::ErrorCode;
use powerpool_drivers::metrics::{Metrics, MetricsSetup, RefuseReason, Statsd, StatsdConfig};
use powerpool_drivers::monitor::{self, MonitorConfig, MonitorSource, REDACTED};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const ADDRESS: &str = "1BoatSLRHtKNngkdXEeobR76b53LETtpyT";
const SECRETS: [&str; 6] = [
    "hunter2",
    "rpc-cookie-value",
    "hmac-key-123",
    "s3cret-in-url",
    "zmq-token",
    "deep-pass",
];

struct TestSource {
    healthy: AtomicBool,
}

impl MonitorSource for TestSource {
    fn status(&self) -> Value {
        json!({
            "uptime_secs": 12,
            "client_count": 2,
            "client_count_authed": 2,
            "address_count": 1,
            // A source that forgets to hide a secret in its status must still not leak it.
            "coinserver_url": "http://rpcuser:s3cret-in-url@127.0.0.1:8332/",
        })
    }

    fn clients(&self) -> Value {
        json!({ ADDRESS: { "0": {"worker": "rig1", "idle": false},
                           "1": {"worker": "rig2", "idle": true} } })
    }

    fn client(&self, address: &str) -> Option<Value> {
        (address == ADDRESS).then(|| {
            json!([
                {"id": 0, "worker": "rig1", "difficulty": 16.0, "ip_address": "127.0.0.1"},
                {"id": 1, "worker": "rig2", "difficulty": 32.0, "ip_address": "127.0.0.1"},
            ])
        })
    }

    fn components(&self) -> Value {
        json!({
            "coinserver_btc1": {"status": "live", "height": 800_000,
                                "rpc": {"user": "u", "password": "hunter2"}},
            "store": {"kind": "redis", "up": true, "pending": 0},
            "stratum_3333": {"client_count": 2},
            "push": {"last_signal": null, "zmq": {"auth_token": "zmq-token"}},
        })
    }

    fn config(&self) -> Value {
        json!({
            "coinservers": [
                {"name": "btc1", "url": "http://127.0.0.1:8332", "username": "u",
                 "password": "hunter2", "cookie": "rpc-cookie-value"},
            ],
            "push": {"udp": {"secret": "hmac-key-123", "address": "127.0.0.1:6855"}},
            "store": {"redis": {"url": "redis://default:s3cret-in-url@127.0.0.1:6379/0"}},
            "stratum": [{"port": 3333, "options": [{"levels": [{"rpcPass": "deep-pass"}]}]}],
            "monitor": {"address": "127.0.0.1", "port": 3855},
        })
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
}

struct Server {
    base: String,
    source: Arc<TestSource>,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    client: reqwest::Client,
}

impl Server {
    async fn start() -> Server {
        let metrics = Arc::new(Metrics::new(MetricsSetup {
            hashes_per_diff1: 65_536.0,
            stratum_ports: vec![3333, 3334],
            nodes: vec!["btc1".into(), "btc2".into()],
        }));
        let source = Arc::new(TestSource {
            healthy: AtomicBool::new(true),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(monitor::serve(
            listener,
            source.clone(),
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            base: format!("http://{addr}"),
            source,
            metrics,
            stop: Some(stop),
            task,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    async fn get(&self, path: &str) -> (u16, String, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, content_type, resp.text().await.unwrap())
    }

    async fn json(&self, path: &str, expect_status: u16) -> Value {
        let (status, content_type, body) = self.get(path).await;
        assert_eq!(status, expect_status, "{path}: {body}");
        assert!(
            content_type.starts_with("application/json"),
            "{path}: content type {content_type}"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v.is_object(), "{path}: every response is a JSON object");
        v
    }

    async fn metrics_text(&self) -> String {
        let (status, content_type, body) = self.get("/metrics").await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        body
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

fn assert_no_secrets(path: &str, body: &str) {
    for secret in SECRETS {
        assert!(!body.contains(secret), "{path} leaked {secret}: {body}");
    }
}

#[tokio::test]
async fn every_endpoint_answers_json_of_the_right_shape() {
    let s = Server::start().await;

    let index = s.json("/", 200).await;
    assert_eq!(index["status"]["client_count"], 2);
    assert_eq!(
        index["status"]["client_count_authed"], 2,
        "status fields named *authed stay"
    );
    assert_eq!(
        index["status"]["coinserver_url"],
        "http://[redacted]@127.0.0.1:8332/"
    );
    let links = index["links"].as_object().unwrap();
    for want in [
        "clients",
        "counters",
        "components",
        "config",
        "metrics",
        "health",
    ] {
        assert!(links.contains_key(want), "missing link {want}");
    }
    for (name, path) in links {
        let (status, _, body) = s.get(path.as_str().unwrap()).await;
        assert_eq!(status, 200, "link {name} -> {path}: {body}");
        assert_no_secrets(path.as_str().unwrap(), &body);
    }

    let clients = s.json("/clients", 200).await;
    assert_eq!(clients["clients"][ADDRESS]["1"]["worker"], "rig2");
    assert_eq!(
        s.json("/clients/", 200).await,
        clients,
        "trailing slash as in the original"
    );

    let one = s.json(&format!("/clients/{ADDRESS}"), 200).await;
    assert_eq!(one["address"], ADDRESS);
    assert_eq!(one["connections"].as_array().unwrap().len(), 2);
    assert_eq!(one["connections"][1]["difficulty"], 32.0);
    let missing = s.json("/clients/1NoSuchAddress", 404).await;
    assert!(missing["error"].is_string());

    let components = s.json("/components", 200).await;
    let names: BTreeSet<&str> = components["components"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["coinserver_btc1", "push", "store", "stratum_3333"])
    );
    assert_eq!(
        components["components"]["coinserver_btc1"]["rpc"]["password"],
        REDACTED
    );
    let btc1 = s.json("/components/coinserver_btc1", 200).await;
    assert_eq!(btc1["name"], "coinserver_btc1");
    assert_eq!(btc1["status"]["height"], 800_000);
    assert_eq!(btc1["status"]["rpc"]["user"], "u");
    assert_eq!(btc1["status"]["rpc"]["password"], REDACTED);
    s.json("/components/nope", 404).await;

    let counters = s.json("/counters", 200).await;
    for key in [
        "connections",
        "shares",
        "hashrate",
        "blocks",
        "jobs",
        "nodes",
        "push_signals",
        "store",
        "network",
        "stratum_errors",
        "workers_authorized",
    ] {
        assert!(counters.get(key).is_some(), "/counters lacks {key}");
    }
    assert_eq!(counters["shares"]["accepted"]["count"], 0);
    assert_eq!(counters["connections"]["ports"]["3333"]["open"], 0);

    let (status, _, body) = s.get("/health").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    s.source.healthy.store(false, Ordering::SeqCst);
    let (status, _, _) = s.get("/health").await;
    assert_eq!(status, 503);

    for path in ["/nope", "/debug/", "/05/clients/", "/clients/a/b"] {
        let v = s.json(path, 404).await;
        assert_eq!(v["error"], "not found", "{path}");
    }

    let head = s.client.head(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(
        head.status().as_u16(),
        200,
        "HEAD must not fail (it was 500 on /debug/)"
    );

    s.stop().await;
}

#[tokio::test]
async fn config_is_redacted_at_every_depth() {
    let s = Server::start().await;
    let (status, _, body) = s.get("/config").await;
    assert_eq!(status, 200);
    assert_no_secrets("/config", &body);
    let v: Value = serde_json::from_str(&body).unwrap();
    let c = &v["config"];
    assert_eq!(c["coinservers"][0]["password"], REDACTED);
    assert_eq!(c["coinservers"][0]["cookie"], REDACTED);
    assert_eq!(c["coinservers"][0]["username"], "u", "non-secrets are kept");
    assert_eq!(c["coinservers"][0]["url"], "http://127.0.0.1:8332");
    assert_eq!(c["push"]["udp"]["secret"], REDACTED);
    assert_eq!(c["push"]["udp"]["address"], "127.0.0.1:6855");
    assert_eq!(
        c["store"]["redis"]["url"],
        "redis://[redacted]@127.0.0.1:6379/0"
    );
    assert_eq!(
        c["stratum"][0]["options"][0]["levels"][0]["rpcPass"],
        REDACTED
    );
    assert_eq!(c["monitor"]["port"], 3855);
    assert_eq!(s.json("/config/", 200).await, v);
    s.stop().await;
}

/// `name{labels} value` per non-comment line; returns series → value and family → type.
fn parse_prometheus(text: &str) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let mut series = BTreeMap::new();
    let mut types = BTreeMap::new();
    let mut helps = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                matches!(kind, "counter" | "gauge"),
                "unexpected type in {line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{line}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helps.insert(rest.split_once(' ').unwrap().0.to_owned());
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (key, value) = line.rsplit_once(' ').unwrap();
        let name = match key.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                for pair in labels.split(',') {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "{line}"
                    );
                }
                name
            }
            None => key,
        };
        assert!(
            name.starts_with("powerpool_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert!(
            types.contains_key(name),
            "{name} has no TYPE line before it"
        );
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        assert!(
            series.insert(key.to_owned(), value).is_none(),
            "duplicate {key}"
        );
    }
    assert_eq!(
        helps,
        types.keys().cloned().collect::<BTreeSet<_>>(),
        "every family has HELP and TYPE"
    );
    (series, types)
}

fn family_of(series: &str) -> &str {
    series.split('{').next().unwrap()
}

/// Calls every recording method with every label value once.
fn drive_everything(m: &Metrics) {
    let kinds = [
        ShareKind::Accepted,
        ShareKind::Duplicate,
        ShareKind::LowDifficulty,
        ShareKind::Stale,
        ShareKind::Invalid,
    ];
    for port in [3333, 3334, 9999] {
        m.connection_opened(port);
        m.connection_opened(port);
        m.connection_closed(port);
        for reason in [
            RefuseReason::PoolFull,
            RefuseReason::PortFull,
            RefuseReason::AddressLimit,
            RefuseReason::ShuttingDown,
            RefuseReason::Banned,
            RefuseReason::RateLimited,
            RefuseReason::TooManyUnauthorized,
            RefuseReason::UntrustedProxy,
            RefuseReason::ProxyHeader,
            RefuseReason::Other,
        ] {
            m.connection_refused(port, reason);
        }
    }
    m.connection_banned();
    m.worker_authorized();
    for code in [
        ErrorCode::Other,
        ErrorCode::StaleJob,
        ErrorCode::Duplicate,
        ErrorCode::LowDifficulty,
        ErrorCode::Unauthorized,
        ErrorCode::NotSubscribed,
    ] {
        m.stratum_error(code);
    }
    for kind in kinds {
        m.share_judged(kind, 8.0);
    }
    m.block_found();
    for status in [
        BlockStatus::Submitted,
        BlockStatus::Accepted,
        BlockStatus::Rejected,
        BlockStatus::Orphaned,
        BlockStatus::Confirmed,
        BlockStatus::Unknown,
    ] {
        m.block_result(status);
    }
    m.job_published(true);
    m.job_published(false);
    for node in ["btc1", "btc2", "unconfigured"] {
        m.template_fetched(node);
        m.rpc_error(node);
    }
    m.push_signal(PushSource::Udp);
    m.push_signal(PushSource::Zmq);
    m.set_store_pending(7);
    m.set_store_spooled(3);
    m.set_store_up(true);
    m.set_network(800_123, 5.5e13);
}

#[tokio::test]
async fn prometheus_output_parses_and_every_counter_moves() {
    let s = Server::start().await;
    let (before, types) = parse_prometheus(&s.metrics_text().await);
    assert!(!before.is_empty());
    for (series, value) in &before {
        // The build's labels are constant 1, and uptime counts from the start.
        if series.starts_with("powerpool_build_info") {
            assert_eq!(*value, 1.0, "{series}");
            continue;
        }
        if series == "powerpool_uptime_seconds" {
            continue;
        }
        assert_eq!(*value, 0.0, "{series} starts at zero");
    }
    assert!(before.contains_key(&format!(
        "powerpool_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    )));
    for family in [
        "powerpool_shares_total",
        "powerpool_connections",
        "powerpool_accepted_hashrate",
        "powerpool_store_up",
    ] {
        assert!(types.contains_key(family), "{family} missing");
    }
    assert!(before.contains_key(r#"powerpool_shares_total{kind="accepted"}"#));
    assert!(before.contains_key(r#"powerpool_connections_opened_total{port="3333"}"#));
    assert!(before.contains_key(r#"powerpool_templates_fetched_total{node="btc2"}"#));

    drive_everything(&s.metrics);
    s.metrics.tick(1_700_000_000);
    let (after, _) = parse_prometheus(&s.metrics_text().await);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the series set is fixed"
    );
    // The original declared counters that never moved: no declared counter may stay at zero once its events happen.
    for (series, value) in &after {
        if types[family_of(series)] == "counter" {
            assert!(*value > 0.0, "{series} never moved");
        }
    }
    let at = |k: &str| after[k];
    assert_eq!(
        at(r#"powerpool_connections_opened_total{port="3333"}"#),
        2.0
    );
    assert_eq!(at(r#"powerpool_connections{port="3333"}"#), 1.0);
    assert_eq!(at(r#"powerpool_connections{port="other"}"#), 1.0);
    assert_eq!(
        at(r#"powerpool_connections_refused_total{port="3334",reason="address_limit"}"#),
        1.0
    );
    assert_eq!(at(r#"powerpool_share_difficulty_total{kind="stale"}"#), 8.0);
    assert_eq!(at(r#"powerpool_jobs_published_total{clean="true"}"#), 1.0);
    assert_eq!(
        at(r#"powerpool_templates_fetched_total{node="other"}"#),
        1.0
    );
    assert_eq!(at("powerpool_store_pending"), 7.0);
    assert_eq!(at("powerpool_store_up"), 1.0);
    assert_eq!(at("powerpool_network_height"), 800_123.0);
    assert_eq!(at("powerpool_network_difficulty"), 5.5e13);
    // One accepted share of difficulty 8 over the last 60 s at 65536 hashes per diff-1.
    assert_eq!(at("powerpool_accepted_hashrate"), 8.0 * 65_536.0 / 60.0);

    s.metrics.share_judged(ShareKind::Accepted, 2.0);
    let (later, _) = parse_prometheus(&s.metrics_text().await);
    assert_eq!(later[r#"powerpool_shares_total{kind="accepted"}"#], 2.0);
    assert_eq!(
        later[r#"powerpool_share_difficulty_total{kind="accepted"}"#],
        10.0
    );

    let counters = s.json("/counters", 200).await;
    assert_eq!(counters["shares"]["accepted"]["count"], 2);
    assert_eq!(
        counters["shares"]["accepted"]["last_60s_count"], 1.0,
        "as of the last tick"
    );
    assert_eq!(counters["connections"]["open"], 3);
    assert_eq!(counters["blocks"]["orphaned"], 1);
    assert_eq!(counters["nodes"]["btc2"]["rpc_errors"], 1);
    assert_eq!(counters["push_signals"]["zmq"], 1);
    assert_eq!(counters["store"]["spooled"], 3);
    assert_eq!(counters["window_time"], 1_700_000_000);
    s.stop().await;
}

/// Reads datagrams until one carries `last_key` (gauges go last in every tick).
fn read_tick(socket: &UdpSocket, last_key: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let n = socket
            .recv(&mut buf)
            .expect("statsd datagrams must arrive (read timeout hit)");
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(n <= 512, "datagrams stay within the safe statsd size");
        lines.extend(text.lines().map(str::to_owned));
        if text.contains(last_key) {
            return lines;
        }
    }
}

#[test]
fn statsd_receives_each_ticks_changes_over_udp() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    // A guard against hanging if nothing is sent, not a timing assertion.
    receiver
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = receiver.local_addr().unwrap().port();
    let config = StatsdConfig {
        enabled: true,
        host: "127.0.0.1".into(),
        port,
        prefix: "pool7".into(),
    };
    let statsd = Statsd::from_config(&config).unwrap();
    assert!(statsd.is_some());
    let m = Metrics::new(MetricsSetup {
        hashes_per_diff1: 1.0,
        stratum_ports: vec![3333],
        nodes: vec![],
    })
    .with_statsd(statsd);

    for _ in 0..3 {
        m.share_judged(ShareKind::Accepted, 1.5);
    }
    m.share_judged(ShareKind::Stale, 4.0);
    m.connection_opened(3333);
    m.worker_authorized();
    m.block_found();
    m.job_published(true);
    m.push_signal(PushSource::Zmq);
    m.set_network(100, 2.5);
    m.tick(1_700_000_000);

    let first: BTreeSet<String> = read_tick(&receiver, "pool7.network.difficulty")
        .into_iter()
        .collect();
    for want in [
        "pool7.shares.accepted:3|c",
        // 4.5 in difficulty: 4 now, the half carried to the next tick.
        "pool7.shares.accepted.difficulty:4|c",
        "pool7.shares.stale:1|c",
        "pool7.shares.stale.difficulty:4|c",
        "pool7.stratum.connections.opened:1|c",
        "pool7.stratum.authorizations:1|c",
        "pool7.blocks.found:1|c",
        "pool7.jobs.published:1|c",
        "pool7.jobs.clean:1|c",
        "pool7.push.zmq:1|c",
        "pool7.stratum.connections:1|g",
        "pool7.network.height:100|g",
        "pool7.network.difficulty:2.5|g",
        "pool7.hashrate:0.075|g",
        "pool7.store.up:0|g",
    ] {
        assert!(first.contains(want), "missing {want} in {first:?}");
    }
    assert!(
        !first
            .iter()
            .any(|l| l.starts_with("pool7.shares.duplicate")),
        "counters that did not change are not sent: {first:?}"
    );

    m.share_judged(ShareKind::Accepted, 0.5);
    m.set_store_up(true);
    m.tick(1_700_000_001);
    let second: BTreeSet<String> = read_tick(&receiver, "pool7.network.difficulty")
        .into_iter()
        .collect();
    for want in [
        "pool7.shares.accepted:1|c",
        "pool7.shares.accepted.difficulty:1|c",
        "pool7.store.up:1|g",
        "pool7.stratum.connections:1|g",
    ] {
        assert!(second.contains(want), "missing {want} in {second:?}");
    }
    for gone in [
        "pool7.blocks.found:",
        "pool7.shares.stale:",
        "pool7.jobs.clean:",
    ] {
        assert!(
            !second.iter().any(|l| l.starts_with(gone)),
            "{gone} was sent again without a change: {second:?}"
        );
    }
}

#[tokio::test]
async fn ticker_ticks_once_more_on_shutdown() {
    let m = Arc::new(Metrics::new(MetricsSetup::default()));
    m.share_judged(ShareKind::Accepted, 3.0);
    powerpool_drivers::metrics::run_ticker(m.clone(), std::future::ready(())).await;
    let snap = m.snapshot();
    assert!(snap.window_time.is_some(), "the final tick ran");
    assert_eq!(snap.shares["accepted"].last_60s_difficulty, 3.0);
}

#[test]
fn statsd_disabled_means_no_client() {
    assert!(
        Statsd::from_config(&StatsdConfig::default())
            .unwrap()
            .is_none()
    );
}

#[test]
fn config_sections_default_and_refuse_unknown_keys() {
    let statsd: StatsdConfig = serde_json::from_value(json!({"enabled": true})).unwrap();
    assert_eq!(
        statsd,
        StatsdConfig {
            enabled: true,
            ..StatsdConfig::default()
        }
    );
    assert_eq!((statsd.host.as_str(), statsd.port), ("127.0.0.1", 8125));
    assert!(serde_json::from_value::<StatsdConfig>(json!({"hots": "x"})).is_err());
    let monitor: MonitorConfig = serde_json::from_value(json!({"port": 4000})).unwrap();
    assert_eq!(monitor.socket_addr(), "127.0.0.1:4000".parse().unwrap());
    assert!(serde_json::from_value::<MonitorConfig>(json!({"bind": "x"})).is_err());
}

#[test]
fn statsd_unresolvable_host_is_a_config_error() {
    let config = StatsdConfig {
        enabled: true,
        host: "no such host name".into(),
        ..StatsdConfig::default()
    };
    let err = Statsd::from_config(&config).unwrap_err();
    assert!(err.to_string().contains("no such host name"), "{err}");
}
