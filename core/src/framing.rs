//! Newline framing for stratum connections, with bounded memory.
//!
//! Stratum v1 is one JSON object per `\n`-terminated line. [`LineReader`] turns the byte
//! chunks a socket hands over into those lines without ever trusting the peer about length.
//!
//! # Guarantees
//!
//! * **Bounded memory.** A line longer than `max_line` bytes (counting everything before its
//!   `\n`, a trailing `\r` included) is reported as [`LineTooLong`] as soon as more than `max_line`
//!   bytes of it are buffered, without waiting for its end. If the caller drains
//!   [`LineReader::next_line`] until it returns `None` after every [`LineReader::push`],
//!   [`LineReader::buffered`] never exceeds `max_line + len(last push)`.
//! * **Split independence.** The sequence of lines (and the point where [`LineTooLong`]
//!   appears) depends only on the concatenated bytes, never on how they were chunked.
//! * **Linear work.** Every received byte is scanned for `\n` once and moved in memory at
//!   most once, so many tiny pushes cost no more than one big one. Lines are handed out as
//!   slices of the internal buffer: no allocation per line.
//! * **Blank lines are skipped.** A line that is empty or only ASCII whitespace is ignored.
//!   The Python PowerPool closed the connection on a blank line; some
//!   miners send bare `\n` or `\r\n` as keepalives, so dropping them is the friendlier choice.
//!
//! # After `LineTooLong`
//!
//! The reader is dead once it has reported [`LineTooLong`]: the buffer is released,
//! further pushes are discarded and [`LineReader::next_line`] returns `None`. The framing is
//! lost at that point (the rest of the oversized line is indistinguishable from new
//! requests), so the driver should send a final error if it wishes and disconnect.

use thiserror::Error;

/// A line exceeded the configured maximum length.
///
/// The connection's framing cannot be recovered: reply if desired, then disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("line longer than {max_line} bytes; disconnect the peer")]
pub struct LineTooLong {
    /// The limit that was exceeded.
    pub max_line: usize,
}

/// Splits a byte stream into `\n`-terminated lines; see the module docs for guarantees.
#[derive(Debug, Clone)]
pub struct LineReader {
    buf: Vec<u8>,
    /// Bytes before `start` belong to lines already handed out.
    start: usize,
    /// `buf[start..scan]` is known to contain no `\n`.
    scan: usize,
    max_line: usize,
    dead: bool,
}

impl LineReader {
    /// A reader that rejects lines longer than `max_line` bytes (`\n` excluded, `\r` included).
    #[must_use]
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scan: 0,
            max_line,
            dead: false,
        }
    }

    /// Appends received bytes. Discarded if the reader is dead (after [`LineTooLong`]).
    pub fn push(&mut self, data: &[u8]) {
        if self.dead {
            return;
        }
        // Compacting only here (not in next_line) means each byte moves at most once: after
        // a compaction `start` stays 0 until a line is consumed, and that line ends before
        // any byte that has not yet been moved.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scan -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next non-blank line without its `\n` and trailing `\r`, or `None` if no complete
    /// line is buffered.
    ///
    /// Returns `Some(Err(LineTooLong))` exactly once when a line exceeds the limit; the
    /// reader is dead afterwards (see the module docs).
    pub fn next_line(&mut self) -> Option<Result<&[u8], LineTooLong>> {
        if self.dead {
            return None;
        }
        loop {
            let Some(offset) = self.buf[self.scan..].iter().position(|&b| b == b'\n') else {
                self.scan = self.buf.len();
                if self.buf.len() - self.start > self.max_line {
                    return Some(Err(self.die()));
                }
                return None;
            };
            let newline = self.scan + offset;
            let line_start = self.start;
            self.start = newline + 1;
            self.scan = self.start;
            // The limit counts a trailing `\r` so that the verdict can be reached the same
            // way before the `\n` arrives (split independence).
            if newline - line_start > self.max_line {
                return Some(Err(self.die()));
            }
            let mut line = &self.buf[line_start..newline];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Re-borrow through indices so the returned slice is tied to `&self` only.
            let len = line.len();
            return Some(Ok(&self.buf[line_start..line_start + len]));
        }
    }

    /// Bytes currently held, including consumed lines not yet compacted away.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the reader has reported [`LineTooLong`] and now ignores all input.
    #[must_use]
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    fn die(&mut self) -> LineTooLong {
        self.dead = true;
        self.buf = Vec::new();
        self.start = 0;
        self.scan = 0;
        LineTooLong {
            max_line: self.max_line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(r: &mut LineReader) -> Vec<Result<Vec<u8>, LineTooLong>> {
        let mut lines = Vec::new();
        while let Some(l) = r.next_line() {
            lines.push(l.map(<[u8]>::to_vec));
        }
        lines
    }

    #[test]
    fn strips_terminators_and_skips_blank_lines() {
        let mut r = LineReader::new(64);
        r.push(b"a\r\n\n \t\r\n\r\nb\nc\r");
        assert_eq!(drain(&mut r), vec![Ok(b"a".to_vec()), Ok(b"b".to_vec())]);
        r.push(b"\n");
        assert_eq!(drain(&mut r), vec![Ok(b"c".to_vec())]);
        assert!(!r.is_dead());
    }

    #[test]
    fn only_the_last_carriage_return_is_stripped() {
        let mut r = LineReader::new(64);
        r.push(b"x\r\r\n");
        assert_eq!(drain(&mut r), vec![Ok(b"x\r".to_vec())]);
    }

    #[test]
    fn limit_is_inclusive_and_counts_carriage_return() {
        let mut r = LineReader::new(4);
        r.push(b"abcd\nab\r\n");
        assert_eq!(
            drain(&mut r),
            vec![Ok(b"abcd".to_vec()), Ok(b"ab".to_vec())]
        );
        r.push(b"abcd\r\nzz\n");
        assert_eq!(drain(&mut r), vec![Err(LineTooLong { max_line: 4 })]);
    }

    #[test]
    fn overlong_line_is_reported_before_its_end_and_kills_the_reader() {
        let mut r = LineReader::new(8);
        r.push(b"ok\n0123456");
        assert_eq!(drain(&mut r), vec![Ok(b"ok".to_vec())]);
        r.push(b"78");
        assert_eq!(drain(&mut r), vec![Err(LineTooLong { max_line: 8 })]);
        assert!(r.is_dead());
        assert_eq!(r.buffered(), 0);
        r.push(b"\n{\"id\":1}\n");
        assert_eq!(r.buffered(), 0);
        assert!(r.next_line().is_none());
    }

    #[test]
    fn consumed_bytes_are_released_on_the_next_push() {
        let mut r = LineReader::new(16);
        r.push(b"line one\nline two\npart");
        assert_eq!(drain(&mut r).len(), 2);
        r.push(b"ial\n");
        assert_eq!(r.buffered(), b"partial\n".len());
        assert_eq!(drain(&mut r), vec![Ok(b"partial".to_vec())]);
    }

    #[test]
    fn an_empty_push_still_releases_consumed_lines() {
        let mut r = LineReader::new(4);
        r.push(
            b"abc
abc
abc
ab",
        );
        assert_eq!(drain(&mut r).len(), 3);
        r.push(b"");
        assert_eq!(r.buffered(), 2);
        assert!(r.next_line().is_none());
    }
}
