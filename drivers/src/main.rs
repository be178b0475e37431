//! The `powerpool` binary: parse the command line and the config, build, bind, run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use powerpool_core::pow::Algorithm;
use powerpool_drivers::app::{Launched, launch};
use powerpool_drivers::client::StratumClient;
use powerpool_drivers::config::{Config, LogFormat};
use powerpool_drivers::demo::{DEMO_ADDRESS, DemoOptions, start_chain};
use powerpool_drivers::stratum::StratumShared;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::reload;

#[derive(Parser, Debug)]
#[command(
    name = "powerpool",
    version,
    about = "A mining pool server: stratum, coinservers, share log",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// The YAML config file (see config.yml.example).
    config: Option<PathBuf>,
    /// Validate the config file and exit (0 when valid).
    #[arg(long, value_name = "CONFIG")]
    check_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run on embedded defaults: a built-in demo chain, the embedded store, no Redis, no node.
    Demo {
        #[arg(long, default_value = "127.0.0.1:3333")]
        stratum: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:3855")]
        monitor: SocketAddr,
        /// Compact target of the demo chain, hex (1e00ffff: a CPU miner finds blocks in seconds).
        #[arg(long, default_value = "1e00ffff")]
        bits: String,
        /// Run a built-in CPU miner with this many threads against the demo (0: none).
        #[arg(long, default_value_t = 0)]
        mine: usize,
    },
    /// The store's files: check them, and repair what can be repaired.
    Store {
        #[command(subcommand)]
        what: StoreCommand,
    },
    /// Share records from the store, for payouts.
    Shares {
        #[command(subcommand)]
        what: SharesCommand,
    },
    /// Health check: connect, subscribe, authorize, wait for work, submit a test share.
    /// Exit 0 ok, 1 slow (over --warn-ms), 2 failed or over --crit-ms.
    Check {
        /// stratum+tcp://host:port
        url: String,
        #[arg(long, default_value = DEMO_ADDRESS)]
        user: String,
        #[arg(long, default_value = "x")]
        password: String,
        #[arg(long, default_value_t = 500)]
        warn_ms: u64,
        #[arg(long, default_value_t = 2000)]
        crit_ms: u64,
    },
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Reads the spool (store.spool_path) and, on the embedded store, every record of the redb
    /// file back, and reports what cannot be read. Run it with the pool stopped. Exit 0 when
    /// nothing is damaged (or all was repaired), 1 otherwise.
    Check {
        /// The pool's config file.
        config: PathBuf,
        /// Rewrite a damaged spool keeping every intact batch (the damaged bytes are saved
        /// beside it), and let redb repair its file.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Subcommand, Debug)]
enum SharesCommand {
    /// Writes share records to stdout as CSV or JSON lines: accepted shares judged in a time
    /// window, or in the round a block closed. On the embedded store while the pool runs, the
    /// records are read through its monitor (monitor.bind).
    Export {
        /// The pool's config file: its store section says where the records are.
        config: PathBuf,
        /// From this Unix time (seconds, or milliseconds), inclusive.
        #[arg(long)]
        since: Option<String>,
        /// Up to this Unix time (seconds, or milliseconds), exclusive.
        #[arg(long)]
        until: Option<String>,
        /// The shares of the round this block (hash) closed (embedded store).
        #[arg(long, conflicts_with_all = ["since", "until"])]
        round: Option<String>,
        /// csv or jsonl.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Refused shares' counted records too.
        #[arg(long)]
        all_kinds: bool,
    },
}

type ReloadHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

fn init_logging(format: LogFormat, level: &str) -> ReloadHandle {
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json())
            .init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).init(),
    }
    handle
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("powerpool: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match (cli.command, cli.check_config, cli.config) {
            (
                Some(Command::Demo {
                    stratum,
                    monitor,
                    bits,
                    mine,
                }),
                _,
                _,
            ) => demo(stratum, monitor, &bits, mine).await,
            (
                Some(Command::Check {
                    url,
                    user,
                    password,
                    warn_ms,
                    crit_ms,
                }),
                _,
                _,
            ) => {
                return check(&url, &user, &password, warn_ms, crit_ms).await;
            }
            (Some(Command::Shares { what }), _, _) => shares(what).await,
            (Some(Command::Store { what }), _, _) => return store(what),
            (None, Some(path), _) => match Config::load(&path) {
                Ok(_) => {
                    println!("{}: ok", path.display());
                    Ok(())
                }
                Err(e) => Err(anyhow::anyhow!(e)),
            },
            (None, None, Some(path)) => run(&path).await,
            (None, None, None) => Err(anyhow::anyhow!(
                "give a config file (powerpool config.yml), or try: powerpool demo"
            )),
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("powerpool: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn store(what: StoreCommand) -> anyhow::Result<ExitCode> {
    use powerpool_drivers::store::{EmbeddedStore, Spool};
    let StoreCommand::Check { config, repair } = what;
    let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!(e))?;
    let mut damaged = false;
    let dir = &cfg.store.spool_path;
    let c = Spool::check(dir).map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "spool {}: {} batches waiting, {} damaged ranges, torn tail {} bytes",
        dir.display(),
        c.waiting,
        c.damaged.len(),
        c.torn_bytes
    );
    for (at, n) in &c.damaged {
        println!("  damaged: {n} bytes at {at}");
    }
    if !c.damaged.is_empty() {
        if repair {
            let r = Spool::repair(dir).map_err(|e| anyhow::anyhow!(e))?;
            println!("  repaired: kept {} batches", r.kept_batches);
            for (at, n, saved) in &r.damaged {
                println!("  {n} damaged bytes at {at} saved to {}", saved.display());
            }
        } else {
            damaged = true;
        }
    }
    if cfg.store.backend == powerpool_drivers::config::StoreBackend::Embedded {
        let path = &cfg.store.embedded_path;
        let c = EmbeddedStore::check_file(path, repair).map_err(|e| anyhow::anyhow!(e))?;
        println!(
            "store {}: {} share blocks, {} shares, {} block records{}",
            path.display(),
            c.share_blocks,
            c.shares,
            c.block_records,
            if c.repaired {
                "; redb repaired its file"
            } else {
                ""
            }
        );
        for d in &c.damaged {
            println!("  cannot read {d}");
        }
        damaged |= !c.damaged.is_empty();
    }
    if damaged {
        eprintln!(
            "powerpool: damage found{}",
            if repair {
                " that could not be repaired"
            } else {
                ": run again with --repair"
            }
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn shares(what: SharesCommand) -> anyhow::Result<()> {
    use powerpool_drivers::store::EmbeddedStore;
    use powerpool_drivers::store::export::{ExportQuery, Source, StoreReader, parse_time_ms};
    let SharesCommand::Export {
        config,
        since,
        until,
        round,
        format,
        all_kinds,
    } = what;
    let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!(e))?;
    let format = format
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--format: {e}"))?;
    let time = |flag: &str, v: Option<String>| {
        v.map(|t| parse_time_ms(&t).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
            .transpose()
    };
    let q = ExportQuery {
        since_ms: time("--since", since)?,
        until_ms: time("--until", until)?,
        round,
        all_kinds,
    };
    let source = match cfg.store.backend {
        powerpool_drivers::config::StoreBackend::Redis => Source::Store(StoreReader::Redis(
            std::sync::Arc::new(powerpool_drivers::app::redis_store(&cfg.store.redis)?),
        )),
        powerpool_drivers::config::StoreBackend::Embedded => {
            match EmbeddedStore::open(&cfg.store.embedded_path) {
                Ok(e) => Source::Store(StoreReader::Embedded(e)),
                // The running pool holds the file: ask it.
                Err(e) if cfg.monitor.enabled => {
                    let mut at = cfg.monitor.bind;
                    if at.ip().is_unspecified() {
                        at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                    }
                    eprintln!("powerpool: {e}; reading through the pool's monitor at {at}");
                    Source::Monitor(format!("http://{at}"))
                }
                Err(e) => anyhow::bail!(
                    "{e}: stop the pool, or enable its monitor (monitor.enabled) to export while it runs"
                ),
            }
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let n = powerpool_drivers::store::export::export(&source, &q, format, &mut out)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    eprintln!("powerpool: {n} records");
    Ok(())
}

/// SIGTERM/SIGINT: stop accepting, finish in-flight submits, flush the share log, exit 0.
/// SIGHUP: reload what can change live (the log level) and name every other changed key as
/// needing a restart.
async fn signals(
    shutdown: watch::Sender<bool>,
    config_path: Option<PathBuf>,
    running: Option<Config>,
    logs: ReloadHandle,
    stratum: Arc<OnceLock<Arc<StratumShared>>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    // The level in force, which a reload may have changed since start (unlike the rest of
    // `running`, which stays what the pool was started with until a restart).
    let mut level = running.as_ref().map(|c| c.logging.level.clone());
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(
                config_path.as_deref(),
                running.as_ref(),
                &mut level,
                &logs,
                stratum.get(),
            ),
        }
    }
    tracing::info!("shutting down: finishing in-flight work and flushing the share log");
    shutdown.send_replace(true);
}

fn reload(
    path: Option<&Path>,
    running: Option<&Config>,
    level: &mut Option<String>,
    logs: &ReloadHandle,
    stratum: Option<&Arc<StratumShared>>,
) {
    let (Some(path), Some(running)) = (path, running) else {
        tracing::info!("SIGHUP: no config file to reload");
        return;
    };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: config not reloaded");
            return;
        }
    };
    let mut applied = false;
    if level.as_deref() != Some(new.logging.level.as_str()) {
        match EnvFilter::try_new(&new.logging.level) {
            Ok(f) => match logs.reload(f) {
                Ok(()) => {
                    *level = Some(new.logging.level.clone());
                    applied = true;
                    tracing::info!(level = %new.logging.level, "SIGHUP: log level changed");
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: log level not changed"),
            },
            Err(e) => tracing::error!(error = %e, "SIGHUP: bad logging.level"),
        }
    }
    // TLS certificates are read again on every reload: a renewal keeps the file names.
    let mut tls_reloaded = Vec::new();
    for (port, r) in stratum.map(|s| s.reload_tls(&new)).unwrap_or_default() {
        match r {
            Ok(()) => {
                tracing::info!(%port, "SIGHUP: TLS certificate and key read again");
                tls_reloaded.push(port);
                applied = true;
            }
            Err(e) => tracing::error!(%port, error = %e, "SIGHUP: TLS certificate kept"),
        }
    }
    // Compared with what the pool started with: a change made in an earlier reload is still
    // waiting for the restart. New certificate files of a TLS port were just applied.
    let mut pending = running.changes_needing_restart(&new);
    pending.retain(|k| {
        !running.stratum.iter().enumerate().any(|(i, p)| {
            tls_reloaded.contains(&p.name)
                && (*k == format!("stratum[{i}].tls.cert_file")
                    || *k == format!("stratum[{i}].tls.key_file"))
        })
    });
    if !pending.is_empty() {
        tracing::warn!(
            keys = %pending.join(", "),
            "SIGHUP: these changed keys take effect only after a restart"
        );
    } else if !applied {
        tracing::info!("SIGHUP: nothing to change");
    }
}

async fn run(path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    let logs = init_logging(cfg.logging.format, &cfg.logging.level);
    let (tx, rx) = watch::channel(false);
    let stratum = Arc::new(OnceLock::new());
    tokio::spawn(signals(
        tx,
        Some(path.to_owned()),
        Some(cfg.clone()),
        logs,
        stratum.clone(),
    ));
    let launched = launch(cfg, rx).await?;
    let _ = stratum.set(launched.handle.stratum.clone());
    announce(&launched, None);
    finish(launched).await
}

async fn demo(
    stratum: SocketAddr,
    monitor: SocketAddr,
    bits: &str,
    mine: usize,
) -> anyhow::Result<()> {
    let logs = init_logging(LogFormat::Text, "info");
    let bits = u32::from_str_radix(bits.trim_start_matches("0x"), 16)
        .context("--bits: expected 8 hex digits, e.g. 1e00ffff")?;
    let opts = DemoOptions {
        stratum,
        monitor,
        bits,
        ..DemoOptions::default()
    };
    let (tx, rx) = watch::channel(false);
    tokio::spawn(signals(tx, None, None, logs, Arc::new(OnceLock::new())));
    // The chain stops after the pool, so found blocks still reach it during shutdown.
    let (chain_tx, chain_rx) = watch::channel(false);
    let (cfg, _node) = start_chain(&opts, chain_rx).await?;
    let launched = launch(cfg, rx.clone()).await?;
    announce(&launched, Some(&opts));
    for t in 0..mine {
        tokio::spawn(cpu_miner(launched.stratum_addrs[0], t as u64, rx.clone()));
    }
    let r = finish(launched).await;
    chain_tx.send_replace(true);
    r
}

fn announce(l: &Launched, demo: Option<&DemoOptions>) {
    for a in &l.stratum_addrs {
        println!("stratum: stratum+tcp://{a}");
    }
    if let Some(m) = l.monitor_addr {
        println!("monitor: http://{m}/");
    }
    if let Some(d) = demo {
        println!(
            "demo chain: regtest addresses, bits {:08x}; shares kept in {}",
            d.bits,
            d.data_dir.display()
        );
        println!(
            "mine with e.g.: minerd -a sha256d -o stratum+tcp://{} -u {DEMO_ADDRESS}.rig1 -p x",
            l.stratum_addrs[0]
        );
    }
}

async fn finish(l: Launched) -> anyhow::Result<()> {
    let report = l.task.await.context("pool task")?;
    tracing::info!(
        accepted = report.shares_accepted,
        blocks = report.state.blocks.len(),
        abandoned = report.share_log.abandoned_records,
        "stopped"
    );
    anyhow::ensure!(
        report.share_log.abandoned_records == 0,
        "{} records could not be persisted (see the error log)",
        report.share_log.abandoned_records
    );
    Ok(())
}

/// A simple CPU miner over stratum (sha256d), for the demo.
async fn cpu_miner(addr: SocketAddr, id: u64, mut stop: watch::Receiver<bool>) {
    let user = format!("{DEMO_ADDRESS}.cpu{id}");
    let run = async {
        let mut c = StratumClient::connect(addr).await?;
        c.subscribe("powerpool-demo-miner/1").await?;
        c.authorize(&user, "x").await?;
        c.wait_for_work().await?;
        let mut en2 = id << 40;
        loop {
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(1), c.read_message()).await
            {}
            en2 += 1;
            let found = tokio::task::block_in_place(|| c.search(Algorithm::Sha256d, en2, 1 << 18));
            if let Some(f) = found {
                let r = c.submit(&user, &f).await?;
                tracing::debug!(reply = %r, "demo miner share");
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), powerpool_drivers::client::ClientError>(())
    };
    tokio::select! {
        r = run => if let Err(e) = r { tracing::warn!(error = %e, "demo miner stopped") },
        _ = powerpool_drivers::stratum::stopped(&mut stop) => {}
    }
}

/// `powerpool check`: the replacement of contrib/check_stratum.py.
async fn check(
    url: &str,
    user: &str,
    password: &str,
    warn_ms: u64,
    crit_ms: u64,
) -> anyhow::Result<ExitCode> {
    let addr = url
        .strip_prefix("stratum+tcp://")
        .unwrap_or(url)
        .parse::<SocketAddr>()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(
                url.strip_prefix("stratum+tcp://").unwrap_or(url),
            )
            .map_err(anyhow::Error::from)
            .and_then(|mut a| a.next().ok_or_else(|| anyhow::anyhow!("no address")))
        })
        .with_context(|| format!("{url}: expected stratum+tcp://host:port"))?;
    let t0 = Instant::now();
    let outcome = async {
        let mut c = StratumClient::connect(addr).await?;
        c.subscribe("powerpool-check/1").await?;
        let subscribed = t0.elapsed();
        c.authorize(user, password).await?;
        let authed = t0.elapsed();
        c.wait_for_work().await?;
        let work = t0.elapsed();
        // A deliberately bogus share: the pool must answer it (with an error).
        let w = c.work.clone().expect("work arrived");
        let bogus = powerpool_drivers::client::Found {
            job_id: w.job_id,
            extranonce2: vec![0; c.extranonce2_size],
            ntime: w.ntime,
            nonce: 0,
            hash: powerpool_core::hash::Hash256::ZERO,
        };
        let s0 = Instant::now();
        let reply = c.submit(user, &bogus).await?;
        Ok::<_, powerpool_drivers::client::ClientError>((
            subscribed,
            authed,
            work,
            s0.elapsed(),
            reply,
        ))
    }
    .await;
    match outcome {
        Ok((sub, auth, work, share, reply)) => {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let worst = share.max(work);
            let (word, code) = if worst >= Duration::from_millis(crit_ms) {
                ("crit", 2)
            } else if worst >= Duration::from_millis(warn_ms) {
                ("warn", 1)
            } else {
                ("ok", 0)
            };
            println!(
                "STRATUM {word} - share answered in {:.1} ms ({}) | subscribe={:.1}ms auth={:.1}ms work={:.1}ms share={:.1}ms",
                ms(share),
                if reply["error"].is_null() {
                    "accepted"
                } else {
                    "rejected as expected"
                },
                ms(sub),
                ms(auth),
                ms(work),
                ms(share)
            );
            Ok(ExitCode::from(code))
        }
        Err(e) => {
            println!("STRATUM crit - {e}");
            Ok(ExitCode::from(2))
        }
    }
}
