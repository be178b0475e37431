//! `loadgen`: drives a running stratum pool with N miners and reports what it answered.
//! Run `cargo run --release -p powerpool-benches --bin loadgen -- --help`.

use std::process::ExitCode;
use std::time::Duration;

use powerpool_benches::{Config, run};

const HELP: &str = "\
loadgen: stratum load generator for powerpool

USAGE:
    loadgen [OPTIONS]

OPTIONS:
    --url URL              stratum+tcp://HOST:PORT           [default: stratum+tcp://127.0.0.1:3333]
    --miners N             concurrent connections            [default: 10]
    --rate R               total submissions per second      [default: 100]
    --duration SECS        how long to submit                [default: 10]
    --max-shares N         cap on submissions in total       [default: 1000000]
    --user NAME            mining.authorize username         [default: n3JakfYDvxbhwK6wVcaVpkpSyqZ3AjjhWh.loadgen]
    --password PW          mining.authorize password         [default: x]
                           (powerpool reads d=N here: a fixed difficulty)
    --fake                 submit random nonces (measures the reject path)
    --max-hashes N         nonces tried per share (real mode) [default: 16777216]
    --connect-timeout SECS                                   [default: 5]
    --drain SECS           wait for replies after the end    [default: 2]
    --seed N                                                 [default: 1]
    --allow-remote         permit a non-loopback target
    -h, --help

Real mode searches sha256d nonces at the difficulty the pool announces: at difficulty d one
share costs d * 2^32 hashes on average, so ask for a low one (e.g. --password d=0.00001) or
use --fake.";

fn parse(args: &[String]) -> Result<Option<Config>, String> {
    let mut cfg = Config::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{name}: {v:?} is not a valid number"))
        }
        fn secs(name: &str, v: String) -> Result<Duration, String> {
            let s: f64 = num(name, v)?;
            Duration::try_from_secs_f64(s).map_err(|_| format!("{name}: must be seconds >= 0"))
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--url" => cfg.url = value(flag)?,
            "--miners" => cfg.miners = num(flag, value(flag)?)?,
            "--rate" => cfg.rate = num(flag, value(flag)?)?,
            "--duration" => cfg.duration = secs(flag, value(flag)?)?,
            "--max-shares" => cfg.max_shares = num(flag, value(flag)?)?,
            "--user" => cfg.user = value(flag)?,
            "--password" => cfg.password = value(flag)?,
            "--fake" => cfg.fake = true,
            "--max-hashes" => cfg.max_hashes_per_share = num(flag, value(flag)?)?,
            "--connect-timeout" => cfg.connect_timeout = secs(flag, value(flag)?)?,
            "--drain" => cfg.drain = secs(flag, value(flag)?)?,
            "--seed" => cfg.seed = num(flag, value(flag)?)?,
            "--allow-remote" => cfg.allow_remote = true,
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    Ok(Some(cfg))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse(&args) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "loadgen: {} miners -> {}, {} shares/s for {:.1} s (cap {}), {} mode",
        cfg.miners,
        cfg.url,
        cfg.rate,
        cfg.duration.as_secs_f64(),
        cfg.max_shares,
        if cfg.fake { "fake" } else { "real" }
    );
    match run(cfg).await {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
