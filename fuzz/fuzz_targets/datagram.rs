//! Block-notify datagrams through `parse_datagram`, unsigned and signed.
//!
//! Input: one mode byte, then the datagram. Mode bit 0 sets a secret (taken from mode bits
//! 1-3 as a length prefix of a fixed key, so the empty key is covered too); bit 4 signs the
//! datagram with `sign_datagram` first, which lets the fuzzer get past the MAC.
//!
//! Checked: no panic; an accepted unsigned datagram really is `blocknotify <coin> [<hash>]`
//! with a 1-16 character alphanumeric coin; a datagram signed with the right key parses to
//! exactly what its command parses to unsigned (when it fits and has no trailing blanks);
//! the same signed datagram is refused under another key, outside the replay window, and
//! after any byte of its signed part is changed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use powerpool_drivers::push::{
    DatagramError, MAX_DATAGRAM, PushCommand, REPLAY_WINDOW_SECS, parse_datagram, sign_datagram,
};

const NOW: u64 = 1_795_000_000;
const KEY: &[u8] = b"0123456789abcdef-fuzz-secret";

fn check_shape(text: &[u8], cmd: &PushCommand) {
    let PushCommand::BlockNotify { coin, block_hash } = cmd;
    assert!((1..=16).contains(&coin.len()));
    assert!(coin.bytes().all(|b| b.is_ascii_alphanumeric()));
    let text = std::str::from_utf8(text).expect("accepted datagrams are ASCII");
    let mut tokens = text.split(' ');
    assert_eq!(tokens.next(), Some("blocknotify"));
    assert_eq!(tokens.next(), Some(coin.as_str()));
    if let Some(h) = block_hash {
        let tok = tokens.next().expect("hash token");
        assert_eq!(h.to_display_hex(), tok.to_ascii_lowercase());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let secret = (mode & 1 == 1).then(|| &KEY[..usize::from((mode >> 1) & 7) * 4]);
    let sign = mode & 0x10 != 0;

    if !sign {
        let got = parse_datagram(body, secret, NOW);
        if let Ok(cmd) = &got {
            if secret.is_none() {
                let trimmed = body
                    .iter()
                    .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                    .map_or(&body[..0], |i| &body[..=i]);
                check_shape(trimmed, cmd);
            }
        }
        return;
    }

    // Signed: the body is the command (lossily decoded: senders sign text).
    let command = String::from_utf8_lossy(body);
    let key = secret.unwrap_or(KEY);
    let t = NOW - 10 + u64::from(mode >> 5);
    let signed = sign_datagram(&command, key, t);
    let got = parse_datagram(signed.as_bytes(), Some(key), NOW);
    let plain = parse_datagram(command.as_bytes(), None, NOW);
    let clean_end = !command.ends_with([' ', '\t', '\r', '\n']);
    if signed.len() <= MAX_DATAGRAM && clean_end {
        match (&plain, &got) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Ok(_), Err(e)) => panic!("signed form of an accepted command refused: {e:?}"),
            (Err(_), Ok(b)) => panic!("signed form of a refused command accepted: {b:?}"),
            (Err(_), Err(_)) => {}
        }
    }
    if got.is_err() {
        return;
    }
    // Another key, a stale clock, or any change before ` mac=` must be refused.
    let other: &[u8] = if key == b"other" { b"other2" } else { b"other" };
    assert!(parse_datagram(signed.as_bytes(), Some(other), NOW).is_err());
    assert_eq!(
        parse_datagram(signed.as_bytes(), Some(key), NOW + REPLAY_WINDOW_SECS + 20),
        Err(DatagramError::Stale)
    );
    let mac_at = signed.rfind(" mac=").expect("signed datagram has a mac");
    let pos = usize::from(mode) * 7 % mac_at;
    let mut tampered = signed.clone().into_bytes();
    tampered[pos] ^= 1 << (mode % 7);
    let r = parse_datagram(&tampered, Some(key), NOW);
    assert!(r.is_err(), "tampered datagram accepted: {r:?}");
});
