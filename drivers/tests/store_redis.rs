//! The Redis share store against a real `redis-server`: SimpleCoin's layout,
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
use powerpool_drivers::store::redis::MINUTE_GRACE_SECS;
use powerpool_drivers::store::{
    FlushScope, RedisStore, RedisStoreConfig, ShareLogDriverConfig, ShareStore, Spool, StoreError,
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
        count: 1,
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

/// The node's verdict on block `hash`, found by record `seq`.
fn block_status(seq: u64, hash: &str, status: BlockStatus, reason: Option<&str>) -> LogRecord {
    LogRecord::BlockStatus {
        id: id(seq),
        hash: hash.into(),
        currency: "TEST".into(),
        status,
        reason: reason.map(String::from),
    }
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
    // The minute is long over by the pool's clock, so a flush publishes it.
    s.flush(FlushScope::Due).await.unwrap();
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

/// A run PowerPool itself wrote to Redis: chain 1, currency TEST, algo sha256, diff 1e-10,
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
            block_status(4, hr, BlockStatus::Rejected, Some("bad-txns")),
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
            block_status(6, ha, BlockStatus::Accepted, None),
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

/// An accepted share of `diff` from `address` judged at `unix_ms` by `server`.
fn share_at(server: u16, seq: u64, unix_ms: u64, address: &str, diff: f64) -> LogRecord {
    LogRecord::Share(ShareRecord {
        id: RecordId {
            server,
            boot: 1,
            seq,
        },
        unix_ms,
        kind: ShareKind::Accepted,
        address: address.into(),
        worker: "w1".into(),
        difficulty: diff,
        currency: "TEST".into(),
        algo: "sha256".into(),
        height: 500,
        aux_currencies: vec![],
        count: 1,
    })
}

fn batch_of(server: u16, seq: u64, records: Vec<LogRecord>) -> Batch {
    Batch {
        id: BatchId {
            server,
            boot: 1,
            seq,
        },
        records,
    }
}

fn public_minutes(c: &mut redis::Connection) -> BTreeSet<String> {
    c.keys::<_, Vec<String>>("min_*")
        .unwrap()
        .into_iter()
        .collect()
}

fn minute_sums(c: &mut redis::Connection, key: &str) -> HashMap<String, f64> {
    c.hgetall(key).unwrap()
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// SimpleCoin renames each `min_*` key and deletes it once read, so a minute it could see
/// before it is over would be taken in part and then appear again with the rest.
#[tokio::test]
async fn a_minute_appears_only_once_it_is_over_and_only_once() {
    let server = RedisServer::start();
    let s = store(&server);
    let mut c = conn(&server);
    let m = T0 / 1000; // a minute boundary, in seconds
    let ms = |secs: u64| secs * 1000;
    let key_m = format!("min_acc_sha256_{m}");
    let key_m1 = format!("min_acc_sha256_{}", m + 60);

    s.write_batch(&batch_of(
        3,
        1,
        vec![
            share_at(3, 1, ms(m) + 1, "a", 2.0),
            share_at(3, 2, ms(m) + 2, "b", 0.5),
        ],
    ))
    .await
    .unwrap();
    assert!(public_minutes(&mut c).is_empty(), "minute {m} is current");
    let staged: HashMap<String, f64> = c.hgetall(format!("powerpool:minute:0003:{key_m}")).unwrap();
    assert_eq!(
        staged,
        HashMap::from([("a.w1".into(), 2.0), ("b.w1".into(), 0.5)])
    );

    // Late in the minute, then early in the next but within the grace for stragglers: still
    // held back.
    s.write_batch(&batch_of(3, 2, vec![share_at(3, 3, ms(m + 59), "a", 4.0)]))
        .await
        .unwrap();
    s.write_batch(&batch_of(
        3,
        3,
        vec![
            share_at(3, 4, ms(m + 60 + MINUTE_GRACE_SECS) - 1, "a", 1.0),
            share_at(3, 5, ms(m + 59) + 999, "b", 8.0),
        ],
    ))
    .await
    .unwrap();
    assert!(public_minutes(&mut c).is_empty());

    // Once a batch is past the grace, the minute is published whole, the next one is not.
    let past_grace = batch_of(
        3,
        4,
        vec![share_at(3, 6, ms(m + 60 + MINUTE_GRACE_SECS), "a", 16.0)],
    );
    assert_eq!(
        s.write_batch(&past_grace).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(public_minutes(&mut c), BTreeSet::from([key_m.clone()]));
    assert_eq!(
        minute_sums(&mut c, &key_m),
        HashMap::from([("a.w1".into(), 6.0), ("b.w1".into(), 8.5)])
    );
    assert!(
        !c.exists::<_, bool>(format!("powerpool:minute:0003:{key_m}"))
            .unwrap()
    );

    // Replays add nothing, neither to the published minute nor to the staged one.
    for seq in 1..=4 {
        let again = batch_of(3, seq, vec![share_at(3, 100 + seq, ms(m) + 5, "a", 1000.0)]);
        assert_eq!(
            s.write_batch(&again).await.unwrap(),
            WriteOutcome::AlreadyApplied
        );
    }
    assert_eq!(
        minute_sums(&mut c, &key_m),
        HashMap::from([("a.w1".into(), 6.0), ("b.w1".into(), 8.5)])
    );
    let staged_m1: HashMap<String, f64> = c
        .hgetall(format!("powerpool:minute:0003:{key_m1}"))
        .unwrap();
    assert_eq!(staged_m1, HashMap::from([("a.w1".into(), 17.0)]));

    // SimpleCoin takes minute m; nothing brings it back, and m + 60 follows when it is over.
    let _: () = c.rename(&key_m, "processing_shares").unwrap();
    let _: () = c.del("processing_shares").unwrap();
    s.write_batch(&batch_of(
        3,
        5,
        vec![share_at(3, 7, ms(m + 120 + MINUTE_GRACE_SECS), "c", 1.0)],
    ))
    .await
    .unwrap();
    assert_eq!(public_minutes(&mut c), BTreeSet::from([key_m1.clone()]));
    assert_eq!(
        minute_sums(&mut c, &key_m1),
        HashMap::from([("a.w1".into(), 17.0)])
    );
    // Publishing again (a retried flush) finds nothing left to add.
    s.flush(FlushScope::All).await.unwrap();
    s.flush(FlushScope::All).await.unwrap();
    assert_eq!(
        minute_sums(&mut c, &key_m1),
        HashMap::from([("a.w1".into(), 17.0)])
    );
    let key_m2 = format!("min_acc_sha256_{}", m + 120);
    assert_eq!(
        minute_sums(&mut c, &key_m2),
        HashMap::from([("c.w1".into(), 1.0)])
    );
    let staged: Vec<String> = c.keys("powerpool:minute:*").unwrap();
    assert!(staged.is_empty(), "{staged:?}");
    assert_eq!(c.zcard::<_, u64>("powerpool:minutes").unwrap(), 0);
}

#[tokio::test]
async fn flushes_publish_what_is_over_and_at_shutdown_everything_of_their_servers() {
    let server = RedisServer::start();
    let s = store(&server);
    let mut c = conn(&server);
    let now = unix_ms_now();
    let ten_minutes_ago = now - 600_000;
    let k_now = format!("min_acc_sha256_{}", now / 1000 / 60 * 60);
    let k_old = format!("min_acc_sha256_{}", ten_minutes_ago / 1000 / 60 * 60);
    // Each batch's latest share is in its own minute, so no batch publishes anything.
    s.write_batch(&batch_of(
        3,
        1,
        vec![share_at(3, 1, ten_minutes_ago, "a", 1.0)],
    ))
    .await
    .unwrap();
    s.write_batch(&batch_of(
        9,
        1,
        vec![share_at(9, 1, ten_minutes_ago, "z", 5.0)],
    ))
    .await
    .unwrap();
    // A second store sharing Redis, for another server.
    let other = store(&server);
    other
        .write_batch(&batch_of(4, 1, vec![share_at(4, 1, now, "q", 1.0)]))
        .await
        .unwrap();
    assert!(public_minutes(&mut c).is_empty());

    other.flush(FlushScope::All).await.unwrap();
    assert_eq!(
        public_minutes(&mut c),
        BTreeSet::from([k_now.clone()]),
        "a store publishes the minutes of the servers it wrote for, not others'"
    );
    assert_eq!(
        minute_sums(&mut c, &k_now),
        HashMap::from([("q.w1".into(), 1.0)])
    );

    s.flush(FlushScope::Due).await.unwrap();
    assert_eq!(
        public_minutes(&mut c),
        BTreeSet::from([k_now.clone(), k_old.clone()])
    );
    assert_eq!(
        minute_sums(&mut c, &k_old),
        HashMap::from([("a.w1".into(), 1.0), ("z.w1".into(), 5.0)])
    );

    s.write_batch(&batch_of(3, 2, vec![share_at(3, 2, now, "a", 2.0)]))
        .await
        .unwrap();
    s.flush(FlushScope::Due).await.unwrap();
    assert_eq!(
        minute_sums(&mut c, &k_now),
        HashMap::from([("q.w1".into(), 1.0)]),
        "the current minute waits"
    );
    s.flush(FlushScope::All).await.unwrap();
    assert_eq!(
        minute_sums(&mut c, &k_now),
        HashMap::from([("q.w1".into(), 1.0), ("a.w1".into(), 2.0)]),
        "at shutdown the current minute goes too"
    );
    assert_eq!(c.zcard::<_, u64>("powerpool:minutes").unwrap(), 0);
}

#[tokio::test]
async fn minutes_left_by_a_server_that_never_returned_are_published_after_an_hour() {
    let server = RedisServer::start();
    let mut c = conn(&server);
    let gone = store(&server);
    // Written in this order, neither batch's own time publishes the other's minute.
    let recent = unix_ms_now() - 600_000;
    gone.write_batch(&batch_of(8, 1, vec![share_at(8, 1, recent, "a", 1.0)]))
        .await
        .unwrap();
    // T0 is long past: an abandoned minute by any clock.
    gone.write_batch(&batch_of(8, 2, vec![share_at(8, 2, T0, "a", 3.0)]))
        .await
        .unwrap();
    drop(gone);
    assert!(public_minutes(&mut c).is_empty());
    let fresh = store(&server);
    fresh.flush(FlushScope::Due).await.unwrap();
    let k_old = format!("min_acc_sha256_{}", T0 / 1000 / 60 * 60);
    // The recent minute is server 8's to publish when it returns.
    assert_eq!(public_minutes(&mut c), BTreeSet::from([k_old.clone()]));
    assert_eq!(
        minute_sums(&mut c, &k_old),
        HashMap::from([("a.w1".into(), 3.0)])
    );
    assert_eq!(c.zcard::<_, u64>("powerpool:minutes").unwrap(), 1);
}

#[tokio::test]
async fn a_minute_key_that_cannot_take_the_sums_holds_them_back_whole() {
    let server = RedisServer::start();
    let s = store(&server);
    let mut c = conn(&server);
    let m = T0 / 1000;
    let key = format!("min_acc_sha256_{m}");
    let _: () = c.hset(&key, "a.w1", "1").unwrap();
    let _: () = c.hset(&key, "b.w1", "not a number").unwrap();
    s.write_batch(&batch_of(
        3,
        1,
        vec![share_at(3, 1, T0, "a", 2.0), share_at(3, 2, T0, "b", 2.0)],
    ))
    .await
    .unwrap();
    let err = s.flush(FlushScope::All).await.unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");
    assert!(err.to_string().contains(&key), "{err}");
    let untouched: HashMap<String, String> = c.hgetall(&key).unwrap();
    assert_eq!(untouched["a.w1"], "1", "nothing of the minute was moved");
    // Fixed by an operator, the next flush moves the sums once.
    let _: () = c.hdel(&key, "b.w1").unwrap();
    s.flush(FlushScope::All).await.unwrap();
    s.flush(FlushScope::All).await.unwrap();
    assert_eq!(
        minute_sums(&mut c, &key),
        HashMap::from([("a.w1".into(), 3.0), ("b.w1".into(), 2.0)])
    );
}

/// An orphan must not stay where SimpleCoin pays blocks from.
#[tokio::test]
async fn an_orphaned_block_leaves_the_unprocessed_blocks() {
    let server = RedisServer::start();
    let s = store(&server);
    let mut c = conn(&server);
    let ho = "00000000000000000000000000000000000000000000000000000000000000d0";
    let hk = "00000000000000000000000000000000000000000000000000000000000000d1";
    let orphaned =
        |seq, hash: &str| block_status(seq, hash, BlockStatus::Orphaned, Some("replaced by 00ff"));
    s.write_batch(&batch(
        1,
        vec![
            share(1, ShareKind::Accepted, "a", 1.0),
            block(2, ho, BlockStatus::Accepted),
            share(3, ShareKind::Accepted, "a", 1.0),
            block(4, hk, BlockStatus::Accepted),
        ],
    ))
    .await
    .unwrap();
    let before: HashMap<String, String> = c.hgetall(format!("unproc_block_{ho}")).unwrap();
    // SimpleCoin has already taken the other block: its orphaning creates nothing.
    let _: () = c.del(format!("unproc_block_{hk}")).unwrap();
    s.write_batch(&batch(2, vec![orphaned(2, ho), orphaned(4, hk)]))
        .await
        .unwrap();
    let unproc: Vec<String> = c.keys("unproc_block*").unwrap();
    assert!(unproc.is_empty(), "{unproc:?}");
    let after: HashMap<String, String> = c.hgetall(format!("orphan_block_{ho}")).unwrap();
    assert_eq!(after["status"], "orphaned");
    assert_eq!(after["orphan_reason"], "replaced by 00ff");
    for (k, v) in &before {
        if k != "status" {
            assert_eq!(&after[k], v, "field {k} kept");
        }
    }
    assert!(!c.exists::<_, bool>(format!("orphan_block_{hk}")).unwrap());
    // The round the orphan closed stays closed.
    let cur: HashMap<String, String> = c.hgetall("current_block_TEST_sha256").unwrap();
    assert_eq!(cur["chain_1_start_index"], "2");
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
    assert!(report.status.write_failures > 0, "{:?}", report.status);
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

/// Through the share log driver: the current minute stays staged while the pool runs and is
/// published by the clean shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_publishes_the_current_minute() {
    let server = RedisServer::start();
    let spool_dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (status_tx, mut st) = watch::channel(ShareLogStatus::default());
    let h = tokio::spawn(run_share_log(
        driver_cfg(),
        Arc::new(store(&server)),
        Spool::open(spool_dir.path(), 1 << 20).unwrap(),
        rx,
        async move {
            let _ = stop_rx.await;
        },
        status_tx,
    ));
    let now = unix_ms_now();
    for seq in 1..=20 {
        tx.send(share_at(3, seq, now, "a", 0.5)).await.unwrap();
    }
    wait_for(&mut st, "all written", |s| {
        s.records_written == 20 && s.pending_records == 0
    })
    .await;
    let mut c = conn(&server);
    assert!(public_minutes(&mut c).is_empty(), "the minute is current");
    stop_tx.send(()).unwrap();
    assert_eq!(h.await.unwrap().abandoned_records, 0);
    let key = format!("min_acc_sha256_{}", now / 1000 / 60 * 60);
    assert_eq!(public_minutes(&mut c), BTreeSet::from([key.clone()]));
    assert_eq!(
        minute_sums(&mut c, &key),
        HashMap::from([("a.w1".into(), 10.0)])
    );
    assert_eq!(c.zcard::<_, u64>("powerpool:minutes").unwrap(), 0);
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

    async fn flush(&self, scope: FlushScope) -> Result<(), StoreError> {
        self.inner.flush(scope).await
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
    wait_for(&mut st, "lost replies seen and retried", |s| {
        s.write_failures > 0 && s.spooled_batches == 0 && s.pending_records == 0
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

#[tokio::test]
async fn shares_are_exported_from_the_stream_by_window() {
    use powerpool_drivers::store::export::{
        ExportFormat, ExportQuery, Filter, Source, StoreReader, export,
    };
    let server = RedisServer::start();
    let s = Arc::new(store(&server));
    let records: Vec<LogRecord> = (1..=25u64)
        .map(|seq| {
            let kind = if seq % 5 == 0 {
                ShareKind::Stale
            } else {
                ShareKind::Accepted
            };
            share(seq, kind, "addrA", seq as f64)
        })
        .collect();
    s.write_batch(&batch(1, records)).await.unwrap();
    let reader = StoreReader::Redis(s.clone());
    let q = ExportQuery {
        since_ms: Some(T0 + 3),
        until_ms: Some(T0 + 12),
        ..ExportQuery::default()
    };
    let mut out = Vec::new();
    let n = export(
        &Source::Store(reader.clone()),
        &q,
        ExportFormat::Jsonl,
        &mut out,
    )
    .await
    .unwrap();
    let got: Vec<ShareRecord> = out
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(n, 7);
    assert_eq!(
        got.iter().map(|r| r.id.seq).collect::<Vec<_>>(),
        [3, 4, 6, 7, 8, 9, 11]
    );
    // The record read back from the stream is the record written.
    let LogRecord::Share(want) = share(3, ShareKind::Accepted, "addrA", 3.0) else {
        unreachable!()
    };
    assert_eq!(got[0], want);
    // Pages over the stream lose nothing, refused records included.
    let f = Filter::new(
        &ExportQuery {
            all_kinds: true,
            ..ExportQuery::default()
        },
        None,
    );
    let (mut after, mut seen) = (None, Vec::new());
    loop {
        let p = reader.page(&f, after.as_deref(), 4).await.unwrap();
        seen.extend(p.records.iter().map(|r| r.id.seq));
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
    // Rounds are SimpleCoin's business on Redis: refused with the way out.
    let e = reader
        .filter(&ExportQuery {
            round: Some("00ff".into()),
            ..ExportQuery::default()
        })
        .await
        .unwrap_err();
    assert!(e.contains("--since"), "{e}");
}
