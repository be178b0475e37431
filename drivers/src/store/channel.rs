//! The share log's input: one ordered queue with two ways in.
//!
//! Share records come from miners' connections, which may be slowed: [`LogSender::send`] waits
//! while `capacity` share records are queued, which holds back only the connection sending.
//! Block records and verdicts come from the pool's coordination, which must never wait:
//! [`LogSender::send_now`] always enqueues at once. Both go into the same FIFO, so a block's
//! record still follows everything logged before it (its winning share is sent with it).
//! Memory beyond `capacity` is therefore bounded by the number of found blocks, not by
//! the share rate.
//!
//! Every record queued gets its position in the log (1, 2, ...), assigned under the same lock
//! as the push, so positions follow the queue's order. The share log publishes how many
//! records are durable; [`LogSender::wait_durable`] waits until a position is, which is what a
//! connection does before it acknowledges a share.

use std::sync::{Arc, Mutex, PoisonError};

use powerpool_core::sharelog::LogRecord;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

#[derive(Debug)]
struct Entry {
    record: LogRecord,
    /// Held while a share record is queued; given back when the log takes it.
    _room: Option<OwnedSemaphorePermit>,
}

/// The share log is gone (stopped or failed): the record was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the share log is closed")]
pub struct LogClosed;

#[derive(Debug, Clone)]
pub struct LogSender {
    tx: mpsc::UnboundedSender<Entry>,
    room: Arc<Semaphore>,
    /// The last position given out; held while pushing so positions follow queue order.
    last: Arc<Mutex<u64>>,
    durable: watch::Receiver<u64>,
}

impl LogSender {
    /// Queues a record, first waiting for room when `capacity` records sent this way are
    /// queued. Returns the record's position.
    pub async fn send(&self, record: LogRecord) -> Result<u64, LogClosed> {
        let room = self
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LogClosed)?;
        self.push(Entry {
            record,
            _room: Some(room),
        })
    }

    /// Queues a record at once, whatever is queued. Returns the record's position.
    pub fn send_now(&self, record: LogRecord) -> Result<u64, LogClosed> {
        self.push(Entry {
            record,
            _room: None,
        })
    }

    /// The position of the last record queued (0 before any).
    pub fn position(&self) -> u64 {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the record at `position`, and so every record before it, is durable.
    /// Fails if the share log ends first: then it may never be.
    pub async fn wait_durable(&self, position: u64) -> Result<(), LogClosed> {
        let mut rx = self.durable.clone();
        rx.wait_for(|d| *d >= position)
            .await
            .map(|_| ())
            .map_err(|_| LogClosed)
    }

    fn push(&self, entry: Entry) -> Result<u64, LogClosed> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        self.tx.send(entry).map_err(|_| LogClosed)?;
        *last += 1;
        Ok(*last)
    }
}

/// The share log's end of the queue. A plain bounded channel converts into one too (tests and
/// tools that feed the log directly).
#[derive(Debug)]
pub struct LogReceiver(Inner);

#[derive(Debug)]
enum Inner {
    Gated {
        rx: mpsc::UnboundedReceiver<Entry>,
        room: Arc<Semaphore>,
        durable: watch::Sender<u64>,
    },
    Plain(mpsc::Receiver<LogRecord>),
}

/// A queue holding at most `capacity` records sent with [`LogSender::send`] (at least 1).
pub fn log_channel(capacity: usize) -> (LogSender, LogReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(capacity.max(1)));
    let (durable, durable_rx) = watch::channel(0);
    (
        LogSender {
            tx,
            room: room.clone(),
            last: Arc::new(Mutex::new(0)),
            durable: durable_rx,
        },
        LogReceiver(Inner::Gated { rx, room, durable }),
    )
}

impl From<mpsc::Receiver<LogRecord>> for LogReceiver {
    fn from(rx: mpsc::Receiver<LogRecord>) -> Self {
        LogReceiver(Inner::Plain(rx))
    }
}

impl LogReceiver {
    pub async fn recv(&mut self) -> Option<LogRecord> {
        match &mut self.0 {
            Inner::Gated { rx, .. } => rx.recv().await.map(|e| e.record),
            Inner::Plain(rx) => rx.recv().await,
        }
    }

    pub fn try_recv(&mut self) -> Option<LogRecord> {
        match &mut self.0 {
            Inner::Gated { rx, .. } => rx.try_recv().ok().map(|e| e.record),
            Inner::Plain(rx) => rx.try_recv().ok(),
        }
    }

    /// The first `n` records received are durable (a no-op for a plain channel, whose senders
    /// have no positions).
    pub fn set_durable(&self, n: u64) {
        if let Inner::Gated { durable, .. } = &self.0 {
            durable.send_if_modified(|d| {
                let grew = n > *d;
                if grew {
                    *d = n;
                }
                grew
            });
        }
    }

    /// No more records are accepted; those queued can still be received. Senders waiting for
    /// room are told the log is closed.
    pub fn close(&mut self) {
        match &mut self.0 {
            Inner::Gated { rx, room, .. } => {
                rx.close();
                room.close();
            }
            Inner::Plain(rx) => rx.close(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use powerpool_core::record::{BlockStatus, RecordId};

    fn status(seq: u64) -> LogRecord {
        LogRecord::BlockStatus {
            id: RecordId {
                server: 0,
                boot: 0,
                seq,
            },
            hash: String::new(),
            currency: Arc::from("BTC"),
            status: BlockStatus::Accepted,
            reason: None,
        }
    }

    #[tokio::test]
    async fn a_full_queue_holds_back_send_but_never_send_now_and_keeps_order() {
        let (tx, mut rx) = log_channel(2);
        tx.send(status(1)).await.unwrap();
        tx.send(status(2)).await.unwrap();
        let blocked = tx.clone();
        let waiting = tokio::spawn(async move { blocked.send(status(4)).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a third record must wait for room");
        tx.send_now(status(3)).unwrap();
        assert_eq!(rx.recv().await, Some(status(1)));
        waiting.await.unwrap().unwrap();
        let rest: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(rest, [status(2), status(3), status(4)]);
    }

    #[tokio::test]
    async fn closing_wakes_a_waiting_sender() {
        let (tx, mut rx) = log_channel(1);
        tx.send(status(1)).await.unwrap();
        let waiting = tokio::spawn(async move { tx.send(status(2)).await });
        tokio::task::yield_now().await;
        rx.close();
        assert_eq!(waiting.await.unwrap(), Err(LogClosed));
        assert_eq!(rx.recv().await, Some(status(1)));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn positions_follow_queue_order_and_durability_releases_waiters_in_order() {
        let (tx, rx) = log_channel(8);
        assert_eq!(tx.position(), 0);
        assert_eq!(tx.send(status(1)).await, Ok(1));
        assert_eq!(tx.send_now(status(2)), Ok(2));
        assert_eq!(tx.position(), 2);
        let first = tokio::spawn({
            let tx = tx.clone();
            async move { tx.wait_durable(1).await }
        });
        let second = tokio::spawn({
            let tx = tx.clone();
            async move { tx.wait_durable(2).await }
        });
        tokio::task::yield_now().await;
        assert!(!first.is_finished() && !second.is_finished());
        rx.set_durable(1);
        assert_eq!(first.await.unwrap(), Ok(()));
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "position 2 is not durable yet");
        // The log ending before a position is durable is an error, not a release.
        drop(rx);
        assert_eq!(second.await.unwrap(), Err(LogClosed));
        assert_eq!(tx.send_now(status(3)), Err(LogClosed));
        assert_eq!(tx.position(), 2, "a refused record takes no position");
    }
}
