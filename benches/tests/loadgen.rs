//! The load generator against a minimal stratum server built around the real
//! `powerpool_core::session::Session`: a TCP accept loop on 127.0.0.1:0 feeding each
//! connection's bytes to its own Session and writing back what it transmits. The server
//! counts the shares it judged from the session events, so both sides' tallies are compared.
//!
//! Work comes from a real Bitcoin Core regtest template (core/tests/data/regtest/small_p2pkh,
//! 9 transactions, a 4-level branch) with its bits raised to mainnet's 1d00ffff so no share
//! is a block. The server's wall clock is virtual (a minute after the template's curtime) so
//! ntime checks do not depend on the date the test runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use powerpool_benches::{Config, run};
use powerpool_core::address::{AddressParams, parse_address};
use powerpool_core::job::CoinbaseParams;
use powerpool_core::pow::Algorithm;
use powerpool_core::record::ShareKind;
use powerpool_core::session::{PortPolicy, Session, SessionContext, SessionEvent};
use powerpool_core::template::BlockTemplate;
use powerpool_core::time::{Now, Timestamp};
use powerpool_core::work::{JobUpdate, Work, WorkConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ADDRESS: &str = "n3JakfYDvxbhwK6wVcaVpkpSyqZ3AjjhWh";

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    low_difficulty: AtomicU64,
    other: AtomicU64,
    blocks: AtomicU64,
}

struct TestPool {
    addr: std::net::SocketAddr,
    tally: Arc<Tally>,
    branch_len: usize,
}

fn job_update(now: Now) -> JobUpdate {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../core/tests/data/regtest/small_p2pkh/gbt.json"
    );
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["bits"] = json!("1d00ffff");
    v.as_object_mut().unwrap().remove("target");
    let tpl = BlockTemplate::from_json(&v).unwrap();
    let script = parse_address(ADDRESS, &AddressParams::REGTEST)
        .unwrap()
        .script_pubkey;
    let mut work = Work::new(
        WorkConfig {
            currency: Arc::from("BTC"),
            algo: Algorithm::Sha256d,
            coinbase: CoinbaseParams {
                payout_script: script,
                pool_tag: b"/powerpool/".to_vec(),
                aux: None,
                extranonce1_size: 4,
                extranonce2_size: 4,
            },
        },
        1,
    );
    assert!(work.handle_template(now, tpl).unwrap());
    work.poll_job().expect("a job for the first template")
}

async fn start_pool(difficulty: f64) -> TestPool {
    let policy = PortPolicy {
        start_difficulty: difficulty,
        min_difficulty: 1e-12,
        vardiff: None,
        ..PortPolicy::default()
    };
    let ctx = Arc::new(SessionContext {
        policy,
        address_params: AddressParams::REGTEST,
        algo: Algorithm::Sha256d,
        currency: Arc::from("BTC"),
        server: 1,
        boot: 1,
        payout_script: None,
        refusals: Default::default(),
    });
    // The template's curtime is 0x6b055309; the virtual wall clock starts a minute later.
    let clock_origin = std::time::Instant::now();
    let unix_origin_ms = (0x6b05_5309u64 + 60) * 1000;
    let now = move || {
        let ms = clock_origin.elapsed().as_millis() as u64;
        Now::new(Timestamp::from_millis(ms), unix_origin_ms + ms)
    };
    let update = job_update(now());
    let branch_len = update.job.merkle_branch.len();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tally = Arc::new(Tally::default());
    let t = tally.clone();
    tokio::spawn(async move {
        let mut serial = 0u64;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            serial += 1;
            let mut session = Session::new(
                ctx.clone(),
                serial,
                (serial as u32).to_be_bytes().to_vec(),
                now(),
            );
            session.handle_job(now(), &update);
            let tally = t.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    session.handle_input(now(), &buf[..n]);
                    let mut out = Vec::new();
                    while let Some(tx) = session.poll_transmit() {
                        out.extend_from_slice(tx.as_bytes());
                    }
                    while let Some(e) = session.poll_event() {
                        match e {
                            // Refused shares are counted as they are judged; their
                            // records come later, several per record.
                            SessionEvent::Share(r) => {
                                if r.kind == ShareKind::Accepted {
                                    tally.accepted.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            SessionEvent::Refused { kind, .. } => {
                                let c = match kind {
                                    ShareKind::LowDifficulty => &tally.low_difficulty,
                                    _ => &tally.other,
                                };
                                c.fetch_add(1, Ordering::Relaxed);
                            }
                            SessionEvent::Block(b) => {
                                tally.blocks.fetch_add(1, Ordering::Relaxed);
                                drop(b.into_submission());
                            }
                            SessionEvent::AuxBlock(a) => drop(a.into_submission()),
                            SessionEvent::Close(_) => return,
                            SessionEvent::Authorized { .. } => {}
                        }
                    }
                    if sock.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    TestPool {
        addr,
        tally,
        branch_len,
    }
}

fn cfg(pool: &TestPool) -> Config {
    Config {
        url: format!("stratum+tcp://{}", pool.addr),
        miners: 4,
        rate: 2000.0,
        // Generous: the share cap ends these runs, not the clock.
        duration: Duration::from_secs(60),
        max_shares: 60,
        user: format!("{ADDRESS}.load"),
        drain: Duration::from_secs(30),
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_shares_are_all_accepted_by_a_real_session() {
    // ~43 hashes per share on average.
    let pool = start_pool(1e-8).await;
    assert_eq!(pool.branch_len, 4);
    let report = run(cfg(&pool)).await.unwrap();
    println!("{report}");
    assert_eq!(report.connect_errors, 0);
    assert_eq!(report.handshake_failures, 0);
    assert_eq!(report.authorized, 4);
    assert_eq!(report.shares_sent, 60);
    assert_eq!(report.accepted, 60, "rejected: {:?}", report.rejected);
    assert_eq!(report.rejected_total(), 0);
    assert_eq!(report.unanswered, 0);
    assert!(report.hashes >= 60);
    assert!(report.latency.max >= report.latency.p99 && report.latency.p99 >= report.latency.p50);
    // The server judged exactly what the client counted.
    assert_eq!(pool.tally.accepted.load(Ordering::Relaxed), 60);
    assert_eq!(pool.tally.low_difficulty.load(Ordering::Relaxed), 0);
    assert_eq!(pool.tally.other.load(Ordering::Relaxed), 0);
    assert_eq!(pool.tally.blocks.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_shares_exercise_the_low_difficulty_path() {
    // At difficulty 1 a random nonce passes with probability 2^-32; the seed is fixed, so the
    // outcome is the same on every run.
    let pool = start_pool(1.0).await;
    let report = run(Config {
        fake: true,
        ..cfg(&pool)
    })
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.shares_sent, 60);
    assert_eq!(report.accepted, 0);
    assert_eq!(report.rejected.get(&23), Some(&60), "{:?}", report.rejected);
    assert_eq!(report.hashes, 0);
    assert_eq!(pool.tally.low_difficulty.load(Ordering::Relaxed), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_searches_are_reported_not_submitted() {
    // Difficulty 1e6 needs ~4e15 hashes: a 1000-hash budget never finds one.
    let pool = start_pool(1e6).await;
    let report = run(Config {
        max_hashes_per_share: 1000,
        max_shares: 8,
        ..cfg(&pool)
    })
    .await
    .unwrap();
    assert_eq!(report.shares_sent, 0);
    assert_eq!(report.searches_abandoned, 8);
    assert_eq!(report.hashes, 8000);
    assert_eq!(pool.tally.accepted.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_closed_port_counts_connect_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let report = run(Config {
        url: format!("stratum+tcp://{addr}"),
        miners: 3,
        duration: Duration::from_secs(5),
        ..Config::default()
    })
    .await
    .unwrap();
    assert_eq!(report.connect_errors, 3);
    assert_eq!(report.shares_sent, 0);
    assert_eq!(report.authorized, 0);
}
