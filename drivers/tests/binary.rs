//! The `powerpool` binary as operators run it: config checking, the demo, the health check,
//! and its signals (SIGHUP reload, SIGTERM shutdown). Every child is killed when a test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_powerpool");
/// Hang guard for anything that should happen well within it.
const LIMIT: Duration = Duration::from_secs(30);
const EXAMPLE: &str = include_str!("../../config.yml.example");

/// The example with its two required keys filled in and everything it writes kept in `dir`.
fn example_config(dir: &Path, coinserver: &str) -> String {
    EXAMPLE
        .replace(
            "payout_address: \"\"",
            "payout_address: 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
        )
        .replace(
            "coinservers: []",
            &format!("coinservers: [{{name: n, url: \"{coinserver}\"}}]"),
        )
        .replace(
            "embedded_path: powerpool.redb",
            &format!("embedded_path: {}", dir.join("pool.redb").display()),
        )
        .replace(
            "spool_path: powerpool.spool",
            &format!("spool_path: {}", dir.join("spool").display()),
        )
}

fn check_config(path: &Path) -> Output {
    Command::new(BIN)
        .arg("--check-config")
        .arg(path)
        .output()
        .unwrap()
}

/// Writes `text` to `name` under `dir`, checks it, asserts the check refuses it, and returns
/// what it printed on stderr.
fn check_config_refuses(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = check_config(&path);
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running child whose stdout and stderr lines arrive on a channel; killed on drop unless
/// it has already exited.
struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (from now on) that satisfies `f`.
    fn wait_line(&mut self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + LIMIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if f(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {what} within {LIMIT:?}; output:\n{}",
                        self.seen.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("exited before {what}; output:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let end = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < end,
                "still running {LIMIT:?} after the signal"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `host:port` printed after `prefix` on the line that starts with it.
fn address_after(line: &str, prefix: &str) -> String {
    line[line.find(prefix).unwrap() + prefix.len()..]
        .trim_end_matches('/')
        .to_owned()
}

#[test]
fn check_config_passes_the_example_and_refuses_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("pool.yml");
    std::fs::write(&good, example_config(dir.path(), "http://127.0.0.1:8332")).unwrap();
    let out = check_config(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    // As shipped, the example lacks the payout address, and says so.
    let err = check_config_refuses(dir.path(), "shipped.yml", EXAMPLE);
    assert!(err.contains("coin.payout_address"), "{err}");

    // A misspelt key: named, with the file, line and column.
    let text = example_config(dir.path(), "http://127.0.0.1:8332")
        .replace("  idle_timeout_secs: 900", "  idle_timout_secs: 900");
    let line = text
        .lines()
        .position(|l| l.contains("idle_timout_secs"))
        .unwrap()
        + 1;
    let err = check_config_refuses(dir.path(), "bad.yml", &text);
    assert!(err.contains("idle_timout_secs"), "{err}");
    assert!(
        err.contains(&format!("{}:{line}:", dir.path().join("bad.yml").display())),
        "file:line:column, line {line}: {err}"
    );

    // Valid YAML the pool could not run: refused at check time, naming the key and the fix.
    let text = example_config(dir.path(), "https://node.example:8332");
    let err = check_config_refuses(dir.path(), "tls.yml", &text);
    assert!(
        err.contains("coinservers[0].url") && err.contains("http://"),
        "{err}"
    );
}

#[test]
fn demo_serves_work_to_check_and_stops_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Running::start(
        Command::new(BIN)
            .args([
                "demo",
                "--stratum",
                "127.0.0.1:0",
                "--monitor",
                "127.0.0.1:0",
            ])
            // The demo keeps its shares under the temporary directory.
            .env("TMPDIR", tmp.path()),
    );
    let line = demo.wait_line("the stratum address", |l| {
        l.starts_with("stratum: stratum+tcp://")
    });
    let stratum = address_after(&line, "stratum+tcp://");
    let line = demo.wait_line("the monitor address", |l| l.starts_with("monitor: http://"));
    let monitor = address_after(&line, "http://");

    // Generous thresholds: exit 0 must mean "work was served", whatever the machine's load.
    let out = Command::new(BIN)
        .args([
            "check",
            &format!("stratum+tcp://{stratum}"),
            "--warn-ms",
            "60000",
            "--crit-ms",
            "120000",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check: {report}");
    assert!(
        report.starts_with("STRATUM ok") && report.contains("work="),
        "{report}"
    );

    // The served config shows settings about authorization as they are.
    let mut http = TcpStream::connect(&monitor).unwrap();
    http.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        http,
        "GET /config HTTP/1.1\r\nHost: {monitor}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    assert!(body.contains("\"auth_timeout_secs\":60"), "{body}");

    demo.signal("TERM");
    let status = demo.wait_exit();
    assert!(
        status.success(),
        "{status}; output:\n{}",
        demo.seen.join("\n")
    );
}

#[test]
fn sighup_names_changes_that_need_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // No node answers: the pool still starts, binds and reloads.
    let text = example_config(dir.path(), "http://127.0.0.1:9")
        .replace("bind: 0.0.0.0:3333", "bind: 127.0.0.1:0")
        .replace(
            "  enabled: true\n  # JSON endpoints",
            "  enabled: false\n  # JSON endpoints",
        );
    // The port speaks TLS: its certificate files are read again on SIGHUP.
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let text = text.replace(
        "      cert_file: null\n      key_file: null",
        &format!(
            "      cert_file: {}\n      key_file: {}",
            cert.display(),
            key.display()
        ),
    );
    let path = dir.path().join("pool.yml");
    std::fs::write(&path, &text).unwrap();
    let mut pool = Running::start(Command::new(BIN).arg(&path));
    pool.wait_line("the stratum address", |l| l.starts_with("stratum: "));

    let renewed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&cert, renewed.cert.pem()).unwrap();
    std::fs::write(&key, renewed.signing_key.serialize_pem()).unwrap();
    let changed = text
        .replace("  format: text", "  format: json")
        .replace("  idle_timeout_secs: 900", "  idle_timeout_secs: 600")
        .replace("  level: info", "  level: debug");
    std::fs::write(&path, changed).unwrap();
    pool.signal("HUP");
    pool.wait_line("the TLS reload", |l| {
        l.contains("TLS certificate and key read again")
    });
    let line = pool.wait_line("the restart warning", |l| l.contains("after a restart"));
    assert!(
        line.contains("logging.format") && line.contains("limits.idle_timeout_secs"),
        "{line}"
    );
    assert!(!line.contains("logging.level"), "applied live: {line}");

    pool.signal("TERM");
    let status = pool.wait_exit();
    assert!(
        status.success(),
        "{status}; output:\n{}",
        pool.seen.join("\n")
    );
}

#[test]
fn shares_export_writes_csv_of_a_stopped_pools_store() {
    use powerpool_core::record::{RecordId, ShareKind, ShareRecord};
    use powerpool_core::sharelog::{Batch, BatchId, LogRecord};
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pool.yml");
    std::fs::write(&cfg, example_config(dir.path(), "http://127.0.0.1:1")).unwrap();
    {
        let store =
            powerpool_drivers::store::EmbeddedStore::open(&dir.path().join("pool.redb")).unwrap();
        let records = (1..=4u64)
            .map(|seq| {
                LogRecord::Share(ShareRecord {
                    id: RecordId {
                        server: 1,
                        boot: 2,
                        seq,
                    },
                    unix_ms: 1_700_000_000_000 + seq * 1_000,
                    kind: if seq == 3 {
                        ShareKind::Duplicate
                    } else {
                        ShareKind::Accepted
                    },
                    address: "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa".into(),
                    worker: "rig".into(),
                    difficulty: 2.0,
                    currency: "BTC".into(),
                    algo: "sha256d".into(),
                    height: 7,
                    aux_currencies: vec![],
                    count: 1,
                })
            })
            .collect();
        let batch = Batch {
            id: BatchId {
                server: 1,
                boot: 2,
                seq: 1,
            },
            records,
        };
        store.write_batch_blocking(&batch).unwrap();
    }
    let out = Command::new(BIN)
        .args(["shares", "export"])
        .arg(&cfg)
        .args(["--since", "1700000002", "--format", "csv"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].starts_with("0001-00000002-0000000000000002,1700000002000,accepted,1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa,rig,2,1,BTC,sha256d,7,"), "{}", lines[1]);
    assert!(lines[2].contains("-0000000000000004,"), "{}", lines[2]);

    // A mistake names the flag.
    let out = Command::new(BIN)
        .args(["shares", "export"])
        .arg(&cfg)
        .args(["--since", "yesterday"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
}

/// contrib/powerpool.service is a unit systemd accepts, and it keeps what the README promises.
#[test]
fn the_systemd_unit_verifies() {
    let unit = include_str!("../../contrib/powerpool.service");
    for line in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "LimitNOFILE=",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(line), "the unit lacks {line}");
    }
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("SKIPPED: systemd-analyze is not installed; the unit was not verified");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("powerpool.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/powerpool", BIN)).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn store_check_finds_a_damaged_spool_and_repair_keeps_the_intact_batches() {
    use powerpool_core::sharelog::{Batch, BatchId};
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pool.yml");
    std::fs::write(&cfg, example_config(dir.path(), "http://127.0.0.1:1")).unwrap();
    let spool = dir.path().join("spool");
    let mut first_end = 0;
    {
        let mut s = powerpool_drivers::store::Spool::open(&spool, 1 << 20).unwrap();
        for seq in 1..=3 {
            s.append(&Batch {
                id: BatchId {
                    server: 1,
                    boot: 2,
                    seq,
                },
                records: vec![],
            })
            .unwrap();
            if seq == 1 {
                first_end = s.len_bytes();
            }
        }
    }
    let log = spool.join("spool.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[first_end as usize + 13] ^= 0x01;
    std::fs::write(&log, &bytes).unwrap();

    let check = |repair: bool| {
        let mut c = Command::new(BIN);
        c.args(["store", "check"]).arg(&cfg);
        if repair {
            c.arg("--repair");
        }
        c.output().unwrap()
    };
    // The pool refuses to start on it, naming the file and the command.
    let mut pool = Running::start(Command::new(BIN).arg(&cfg));
    let line = pool.wait_line("the refusal", |l| l.contains("is damaged at byte"));
    assert!(
        line.contains("spool.log") && line.contains("powerpool store check --repair"),
        "{line}"
    );
    assert!(!pool.wait_exit().success());

    let out = check(false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("2 batches waiting, 1 damaged ranges"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--repair"));
    assert_eq!(
        std::fs::read(&log).unwrap(),
        bytes,
        "a check changes nothing"
    );

    let out = check(true);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("repaired: kept 2 batches"), "{text}");
    let out = check(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
