//! Block notifications pushed to the pool: a UDP datagram port and bitcoind's ZMQ
//! `hashblock` feed, both turned into [`PushSignal`]s for the coinserver driver.
//!
//! ## The datagram port (fixes the original's unauthenticated method calls)
//! The original looked up and called *any* method of *any* component named in a datagram.
//! Here a datagram can only say "a block arrived"; nothing else is parsed, so nothing else can
//! be triggered. Format (ASCII, one command per datagram, at most [`MAX_DATAGRAM`] bytes,
//! tokens separated by spaces, trailing whitespace such as netcat's newline ignored):
//!
//! ```text
//! blocknotify <coin> [<blockhash>]                         (no secret configured)
//! blocknotify <coin> [<blockhash>] t=<unix_secs> mac=<hex> (secret configured)
//! ```
//!
//! `<coin>` is 1–16 ASCII letters/digits, `<blockhash>` 64 hex digits in display order (as
//! bitcoind's `-blocknotify=... %s` passes it). With a secret, `mac` is
//! HMAC-SHA256(secret, everything before ` mac=`) in lowercase hex, checked in constant
//! time, and `t` must be within [`REPLAY_WINDOW_SECS`] of the pool's clock. A replayed
//! datagram within the window can only cause one more template fetch, which is harmless; the
//! window stops old captures from being replayed later. Example sender:
//!
//! ```text
//! msg="blocknotify BTC $1 t=$(date +%s)"
//! mac=$(printf %s "$msg" | openssl dgst -sha256 -hmac "$SECRET" -r | cut -d' ' -f1)
//! printf '%s mac=%s' "$msg" "$mac" | nc -u -w0 127.0.0.1 6855
//! ```
//!
//! The listener binds loopback by default; a datagram for another coin is ignored.
//!
//! ## ZMQ
//! bitcoind's `-zmqpubhashblock=tcp://127.0.0.1:28332` publishes `hashblock` messages: topic,
//! the 32-byte hash in display order, and a 4-byte little-endian sequence number. ZMQ PUB/SUB
//! drops messages while disconnected, which is why the coinserver machine keeps polling.

use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use powerpool_core::coinserver::{PushSignal, PushSource};
use powerpool_core::hash::Hash256;
use sha2::Sha256;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use zeromq::{Socket, SocketRecv};

/// Longest datagram read; anything longer is refused.
pub const MAX_DATAGRAM: usize = 512;
/// How far a signed datagram's `t=` may be from the pool's clock, either way.
pub const REPLAY_WINDOW_SECS: u64 = 30;
/// The original's default port.
pub const DEFAULT_UDP_ADDR: &str = "127.0.0.1:6855";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushCommand {
    BlockNotify {
        coin: String,
        block_hash: Option<Hash256>,
    },
}

/// Why a datagram was refused. Refused datagrams are logged and dropped; nothing is answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    #[error("datagram longer than {MAX_DATAGRAM} bytes")]
    TooLong,
    #[error("datagram is not printable ASCII")]
    NotAscii,
    #[error("unknown command (only `blocknotify <coin> [<hash>]` exists)")]
    UnknownCommand,
    #[error("malformed arguments: {0}")]
    BadArguments(&'static str),
    #[error("a secret is configured: sign the datagram with t= and mac=")]
    Unsigned,
    #[error("signature does not match")]
    BadMac,
    #[error("timestamp outside the replay window; check the sender's clock")]
    Stale,
}

/// Parses one datagram. `secret`: when set, the datagram must be signed (module docs);
/// `now_unix` is the pool's wall clock in seconds, for the replay window.
pub fn parse_datagram(
    bytes: &[u8],
    secret: Option<&[u8]>,
    now_unix: u64,
) -> Result<PushCommand, DatagramError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(DatagramError::TooLong);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| DatagramError::NotAscii)?;
    let text = text.trim_end_matches([' ', '\t', '\r', '\n']);
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(DatagramError::NotAscii);
    }
    let command = match secret {
        None => text,
        Some(key) => verify(text, key, now_unix)?,
    };
    let mut tokens = command.split(' ');
    if tokens.next() != Some("blocknotify") {
        return Err(DatagramError::UnknownCommand);
    }
    let coin = tokens
        .next()
        .filter(|c| (1..=16).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or(DatagramError::BadArguments(
            "coin must be 1-16 letters or digits",
        ))?;
    let block_hash = match tokens.next() {
        None => None,
        Some(h) if h.len() == 64 => Some(
            Hash256::from_display_hex(h)
                .map_err(|_| DatagramError::BadArguments("block hash must be 64 hex digits"))?,
        ),
        Some(_) => {
            return Err(DatagramError::BadArguments(
                "block hash must be 64 hex digits",
            ));
        }
    };
    if tokens.next().is_some() {
        return Err(DatagramError::BadArguments("too many arguments"));
    }
    Ok(PushCommand::BlockNotify {
        coin: coin.to_owned(),
        block_hash,
    })
}

/// Checks `... t=<secs> mac=<hex>` and returns the command before ` t=`.
fn verify<'a>(text: &'a str, key: &[u8], now_unix: u64) -> Result<&'a str, DatagramError> {
    let (signed, mac_hex) = text.rsplit_once(" mac=").ok_or(DatagramError::Unsigned)?;
    let (command, t) = signed.rsplit_once(" t=").ok_or(DatagramError::Unsigned)?;
    let tag = hex::decode(mac_hex).map_err(|_| DatagramError::BadMac)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| DatagramError::BadMac)?;
    mac.update(signed.as_bytes());
    mac.verify_slice(&tag).map_err(|_| DatagramError::BadMac)?;
    let t: u64 = t
        .parse()
        .map_err(|_| DatagramError::BadArguments("t= must be unix seconds"))?;
    if t.abs_diff(now_unix) > REPLAY_WINDOW_SECS {
        return Err(DatagramError::Stale);
    }
    Ok(command)
}

/// Signs a command for a pool configured with `secret` (used by senders and tests).
pub fn sign_datagram(command: &str, secret: &[u8], now_unix: u64) -> String {
    let signed = format!("{command} t={now_unix}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(signed.as_bytes());
    format!("{signed} mac={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Debug, Clone)]
pub struct UdpPushConfig {
    /// Currency code this pool serves; notifications for other coins are ignored.
    pub coin: String,
    pub secret: Option<Vec<u8>>,
}

/// Reads datagrams from `socket` until the receiving side of `tx` is gone. The caller binds
/// the socket (loopback, [`DEFAULT_UDP_ADDR`], by default).
pub async fn run_udp(socket: UdpSocket, cfg: UdpPushConfig, tx: mpsc::Sender<PushSignal>) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (len, from): (usize, SocketAddr) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "udp push port receive failed");
                    continue;
                }
            },
            () = tx.closed() => return,
        };
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match parse_datagram(&buf[..len], cfg.secret.as_deref(), now_unix) {
            Ok(PushCommand::BlockNotify { coin, block_hash }) => {
                if !coin.eq_ignore_ascii_case(&cfg.coin) {
                    tracing::debug!(%from, %coin, "block notification for another coin");
                    continue;
                }
                forward(
                    &tx,
                    PushSignal {
                        source: PushSource::Udp,
                        block_hash,
                    },
                );
            }
            Err(e) => tracing::warn!(%from, error = %e, "datagram refused"),
        }
    }
}

/// A full channel already holds a pending "fetch now", so dropping this one loses nothing.
fn forward(tx: &mpsc::Sender<PushSignal>, signal: PushSignal) {
    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(signal) {
        tracing::debug!("push signal after the coinserver driver stopped");
    }
}

/// Decodes one ZMQ `hashblock` message's frames.
pub fn parse_hashblock(frames: &[&[u8]]) -> Option<Hash256> {
    match frames {
        [topic, body, ..] if *topic == b"hashblock" && body.len() == 32 => {
            let mut b = [0u8; 32];
            b.copy_from_slice(body);
            // Published in display order; Hash256 holds internal order.
            b.reverse();
            Some(Hash256(b))
        }
        _ => None,
    }
}

/// Subscribes to bitcoind's `hashblock` at `endpoint` (e.g. `tcp://127.0.0.1:28332`) and
/// forwards each block as a [`PushSignal`] until the receiving side of `tx` is gone.
/// Connection failures are retried every `retry`.
pub async fn run_zmq(endpoint: String, retry: Duration, tx: mpsc::Sender<PushSignal>) {
    loop {
        let mut socket = zeromq::SubSocket::new();
        let connected = async {
            socket.connect(&endpoint).await?;
            socket.subscribe("hashblock").await
        };
        let outcome = tokio::select! {
            r = connected => r,
            () = tx.closed() => return,
        };
        if let Err(e) = outcome {
            tracing::warn!(%endpoint, error = %e, "zmq connect failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(retry) => continue,
                () = tx.closed() => return,
            }
        }
        loop {
            let msg = tokio::select! {
                m = socket.recv() => m,
                () = tx.closed() => return,
            };
            match msg {
                Ok(m) => {
                    let frames: Vec<&[u8]> = m.iter().map(|f| &f[..]).collect();
                    match parse_hashblock(&frames) {
                        Some(h) => forward(
                            &tx,
                            PushSignal {
                                source: PushSource::Zmq,
                                block_hash: Some(h),
                            },
                        ),
                        None => tracing::debug!(%endpoint, "unexpected zmq message ignored"),
                    }
                }
                Err(e) => {
                    tracing::warn!(%endpoint, error = %e, "zmq receive failed; reconnecting");
                    break;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Mainnet block 100000.
    const H100K: &str = "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506";

    #[test]
    fn plain_commands() {
        assert_eq!(
            parse_datagram(b"blocknotify BTC\n", None, 0),
            Ok(PushCommand::BlockNotify {
                coin: "BTC".into(),
                block_hash: None
            })
        );
        let d = format!("blocknotify LTC {H100K}");
        assert_eq!(
            parse_datagram(d.as_bytes(), None, 0),
            Ok(PushCommand::BlockNotify {
                coin: "LTC".into(),
                block_hash: Some(Hash256::from_display_hex(H100K).unwrap())
            })
        );
    }

    #[test]
    fn the_original_method_call_syntax_is_refused() {
        for d in [
            &b"LTC getblocktemplate signal=1 __spawn=1"[..],
            b"PP exit",
            b"blocknotify",
            b"blocknotify BTC 00ff",
            b"blocknotify BTC extra args here",
            b"blocknotify B\xc3\xa9C",
            b"blocknotify BTC\0",
            b"",
        ] {
            assert!(parse_datagram(d, None, 0).is_err(), "{d:?}");
        }
        assert_eq!(
            parse_datagram(&[b'a'; MAX_DATAGRAM + 1], None, 0),
            Err(DatagramError::TooLong)
        );
    }

    #[test]
    fn signed_datagrams() {
        let key = b"s3cret";
        let now = 1_700_000_000;
        let d = sign_datagram(&format!("blocknotify BTC {H100K}"), key, now);
        assert!(parse_datagram(d.as_bytes(), Some(key), now + 10).is_ok());
        assert_eq!(
            parse_datagram(d.as_bytes(), Some(key), now + 31),
            Err(DatagramError::Stale)
        );
        assert_eq!(
            parse_datagram(d.as_bytes(), Some(b"other"), now),
            Err(DatagramError::BadMac)
        );
        assert_eq!(
            parse_datagram(b"blocknotify BTC", Some(key), now),
            Err(DatagramError::Unsigned)
        );
        // Changing the signed part (the coin) breaks the signature.
        let forged = d.replacen("BTC", "LTC", 1);
        assert_eq!(
            parse_datagram(forged.as_bytes(), Some(key), now),
            Err(DatagramError::BadMac)
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hashblock_frames() {
        let display = hex::decode(H100K).unwrap();
        let h = parse_hashblock(&[b"hashblock", &display, &[1, 0, 0, 0]]).unwrap();
        assert_eq!(h.to_display_hex(), H100K);
        assert_eq!(parse_hashblock(&[b"hashtx", &display]), None);
        assert_eq!(parse_hashblock(&[b"hashblock", &display[..31]]), None);
    }
}
