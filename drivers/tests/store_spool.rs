//! The local spool: append order, replay from a persisted cursor, torn tails, bounds.

use std::fs::OpenOptions;
use std::io::Write;

use powerpool_core::record::{RecordId, ShareKind, ShareRecord};
use powerpool_core::sharelog::{Batch, BatchId, LogRecord};
use powerpool_drivers::store::{Spool, SpoolError};

fn batch(seq: u64, n: u64) -> Batch {
    Batch {
        id: BatchId {
            server: 1,
            boot: 2,
            seq,
        },
        records: (0..n)
            .map(|i| {
                LogRecord::Share(ShareRecord {
                    id: RecordId {
                        server: 1,
                        boot: 2,
                        seq: seq * 100 + i,
                    },
                    unix_ms: 1_700_000_000_000,
                    kind: ShareKind::Accepted,
                    address: "addr".into(),
                    worker: "w".into(),
                    // A value whose decimal form needs all 17 digits to read back the same.
                    difficulty: 0.1 + 0.2 + i as f64,
                    currency: "BTC".into(),
                    algo: "sha256".into(),
                    height: 1,
                    aux_currencies: vec!["NMC".into()],
                    count: 1,
                })
            })
            .collect(),
    }
}

fn drain(s: &mut Spool) -> Vec<Batch> {
    let mut out = Vec::new();
    while let Some(b) = s.peek().unwrap() {
        out.push(b);
        s.advance().unwrap();
    }
    out
}

#[test]
fn replays_in_append_order_with_identical_records() {
    let batches: Vec<Batch> = (1..=5).map(|i| batch(i, 3)).collect();
    // A file under half of max_bytes is kept once replayed (emptying costs fsyncs); one past it
    // is emptied.
    for (max_bytes, emptied) in [(1u64 << 20, false), (4096, true)] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), max_bytes).unwrap();
        for b in &batches {
            s.append(b).unwrap();
        }
        let written = s.len_bytes();
        assert!(
            written > max_bytes.min(powerpool_drivers::store::spool::RESET_BYTES) / 2 || !emptied
        );
        assert_eq!(s.pending_batches(), 5);
        assert_eq!(drain(&mut s), batches);
        assert_eq!(s.pending_batches(), 0);
        let left = if emptied { 0 } else { written };
        assert_eq!(s.len_bytes(), left, "max_bytes {max_bytes}");
    }
}

#[test]
fn the_cursor_survives_reopen_and_an_unadvanced_peek_is_replayed_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 1..=4 {
            s.append(&batch(i, 2)).unwrap();
        }
        assert_eq!(s.peek().unwrap().unwrap().id.seq, 1);
        s.advance().unwrap();
        // Written to the primary but the process died before advancing.
        assert_eq!(s.peek().unwrap().unwrap().id.seq, 2);
    }
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(s.pending_batches(), 3);
    let seqs: Vec<u64> = drain(&mut s).iter().map(|b| b.id.seq).collect();
    assert_eq!(seqs, vec![2, 3, 4]);
    // Appends after a full replay start a fresh file.
    s.append(&batch(9, 1)).unwrap();
    drop(s);
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    let seqs: Vec<u64> = drain(&mut s).iter().map(|b| b.id.seq).collect();
    assert_eq!(seqs, vec![9]);
}

#[test]
fn a_torn_tail_is_detected_and_dropped_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let full_len;
    {
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&batch(1, 2)).unwrap();
        s.append(&batch(2, 2)).unwrap();
        full_len = s.len_bytes();
    }
    let path = dir.path().join("spool.log");
    // A crash mid-append: a header and part of the payload of a third frame.
    let third = {
        let d2 = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d2.path(), 1 << 20).unwrap();
        s.append(&batch(3, 2)).unwrap();
        std::fs::read(d2.path().join("spool.log")).unwrap()
    };
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&third[..third.len() / 2]).unwrap();
    drop(f);
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(s.torn_bytes_at_open(), (third.len() / 2) as u64);
    assert_eq!(s.len_bytes(), full_len);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), full_len);
    assert_eq!(s.pending_batches(), 2);
    // Appending after the repair produces a readable log.
    s.append(&batch(4, 1)).unwrap();
    let seqs: Vec<u64> = drain(&mut s).iter().map(|b| b.id.seq).collect();
    assert_eq!(seqs, vec![1, 2, 4]);
}

#[test]
fn a_flipped_byte_in_the_last_frame_is_a_torn_tail_too() {
    let dir = tempfile::tempdir().unwrap();
    let first_len;
    {
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&batch(1, 2)).unwrap();
        first_len = s.len_bytes();
        s.append(&batch(2, 2)).unwrap();
    }
    let path = dir.path().join("spool.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(s.pending_batches(), 1);
    assert_eq!(s.len_bytes(), first_len);
    assert_eq!(drain(&mut s).len(), 1);
}

#[test]
fn a_full_spool_refuses_appends_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut probe = Spool::open(&dir.path().join("probe"), 1 << 20).unwrap();
    probe.append(&batch(1, 2)).unwrap();
    let one = probe.len_bytes();
    let mut s = Spool::open(&dir.path().join("s"), one * 2 + one / 2).unwrap();
    s.append(&batch(1, 2)).unwrap();
    s.append(&batch(2, 2)).unwrap();
    let err = s.append(&batch(3, 2)).unwrap_err();
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
    assert!(err.is_full());
    assert_eq!(s.len_bytes(), one * 2);
    assert_eq!(s.pending_batches(), 2);
    // Replaying frees it.
    assert_eq!(drain(&mut s).len(), 2);
    s.append(&batch(3, 2)).unwrap();
}

#[test]
fn a_corrupt_cursor_replays_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 1..=3 {
            s.append(&batch(i, 1)).unwrap();
        }
        s.peek().unwrap();
        s.advance().unwrap();
    }
    std::fs::write(dir.path().join("spool.cursor"), b"garbage!garbage!").unwrap();
    let s = Spool::open(dir.path(), 1 << 20).unwrap();
    // Replaying batch 1 again is safe: stores skip batch ids they already applied.
    assert_eq!(s.pending_batches(), 3);
}

/// Damage in a frame that intact frames follow is not a torn write: the spool is refused as
/// it is (nothing truncated), naming the file and the repair command; the repair keeps every
/// intact batch in order and saves the damaged bytes.
#[test]
fn damage_before_intact_frames_is_refused_then_repaired_keeping_every_intact_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (first_end, second_end);
    {
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&batch(1, 2)).unwrap();
        first_end = s.len_bytes();
        s.append(&batch(2, 2)).unwrap();
        second_end = s.len_bytes();
        s.append(&batch(3, 2)).unwrap();
    }
    let path = dir.path().join("spool.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let before = bytes.clone();
    // A flipped byte inside the second frame's payload.
    let at = (first_end + (second_end - first_end) / 2) as usize;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let e = Spool::open(dir.path(), 1 << 20).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, SpoolError::Damaged { offset, .. } if offset == first_end),
        "{msg}"
    );
    assert!(
        msg.contains("spool.log") && msg.contains("powerpool store check --repair"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was changed");
    let c = Spool::check(dir.path()).unwrap();
    assert_eq!((c.waiting, c.torn_bytes), (2, 0));
    assert_eq!(c.damaged, [(first_end, second_end - first_end)]);

    let r = Spool::repair(dir.path()).unwrap();
    assert_eq!(r.kept_batches, 2);
    assert_eq!(r.damaged.len(), 1);
    let saved = std::fs::read(&r.damaged[0].2).unwrap();
    assert_eq!(saved, bytes[first_end as usize..second_end as usize]);
    assert_ne!(saved, before[first_end as usize..second_end as usize]);
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    let ids: Vec<u64> = drain(&mut s).iter().map(|b| b.id.seq).collect();
    assert_eq!(ids, [1, 3]);
}
