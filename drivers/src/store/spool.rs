//! The local spool: the share log's write-ahead log. Every batch is appended here (fsynced)
//! before its records are acknowledged, and the primary store is fed from it in order; what a
//! crash or an outage leaves past the cursor is replayed.
//!
//! ## Format
//! `spool.log` is a sequence of frames, each
//! `magic u32 LE (0x31535050, "PPS1") | payload length u32 LE | CRC-32 of payload u32 LE |
//! payload` where the payload is the batch as JSON. `spool.cursor` holds the byte offset of the
//! first frame not yet replayed (`offset u64 LE | CRC-32 of those 8 bytes u32 LE`), replaced
//! atomically (write, rename; fsynced too when the file is emptied, see [`Spool::advance`]).
//!
//! ## Guarantees
//! - [`Spool::append`] returns only after the frame is fsynced: an appended batch survives a
//!   crash or power loss.
//! - A crash mid-append leaves a torn tail (short frame or bad checksum). [`Spool::open`]
//!   detects it, truncates it away and reports the byte count; the batch it held was never
//!   acknowledged as spooled, so nothing promised is lost. Bytes that are not a frame *before*
//!   an intact frame are damage, not a torn write: [`Spool::open`] refuses the spool
//!   ([`SpoolError::Damaged`], naming the file and `powerpool store check --repair`) and
//!   changes nothing; [`Spool::repair`] keeps every intact batch and saves the damaged bytes.
//! - Replay yields batches in append order from the persisted cursor. The cursor is moved past
//!   a batch only after the primary accepted it ([`Spool::advance`]); a crash in between
//!   replays that batch again, which the stores' batch-id idempotency absorbs (as it does the
//!   few batches a power cut can replay again, the cursor not being fsynced on every move).
//! - Bounded: an append that would grow the file beyond `max_bytes` fails with
//!   [`SpoolError::Full`] and writes nothing. The file is truncated to zero once fully replayed
//!   and at least [`RESET_BYTES`] (or half of `max_bytes`) long.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use powerpool_core::sharelog::Batch;

const MAGIC: u32 = 0x3153_5050;
const HEADER: usize = 12;
/// A fully replayed spool is emptied once it is this large: emptying costs three fsyncs, so it
/// is not done after every batch.
pub const RESET_BYTES: u64 = 16 << 20;
const LOG: &str = "spool.log";
const CURSOR: &str = "spool.cursor";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Retry later; check the disk (space, permissions) named in the message.
    #[error("spool I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The spool holds `max_bytes` already: the primary store must come back (replay frees it)
    /// or the limit must be raised. Producers are held back meanwhile.
    #[error("spool is full ({len} of {max_bytes} bytes); the primary store must come back")]
    Full { len: u64, max_bytes: u64 },
    /// A frame passed its checksum but is not a batch this version understands (a spool left by
    /// another version). Nothing is skipped: an operator must replay it with a matching version.
    #[error("spool frame at byte {offset} cannot be decoded: {reason}")]
    Undecodable { offset: u64, reason: String },
    /// Bytes that are not a frame lie between frames: damage, not a torn last write (a crash
    /// tears only the frame being appended, the last one). The frames after it hold
    /// acknowledged records, so the spool is not opened; `powerpool store check --repair`
    /// keeps every intact frame and saves the damaged bytes beside the file.
    #[error(
        "spool {} is damaged at byte {offset} ({bytes} bytes that are not a batch, with intact \
         batches after them); nothing was changed: run `powerpool store check --repair <config>` \
         to keep every intact batch (the damaged bytes are saved beside the file)",
        path.display()
    )]
    Damaged {
        path: PathBuf,
        offset: u64,
        bytes: u64,
    },
}

impl SpoolError {
    pub fn is_full(&self) -> bool {
        matches!(self, SpoolError::Full { .. })
    }
}

/// The spool directory's files, opened. See the module docs.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    file: File,
    max_bytes: u64,
    len: u64,
    cursor: u64,
    /// End offsets of the frames past the cursor, oldest first: `advance` moves the cursor to
    /// the first without reading the file.
    ends: VecDeque<u64>,
    torn_bytes: u64,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, dropping a torn tail.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let log_path = dir.join(LOG);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .map_err(io_at(&log_path))?;
        let len = file.metadata().map_err(io_at(&log_path))?.len();
        let mut cursor = read_cursor(&dir.join(CURSOR))?;
        if cursor > len {
            // The file was truncated after a full replay and the crash came before the
            // cursor was reset.
            cursor = 0;
        }
        // Count whole frames from the cursor; everything after the last one is a torn tail.
        let mut pos = cursor;
        let mut ends = VecDeque::new();
        while let Some(end) = frame_end(&mut file, pos, len).map_err(io_at(&log_path))? {
            pos = end;
            ends.push_back(end);
        }
        let torn_bytes = len - pos;
        if torn_bytes > 0
            && let Some(next) = next_frame(&mut file, pos, len).map_err(io_at(&log_path))?
        {
            return Err(SpoolError::Damaged {
                path: log_path,
                offset: pos,
                bytes: next - pos,
            });
        }
        if torn_bytes > 0 {
            tracing::warn!(
                path = %log_path.display(),
                torn_bytes,
                "spool ends in a torn write (crash mid-append); dropping the partial frame"
            );
            file.set_len(pos).map_err(io_at(&log_path))?;
            file.sync_all().map_err(io_at(&log_path))?;
        }
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            file,
            max_bytes,
            len: pos,
            cursor,
            ends,
            torn_bytes,
        };
        if spool.ends.is_empty() && spool.len > 0 {
            spool.reset()?;
        }
        Ok(spool)
    }

    /// Batches appended and not yet replayed.
    pub fn pending_batches(&self) -> u64 {
        self.ends.len() as u64
    }

    /// Current file size in bytes (replayed frames included until the file is emptied).
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// Bytes of a torn tail dropped when the spool was opened.
    pub fn torn_bytes_at_open(&self) -> u64 {
        self.torn_bytes
    }

    /// Appends one batch and fsyncs before returning.
    pub fn append(&mut self, batch: &Batch) -> Result<(), SpoolError> {
        let payload = serde_json::to_vec(batch).map_err(|e| SpoolError::Undecodable {
            offset: self.len,
            reason: e.to_string(),
        })?;
        let frame_len = (HEADER + payload.len()) as u64;
        if self.len + frame_len > self.max_bytes {
            return Err(SpoolError::Full {
                len: self.len,
                max_bytes: self.max_bytes,
            });
        }
        let payload_len = u32::try_from(payload.len()).map_err(|_| SpoolError::Full {
            len: self.len,
            max_bytes: self.max_bytes,
        })?;
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(&MAGIC.to_le_bytes());
        frame.extend_from_slice(&payload_len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let path = self.dir.join(LOG);
        let written = (|| {
            self.file.seek(SeekFrom::Start(self.len))?;
            self.file.write_all(&frame)?;
            self.file.sync_data()
        })();
        if let Err(e) = written {
            // Leave no half frame behind for later appends to follow.
            let _ = self.file.set_len(self.len);
            return Err(SpoolError::Io { path, source: e });
        }
        self.len += frame_len;
        self.ends.push_back(self.len);
        Ok(())
    }

    /// The oldest batch not yet replayed, without consuming it.
    pub fn peek(&mut self) -> Result<Option<Batch>, SpoolError> {
        let path = self.dir.join(LOG);
        // Every frame past the cursor was checksummed when the spool was opened or written by
        // this process.
        let Some(&end) = self.ends.front() else {
            return Ok(None);
        };
        let mut payload = vec![0u8; (end - self.cursor) as usize - HEADER];
        self.file
            .seek(SeekFrom::Start(self.cursor + HEADER as u64))
            .and_then(|_| self.file.read_exact(&mut payload))
            .map_err(io_at(&path))?;
        let batch = serde_json::from_slice(&payload).map_err(|e| SpoolError::Undecodable {
            offset: self.cursor,
            reason: e.to_string(),
        })?;
        Ok(Some(batch))
    }

    /// Marks the oldest batch not yet replayed (the one [`Spool::peek`] returns) as written to
    /// the primary and moves the cursor past it; empties the file once everything is replayed
    /// and the file has grown past [`RESET_BYTES`] (or half of `max_bytes`). Does nothing when
    /// nothing is pending.
    ///
    /// The cursor is replaced without fsync (the primary is fed after every group commit, so
    /// an fsync here would double the spool's): after a power cut it may be older than the
    /// last advance, and the batches in between are replayed, which the stores skip by batch
    /// id. It is never ahead of what the primary took, and the empty-the-file step is fully
    /// fsynced, so every cursor that can survive points at a frame of the current file.
    pub fn advance(&mut self) -> Result<(), SpoolError> {
        let Some(&end) = self.ends.front() else {
            return Ok(());
        };
        if end >= self.len && self.len >= RESET_BYTES.min(self.max_bytes / 2) {
            return self.reset();
        }
        write_cursor(&self.dir, end, false)?;
        self.cursor = end;
        self.ends.pop_front();
        Ok(())
    }

    /// Everything replayed: empty the file first, then the cursor (a crash in between leaves a
    /// cursor beyond the end, which `open` reads as zero).
    fn reset(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.join(LOG);
        self.file.set_len(0).map_err(io_at(&path))?;
        self.file.sync_all().map_err(io_at(&path))?;
        self.len = 0;
        self.ends.clear();
        write_cursor(&self.dir, 0, true)?;
        self.cursor = 0;
        Ok(())
    }
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The start of the first whole, checksummed frame after `pos` (`None`: only a torn tail
/// follows). A frame is at most the file's length, so a remainder larger than
/// [`MAX_TAIL_SCAN`] is scanned in full only up to that many bytes, past which it cannot be a
/// single torn frame anyway and is reported as damage.
fn next_frame(file: &mut File, pos: u64, len: u64) -> io::Result<Option<u64>> {
    let rest = len - pos;
    let scan = rest.min(MAX_TAIL_SCAN);
    let mut buf = vec![0u8; scan as usize];
    file.seek(SeekFrom::Start(pos))?;
    file.read_exact(&mut buf)?;
    let magic = MAGIC.to_le_bytes();
    for i in 1..buf.len().saturating_sub(3) {
        if buf[i..i + 4] == magic && frame_end(file, pos + i as u64, len)?.is_some() {
            return Ok(Some(pos + i as u64));
        }
    }
    Ok((rest > MAX_TAIL_SCAN).then_some(pos + MAX_TAIL_SCAN))
}

/// The most bytes a torn tail is searched for a frame after it.
const MAX_TAIL_SCAN: u64 = 256 << 20;

/// What [`Spool::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Batches kept (not yet replayed).
    pub kept_batches: u64,
    /// Damaged byte ranges dropped, and the file each was saved to.
    pub damaged: Vec<(u64, u64, PathBuf)>,
    /// A torn last frame dropped, in bytes.
    pub torn_bytes: u64,
}

/// What [`Spool::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolCheck {
    /// Intact batches not yet replayed.
    pub waiting: u64,
    /// Damaged ranges (start, length) a repair would drop.
    pub damaged: Vec<(u64, u64)>,
    /// A torn last frame, in bytes (dropped at the next start, as a crash mid-append leaves).
    pub torn_bytes: u64,
}

/// The spool log walked from its cursor.
struct Scan {
    log_path: PathBuf,
    /// Intact frames (start, end).
    frames: Vec<(u64, u64)>,
    damaged: Vec<(u64, u64)>,
    torn_bytes: u64,
}

impl Spool {
    /// Checks the spool in `dir` without changing it.
    pub fn check(dir: &Path) -> Result<SpoolCheck, SpoolError> {
        let s = scan(dir)?;
        Ok(SpoolCheck {
            waiting: s.frames.len() as u64,
            damaged: s.damaged,
            torn_bytes: s.torn_bytes,
        })
    }

    /// Rewrites the spool in `dir` keeping every intact batch not yet replayed, in order; each
    /// damaged range is saved to `spool.log.damaged-<offset>` beside it first. The old log is
    /// replaced atomically (write, fsync, rename).
    pub fn repair(dir: &Path) -> Result<RepairReport, SpoolError> {
        let Scan {
            log_path,
            frames,
            damaged,
            torn_bytes,
        } = scan(dir)?;
        let mut file = File::open(&log_path).map_err(io_at(&log_path))?;
        let mut report = RepairReport {
            torn_bytes,
            ..RepairReport::default()
        };
        for (start, n) in damaged {
            let mut bytes = vec![0u8; n as usize];
            file.seek(SeekFrom::Start(start))
                .map_err(io_at(&log_path))?;
            file.read_exact(&mut bytes).map_err(io_at(&log_path))?;
            let saved = dir.join(format!("{LOG}.damaged-{start}"));
            fs::write(&saved, &bytes).map_err(io_at(&saved))?;
            report.damaged.push((start, n, saved));
        }
        let tmp = dir.join("spool.log.repair");
        let mut out = File::create(&tmp).map_err(io_at(&tmp))?;
        for (start, end) in &frames {
            let mut bytes = vec![0u8; (end - start) as usize];
            file.seek(SeekFrom::Start(*start))
                .map_err(io_at(&log_path))?;
            file.read_exact(&mut bytes).map_err(io_at(&log_path))?;
            out.write_all(&bytes).map_err(io_at(&tmp))?;
            report.kept_batches += 1;
        }
        out.sync_all().map_err(io_at(&tmp))?;
        fs::rename(&tmp, &log_path).map_err(io_at(&log_path))?;
        write_cursor(dir, 0, true)?;
        Ok(report)
    }
}

/// Walks the log from the cursor.
fn scan(dir: &Path) -> Result<Scan, SpoolError> {
    let log_path = dir.join(LOG);
    let mut out = Scan {
        log_path: log_path.clone(),
        frames: Vec::new(),
        damaged: Vec::new(),
        torn_bytes: 0,
    };
    let mut file = match File::open(&log_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_at(&log_path)(e)),
    };
    let len = file.metadata().map_err(io_at(&log_path))?.len();
    let cursor = read_cursor(&dir.join(CURSOR))?;
    let mut pos = if cursor > len { 0 } else { cursor };
    while pos < len {
        if let Some(end) = frame_end(&mut file, pos, len).map_err(io_at(&log_path))? {
            out.frames.push((pos, end));
            pos = end;
            continue;
        }
        match next_frame(&mut file, pos, len).map_err(io_at(&log_path))? {
            Some(next) => {
                out.damaged.push((pos, next - pos));
                pos = next;
            }
            None => {
                out.torn_bytes = len - pos;
                break;
            }
        }
    }
    Ok(out)
}

/// The end offset of the whole, checksummed frame at `pos`, or `None` if there is none (end
/// of file, short frame, bad magic or checksum).
fn frame_end(file: &mut File, pos: u64, len: u64) -> io::Result<Option<u64>> {
    if len.saturating_sub(pos) < HEADER as u64 {
        return Ok(None);
    }
    let mut header = [0u8; HEADER];
    file.seek(SeekFrom::Start(pos))?;
    file.read_exact(&mut header)?;
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    if word(0) != MAGIC {
        return Ok(None);
    }
    let payload_len = u64::from(word(4));
    let end = pos + HEADER as u64 + payload_len;
    if end > len {
        return Ok(None);
    }
    // The length is bounded by the file size checked above, never by the header alone.
    let mut payload = vec![0u8; payload_len as usize];
    file.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != word(8) {
        return Ok(None);
    }
    Ok(Some(end))
}

fn read_cursor(path: &Path) -> Result<u64, SpoolError> {
    match fs::read(path) {
        Ok(b) if b.len() == 12 => {
            let (off, crc) = b.split_at(8);
            if crc32fast::hash(off).to_le_bytes() == crc {
                Ok(u64::from_le_bytes(off.try_into().unwrap_or([0; 8])))
            } else {
                tracing::warn!(path = %path.display(), "spool cursor is corrupt; replaying from the start (idempotent)");
                Ok(0)
            }
        }
        Ok(_) => {
            tracing::warn!(path = %path.display(), "spool cursor has the wrong size; replaying from the start (idempotent)");
            Ok(0)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(SpoolError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn write_cursor(dir: &Path, offset: u64, fsync: bool) -> Result<(), SpoolError> {
    let tmp = dir.join("spool.cursor.tmp");
    let dst = dir.join(CURSOR);
    let mut bytes = offset.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&offset.to_le_bytes()).to_le_bytes());
    (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        if fsync {
            f.sync_all()?;
        }
        fs::rename(&tmp, &dst)?;
        if fsync {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })()
    .map_err(io_at(&dst))
}
