//! The embedded (redb) share store: records, minute sums, blocks, idempotent batches, and the
//! share-log driver on top of it.

use std::sync::Arc;
use std::time::Duration;

use powerpool_core::record::{BlockRecord, BlockStatus, RecordId, ShareKind, ShareRecord};
use powerpool_core::sharelog::{Batch, BatchId, LogRecord, ShareLogConfig, ShareLogStatus};
use powerpool_drivers::store::{
    EmbeddedStore, ShareLogDriverConfig, ShareStore, Spool, WriteOutcome, run_share_log,
};
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
