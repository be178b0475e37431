//! The configuration file through `Config::parse`, on arbitrary UTF-8.
//!
//! Checked: no panic, no hang, bounded memory — including YAML alias bombs ("billion
//! laughs"), which serde-saphyr's default budget cuts off (at most 1,000,000 replayed events
//! and 50,000 aliases per parse; see the README). The same text is also read into a generic
//! YAML value, where nothing stops expansion early the way the typed, `deny_unknown_fields`
//! config does, so the budget itself is exercised. A syntax error names a position inside
//! the text; an accepted config passes its own validation and survives a round trip through
//! its serialized form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use powerpool_drivers::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Untyped: the alias budget is the only thing bounding expansion here.
    let _ = serde_saphyr::from_str::<serde_json::Value>(text);

    match Config::parse(text, "fuzz.yml") {
        Ok(cfg) => {
            assert!(cfg.validate().is_ok());
            let again = serde_json::to_value(&cfg).expect("a config serializes");
            let back: Config = serde_json::from_value(again).expect("and reads back");
            assert_eq!(back, cfg, "serialized config reads back equal");
        }
        Err(ConfigError::Syntax {
            path, line, column, ..
        }) => {
            assert_eq!(path, "fuzz.yml");
            // YAML ends lines at `\n`, `\r\n` and a lone `\r`.
            let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count() as u64;
            assert!(
                line <= lines + 1,
                "error line {line} past the end ({lines} lines)"
            );
            let _ = column;
        }
        Err(ConfigError::Invalid { path, key, .. }) => {
            assert_eq!(path, "fuzz.yml");
            assert!(!key.is_empty(), "a validation error names its key");
        }
        Err(ConfigError::Read { .. }) => panic!("parse never reads files"),
    }
});
