//! Blocks whose fate is open survive a restart: both stores give back their submitted,
//! accepted and unknown block records, an `unknown` status keeps a Redis block held in its
//! closed round (a block that may have landed is neither paid nor its round reopened), and
//! [`coind::resume_blocks`] hands the parent chain's records to the coinserver machine.

mod common {
    pub mod redis;
}

use std::collections::BTreeMap;
use std::time::Duration;

use common::redis::RedisServer;
use powerpool_core::coinserver::{CoinserverConfig, Coinservers, NodeConfig};
use powerpool_core::record::{BlockRecord, BlockStatus, RecordId, ShareKind, ShareRecord};
use powerpool_core::sharelog::{Batch, BatchId, LogRecord};
use powerpool_core::time::{Now, Timestamp};
use powerpool_drivers::coind;
use powerpool_drivers::store::{EmbeddedStore, RedisStore, RedisStoreConfig, ShareStore};
use redis::Commands;

fn id(seq: u64) -> RecordId {
    RecordId {
        server: 2,
        boot: 0x0102_0304,
        seq,
    }
}

fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn block(seq: u64, n: u8, currency: &str, merged: bool) -> BlockRecord {
    BlockRecord {
        id: id(seq),
        unix_ms: 1_700_000_040_123,
        currency: currency.into(),
        algo: "sha256".into(),
        height: 100 + seq,
        hash: hash(n),
        address: "addr".into(),
        worker: "w".into(),
        total_subsidy: 5_000_000_000,
        fees: 7,
        bits: "207fffff".into(),
        merged,
        status: BlockStatus::Submitted,
        reject_reason: None,
    }
}

fn status(seq: u64, n: u8, st: BlockStatus) -> LogRecord {
    LogRecord::BlockStatus {
        id: id(seq),
        hash: hash(n),
        currency: "BTC".into(),
        status: st,
        reason: None,
    }
}

/// Six parent blocks, each left at another status, and one merge-mined block: batches 1 and 2.
fn history() -> Vec<Batch> {
    let recs = vec![
        LogRecord::Block(block(1, 1, "BTC", false)),
        LogRecord::Block(block(2, 2, "BTC", false)),
        LogRecord::Block(block(3, 3, "BTC", false)),
        LogRecord::Block(block(4, 4, "BTC", false)),
        LogRecord::Block(block(5, 5, "BTC", false)),
        LogRecord::Block(block(6, 6, "BTC", false)),
        LogRecord::Block(block(7, 7, "NMC", true)),
    ];
    let updates = vec![
        // 1 stays submitted (the pool stopped before the outcome).
        status(2, 2, BlockStatus::Unknown),
        status(3, 3, BlockStatus::Accepted),
        status(4, 4, BlockStatus::Accepted),
        status(4, 4, BlockStatus::Confirmed),
        status(5, 5, BlockStatus::Rejected),
        status(6, 6, BlockStatus::Accepted),
        status(6, 6, BlockStatus::Orphaned),
    ];
    [recs, updates]
        .into_iter()
        .enumerate()
        .map(|(i, records)| batch(i as u64 + 1, records))
        .collect()
}

fn by_seq(blocks: Vec<BlockRecord>) -> BTreeMap<u64, BlockRecord> {
    blocks.into_iter().map(|b| (b.id.seq, b)).collect()
}

fn assert_pending(pending: &BTreeMap<u64, BlockRecord>) {
    let statuses: Vec<(u64, BlockStatus)> = pending.iter().map(|(s, b)| (*s, b.status)).collect();
    assert_eq!(
        statuses,
        vec![
            (1, BlockStatus::Submitted),
            (2, BlockStatus::Unknown),
            (3, BlockStatus::Accepted),
            (7, BlockStatus::Submitted),
        ]
    );
    let b = &pending[&2];
    assert_eq!(
        (b.id, b.height, b.hash.as_str(), b.fees),
        (id(2), 102, hash(2).as_str(), 7)
    );
    assert!(pending[&7].merged);
}

#[tokio::test]
async fn the_embedded_store_gives_back_open_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shares.redb");
    {
        let store = EmbeddedStore::open(&path).unwrap();
        for b in history() {
            store.write_batch(&b).await.unwrap();
        }
    }
    // Reopened, as after a restart.
    let store = EmbeddedStore::open(&path).unwrap();
    let pending = by_seq(store.pending_blocks().await.unwrap());
    assert_pending(&pending);
    assert_eq!(pending[&3].unix_ms, 1_700_000_040_123);
}

/// An accepted share, so a round has shares for a rejection to give back.
fn share(seq: u64) -> LogRecord {
    LogRecord::Share(ShareRecord {
        id: id(seq),
        unix_ms: 1_700_000_040_000,
        kind: ShareKind::Accepted,
        address: "addr".into(),
        worker: "w".into(),
        difficulty: 64.0,
        currency: "BTC".into(),
        algo: "sha256".into(),
        height: 100,
        aux_currencies: vec![],
        count: 1,
    })
}

fn batch(seq: u64, records: Vec<LogRecord>) -> Batch {
    Batch {
        id: BatchId {
            server: 2,
            boot: 0x0102_0304,
            seq,
        },
        records,
    }
}

#[tokio::test]
async fn the_redis_store_holds_unknown_blocks_and_gives_back_open_ones() {
    let server = RedisServer::start();
    let store = RedisStore::new(RedisStoreConfig {
        url: server.url(),
        ..RedisStoreConfig::default()
    })
    .unwrap();
    let mut c = redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .unwrap();
    for b in history() {
        store.write_batch(&b).await.unwrap();
    }
    let pending = by_seq(store.pending_blocks().await.unwrap());
    assert_pending(&pending);
    // Solve time reads back to the millisecond.
    assert_eq!(pending[&1].unix_ms, 1_700_000_040_123);
    let held: BTreeMap<String, String> = c.hgetall(format!("submitted_block_{}", hash(2))).unwrap();
    assert_eq!(held.get("status").map(String::as_str), Some("unknown"));

    // A block that opened the current round turns out unknown: it stays held, unpaid, and
    // its round stays closed.
    store
        .write_batch(&batch(
            3,
            vec![share(20), LogRecord::Block(block(8, 8, "BTC", false))],
        ))
        .await
        .unwrap();
    let round: BTreeMap<String, String> = c.hgetall("current_block_BTC_sha256").unwrap();
    store
        .write_batch(&batch(4, vec![status(8, 8, BlockStatus::Unknown)]))
        .await
        .unwrap();
    let after: BTreeMap<String, String> = c.hgetall("current_block_BTC_sha256").unwrap();
    assert_eq!(round, after, "an unknown block reopened its round");
    let held: BTreeMap<String, String> = c.hgetall(format!("submitted_block_{}", hash(8))).unwrap();
    assert_eq!(held.get("status").map(String::as_str), Some("unknown"));
    let paid: bool = c.exists(format!("unproc_block_{}", hash(8))).unwrap();
    assert!(!paid, "an unknown block must not be paid");
    assert!(by_seq(store.pending_blocks().await.unwrap()).contains_key(&8));

    // The nodes later find it: accepted moves it to SimpleCoin's queue, and it stays pending
    // (for confirmation) until confirmed.
    store
        .write_batch(&batch(5, vec![status(8, 8, BlockStatus::Accepted)]))
        .await
        .unwrap();
    let paid: bool = c.exists(format!("unproc_block_{}", hash(8))).unwrap();
    assert!(paid);
    let pending = by_seq(store.pending_blocks().await.unwrap());
    assert_eq!(pending[&8].status, BlockStatus::Accepted);
    store
        .write_batch(&batch(6, vec![status(8, 8, BlockStatus::Confirmed)]))
        .await
        .unwrap();
    assert!(!by_seq(store.pending_blocks().await.unwrap()).contains_key(&8));

    // Had it been rejected instead, its round would have been reopened: the check above can
    // tell the difference.
    store
        .write_batch(&batch(
            7,
            vec![share(21), LogRecord::Block(block(9, 9, "BTC", false))],
        ))
        .await
        .unwrap();
    let before: BTreeMap<String, String> = c.hgetall("current_block_BTC_sha256").unwrap();
    store
        .write_batch(&batch(8, vec![status(9, 9, BlockStatus::Rejected)]))
        .await
        .unwrap();
    let reopened: BTreeMap<String, String> = c.hgetall("current_block_BTC_sha256").unwrap();
    assert_ne!(before, reopened);
}

#[tokio::test]
async fn resume_hands_the_parent_chains_open_blocks_to_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("shares.redb")).unwrap();
    for b in history() {
        store.write_batch(&b).await.unwrap();
    }
    let cfg = CoinserverConfig {
        nodes: vec![NodeConfig {
            name: "n".into(),
            priority: 0,
        }],
        ..CoinserverConfig::default()
    };
    let now = Now::new(Timestamp(0), 1_700_000_000_000);
    let mut machine = Coinservers::new(cfg, now).unwrap();
    let resumed =
        coind::resume_blocks(&store, "BTC", &mut machine, now, Duration::from_secs(5)).await;
    let got: Vec<(u64, BlockStatus)> = by_seq(resumed)
        .into_iter()
        .map(|(s, b)| (s, b.status))
        .collect();
    // The merge-mined block is not the parent chain's; the submitted one is now unknown.
    assert_eq!(
        got,
        vec![
            (1, BlockStatus::Unknown),
            (2, BlockStatus::Unknown),
            (3, BlockStatus::Accepted),
        ]
    );
}
