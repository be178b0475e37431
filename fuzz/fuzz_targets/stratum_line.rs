//! Raw bytes from a miner through framing, parsing and reply rendering.
//!
//! The first input byte picks the push size, so libFuzzer explores chunk boundaries as well
//! as contents. Checked after every line: parsing never panics, the same line parses the
//! same way when framed in one push, and every reply is exactly one line of valid JSON
//! whose `id` is the id the parser recovered.

#![no_main]

use libfuzzer_sys::fuzz_target;
use powerpool_core::framing::LineReader;
use powerpool_core::stratum::{self, ErrorCode, Id, Method};
use serde_json::Value;

const MAX_LINE: usize = 1024;

/// An id is kept as the JSON text sent, which the parser validated.
fn id_value(id: &Id) -> Value {
    serde_json::from_str(&id.as_json()).expect("an id is valid JSON text")
}

fn reply(line: &[u8], out: &mut Vec<u8>) -> Value {
    out.clear();
    let id = match stratum::parse_request(line) {
        Ok(req) => {
            match &req.method {
                Method::Subscribe { .. } => {
                    stratum::write_subscribe_result(out, &req.id, "5193fc01", "5193fc01", 4);
                }
                Method::SuggestDifficulty { difficulty } => {
                    stratum::write_result_true(out, &req.id);
                    stratum::write_set_difficulty(out, *difficulty);
                }
                Method::Submit(s) => stratum::write_error(out, &req.id, 23, &s.job_id),
                Method::Authorize { username, .. } => {
                    stratum::write_error(out, &req.id, 24, username);
                }
                Method::Unknown { method } => stratum::write_error(out, &req.id, 20, method),
                _ => stratum::write_error_code(out, &req.id, ErrorCode::Other),
            }
            id_value(&req.id)
        }
        Err(e) => {
            e.write_reply(out);
            id_value(&e.id)
        }
    };
    // Each writer call emits exactly one line; check the first and that all parse.
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).expect("reply is valid JSON");
        assert!(v.is_object(), "reply is an object");
    }
    let first = out.split(|&b| b == b'\n').next().unwrap_or_default();
    let v: Value = serde_json::from_slice(first).expect("reply is valid JSON");
    assert_eq!(v["id"], id, "reply echoes the request id");
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);

    let mut whole = LineReader::new(MAX_LINE);
    whole.push(stream);
    let mut expected = Vec::new();
    while let Some(line) = whole.next_line() {
        expected.push(line.map(<[u8]>::to_vec));
    }

    let mut reader = LineReader::new(MAX_LINE);
    let mut got = Vec::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        reader.push(piece);
        assert!(reader.buffered() <= MAX_LINE + piece.len());
        while let Some(line) = reader.next_line() {
            if let Ok(line) = &line {
                reply(line, &mut out);
            }
            got.push(line.map(<[u8]>::to_vec));
        }
    }
    assert_eq!(
        got, expected,
        "framing depends only on the bytes, not the chunking"
    );
});
