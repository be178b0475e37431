//! The embedded (redb) share store: records, minute sums, blocks, idempotent batches, and the
//! share-log driver on top of it.

use std::sync::Arc;
use std::time::Duration;

use powerpool_core::record::{BlockRecord, BlockStatus, RecordId, ShareKind, ShareRecord};
use powerpool_core::sharelog::{Batch, BatchId, LogRecord, ShareLogConfig, ShareLogStatus};
use powerpool_drivers::store::{
    EmbeddedStore, ShareLogDriverConfig, ShareStore, Spool, WriteOutcome, run_share_log,
};
use redb::TableDefinition;
use tokio::sync::{mpsc, watch};

fn share(seq: u64, kind: ShareKind, diff: f64) -> LogRecord {
    LogRecord::Share(ShareRecord {
        id: RecordId {
            server: 1,
            boot: 9,
            seq,
        },
        unix_ms: 1_700_000_040_000 + seq * 1000,
        kind,
        address: "addr".into(),
        worker: "w".into(),
        difficulty: diff,
        currency: "BTC".into(),
        algo: "sha256".into(),
        height: 10,
        aux_currencies: vec![],
        count: 1,
    })
}

fn batch(seq: u64, records: Vec<LogRecord>) -> Batch {
    Batch {
        id: BatchId {
            server: 1,
            boot: 9,
            seq,
        },
        records,
    }
}

#[tokio::test]
async fn records_minutes_and_blocks_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("shares.redb")).unwrap();
    let blk = BlockRecord {
        id: RecordId {
            server: 1,
            boot: 9,
            seq: 4,
        },
        unix_ms: 0,
        currency: "BTC".into(),
        algo: "sha256".into(),
        height: 10,
        hash: "00ff".into(),
        address: "addr".into(),
        worker: "w".into(),
        total_subsidy: 1,
        fees: 0,
        bits: "1d00ffff".into(),
        merged: false,
        status: BlockStatus::Submitted,
        reject_reason: None,
    };
    let b1 = batch(
        1,
        vec![
            share(1, ShareKind::Accepted, 2.0),
            share(2, ShareKind::Accepted, 0.5),
            share(3, ShareKind::Stale, 8.0),
            LogRecord::Block(blk),
        ],
    );
    assert_eq!(store.write_batch(&b1).await.unwrap(), WriteOutcome::Applied);
    assert_eq!(
        store.write_batch(&b1).await.unwrap(),
        WriteOutcome::AlreadyApplied
    );
    let b2 = batch(
        2,
        vec![LogRecord::BlockStatus {
            id: RecordId {
                server: 1,
                boot: 9,
                seq: 4,
            },
            hash: "00ff".into(),
            currency: "BTC".into(),
            status: BlockStatus::Rejected,
            reason: Some("high-hash".into()),
        }],
    );
    store.write_batch(&b2).await.unwrap();
    assert_eq!(store.share_count().unwrap(), 3);
    let seqs: Vec<u64> = store.shares().unwrap().iter().map(|s| s.id.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let m = store.minute_totals().unwrap();
    // Shares 1 and 2 are one second apart in the same minute.
    assert_eq!(
        m[&("acc_sha256_1700000040".to_string(), "addr.w".to_string())],
        2.5
    );
    assert_eq!(
        m[&("stale_sha256_1700000040".to_string(), "addr.w".to_string())],
        8.0
    );
    let blocks = store.blocks().unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].status, BlockStatus::Rejected);
    assert_eq!(blocks[0].reject_reason.as_deref(), Some("high-hash"));
    assert_eq!(store.applied_seq("0001-00000009").unwrap(), Some(2));
    // Reopening sees the same data (it was committed).
    drop(store);
    let store = EmbeddedStore::open(&dir.path().join("shares.redb")).unwrap();
    assert_eq!(store.share_count().unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_share_log_driver_writes_everything_through_and_flushes_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("shares.redb")).unwrap();
    let spool = Spool::open(&dir.path().join("spool"), 1 << 20).unwrap();
    let (tx, rx) = mpsc::channel(16);
    let (status_tx, status_rx) = watch::channel(ShareLogStatus::default());
    let cfg = ShareLogDriverConfig {
        log: ShareLogConfig {
            server: 1,
            boot: 9,
            max_batch: 25,
            // Longer than the test: only size and shutdown seal batches here.
            max_delay: Duration::from_secs(3600),
            ..ShareLogConfig::default()
        },
        ..ShareLogDriverConfig::default()
    };
    let primary: Arc<dyn ShareStore> = Arc::new(store.clone());
    let h = tokio::spawn(run_share_log(
        cfg,
        primary,
        spool,
        rx,
        std::future::pending(),
        status_tx,
    ));
    for seq in 1..=110 {
        tx.send(share(seq, ShareKind::Accepted, 1.0)).await.unwrap();
    }
    // Dropping every sender is a shutdown too: the last, partial batch is flushed.
    drop(tx);
    let report = h.await.unwrap();
    assert_eq!(report.abandoned_records, 0);
    assert_eq!(report.status.records_written, 110);
    // Batches are sealed at 25 records, at shutdown, and whenever the spool is idle (group
    // commit), so how many there are depends on timing; never fewer than the size allows.
    assert!(
        (5..=110).contains(&report.status.batches_written),
        "{} batches",
        report.status.batches_written
    );
    assert_eq!(status_rx.borrow().records_written, 110);
    let seqs: Vec<u64> = store.shares().unwrap().iter().map(|s| s.id.seq).collect();
    assert_eq!(seqs, (1..=110).collect::<Vec<_>>());
}

fn block_at(seq: u64, hash: &str, unix_ms: u64, status: BlockStatus) -> LogRecord {
    LogRecord::Block(BlockRecord {
        id: RecordId {
            server: 1,
            boot: 9,
            seq,
        },
        unix_ms,
        currency: "BTC".into(),
        algo: "sha256".into(),
        height: 10,
        hash: hash.into(),
        address: "addr".into(),
        worker: "w".into(),
        total_subsidy: 1,
        fees: 0,
        bits: "1d00ffff".into(),
        merged: false,
        status,
        reject_reason: None,
    })
}

/// A monitor serving `/shares` from `store`, as a running pool's does.
struct StoreOnly(powerpool_drivers::store::export::StoreReader);

impl powerpool_drivers::monitor::MonitorSource for StoreOnly {
    fn status(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn clients(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn client(&self, _: &str) -> Option<serde_json::Value> {
        None
    }
    fn components(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn healthy(&self) -> bool {
        true
    }
    fn store(&self) -> Option<powerpool_drivers::store::export::StoreReader> {
        Some(self.0.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_are_exported_by_window_and_round_directly_and_through_the_monitor() {
    use powerpool_drivers::store::export::{
        ExportFormat, ExportQuery, Filter, Source, StoreReader, export,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("shares.redb")).unwrap();
    // Shares 1..=30 at 1_700_000_040_000 + seq s; every fifth is stale; blocks close rounds at
    // seq 10 (accepted), 20 (rejected: no boundary) and 30 (submitted).
    let mut records = Vec::new();
    for seq in 1..=30u64 {
        let kind = if seq % 5 == 0 {
            ShareKind::Stale
        } else {
            ShareKind::Accepted
        };
        records.push(share(seq, kind, seq as f64));
        let t = 1_700_000_040_000 + seq * 1000;
        match seq {
            10 => records.push(block_at(100 + seq, "b10", t, BlockStatus::Accepted)),
            20 => records.push(block_at(100 + seq, "b20", t, BlockStatus::Rejected)),
            30 => records.push(block_at(100 + seq, "b30", t, BlockStatus::Submitted)),
            _ => {}
        }
    }
    for (i, chunk) in records.chunks(6).enumerate() {
        store
            .write_batch(&batch(i as u64 + 1, chunk.to_vec()))
            .await
            .unwrap();
    }
    let reader = StoreReader::Embedded(store.clone());

    async fn csv(source: &Source, q: &ExportQuery) -> Vec<String> {
        let mut out = Vec::new();
        let n = export(source, q, ExportFormat::Csv, &mut out)
            .await
            .unwrap();
        let lines: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            lines.len() as u64,
            n + 1,
            "a header and one line per record"
        );
        assert!(lines[0].starts_with("id,unix_ms,kind,address,worker,difficulty,count"));
        lines[1..].to_vec()
    }
    let seqs = |lines: &[String]| -> Vec<u64> {
        lines
            .iter()
            .map(|l| {
                let id = l.split(',').next().unwrap();
                u64::from_str_radix(id.rsplit('-').next().unwrap(), 16).unwrap()
            })
            .collect()
    };
    let direct = Source::Store(reader.clone());

    // A window: [since, until), accepted only unless asked.
    let q = ExportQuery {
        since_ms: Some(1_700_000_040_000 + 3_000),
        until_ms: Some(1_700_000_040_000 + 12_000),
        ..ExportQuery::default()
    };
    assert_eq!(seqs(&csv(&direct, &q).await), [3, 4, 6, 7, 8, 9, 11]);
    let all = ExportQuery {
        all_kinds: true,
        ..q.clone()
    };
    let lines = csv(&direct, &all).await;
    assert_eq!(seqs(&lines), [3, 4, 5, 6, 7, 8, 9, 10, 11]);
    assert!(lines[2].contains(",stale,addr,w,5,1,BTC,"), "{}", lines[2]);

    // Rounds: b30's round runs from b10 (b20 was rejected) to b30 itself.
    let round = |h: &str| ExportQuery {
        round: Some(h.into()),
        ..ExportQuery::default()
    };
    assert_eq!(
        seqs(&csv(&direct, &round("b10")).await),
        [1, 2, 3, 4, 6, 7, 8, 9]
    );
    let r30 = seqs(&csv(&direct, &round("b30")).await);
    assert_eq!(r30.first(), Some(&11));
    assert_eq!(r30.last(), Some(&29));
    assert_eq!(r30.len(), 16);
    let mut none = Vec::new();
    assert!(
        export(&direct, &round("nope"), ExportFormat::Csv, &mut none)
            .await
            .unwrap_err()
            .contains("no block nope")
    );

    // Pages follow the cursor and lose nothing; a page ends on a whole batch.
    let f = Filter::new(&ExportQuery::default(), None);
    let mut after = None;
    let mut paged = Vec::new();
    let mut pages = 0;
    loop {
        let p = reader.page(&f, after.as_deref(), 7).await.unwrap();
        pages += 1;
        paged.extend(p.records.iter().map(|r| r.id.seq));
        match p.next {
            Some(n) => {
                assert!(p.records.len() >= 7, "only the last page is short");
                after = Some(n);
            }
            None => break,
        }
    }
    assert!(pages > 1);
    assert_eq!(paged.len(), 24);
    assert!(paged.windows(2).all(|w| w[0] < w[1]));

    // Through a monitor (as while the pool holds the file): the same bytes, JSON lines too.
    let metrics = Arc::new(powerpool_drivers::metrics::Metrics::new(
        powerpool_drivers::metrics::MetricsSetup {
            hashes_per_diff1: 1.0,
            stratum_ports: vec![],
            nodes: vec![],
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(powerpool_drivers::monitor::serve(
        listener,
        Arc::new(StoreOnly(reader.clone())),
        metrics,
        async move {
            let _ = stopped.await;
        },
    ));
    let remote = Source::Monitor(format!("http://{addr}"));
    for q in [q, all, round("b30")] {
        assert_eq!(csv(&remote, &q).await, csv(&direct, &q).await, "{q:?}");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        export(&remote, &q, ExportFormat::Jsonl, &mut a)
            .await
            .unwrap();
        export(&direct, &q, ExportFormat::Jsonl, &mut b)
            .await
            .unwrap();
        assert_eq!(a, b);
        let first: ShareRecord =
            serde_json::from_slice(a.split(|&c| c == b'\n').next().unwrap()).unwrap();
        assert_eq!(first.address.as_ref(), "addr");
    }
    let mut out = Vec::new();
    let e = export(&remote, &round("nope"), ExportFormat::Csv, &mut out)
        .await
        .unwrap_err();
    assert!(e.contains("400") && e.contains("no block nope"), "{e}");
    // Blocks, newest first, paged; per-address sums by worker and kind.
    let get = |path: String| async move {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        let status = r.status();
        (status, r.json::<serde_json::Value>().await.unwrap())
    };
    let (_, page) = get("/store/blocks?limit=2".into()).await;
    let hashes: Vec<&str> = page["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["hash"].as_str().unwrap())
        .collect();
    assert_eq!(hashes, ["b30", "b20"]);
    assert_eq!(page["blocks"][1]["status"], "rejected");
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, page) = get(format!("/store/blocks?limit=2&before={next}")).await;
    assert_eq!(page["blocks"][0]["hash"], "b10");
    assert!(page["next"].is_null());
    let (status, _) = get("/store/blocks?before=nonsense".into()).await;
    assert_eq!(status, 400);
    let (_, totals) = get("/store/addresses/addr".into()).await;
    assert_eq!(totals["workers"]["w"]["acc"], 360.0);
    assert_eq!(totals["workers"]["w"]["stale"], 105.0);
    let (_, none) = get("/store/addresses/addr?until=1700000000".into()).await;
    assert_eq!(none["workers"], serde_json::json!({}));
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Bytes the store file takes per share, for a pool of 500 workers at a few difficulties
/// writing batches of 1,000: the goal is at most 64.
#[tokio::test]
async fn a_share_takes_under_64_bytes_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shares.redb");
    let store = EmbeddedStore::open(&path).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    let (batches, per_batch) = (100u64, 1_000u64);
    for b in 0..batches {
        let records = (0..per_batch)
            .map(|i| {
                let n = b * per_batch + i;
                let w = n % 500;
                LogRecord::Share(ShareRecord {
                    id: RecordId {
                        server: 1,
                        boot: 9,
                        seq: ((w + 1) << 32) | (n / 500),
                    },
                    unix_ms: 1_700_000_040_000 + n * 3,
                    kind: ShareKind::Accepted,
                    address: format!("bc1qexampleexampleexampleexample{:04}", w % 200).into(),
                    worker: format!("rig{w}").into(),
                    difficulty: [512.0, 1024.0, 2048.0, 4096.0][(w % 4) as usize],
                    currency: "BTC".into(),
                    algo: "sha256d".into(),
                    height: 900_000 + b / 10,
                    aux_currencies: vec![],
                    count: 1,
                })
            })
            .collect();
        store.write_batch_blocking(&batch(b + 1, records)).unwrap();
    }
    let shares = batches * per_batch;
    assert_eq!(store.share_count().unwrap(), shares);
    drop(store);
    let after = std::fs::metadata(&path).unwrap().len();
    let per_share = (after - before) as f64 / shares as f64;
    println!(
        "store file {before} -> {after} bytes for {shares} shares: {per_share:.1} bytes per share"
    );
    assert!(per_share <= 64.0, "{per_share:.1} bytes per share");
}

/// A store written before the compact blocks keeps its one-row-per-share table: it is read
/// back first, then the blocks written since.
#[tokio::test]
async fn shares_of_a_store_from_before_the_compact_blocks_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    let old: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("shares");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(old).unwrap();
            for seq in [1u64, 2] {
                let LogRecord::Share(r) = share(seq, ShareKind::Accepted, 1.0) else {
                    panic!("a share")
                };
                let mut key = [0u8; 14];
                key[..2].copy_from_slice(&r.id.server.to_be_bytes());
                key[2..6].copy_from_slice(&r.id.boot.to_be_bytes());
                key[6..].copy_from_slice(&r.id.seq.to_be_bytes());
                t.insert(key.as_slice(), serde_json::to_vec(&r).unwrap().as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let store = EmbeddedStore::open(&path).unwrap();
    store
        .write_batch_blocking(&batch(1, vec![share(3, ShareKind::Accepted, 1.0)]))
        .unwrap();
    let seqs: Vec<u64> = store.shares().unwrap().iter().map(|s| s.id.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[tokio::test]
async fn retention_prunes_old_share_blocks_by_age_or_rounds_a_step_at_a_time() {
    const DAY: u64 = 86_400_000;
    let now = 1_700_000_000_000 + 40 * DAY;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("shares.redb")).unwrap();
    // Ten batches, one a day from 30 days ago, each closed by a block (the fourth rejected).
    for d in 0..10u64 {
        let t = now - (30 - d) * DAY;
        let mut recs: Vec<LogRecord> = (0..3)
            .map(|i| {
                let LogRecord::Share(mut r) = share(d * 10 + i + 1, ShareKind::Accepted, 1.0)
                else {
                    panic!("a share")
                };
                r.unix_ms = t + i;
                LogRecord::Share(r)
            })
            .collect();
        let status = if d == 3 {
            BlockStatus::Rejected
        } else {
            BlockStatus::Confirmed
        };
        recs.push(block_at(1000 + d, &format!("b{d}"), t + 10, status));
        store.write_batch_blocking(&batch(d + 1, recs)).unwrap();
    }
    assert_eq!(store.share_count().unwrap(), 30);
    // Off: nothing to cut.
    assert_eq!(store.retention_cutoff(now, 0, 0).unwrap(), None);
    // By age: 25 days keeps the batches from 25 days ago on (d >= 5).
    let cutoff = store.retention_cutoff(now, 25, 0).unwrap().unwrap();
    assert_eq!(cutoff, now - 25 * DAY);
    // One block per step.
    let mut steps = 0;
    loop {
        let p = store.prune(cutoff, 1).unwrap();
        steps += 1;
        if !p.more {
            break;
        }
        assert_eq!(p.share_blocks, 1);
    }
    assert_eq!(steps, 5);
    let left: Vec<u64> = store.shares().unwrap().iter().map(|s| s.id.seq).collect();
    assert_eq!(left.first(), Some(&51));
    assert_eq!(left.len(), 15);
    // Blocks are kept.
    assert_eq!(store.blocks().unwrap().len(), 10);
    // By rounds: the last 2 rounds run from the third newest block not rejected (b7).
    let cutoff = store.retention_cutoff(now, 0, 2).unwrap().unwrap();
    assert_eq!(cutoff, now - (30 - 7) * DAY + 10);
    // The later of the two bounds wins.
    assert_eq!(store.retention_cutoff(now, 25, 2).unwrap(), Some(cutoff));
    store.prune(cutoff, 100).unwrap();
    let left: Vec<u64> = store.shares().unwrap().iter().map(|s| s.id.seq).collect();
    // Pruning keeps anything within an hour of the cutoff: the batch of b7's day stays whole.
    assert_eq!(left, [71, 72, 73, 81, 82, 83, 91, 92, 93]);
    // Reads and writes go on afterwards.
    store
        .write_batch_blocking(&batch(100, vec![share(500, ShareKind::Accepted, 1.0)]))
        .unwrap();
    assert_eq!(store.share_count().unwrap(), 10);
}
