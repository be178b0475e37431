//! A coinserver's HTTP reply through `decode_reply`.
//!
//! Input: two bytes of HTTP status (big-endian), one byte of request id, then the body. The
//! id is one byte so the fuzzer can match it in the body (`"id":7`). Checked: no panic, and
//! the result agrees with an independent reading of the body — success only for HTTP 200
//! with our id and a null or absent error, and then exactly the body's `result`; an RPC error
//! whenever the body carries a non-null `error` (whatever the status, except 401/403); an
//! auth error for 401/403 whatever the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use powerpool_drivers::rpc::{RpcError, decode_reply};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let [s0, s1, id, body @ ..] = data else {
        return;
    };
    let status = u16::from_be_bytes([*s0, *s1]);
    let id = u64::from(*id);
    let got = decode_reply(status, body, id);

    if status == 401 || status == 403 {
        assert!(matches!(got, Err(RpcError::Auth(_))), "{got:?}");
        return;
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let Some(Value::Object(obj)) = parsed else {
        assert!(matches!(got, Err(RpcError::Malformed(_))), "{got:?}");
        return;
    };
    let error = obj.get("error").filter(|e| !e.is_null());
    match (&got, error) {
        (Err(RpcError::Rpc { code, message }), Some(e)) => {
            if let Some(c) = e.get("code").and_then(Value::as_i64) {
                assert_eq!(*code, c);
            }
            if let Some(Value::String(m)) = e.get("message") {
                assert_eq!(message, m);
            }
        }
        (_, Some(_)) => panic!("a non-null error must surface as RpcError::Rpc, got {got:?}"),
        (Ok(result), None) => {
            assert_eq!(status, 200, "success only for HTTP 200");
            assert_eq!(obj.get("id").and_then(Value::as_u64), Some(id));
            assert_eq!(Some(result), obj.get("result"));
        }
        (Err(RpcError::Malformed(_)), None) => {
            let id_ok = obj.get("id").and_then(Value::as_u64) == Some(id);
            assert!(
                !id_ok || status != 200 || !obj.contains_key("result"),
                "a well-formed 200 reply was refused: {got:?}"
            );
        }
        (Err(e), None) => panic!("unexpected error kind {e:?}"),
    }
});
