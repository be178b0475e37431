//! Stratum v1 codec: byte-exact writers, the requests of a session transcript captured from
//! PowerPool, malformed-input handling and property tests.

use powerpool_core::framing::{LineReader, LineTooLong};
use powerpool_core::stratum::{
    self, ErrorCode, Id, Method, NotifyParams, ParseError, ParseErrorKind, Request, Submit,
};
use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};

fn text(out: &[u8]) -> &str {
    std::str::from_utf8(out).expect("writers emit UTF-8")
}

fn num(n: i64) -> Id {
    u64::try_from(n).map_or_else(|_| Id::Number(n.to_string().into()), Id::Int)
}

/// The id a request line carrying `text` as its id parses to.
fn id_of(text: &str) -> Id {
    parse(&format!(r#"{{"id":{text},"method":"x"}}"#))
        .unwrap()
        .id
}

fn parse(line: &str) -> Result<Request, ParseError> {
    stratum::parse_request(line.as_bytes())
}

fn bad_params(line: &str) -> (Id, &'static str, String) {
    match parse(line) {
        Err(ParseError {
            id,
            kind: ParseErrorKind::BadParams { method, detail },
        }) => (id, method, detail),
        other => panic!("expected BadParams for {line}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Writers, byte for byte

#[test]
fn result_true_line() {
    let mut out = Vec::new();
    stratum::write_result_true(&mut out, &num(5));
    stratum::write_result_true(&mut out, &Id::string("abc"));
    stratum::write_result_true(&mut out, &Id::Null);
    assert_eq!(
        text(&out),
        "{\"id\":5,\"result\":true,\"error\":null}\n\
         {\"id\":\"abc\",\"result\":true,\"error\":null}\n\
         {\"id\":null,\"result\":true,\"error\":null}\n"
    );
}

#[test]
fn result_raw_line() {
    let mut out = Vec::new();
    stratum::write_result_raw(
        &mut out,
        &num(1),
        r#"{"version-rolling":true,"version-rolling.mask":"1fffe000"}"#,
    );
    assert_eq!(
        text(&out),
        "{\"id\":1,\"result\":{\"version-rolling\":true,\"version-rolling.mask\":\"1fffe000\"},\"error\":null}\n"
    );
}

#[test]
fn error_lines_carry_the_original_table() {
    // Codes and texts PowerPool sent; every line of its captured transcript that is an
    // error uses one of them.
    let table = [
        (ErrorCode::Other, 20, "Other/Unknown"),
        (ErrorCode::StaleJob, 21, "Job not found (=stale)"),
        (ErrorCode::Duplicate, 22, "Duplicate share"),
        (ErrorCode::LowDifficulty, 23, "Low difficulty share"),
        (ErrorCode::Unauthorized, 24, "Unauthorized worker"),
        (ErrorCode::NotSubscribed, 25, "Not subscribed"),
    ];
    for (code, n, msg) in table {
        assert_eq!(code.code(), n);
        assert_eq!(code.default_message(), msg);
        let mut out = Vec::new();
        stratum::write_error_code(&mut out, &num(13), code);
        assert_eq!(
            text(&out),
            format!("{{\"id\":13,\"result\":null,\"error\":[{n},\"{msg}\",null]}}\n")
        );
    }
    let mut out = Vec::new();
    stratum::write_error(&mut out, &Id::string("abc"), 23, "Low difficulty share");
    assert_eq!(
        text(&out),
        "{\"id\":\"abc\",\"result\":null,\"error\":[23,\"Low difficulty share\",null]}\n"
    );
}

#[test]
fn error_message_is_json_escaped() {
    let mut out = Vec::new();
    stratum::write_error(&mut out, &Id::Null, -32600, "bad \"x\"\\\n");
    assert_eq!(
        text(&out),
        "{\"id\":null,\"result\":null,\"error\":[-32600,\"bad \\\"x\\\"\\\\\\n\",null]}\n"
    );
}

#[test]
fn subscribe_result_line() {
    // extranonce1 "5193fc01" is the first client id of port 3333 in PowerPool's transcript.
    let mut out = Vec::new();
    stratum::write_subscribe_result(&mut out, &num(2), "5193fc01", "5193fc01", 4);
    assert_eq!(
        text(&out),
        "{\"id\":2,\"result\":[[[\"mining.set_difficulty\",\"5193fc01\"],[\"mining.notify\",\"5193fc01\"]],\"5193fc01\",4],\"error\":null}\n"
    );
}

#[test]
fn set_difficulty_lines() {
    let cases = [
        (128.0, "128"),
        (65536.0, "65536"),
        (0.5, "0.5"),
        (1e-10, "1e-10"),
        (0.0001, "0.0001"),
        (1.5, "1.5"),
        (524288.0, "524288"),
    ];
    for (d, rendered) in cases {
        let mut out = Vec::new();
        stratum::write_set_difficulty(&mut out, d);
        assert_eq!(
            text(&out),
            format!(
                "{{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[{rendered}]}}\n"
            )
        );
    }
}

#[test]
fn format_difficulty_never_emits_invalid_json() {
    for d in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        f64::MIN_POSITIVE,
        5e-324,
        1e300,
        9.3e18,
        -2.5,
    ] {
        let s = stratum::format_difficulty(d);
        let v: Value = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{d}: {s}: {e}"));
        assert!(v.is_number(), "{d} -> {s}");
    }
    assert_eq!(stratum::format_difficulty(f64::NAN), "0");
    assert_eq!(stratum::format_difficulty(-0.0), "0");
    assert_eq!(stratum::format_difficulty(9.0e15), "9000000000000000");
    assert_eq!(
        stratum::format_difficulty(f64::INFINITY),
        "1.7976931348623157e+308"
    );
}

#[test]
fn set_extranonce_and_version_mask_lines() {
    let mut out = Vec::new();
    stratum::write_set_extranonce(&mut out, "5193fc01", 4);
    stratum::write_set_version_mask(&mut out, 0x1fff_e000);
    stratum::write_set_version_mask(&mut out, 0x0000_3000);
    assert_eq!(
        text(&out),
        "{\"id\":null,\"method\":\"mining.set_extranonce\",\"params\":[\"5193fc01\",4]}\n\
         {\"id\":null,\"method\":\"mining.set_version_mask\",\"params\":[\"1fffe000\"]}\n\
         {\"id\":null,\"method\":\"mining.set_version_mask\",\"params\":[\"00003000\"]}\n"
    );
}

#[test]
fn notify_line() {
    let branch = vec![
        "8d4b1c5a3e0f2a9b6c7d8e9f00112233445566778899aabbccddeeff00112233".to_owned(),
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".to_owned(),
    ];
    let p = NotifyParams {
        job_id: "20548",
        prevhash_hex: "56562a58",
        coinb1_hex: "02000000010000",
        coinb2_hex: "88ac00000000",
        merkle_branch_hex: &branch,
        version: 0x2000_0000,
        nbits: 0x207f_ffff,
        ntime: 0x5f5e_1000,
        clean_jobs: true,
    };
    let mut out = Vec::new();
    stratum::write_notify(&mut out, &p);
    assert_eq!(
        text(&out),
        "{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"20548\",\"56562a58\",\"02000000010000\",\"88ac00000000\",[\"8d4b1c5a3e0f2a9b6c7d8e9f00112233445566778899aabbccddeeff00112233\",\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"],\"20000000\",\"207fffff\",\"5f5e1000\",true]}\n"
    );

    // The transcript's notify: version 2, bits 1d00ffff, ntime 6b054962, no branch, not clean.
    let p = NotifyParams {
        merkle_branch_hex: &[],
        version: 2,
        nbits: 0x1d00_ffff,
        ntime: 0x6b05_4962,
        clean_jobs: false,
        ..p
    };
    out.clear();
    stratum::write_notify(&mut out, &p);
    assert!(
        text(&out).ends_with(",[],\"00000002\",\"1d00ffff\",\"6b054962\",false]}\n"),
        "{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------
// Parsing: the requests of PowerPool's transcript

fn sub(worker: &str, job: &str, en2: &str, ntime: &str, nonce: &str) -> Method {
    Method::Submit(Submit {
        worker: worker.into(),
        job_id: job.into(),
        extranonce2: en2.into(),
        ntime: ntime.into(),
        nonce: nonce.into(),
        version_bits: None,
    })
}

#[test]
fn transcript_requests_parse() {
    let ok = [
        (
            r#"{"id":1,"method":"mining.authorize","params":["x","y"]}"#,
            num(1),
            Method::Authorize {
                username: "x".into(),
                password: Some("y".into()),
            },
        ),
        (
            r#"{"id":2,"method":"mining.subscribe","params":["probe/1.0"]}"#,
            num(2),
            Method::Subscribe {
                user_agent: Some("probe/1.0".into()),
                session_id: None,
            },
        ),
        (
            r#"{"id":3,"method":"mining.subscribe","params":[]}"#,
            num(3),
            Method::Subscribe {
                user_agent: None,
                session_id: None,
            },
        ),
        (
            r#"{"id":4,"method":"mining.submit","params":["a","1","00000000","00000000","00000000"]}"#,
            num(4),
            sub("a", "1", "00000000", "00000000", "00000000"),
        ),
        (
            r#"{"id":5,"method":"mining.authorize","params":["<valid addr>.rig 1!x", "-d 0.5"]}"#,
            num(5),
            Method::Authorize {
                username: "<valid addr>.rig 1!x".into(),
                password: Some("-d 0.5".into()),
            },
        ),
        (
            r#"{"id":7,"method":"mining.get_transactions","params":[]}"#,
            num(7),
            Method::GetTransactions,
        ),
        (
            r#"{"id":8,"method":"mining.extranonce.subscribe","params":[]}"#,
            num(8),
            Method::ExtranonceSubscribe,
        ),
        (
            r#"{"id":13,"method":"mining.submit","params":["w","999999999","00000001","6b054962","00000000"]}"#,
            num(13),
            sub("w", "999999999", "00000001", "6b054962", "00000000"),
        ),
        (
            r#"{"id":"abc","method":"MINING.SUBMIT","params":["w","20548","00000002","6b054962","00000000"]}"#,
            Id::string("abc"),
            sub("w", "20548", "00000002", "6b054962", "00000000"),
        ),
    ];
    for (line, id, method) in ok {
        assert_eq!(parse(line), Ok(Request { id, method }), "{line}");
    }

    let not_json = parse("not json").unwrap_err();
    assert_eq!(not_json.id, Id::Null);
    assert_eq!(not_json.kind, ParseErrorKind::NotJson);

    let no_method = parse(r#"{"id":10}"#).unwrap_err();
    assert_eq!(no_method.id, num(10));
    assert_eq!(no_method.kind, ParseErrorKind::MissingMethod);
    let mut out = Vec::new();
    no_method.write_reply(&mut out);
    assert_eq!(
        text(&out),
        "{\"id\":10,\"result\":null,\"error\":[20,\"missing method\",null]}\n"
    );
}

#[test]
fn real_miner_lines_parse() {
    // Common client shapes: spaced JSON, user agent plus previous session, BIP310
    // configure and a version-rolling submit.
    let req = parse(
        r#"{"id": 1, "method": "mining.subscribe", "params": ["bmminer/2.0.0", "5193fc01"]}"#,
    )
    .unwrap();
    assert_eq!(
        req.method,
        Method::Subscribe {
            user_agent: Some("bmminer/2.0.0".into()),
            session_id: Some("5193fc01".into()),
        }
    );
    let req =
        parse(r#"{"id":1,"method":"mining.subscribe","params":["NiceHash/1.0.0",null]}"#).unwrap();
    assert_eq!(
        req.method,
        Method::Subscribe {
            user_agent: Some("NiceHash/1.0.0".into()),
            session_id: None,
        }
    );

    let req = parse(
        r#"{"method": "mining.configure", "id": 1, "params": [["minimum-difficulty", "version-rolling"], {"minimum-difficulty.value": 2048, "version-rolling.mask": "00fff000", "version-rolling.min-bit-count": 2}]}"#,
    )
    .unwrap();
    let Method::Configure { extensions, params } = req.method else {
        panic!("not configure: {req:?}");
    };
    assert_eq!(extensions, ["minimum-difficulty", "version-rolling"]);
    assert_eq!(params["version-rolling.mask"], json!("00fff000"));
    assert_eq!(params["minimum-difficulty.value"], json!(2048));

    let req = parse(
        r#"{"params": ["worker.1", "3a", "00000000", "5e9f3a1b", "1f2e3d4c", "04d46000"], "id": 4, "method": "mining.submit"}"#,
    )
    .unwrap();
    assert_eq!(
        req.method,
        Method::Submit(Submit {
            worker: "worker.1".into(),
            job_id: "3a".into(),
            extranonce2: "00000000".into(),
            ntime: "5e9f3a1b".into(),
            nonce: "1f2e3d4c".into(),
            version_bits: Some("04d46000".into()),
        })
    );

    let req = parse(r#"{"id":9,"method":"mining.suggest_difficulty","params":[1024]}"#).unwrap();
    assert_eq!(req.method, Method::SuggestDifficulty { difficulty: 1024.0 });
    let req = parse(r#"{"id":9,"method":"mining.suggest_target","params":["00000000ffff0000000000000000000000000000000000000000000000000000"]}"#).unwrap();
    assert!(matches!(req.method, Method::SuggestTarget { target } if target.len() == 64));
}

#[test]
fn lenient_shapes_are_accepted() {
    // One-parameter authorize is a username (the original credited the donation key).
    let req = parse(r#"{"id":1,"method":"mining.authorize","params":["1BitcoinEaterAddressDontSendf59kuE.rig"]}"#).unwrap();
    assert_eq!(
        req.method,
        Method::Authorize {
            username: "1BitcoinEaterAddressDontSendf59kuE.rig".into(),
            password: None,
        }
    );
    // Missing and null params are [] and a missing id is null.
    assert_eq!(
        parse(r#"{"method":"mining.extranonce.subscribe"}"#),
        Ok(Request {
            id: Id::Null,
            method: Method::ExtranonceSubscribe
        })
    );
    assert_eq!(
        parse(r#"{"id":null,"method":"mining.subscribe","params":null}"#)
            .unwrap()
            .method,
        Method::Subscribe {
            user_agent: None,
            session_id: None
        }
    );
    // Extra params are ignored.
    assert_eq!(
        parse(r#"{"id":1,"method":"mining.authorize","params":["u","p",3,{"x":1}]}"#)
            .unwrap()
            .method,
        Method::Authorize {
            username: "u".into(),
            password: Some("p".into())
        }
    );
    // Surrounding whitespace and unknown members are fine.
    assert!(
        parse(" {\"id\":1,\"jsonrpc\":\"2.0\",\"method\":\"mining.get_transactions\"} \r").is_ok()
    );
    // Unknown methods keep their spelling; their params are not inspected.
    assert_eq!(
        parse(r#"{"id":1,"method":"Mining.Multi_Version","params":{"weird":true}}"#)
            .unwrap()
            .method,
        Method::Unknown {
            method: "Mining.Multi_Version".into()
        }
    );
}

#[test]
fn ids_are_echoed_byte_for_byte() {
    let long = format!("\"{}\"", "x".repeat(10_000));
    let ten_pow_40 = format!("1{}", "0".repeat(40));
    for raw in [
        "1",
        "1.0",
        "1.50",
        "-3",
        "0",
        "-0",
        "1E2",
        "18446744073709551615",
        "18893488174149013232",
        &ten_pow_40,
        "1e400",
        "-9.87654321e-300",
        "0.30000000000000004",
        "1e-7",
        r#""a\"b\\\u00e9\u0001\/""#,
        r#""é""#,
        &long,
        "null",
    ] {
        for line in [
            // The share path's envelope, and a request it cannot take (the general path).
            format!(r#"{{"id":{raw},"method":"mining.extranonce.subscribe"}}"#),
            format!(r#"{{"method":"mining.submit","id":{raw},"params":{{"a":1}}}}"#),
        ] {
            let id = match parse(&line) {
                Ok(r) => r.id,
                Err(e) => e.id,
            };
            let mut out = Vec::new();
            stratum::write_result_true(&mut out, &id);
            assert_eq!(
                text(&out),
                format!("{{\"id\":{raw},\"result\":true,\"error\":null}}\n"),
                "{line}"
            );
        }
    }
    // Without an id, or with one that is not a number, string or null.
    assert_eq!(parse(r#"{"method":"x"}"#).unwrap().id, Id::Null);
    assert_eq!(
        parse(r#"{"id":[1],"method":"x"}"#).unwrap_err().kind,
        ParseErrorKind::BadId
    );
}

#[test]
fn malformed_requests_are_typed_errors_with_the_id() {
    let (id, method, detail) =
        bad_params(r#"{"id":6,"method":"mining.authorize","params":["u",null]}"#);
    assert_eq!((id, method), (num(6), "mining.authorize"));
    assert!(
        detail.contains("password") && detail.contains("null"),
        "{detail}"
    );

    let (_, method, detail) = bad_params(r#"{"id":6,"method":"mining.authorize","params":[]}"#);
    assert_eq!(method, "mining.authorize");
    assert!(
        detail.contains("missing") && detail.contains("username"),
        "{detail}"
    );

    let (id, method, detail) =
        bad_params(r#"{"id":"s","method":"mining.submit","params":["w",20548,"00","00","00"]}"#);
    assert_eq!((id, method), (Id::string("s"), "mining.submit"));
    assert!(
        detail.contains("job id") && detail.contains("number"),
        "{detail}"
    );

    let (_, _, detail) =
        bad_params(r#"{"id":1,"method":"mining.submit","params":["w","1","00","00"]}"#);
    assert!(
        detail.contains("missing") && detail.contains("nonce"),
        "{detail}"
    );

    let (_, _, detail) = bad_params(r#"{"id":1,"method":"mining.subscribe","params":[42]}"#);
    assert!(detail.contains("user agent"), "{detail}");

    for bad in ["0", "-1", "\"64\"", "null"] {
        let (_, method, _) = bad_params(&format!(
            r#"{{"id":1,"method":"mining.suggest_difficulty","params":[{bad}]}}"#
        ));
        assert_eq!(method, "mining.suggest_difficulty");
    }
    bad_params(r#"{"id":1,"method":"mining.suggest_difficulty"}"#);
    bad_params(r#"{"id":1,"method":"mining.configure","params":[["version-rolling",1],{}]}"#);
    bad_params(r#"{"id":1,"method":"mining.configure","params":["version-rolling"]}"#);
    bad_params(r#"{"id":1,"method":"mining.configure","params":[[],"x"]}"#);
    bad_params(r#"{"id":1,"method":"mining.suggest_target","params":[7]}"#);

    let kinds = [
        (r#"[1,2,3]"#, Id::Null, ParseErrorKind::NotAnObject),
        ("", Id::Null, ParseErrorKind::NotJson),
        ("\u{feff}{}", Id::Null, ParseErrorKind::NotJson),
        (
            r#"{"id":1e999,"method":"x","params":[1e999]}"#,
            Id::Null,
            ParseErrorKind::NotJson,
        ),
        (
            r#"{"id":true,"method":"mining.subscribe"}"#,
            Id::Null,
            ParseErrorKind::BadId,
        ),
        (
            r#"{"id":4,"method":7}"#,
            num(4),
            ParseErrorKind::MethodNotString,
        ),
        (
            r#"{"id":4,"method":null}"#,
            num(4),
            ParseErrorKind::MethodNotString,
        ),
        (
            r#"{"id":4,"method":"mining.submit","params":{"a":1}}"#,
            num(4),
            ParseErrorKind::ParamsNotArray {
                method: "mining.submit",
            },
        ),
    ];
    for (line, id, kind) in kinds {
        assert_eq!(parse(line), Err(ParseError { id, kind }), "{line}");
    }
    // Invalid UTF-8 inside a string.
    let err = stratum::parse_request(b"{\"id\":1,\"method\":\"\xff\"}").unwrap_err();
    assert_eq!(err.kind, ParseErrorKind::NotJson);
}

#[test]
fn error_messages_are_short_and_specific() {
    let err = parse(r#"{"id":1,"method":"mining.authorize","params":["u",null]}"#).unwrap_err();
    assert_eq!(
        err.message(),
        "mining.authorize: param 1 (password) must be a string, got null"
    );
    assert_eq!(parse("{").unwrap_err().message(), "invalid JSON");
    let err = parse(r#"{"id":1,"method":"mining.submit","params":["w"]}"#).unwrap_err();
    assert_eq!(err.message(), "mining.submit: missing param 1 (job id)");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = format!(
        "{{\"id\":1,\"method\":\"x\",\"params\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(parse(&deep).unwrap_err().kind, ParseErrorKind::NotJson);
}

// ---------------------------------------------------------------------------------------
// Property tests

/// Any JSON number serde_json can hold. Floats survive text and back exactly because core
/// enables serde_json's `float_roundtrip` (correctly rounded parsing of shortest output).
fn exact_number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        any::<f64>().prop_filter_map("finite", Number::from_f64),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        exact_number().prop_map(Value::Number),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn id_strategy() -> impl Strategy<Value = Id> {
    prop_oneof![
        Just(Id::Null),
        exact_number().prop_map(|n| id_of(&n.to_string())),
        any::<String>().prop_map(|s| Id::string(&s)),
    ]
}

fn id_to_value(id: &Id) -> Value {
    serde_json::from_str(&id.as_json()).expect("an id is JSON text")
}

const KNOWN: [&str; 8] = [
    "mining.subscribe",
    "mining.authorize",
    "mining.submit",
    "mining.configure",
    "mining.suggest_difficulty",
    "mining.suggest_target",
    "mining.extranonce.subscribe",
    "mining.get_transactions",
];

/// A known method name with each letter's case chosen by `mask`.
fn spelled(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if (mask >> (i % 64)) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn method_strategy() -> impl Strategy<Value = Method> {
    let s = || any::<String>();
    let submit = (s(), s(), s(), s(), s(), prop::option::of(s())).prop_map(
        |(worker, job_id, extranonce2, ntime, nonce, version_bits)| {
            Method::Submit(Submit {
                worker,
                job_id,
                extranonce2,
                ntime,
                nonce,
                version_bits,
            })
        },
    );
    let configure = (
        prop::collection::vec(s(), 0..4),
        prop::collection::btree_map(s(), json_value(), 0..4),
    )
        .prop_map(|(extensions, params)| Method::Configure {
            extensions,
            params: params.into_iter().collect(),
        });
    let difficulty = any::<f64>()
        .prop_filter("finite and positive", |d| d.is_finite() && *d > 0.0)
        .prop_map(|difficulty| Method::SuggestDifficulty { difficulty });
    prop_oneof![
        (prop::option::of(s()), prop::option::of(s())).prop_map(|(user_agent, session_id)| {
            Method::Subscribe {
                user_agent,
                session_id,
            }
        }),
        (s(), prop::option::of(s()))
            .prop_map(|(username, password)| Method::Authorize { username, password }),
        submit,
        configure,
        difficulty,
        s().prop_map(|target| Method::SuggestTarget { target }),
        Just(Method::ExtranonceSubscribe),
        Just(Method::GetTransactions),
        s().prop_filter("must not name a known method", |m| {
            !KNOWN.iter().any(|k| k.eq_ignore_ascii_case(m))
        })
        .prop_map(|method| Method::Unknown { method }),
    ]
}

/// Renders a request the way a miner would send it. `mask` picks the method's letter case,
/// `junk` is appended as surplus params where the method has no optional slot left.
fn render(req: &Request, mask: u64, junk: &[Value], omit_empty: bool) -> String {
    let opt = |o: &Option<String>| o.as_ref().map_or(Value::Null, |s| json!(s));
    let (name, mut params, full): (String, Vec<Value>, bool) = match &req.method {
        Method::Subscribe {
            user_agent,
            session_id,
        } => {
            let mut p = Vec::new();
            if user_agent.is_some() || session_id.is_some() {
                p.push(opt(user_agent));
            }
            if session_id.is_some() {
                p.push(opt(session_id));
            }
            (spelled(KNOWN[0], mask), p, session_id.is_some())
        }
        Method::Authorize { username, password } => {
            let mut p = vec![json!(username)];
            if let Some(pw) = password {
                p.push(json!(pw));
            }
            (spelled(KNOWN[1], mask), p, password.is_some())
        }
        Method::Submit(s) => {
            let mut p = vec![
                json!(s.worker),
                json!(s.job_id),
                json!(s.extranonce2),
                json!(s.ntime),
                json!(s.nonce),
            ];
            if let Some(v) = &s.version_bits {
                p.push(json!(v));
            }
            (spelled(KNOWN[2], mask), p, s.version_bits.is_some())
        }
        Method::Configure { extensions, params } => (
            spelled(KNOWN[3], mask),
            vec![json!(extensions), Value::Object(params.clone())],
            true,
        ),
        Method::SuggestDifficulty { difficulty } => {
            (spelled(KNOWN[4], mask), vec![json!(difficulty)], true)
        }
        Method::SuggestTarget { target } => (spelled(KNOWN[5], mask), vec![json!(target)], true),
        Method::ExtranonceSubscribe => (spelled(KNOWN[6], mask), Vec::new(), true),
        Method::GetTransactions => (spelled(KNOWN[7], mask), Vec::new(), true),
        Method::Unknown { method } => (method.clone(), Vec::new(), false),
    };
    if full {
        params.extend_from_slice(junk);
    }
    let mut obj = Map::new();
    obj.insert("id".into(), id_to_value(&req.id));
    obj.insert("method".into(), json!(name));
    if !(omit_empty && params.is_empty()) {
        obj.insert("params".into(), Value::Array(params));
    }
    Value::Object(obj).to_string()
}

/// The reply a server would write for a parse outcome must be one valid JSON line whose
/// id equals the request's.
fn check_reply(outcome: &Result<Request, ParseError>) {
    let mut out = Vec::new();
    let id = match outcome {
        Ok(req) => {
            stratum::write_result_true(&mut out, &req.id);
            &req.id
        }
        Err(e) => {
            e.write_reply(&mut out);
            &e.id
        }
    };
    assert_eq!(out.last(), Some(&b'\n'));
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    let v: Value = serde_json::from_slice(&out).expect("reply is JSON");
    assert_eq!(v["id"], id_to_value(id));
}

/// Reference model of the framing: the lines of a whole stream, stopping at the first
/// overlong line (complete or still open at the end).
fn model_lines(stream: &[u8], max_line: usize) -> Vec<Result<Vec<u8>, LineTooLong>> {
    let mut out = Vec::new();
    let mut pieces: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let open = pieces.pop().unwrap_or_default();
    for piece in pieces {
        if piece.len() > max_line {
            out.push(Err(LineTooLong { max_line }));
            return out;
        }
        let line = piece.strip_suffix(b"\r").unwrap_or(piece);
        if !line.iter().all(u8::is_ascii_whitespace) {
            out.push(Ok(line.to_vec()));
        }
    }
    if open.len() > max_line {
        out.push(Err(LineTooLong { max_line }));
    }
    out
}

fn stream_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => Just(b'a'),
        3 => Just(b'\n'),
        2 => Just(b'\r'),
        2 => Just(b' '),
        1 => Just(b'\t'),
        1 => any::<u8>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let outcome = stratum::parse_request(&bytes);
        check_reply(&outcome);
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        let outcome = stratum::parse_request(v.to_string().as_bytes());
        check_reply(&outcome);
    }

    #[test]
    fn request_shaped_objects_keep_their_id(
        id in id_strategy(),
        which in 0usize..KNOWN.len() + 1,
        mask in any::<u64>(),
        params in prop::option::of(json_value()),
    ) {
        let name = KNOWN.get(which).map_or_else(|| "client.reconnect".to_owned(), |m| spelled(m, mask));
        let mut obj = Map::new();
        obj.insert("id".into(), id_to_value(&id));
        obj.insert("method".into(), json!(name));
        if let Some(p) = params {
            obj.insert("params".into(), p);
        }
        let outcome = stratum::parse_request(Value::Object(obj).to_string().as_bytes());
        check_reply(&outcome);
        let got = match &outcome {
            Ok(r) => &r.id,
            Err(e) => &e.id,
        };
        prop_assert_eq!(got, &id);
    }

    #[test]
    fn requests_round_trip(
        id in id_strategy(),
        method in method_strategy(),
        mask in any::<u64>(),
        junk in prop::collection::vec(json_value(), 0..3),
        omit_empty in any::<bool>(),
    ) {
        let req = Request { id, method };
        let line = render(&req, mask, &junk, omit_empty);
        prop_assert_eq!(stratum::parse_request(line.as_bytes()), Ok(req), "{}", line);
    }

    #[test]
    fn line_reader_is_split_independent_and_bounded(
        stream in prop::collection::vec(stream_byte(), 0..400),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        max_line in 0usize..48,
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut reader = LineReader::new(max_line);
        let mut lines = Vec::new();
        for w in cuts.windows(2) {
            let chunk = &stream[w[0]..w[1]];
            reader.push(chunk);
            prop_assert!(reader.buffered() <= max_line + chunk.len());
            while let Some(line) = reader.next_line() {
                lines.push(line.map(<[u8]>::to_vec));
            }
            prop_assert!(reader.buffered() <= max_line + chunk.len());
        }
        prop_assert_eq!(lines, model_lines(&stream, max_line));
    }

    #[test]
    fn line_reader_survives_arbitrary_bytes(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16),
        max_line in 0usize..128,
    ) {
        let mut reader = LineReader::new(max_line);
        for chunk in &chunks {
            reader.push(chunk);
            while let Some(line) = reader.next_line() {
                if let Ok(line) = line {
                    check_reply(&stratum::parse_request(line));
                }
            }
            prop_assert!(reader.buffered() <= max_line + chunk.len());
        }
    }
}
