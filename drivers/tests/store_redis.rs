//! The Redis share store against a real `redis-server`: SimpleCoin's layout (reference §8.4),
//! the share stream, idempotent batches, and a Redis killed mid-run while shares keep coming.

mod common {
    pub mod redis;
}

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use powerpool_core::record::{BlockRecord, BlockStatus, RecordId, ShareKind, ShareRecord};
use powerpool_core::sharelog::{Batch, BatchId, LogRecord, ShareLogConfig, ShareLogStatus};
use powerpool_drivers::store::{
    RedisStore, RedisStoreConfig, ShareLogDriverConfig, ShareStore, Spool, StoreError,
    WriteOutcome, run_share_log,
};
use redis::Commands;
use tokio::sync::{mpsc, oneshot, watch};

const T0: u64 = 1_700_000_040_000; // a minute boundary is at ...040 s

fn id(seq: u64) -> RecordId {
    RecordId {
        server: 3,
        boot: 0xdead_beef,
        seq,
    }
}

fn share(seq: u64, kind: ShareKind, address: &str, diff: f64) -> LogRecord {
    LogRecord::Share(ShareRecord {
        id: id(seq),
        unix_ms: T0 + seq,
        kind,
        address: address.into(),
        worker: "w1".into(),
        difficulty: diff,
        currency: "TEST".into(),
        algo: "sha256".into(),
        height: 500,
        aux_currencies: vec![],
    })
}

fn block(seq: u64, hash: &str, status: BlockStatus) -> LogRecord {
    LogRecord::Block(BlockRecord {
        id: id(seq),
        unix_ms: T0 + seq,
        currency: "TEST".into(),
        algo: "sha256".into(),
        height: 500,
        hash: hash.into(),
        address: "donate".into(),
        worker: "w1".into(),
        total_subsidy: 5_000_000_000,
        fees: 1234,
        bits: "207fffff".into(),
        merged: false,
        status,
        reject_reason: None,
    })
}

fn batch(seq: u64, records: Vec<LogRecord>) -> Batch {
    Batch {
        id: BatchId {
            server: 3,
            boot: 0xdead_beef,
            seq,
        },
        records,
    }
}

fn store(server: &RedisServer) -> RedisStore {
    RedisStore::new(RedisStoreConfig {
        url: server.url(),
        ..RedisStoreConfig::default()
    })
    .expect("redis store")
}

fn conn(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .expect("test connection")
}

fn stream_ids(c: &mut redis::Connection) -> Vec<String> {
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("powerpool:shares")
        .arg("-")
        .arg("+")
        .query(c)
        .expect("XRANGE");
    entries.into_iter().map(|(_, f)| f["id"].clone()).collect()
}

#[tokio::test]
async fn shares_land_in_the_simplecoin_layout_and_the_stream() {
    let server = RedisServer::start();
    let s = store(&server);
    let mut aux = share(1, ShareKind::Accepted, "addrA", 64.0);
    if let LogRecord::Share(r) = &mut aux {
        r.aux_currencies = vec!["AUX".into()];
    }
    let b = batch(
        1,
        vec![
            aux,
            share(2, ShareKind::Accepted, "addrB", 0.5),
            share(3, ShareKind::Accepted, "addrA", 1e-10),
            share(4, ShareKind::Duplicate, "addrA", 64.0),
            share(5, ShareKind::LowDifficulty, "addrB", 8.0),
            share(6, ShareKind::Stale, "addrB", 8.0),
            share(7, ShareKind::Invalid, "addrB", 8.0),
        ],
    );
    assert_eq!(s.write_batch(&b).await.unwrap(), WriteOutcome::Applied);
    let mut c = conn(&server);
    let main: f64 = c
        .hget("current_block_TEST_sha256", "chain_1_shares")
        .unwrap();
    assert!((main - (64.5 + 1e-10)).abs() < 1e-12, "{main}");
    let aux: String = c
        .hget("current_block_AUX_sha256", "chain_1_shares")
        .unwrap();
    assert_eq!(aux, "64");
    let slice: Vec<String> = c.lrange("chain_1_slice", 0, -1).unwrap();
    assert_eq!(slice, vec!["addrA:64", "addrB:0.5", "addrA:1e-10"]);
    let stamp = T0 / 1000 / 60 * 60;
    let acc: HashMap<String, f64> = c.hgetall(format!("min_acc_sha256_{stamp}")).unwrap();
    assert_eq!(acc.len(), 2);
    assert!((acc["addrA.w1"] - (64.0 + 1e-10)).abs() < 1e-12);
    assert_eq!(acc["addrB.w1"], 0.5);
    let dup: HashMap<String, String> = c.hgetall(format!("min_dup_sha256_{stamp}")).unwrap();
    assert_eq!(dup, HashMap::from([("addrA.w1".into(), "64".into())]));
    let low: HashMap<String, String> = c.hgetall(format!("min_low_sha256_{stamp}")).unwrap();
    assert_eq!(low, HashMap::from([("addrB.w1".into(), "8".into())]));
    let stale: HashMap<String, String> = c.hgetall(format!("min_stale_sha256_{stamp}")).unwrap();
    assert_eq!(stale, HashMap::from([("addrB.w1".into(), "8".into())]));
    let keys: Vec<String> = c.keys("min_*").unwrap();
    assert_eq!(keys.len(), 4, "no minute key for invalid shares: {keys:?}");
    // Every share, of every kind, is in the stream once with its fields.
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("powerpool:shares")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    assert_eq!(entries.len(), 7);
    let first = &entries[0].1;
    assert_eq!(first["id"], id(1).to_string());
    assert_eq!(first["kind"], "accepted");
    assert_eq!(first["address"], "addrA");
    assert_eq!(first["worker"], "w1");
    assert_eq!(first["difficulty"], "64");
    assert_eq!(first["currency"], "TEST");
    assert_eq!(first["algo"], "sha256");
    assert_eq!(first["height"], "500");
    assert_eq!(first["unix_ms"], (T0 + 1).to_string());
    assert_eq!(first["aux"], "AUX");
    assert_eq!(entries[6].1["kind"], "invalid");
    let applied: String = c.hget("powerpool:applied", "0003-deadbeef").unwrap();
    assert_eq!(applied, "1");
}

/// The worked example of reference §8.4: chain 1, currency TEST, algo sha256, diff 1e-10,
/// two blocks.
#[tokio::test]
async fn blocks_rotate_slices_as_the_reference_worked_example() {
    let server = RedisServer::start();
    let s = store(&server);
    let d = 1e-10;
    let h1 = "00000000000000000000000000000000000000000000000000000000000000a1";
    let h2 = "00000000000000000000000000000000000000000000000000000000000000a2";
    // One share then its block; three shares then theirs; then one more share.
    let b1 = batch(
        1,
        vec![
            share(1, ShareKind::Accepted, "donate", d),
            block(2, h1, BlockStatus::Accepted),
            share(3, ShareKind::Accepted, "donate", d),
        ],
    );
    let b2 = batch(
        2,
        vec![
            share(4, ShareKind::Accepted, "donate", d),
            share(5, ShareKind::Accepted, "donate", d),
            block(6, h2, BlockStatus::Accepted),
        ],
    );
    s.write_batch(&b1).await.unwrap();
    s.write_batch(&b2).await.unwrap();
    let mut c = conn(&server);
    let idx: u64 = c.get("chain_1_slice_index").unwrap();
    assert_eq!(idx, 2);
    let s1: Vec<String> = c.lrange("chain_1_slice_1", 0, -1).unwrap();
    assert_eq!(s1, vec!["donate:1e-10"]);
    let s2: Vec<String> = c.lrange("chain_1_slice_2", 0, -1).unwrap();
    assert_eq!(s2, vec!["donate:1e-10"; 3]);
    assert!(!c.exists::<_, bool>("chain_1_slice").unwrap());
    let u1: HashMap<String, String> = c.hgetall(format!("unproc_block_{h1}")).unwrap();
    assert_eq!(u1["chain_1_solve_index"], "1");
    assert!(!u1.contains_key("start_time"));
    assert!(!u1.contains_key("chain_1_start_index"));
    assert_eq!(u1["chain_1_shares"], "0.0000000001");
    assert_eq!(u1["solve_time"], format!("{}.002", T0 / 1000));
    for (k, v) in [
        ("address", "donate"),
        ("worker", "w1"),
        ("height", "500"),
        ("total_subsidy", "5000000000"),
        ("fees", "1234"),
        ("hex_bits", "207fffff"),
        ("hash", h1),
        ("currency", "TEST"),
        ("algo", "sha256"),
        ("merged", "0"),
        ("status", "accepted"),
    ] {
        assert_eq!(u1[k], v, "field {k}");
    }
    let u2: HashMap<String, String> = c.hgetall(format!("unproc_block_{h2}")).unwrap();
    assert_eq!(u2["chain_1_start_index"], "1");
    assert_eq!(u2["chain_1_solve_index"], "2");
    assert_eq!(u2["start_time"], format!("{}.002", T0 / 1000));
    let cur: HashMap<String, String> = c.hgetall("current_block_TEST_sha256").unwrap();
    assert_eq!(cur.len(), 2, "{cur:?}");
    assert_eq!(cur["chain_1_start_index"], "2");
    assert_eq!(cur["start_time"], format!("{}.006", T0 / 1000));
}

#[tokio::test]
async fn a_rejected_block_is_not_credited_and_its_round_reopens() {
    let server = RedisServer::start();
    let s = store(&server);
    let h0 = "00000000000000000000000000000000000000000000000000000000000000f0";
    let hr = "00000000000000000000000000000000000000000000000000000000000000bb";
    let ha = "00000000000000000000000000000000000000000000000000000000000000cc";
    let status = |seq, hash: &str, st, reason: Option<&str>| LogRecord::BlockStatus {
        id: id(seq),
        hash: hash.into(),
        currency: "TEST".into(),
        status: st,
        reason: reason.map(String::from),
    };
    // An earlier accepted block opens the round at slice index 1.
    s.write_batch(&batch(
        1,
        vec![
            share(1, ShareKind::Accepted, "a", 1.0),
            block(2, h0, BlockStatus::Accepted),
            share(3, ShareKind::Accepted, "a", 2.0),
            block(4, hr, BlockStatus::Submitted),
        ],
    ))
    .await
    .unwrap();
    let mut c = conn(&server);
    assert!(
        c.exists::<_, bool>(format!("submitted_block_{hr}"))
            .unwrap()
    );
    assert!(
        !c.exists::<_, bool>(format!("unproc_block_{hr}")).unwrap(),
        "not credited before a node accepts it"
    );
    s.write_batch(&batch(
        2,
        vec![
            share(5, ShareKind::Accepted, "b", 4.0),
            status(4, hr, BlockStatus::Rejected, Some("bad-txns")),
        ],
    ))
    .await
    .unwrap();
    let rej: HashMap<String, String> = c.hgetall(format!("rejected_block_{hr}")).unwrap();
    assert_eq!(rej["status"], "rejected");
    assert_eq!(rej["reject_reason"], "bad-txns");
    assert!(
        !c.exists::<_, bool>(format!("submitted_block_{hr}"))
            .unwrap()
    );
    let unproc: Vec<String> = c.keys("unproc_block_*").unwrap();
    assert_eq!(unproc, vec![format!("unproc_block_{h0}")]);
    // The round is as if the rejected block had never closed it.
    let cur: HashMap<String, String> = c.hgetall("current_block_TEST_sha256").unwrap();
    assert_eq!(cur["chain_1_shares"], "6");
    assert_eq!(cur["chain_1_start_index"], "1");
    assert_eq!(cur["start_time"], format!("{}.002", T0 / 1000));
    // The next block, submitted then accepted, pays shares since the accepted block.
    s.write_batch(&batch(
        3,
        vec![
            block(6, ha, BlockStatus::Submitted),
            status(6, ha, BlockStatus::Accepted, None),
        ],
    ))
    .await
    .unwrap();
    let acc: HashMap<String, String> = c.hgetall(format!("unproc_block_{ha}")).unwrap();
    assert_eq!(acc["status"], "accepted");
    assert_eq!(acc["chain_1_shares"], "6");
    assert_eq!(acc["chain_1_start_index"], "1");
    assert_eq!(acc["chain_1_solve_index"], "3");
    let mut paid = Vec::new();
    for i in 2..=3 {
        let sl: Vec<String> = c.lrange(format!("chain_1_slice_{i}"), 0, -1).unwrap();
        paid.extend(sl);
    }
    assert_eq!(paid, vec!["a:2", "b:4"]);
}

#[tokio::test]
async fn the_same_batch_written_twice_counts_once() {
    let server = RedisServer::start();
    let s = store(&server);
    let b = batch(
        7,
        vec![
            share(1, ShareKind::Accepted, "a", 2.0),
            share(2, ShareKind::Accepted, "a", 3.0),
        ],
    );
    assert_eq!(s.write_batch(&b).await.unwrap(), WriteOutcome::Applied);
    assert_eq!(
        s.write_batch(&b).await.unwrap(),
        WriteOutcome::AlreadyApplied
    );
    // An older batch of the same instance (a replay of something already written) too.
    let older = batch(6, vec![share(0, ShareKind::Accepted, "a", 100.0)]);
    assert_eq!(
        s.write_batch(&older).await.unwrap(),
        WriteOutcome::AlreadyApplied
    );
    let mut c = conn(&server);
    let total: String = c
        .hget("current_block_TEST_sha256", "chain_1_shares")
        .unwrap();
    assert_eq!(total, "5");
    assert_eq!(c.llen::<_, u64>("chain_1_slice").unwrap(), 2);
    assert_eq!(stream_ids(&mut c).len(), 2);
    // Another instance's batch with a lower sequence is its own series.
    let other = Batch {
        id: BatchId {
            server: 4,
            boot: 1,
            seq: 1,
        },
        records: vec![share(9, ShareKind::Accepted, "a", 1.0)],
    };
    assert_eq!(s.write_batch(&other).await.unwrap(), WriteOutcome::Applied);
    assert_eq!(stream_ids(&mut c).len(), 3);
}

#[tokio::test]
async fn a_key_of_the_wrong_type_refuses_the_whole_batch() {
    let server = RedisServer::start();
    let s = store(&server);
    let mut c = conn(&server);
    let _: () = c.set("chain_1_slice", "not a list").unwrap();
    let b = batch(1, vec![share(1, ShareKind::Accepted, "a", 2.0)]);
    let err = s.write_batch(&b).await.unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");
    assert!(!err.retryable());
    assert!(!c.exists::<_, bool>("current_block_TEST_sha256").unwrap());
    assert!(!c.exists::<_, bool>("powerpool:shares").unwrap());
    assert!(!c.exists::<_, bool>("powerpool:applied").unwrap());
    // Once fixed, the same batch goes through.
    let _: () = c.del("chain_1_slice").unwrap();
    assert_eq!(s.write_batch(&b).await.unwrap(), WriteOutcome::Applied);
}

#[tokio::test]
async fn unreachable_redis_is_a_retryable_error() {
    let mut server = RedisServer::start();
    let s = store(&server);
    s.health().await.unwrap();
    server.kill();
    let err = s
        .write_batch(&batch(1, vec![share(1, ShareKind::Accepted, "a", 1.0)]))
        .await
        .unwrap_err();
    assert!(err.retryable(), "{err}");
    server.restart();
    // The connection manager reconnects by itself.
    let mut ok = false;
    for _ in 0..50 {
        if s.health().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "store did not reconnect");
}

fn driver_cfg() -> ShareLogDriverConfig {
    ShareLogDriverConfig {
        log: ShareLogConfig {
            server: 3,
            boot: 0xdead_beef,
            max_batch: 50,
            max_delay: Duration::from_millis(20),
            retry_backoff: Duration::from_millis(50),
            max_retry_backoff: Duration::from_millis(200),
            max_pending_records: 10_000,
        },
        write_timeout: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(10),
    }
}

async fn wait_for(
    rx: &mut watch::Receiver<ShareLogStatus>,
    what: &str,
    f: impl Fn(&ShareLogStatus) -> bool,
) {
    let ok = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| f(s)))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(ok, "timed out waiting for: {what}; last {:?}", *rx.borrow());
}

fn check_exactly_once(server: &RedisServer, n: u64) {
    let mut c = conn(server);
    let ids = stream_ids(&mut c);
    let want: Vec<String> = (1..=n).map(|s| id(s).to_string()).collect();
    assert_eq!(ids.len() as u64, n, "stream entries");
    assert_eq!(ids, want, "every id once, in order");
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len() as u64, n);
    assert_eq!(c.llen::<_, u64>("chain_1_slice").unwrap(), n);
    let total: String = c
        .hget("current_block_TEST_sha256", "chain_1_shares")
        .unwrap();
    assert_eq!(total, n.to_string());
    let stamp = T0 / 1000 / 60 * 60;
    let acc: HashMap<String, f64> = c.hgetall(format!("min_acc_sha256_{stamp}")).unwrap();
    assert_eq!(acc.values().sum::<f64>(), n as f64);
}

/// redis-server is SIGKILLed while shares keep coming, then restarted (with an fsynced AOF, so
/// what it acknowledged survives): after the spool is replayed, every share handed to the log
/// is in Redis exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_loses_and_duplicates_nothing() {
    let mut server = RedisServer::start_durable();
    let spool_dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(spool_dir.path(), 64 << 20).unwrap();
    let primary: Arc<dyn ShareStore> = Arc::new(store(&server));
    let (tx, rx) = mpsc::channel(256);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (status_tx, mut status_rx) = watch::channel(ShareLogStatus::default());
    let log = tokio::spawn(run_share_log(
        driver_cfg(),
        primary,
        spool,
        rx,
        async move {
            let _ = stop_rx.await;
        },
        status_tx,
    ));
    let n = 900u64;
    for seq in 1..=n {
        tx.send(share(
            seq,
            ShareKind::Accepted,
            &format!("addr{}", seq % 7),
            1.0,
        ))
        .await
        .unwrap();
        if seq % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if seq == 300 {
            server = tokio::task::spawn_blocking(move || {
                server.kill();
                server
            })
            .await
            .unwrap();
        }
        if seq == 500 {
            wait_for(&mut status_rx, "records spooled during the outage", |s| {
                s.spooled_batches > 0 && !s.primary_up
            })
            .await;
        }
        if seq == 600 {
            server = tokio::task::spawn_blocking(move || {
                server.restart();
                server
            })
            .await
            .unwrap();
        }
    }
    wait_for(
        &mut status_rx,
        "spool replayed and everything written",
        |s| {
            s.primary_up
                && s.spooled_batches == 0
                && s.pending_records == 0
                && s.records_written > 0
        },
    )
    .await;
    stop_tx.send(()).unwrap();
    let report = log.await.unwrap();
    assert_eq!(report.abandoned_records, 0);
    assert!(report.status.batches_replayed > 0, "{:?}", report.status);
    assert!(report.status.last_error.is_some());
    check_exactly_once(&server, n);
    assert_eq!(
        Spool::open(spool_dir.path(), 64 << 20)
            .unwrap()
            .pending_batches(),
        0
    );
}

/// Shutdown while Redis is down flushes everything to the spool; the next start replays it
/// before anything new, and nothing is counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_an_outage_spools_and_the_next_start_replays() {
    let mut server = RedisServer::start_durable();
    let spool_dir = tempfile::tempdir().unwrap();
    let run = |boot: u32, spool: Spool, primary: Arc<dyn ShareStore>| {
        let (tx, rx) = mpsc::channel(64);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (status_tx, status_rx) = watch::channel(ShareLogStatus::default());
        let mut cfg = driver_cfg();
        cfg.log.boot = boot;
        let h = tokio::spawn(run_share_log(
            cfg,
            primary,
            spool,
            rx,
            async move {
                let _ = stop_rx.await;
            },
            status_tx,
        ));
        (tx, stop_tx, status_rx, h)
    };
    let primary: Arc<dyn ShareStore> = Arc::new(store(&server));
    let (tx, stop, _st, h) = run(
        1,
        Spool::open(spool_dir.path(), 1 << 20).unwrap(),
        primary.clone(),
    );
    for seq in 1..=100 {
        tx.send(share(seq, ShareKind::Accepted, "a", 1.0))
            .await
            .unwrap();
    }
    server = tokio::task::spawn_blocking(move || {
        server.kill();
        server
    })
    .await
    .unwrap();
    for seq in 101..=200 {
        tx.send(share(seq, ShareKind::Accepted, "a", 1.0))
            .await
            .unwrap();
    }
    stop.send(()).unwrap();
    let report = h.await.unwrap();
    assert_eq!(report.abandoned_records, 0);
    drop(tx);
    let spool = Spool::open(spool_dir.path(), 1 << 20).unwrap();
    assert!(
        spool.pending_batches() > 0,
        "the outage's records are spooled"
    );
    server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    let (tx, stop, mut st, h) = run(2, spool, primary);
    for seq in 201..=250 {
        tx.send(share(seq, ShareKind::Accepted, "a", 1.0))
            .await
            .unwrap();
    }
    wait_for(&mut st, "replayed and written", |s| {
        s.primary_up && s.spooled_batches == 0 && s.pending_records == 0 && s.batches_replayed > 0
    })
    .await;
    stop.send(()).unwrap();
    assert_eq!(h.await.unwrap().abandoned_records, 0);
    check_exactly_once(&server, 250);
}

/// The real Redis store behind a fault: every third write is applied and then reported as
/// failed, as when the reply is lost to a timeout. The retry (through the spool) must not
/// count anything twice.
#[derive(Debug)]
struct LostReplies {
    inner: RedisStore,
    writes: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl ShareStore for LostReplies {
    fn name(&self) -> &str {
        "lost replies"
    }

    async fn write_batch(&self, batch: &Batch) -> Result<WriteOutcome, StoreError> {
        let out = self.inner.write_batch(batch).await?;
        let n = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n.is_multiple_of(3) {
            return Err(StoreError::Unavailable("reply lost".into()));
        }
        Ok(out)
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.inner.health().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_retried_after_lost_replies_count_once() {
    let server = RedisServer::start();
    let spool_dir = tempfile::tempdir().unwrap();
    let primary: Arc<dyn ShareStore> = Arc::new(LostReplies {
        inner: store(&server),
        writes: 0.into(),
    });
    let (tx, rx) = mpsc::channel(64);
    let (status_tx, mut st) = watch::channel(ShareLogStatus::default());
    let mut cfg = driver_cfg();
    cfg.log.max_batch = 20;
    let h = tokio::spawn(run_share_log(
        cfg,
        primary,
        Spool::open(spool_dir.path(), 1 << 20).unwrap(),
        rx,
        std::future::pending(),
        status_tx,
    ));
    for seq in 1..=300 {
        tx.send(share(seq, ShareKind::Accepted, "a", 1.0))
            .await
            .unwrap();
    }
    wait_for(&mut st, "lost replies seen and replayed", |s| {
        s.batches_replayed > 0 && s.spooled_batches == 0 && s.pending_records == 0
    })
    .await;
    drop(tx);
    let report = h.await.unwrap();
    assert_eq!(report.abandoned_records, 0);
    // A reply lost during the shutdown flush leaves that batch spooled: the next start
    // replays it, as in production.
    let spool = Spool::open(spool_dir.path(), 1 << 20).unwrap();
    if spool.pending_batches() > 0 {
        let (tx, rx) = mpsc::channel(1);
        let (status_tx, mut st) = watch::channel(ShareLogStatus::default());
        let mut cfg = driver_cfg();
        cfg.log.boot += 1;
        let h = tokio::spawn(run_share_log(
            cfg,
            Arc::new(store(&server)),
            spool,
            rx,
            std::future::pending(),
            status_tx,
        ));
        wait_for(&mut st, "restart replay", |s| {
            s.spooled_batches == 0 && s.batches_replayed > 0
        })
        .await;
        drop(tx);
        assert_eq!(h.await.unwrap().abandoned_records, 0);
    }
    check_exactly_once(&server, 300);
}
