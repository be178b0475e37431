//! The configuration file: YAML read with serde-saphyr, every section with defaults, unknown
//! keys refused. Errors name the file, line and column, the key, and what to write instead.
//!
//! `config.yml.example` at the repository root documents every option with its default. Tests
//! parse it to exactly the defaults and compare its key paths (the commented list templates
//! included) with the serialized schema in both directions, so a key added to the schema and
//! not to the example, or one misspelt there, fails the build.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use powerpool_core::address::{AddressParams, parse_address};
use powerpool_core::pow::Algorithm;
use powerpool_core::proxy::Cidr;
use powerpool_core::session::PortPolicy;
use serde::{Deserialize, Serialize};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use crate::metrics::StatsdConfig;
use crate::stratum::Limits;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Separates pool instances sharing a store and coinservers: part of every extranonce1
    /// (0–255 with `coin.extranonce1_size: 4`) and of every record id.
    pub server_number: u16,
    /// Seed for everything random in the pool (extranonce1 start, job ids). `null`: drawn at
    /// start and logged.
    pub seed: Option<u64>,
    pub coin: CoinConfig,
    pub coinservers: Vec<CoinserverEntry>,
    /// Merge-mined (AuxPoW) chains; empty for none.
    pub aux_chains: Vec<AuxChainConfig>,
    pub new_blocks: NewBlockConfig,
    pub stratum: Vec<StratumPortConfig>,
    pub limits: Limits,
    pub store: StoreConfig,
    pub monitor: MonitorConfig,
    pub logging: LoggingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_number: 0,
            seed: None,
            coin: CoinConfig::default(),
            coinservers: Vec::new(),
            aux_chains: Vec::new(),
            new_blocks: NewBlockConfig::default(),
            stratum: vec![StratumPortConfig::default()],
            limits: Limits::default(),
            store: StoreConfig::default(),
            monitor: MonitorConfig::default(),
            logging: LoggingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    Main,
    Testnet,
    Signet,
    Regtest,
    Litecoin,
    LitecoinTestnet,
    Dogecoin,
}

impl Network {
    pub fn address_params(self) -> AddressParams {
        match self {
            Network::Main => AddressParams::BITCOIN,
            Network::Testnet | Network::Signet => AddressParams::TESTNET,
            Network::Regtest => AddressParams::REGTEST,
            Network::Litecoin => AddressParams::LITECOIN,
            Network::LitecoinTestnet => AddressParams::LITECOIN_TESTNET,
            Network::Dogecoin => AddressParams::DOGECOIN,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoinConfig {
    /// Currency code used in logs, Redis keys and the monitor.
    pub currency: String,
    pub algo: Algorithm,
    /// Which address formats miners and the pool may use.
    pub network: Network,
    /// Where block rewards go. Any address type of the network (P2PKH, P2SH, P2WPKH, P2WSH,
    /// P2TR). Required.
    pub payout_address: String,
    /// Text pushed into every coinbase scriptSig (may be empty).
    pub pool_tag: String,
    /// 4 or 8 bytes.
    pub extranonce1_size: usize,
    /// `getblocktemplate` rules (Bitcoin Core needs "segwit"; Litecoin adds "mweb").
    pub gbt_rules: Vec<String>,
}

impl Default for CoinConfig {
    fn default() -> Self {
        CoinConfig {
            currency: "BTC".into(),
            algo: Algorithm::Sha256d,
            network: Network::Main,
            payout_address: String::new(),
            pool_tag: "/powerpool/".into(),
            extranonce1_size: 4,
            gbt_rules: vec!["segwit".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoinserverEntry {
    pub name: String,
    /// `http://host:port` of the node's JSON-RPC. Plain HTTP only: the RPC client carries no
    /// TLS stack.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Bitcoin Core's `.cookie` file, instead of username/password.
    #[serde(default)]
    pub cookie_file: Option<PathBuf>,
    /// Lower is preferred.
    #[serde(default)]
    pub priority: u32,
}

/// One merge-mined chain: its nodes, where its rewards go, how often its work is fetched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuxChainConfig {
    /// Currency code of the aux chain (block records, share records' `aux_currencies`).
    pub currency: String,
    /// Address on the aux chain that `createauxblock` pays. The aux node checks it.
    pub payout_address: String,
    /// `createauxblock` on the chain's preferred live node this often (and right after one of
    /// its blocks was accepted).
    #[serde(default = "default_aux_poll_ms")]
    pub poll_interval_ms: u64,
    /// The chain's nodes; lower priority is preferred. Aux blocks go to all of them.
    pub coinservers: Vec<CoinserverEntry>,
}

fn default_aux_poll_ms() -> u64 {
    1000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NewBlockConfig {
    /// Polling of the preferred node's best block hash when no push source is configured.
    pub poll_interval_ms: u64,
    /// Polling while push is configured: bounds how long a lost push leaves miners on stale
    /// work.
    pub push_poll_interval_ms: u64,
    /// A fresh template (new transactions) at least this often.
    pub template_refresh_secs: u64,
    pub rpc_timeout_ms: u64,
    /// Depth at which a found block counts as confirmed (coinbase maturity on Bitcoin).
    pub confirmations: u64,
    /// Depth at which a found block replaced by another one is recorded as orphaned.
    pub orphan_depth: u64,
    pub udp: UdpConfig,
    pub zmq: ZmqConfig,
}

impl Default for NewBlockConfig {
    fn default() -> Self {
        NewBlockConfig {
            poll_interval_ms: 250,
            push_poll_interval_ms: 2000,
            template_refresh_secs: 15,
            rpc_timeout_ms: 5000,
            confirmations: 100,
            orphan_depth: 3,
            udp: UdpConfig::default(),
            zmq: ZmqConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Shared secret: when set, every datagram must be signed with it.
    pub secret: Option<String>,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            enabled: false,
            bind: "127.0.0.1:6855".parse().expect("literal address"),
            secret: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZmqConfig {
    pub enabled: bool,
    /// bitcoind's `-zmqpubhashblock` endpoint.
    pub endpoint: String,
}

impl Default for ZmqConfig {
    fn default() -> Self {
        ZmqConfig {
            enabled: false,
            endpoint: "tcp://127.0.0.1:28332".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StratumPortConfig {
    pub name: String,
    pub bind: SocketAddr,
    /// Difficulty policy of this port.
    pub policy: PortPolicy,
    pub proxy_protocol: ProxyProtocolConfig,
    pub tls: TlsConfig,
}

impl Default for StratumPortConfig {
    fn default() -> Self {
        StratumPortConfig {
            name: "main".into(),
            bind: "0.0.0.0:3333".parse().expect("literal address"),
            policy: PortPolicy::default(),
            proxy_protocol: ProxyProtocolConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// A port's certificate chain and private key, as read from its PEM files.
pub type TlsFiles = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// `stratum[].tls`: the port speaks stratum over TLS with this certificate chain and key
/// (PEM files), or plain TCP when both are null. Read at start and again on SIGHUP
/// (`StratumShared::reload_tls`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The files' certificate chain and key, or `None` when TLS is off; errors name the key
    /// (under `key`) and the fix.
    pub fn load(&self, key: &str) -> Result<Option<TlsFiles>, (String, String)> {
        let (cert_file, key_file) = match (&self.cert_file, &self.key_file) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            (None, Some(_)) => {
                return Err((
                    format!("{key}.cert_file"),
                    "key_file is set: give the certificate chain (PEM) too".into(),
                ));
            }
            (Some(_), None) => {
                return Err((
                    format!("{key}.key_file"),
                    "cert_file is set: give its private key (PEM) too".into(),
                ));
            }
        };
        let certs = CertificateDer::pem_file_iter(cert_file)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                (
                    format!("{key}.cert_file"),
                    format!("{}: {e} (a PEM certificate chain)", cert_file.display()),
                )
            })?;
        if certs.is_empty() {
            return Err((
                format!("{key}.cert_file"),
                format!("{}: no PEM certificate in it", cert_file.display()),
            ));
        }
        let private = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
            (
                format!("{key}.key_file"),
                format!("{}: {e} (a PEM private key)", key_file.display()),
            )
        })?;
        Ok(Some((certs, private)))
    }
}

/// `stratum[].proxy_protocol`: the port sits behind a load balancer that states each miner's
/// address in a PROXY protocol header (v1 or v2), so limits, bans, logs and the monitor see
/// the miner rather than the balancer. Every connection must then start with the header and
/// come from a `trusted` address: anyone else could claim any address and dodge bans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyProtocolConfig {
    pub enabled: bool,
    /// Addresses or CIDR ranges of the balancers (`10.0.0.5`, `10.0.0.0/24`, `fd00::/8`).
    pub trusted: Vec<String>,
    /// A connection that has not sent its whole header within this is closed.
    pub header_timeout_ms: u64,
}

impl Default for ProxyProtocolConfig {
    fn default() -> Self {
        ProxyProtocolConfig {
            enabled: false,
            trusted: Vec::new(),
            header_timeout_ms: 5000,
        }
    }
}

impl ProxyProtocolConfig {
    /// The trusted ranges, or the key of the first malformed entry (under `key`) and why.
    pub fn trusted_ranges(&self, key: &str) -> Result<Vec<Cidr>, (String, String)> {
        self.trusted
            .iter()
            .enumerate()
            .map(|(j, t)| {
                t.parse::<Cidr>()
                    .map_err(|m| (format!("{key}.trusted[{j}]"), m))
            })
            .collect()
    }

    /// Checks the section found at `key`; errors name the key and the fix.
    pub fn validate(&self, key: &str) -> Result<(), (String, String)> {
        self.trusted_ranges(key)?;
        if self.enabled && self.trusted.is_empty() {
            return Err((
                format!("{key}.trusted"),
                "list the load balancers' addresses or CIDR ranges \
                 (e.g. [10.0.0.5, \"fd00::/8\"]): with PROXY protocol on, only they may connect"
                    .into(),
            ));
        }
        if self.header_timeout_ms == 0 {
            return Err((
                format!("{key}.header_timeout_ms"),
                "must be at least 1 (e.g. 5000)".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Embedded,
    Redis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// redb database file of the embedded store.
    pub embedded_path: PathBuf,
    /// Local spool that takes over while the primary store is unreachable.
    pub spool_path: PathBuf,
    pub spool_max_bytes: u64,
    /// Records per write.
    pub max_batch: usize,
    /// Longest a record waits before being written (the durability window).
    pub max_delay_ms: u64,
    pub write_timeout_ms: u64,
    pub redis: RedisConfig,
    /// How long the embedded store keeps share records.
    pub retention: Retention,
}

/// `store.retention`: share records older than either bound are pruned from the embedded
/// store, a little at a time, every `interval_secs`. 0 turns a bound off; both off (the
/// default) keeps everything. On Redis, the share stream is capped by `redis.stream_maxlen`
/// and SimpleCoin owns the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Keep the shares of the last this many days.
    pub max_age_days: u64,
    /// Keep the shares of the last this many rounds (parent blocks not rejected).
    pub rounds: u32,
    pub interval_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age_days: 0,
            rounds: 0,
            interval_secs: 600,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Embedded,
            embedded_path: "powerpool.redb".into(),
            spool_path: "powerpool.spool".into(),
            spool_max_bytes: 1 << 30,
            max_batch: 1000,
            max_delay_ms: 100,
            write_timeout_ms: 1000,
            redis: RedisConfig::default(),
            retention: Retention::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port/db`.
    pub url: String,
    /// SimpleCoin share chain id (`chain_{N}_…` keys).
    pub chain: u32,
    /// Prefix of powerpool's own keys (the share stream, applied-batch marks).
    pub key_prefix: String,
    pub stream_maxlen: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            chain: 1,
            key_prefix: "powerpool:".into(),
            stream_maxlen: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    pub enabled: bool,
    pub bind: SocketAddr,
    pub statsd: StatsdConfig,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            bind: "127.0.0.1:3855".parse().expect("literal address"),
            statsd: StatsdConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `powerpool_drivers=debug,info`, …
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates. `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            let mut message = first_line(&e.to_string());
            if message.contains("unknown field") {
                message.push_str(
                    " (see config.yml.example for every key; check the spelling and the indentation)",
                );
            }
            ConfigError::Syntax {
                path: origin.to_owned(),
                line,
                column,
                message,
            }
        })?;
        cfg.validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: origin.to_owned(),
                key,
                message,
            })?;
        Ok(cfg)
    }

    /// Checks what types cannot; the error names the key and the fix.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((k.to_owned(), m.to_owned()));
        if self.coin.payout_address.is_empty() {
            return err(
                "coin.payout_address",
                "required: the address block rewards are paid to",
            );
        }
        if let Err(e) = parse_address(
            &self.coin.payout_address,
            &self.coin.network.address_params(),
        ) {
            return Err((
                "coin.payout_address".into(),
                format!("{e} (coin.network is {:?})", self.coin.network),
            ));
        }
        if ![4, 8].contains(&self.coin.extranonce1_size) {
            return err("coin.extranonce1_size", "must be 4 or 8");
        }
        let max_server = if self.coin.extranonce1_size == 4 {
            255
        } else {
            65535
        };
        if u32::from(self.server_number) > max_server {
            return err(
                "server_number",
                "must be 0-255 with coin.extranonce1_size: 4 (use 8 for more instances)",
            );
        }
        if self.coin.pool_tag.len() > 40 {
            return err(
                "coin.pool_tag",
                "at most 40 bytes (the coinbase scriptSig holds 100)",
            );
        }
        if self.coin.currency.is_empty() || self.coin.currency.contains(['_', ' ']) {
            return err(
                "coin.currency",
                "a non-empty code without '_' or spaces (SimpleCoin splits Redis keys on '_')",
            );
        }
        if self.coinservers.is_empty() {
            return err(
                "coinservers",
                "list at least one node: - {name: node1, url: \"http://127.0.0.1:8332\", cookie_file: ~/.bitcoin/.cookie}",
            );
        }
        for (i, c) in self.coinservers.iter().enumerate() {
            check_rpc_url(&format!("coinservers[{i}].url"), &c.url)?;
            if c.cookie_file.is_some() && (c.username.is_some() || c.password.is_some()) {
                return Err((
                    format!("coinservers[{i}]"),
                    "give either cookie_file or username/password, not both".into(),
                ));
            }
            if self.coinservers[..i].iter().any(|o| o.name == c.name) {
                return Err((
                    format!("coinservers[{i}].name"),
                    "names must be unique".into(),
                ));
            }
        }
        self.validate_aux_chains()?;
        if self.stratum.is_empty() {
            return err("stratum", "configure at least one port");
        }
        for (i, p) in self.stratum.iter().enumerate() {
            if let Err(m) = p.policy.validate() {
                return Err((format!("stratum[{i}].policy"), m));
            }
            p.proxy_protocol
                .validate(&format!("stratum[{i}].proxy_protocol"))?;
            // Built here too, so --check-config catches a key that does not match.
            if let Some((certs, key)) = p.tls.load(&format!("stratum[{i}].tls"))?
                && let Err(e) = crate::tls::server_config(certs, key)
            {
                return Err((
                    format!("stratum[{i}].tls.cert_file"),
                    format!("{e} (is key_file the key of this certificate?)"),
                ));
            }
            if self.stratum[..i].iter().any(|o| o.bind == p.bind) {
                return Err((
                    format!("stratum[{i}].bind"),
                    "two ports on one address".into(),
                ));
            }
        }
        // Every port shares one coinbase layout (the pool refuses to start otherwise), so
        // --check-config must catch a mismatch too.
        let en2 = self.stratum[0].policy.extranonce2_size;
        if let Some(i) = self
            .stratum
            .iter()
            .position(|p| p.policy.extranonce2_size != en2)
        {
            return Err((
                format!("stratum[{i}].policy.extranonce2_size"),
                format!(
                    "is {} but stratum[0] has {en2}: all ports share one coinbase layout, so give \
                     every port the same extranonce2_size",
                    self.stratum[i].policy.extranonce2_size
                ),
            ));
        }
        self.limits.validate()?;
        if self.new_blocks.poll_interval_ms == 0 || self.new_blocks.push_poll_interval_ms == 0 {
            return err("new_blocks", "poll intervals must be above 0 ms");
        }
        if self.store.max_batch == 0 {
            return err("store.max_batch", "must be at least 1");
        }
        if self.store.retention.interval_secs == 0 {
            return err(
                "store.retention.interval_secs",
                "must be at least 1 (turn retention off with max_age_days: 0 and rounds: 0)",
            );
        }
        if !matches!(self.logging.level.as_str(), "") {
            tracing_subscriber::EnvFilter::try_new(&self.logging.level).map_err(|e| {
                (
                    "logging.level".to_owned(),
                    format!("{e}: use a level such as info or debug"),
                )
            })?;
        }
        Ok(())
    }

    fn validate_aux_chains(&self) -> Result<(), (String, String)> {
        for (i, a) in self.aux_chains.iter().enumerate() {
            let key = |k: &str| format!("aux_chains[{i}].{k}");
            if a.currency.is_empty() || a.currency.contains(['_', ' ']) {
                return Err((
                    key("currency"),
                    "a non-empty code without '_' or spaces (SimpleCoin splits Redis keys on '_')"
                        .into(),
                ));
            }
            if a.currency == self.coin.currency {
                return Err((
                    key("currency"),
                    format!(
                        "{} is the parent chain (coin.currency): give the aux chain its own code",
                        a.currency
                    ),
                ));
            }
            if self.aux_chains[..i]
                .iter()
                .any(|o| o.currency == a.currency)
            {
                return Err((
                    key("currency"),
                    "listed twice: merge one chain's nodes into one entry".into(),
                ));
            }
            if a.payout_address.is_empty() {
                return Err((
                    key("payout_address"),
                    "required: the aux chain address its block rewards are paid to".into(),
                ));
            }
            if a.poll_interval_ms == 0 {
                return Err((key("poll_interval_ms"), "must be above 0 ms".into()));
            }
            if a.coinservers.is_empty() {
                return Err((
                    key("coinservers"),
                    "list at least one node of the chain: - {name: nmc1, url: \"http://127.0.0.1:8336\", username: u, password: p}".into(),
                ));
            }
            for (j, c) in a.coinservers.iter().enumerate() {
                check_rpc_url(&key(&format!("coinservers[{j}].url")), &c.url)?;
                if c.cookie_file.is_some() && (c.username.is_some() || c.password.is_some()) {
                    return Err((
                        key(&format!("coinservers[{j}]")),
                        "give either cookie_file or username/password, not both".into(),
                    ));
                }
                if a.coinservers[..j].iter().any(|o| o.name == c.name) {
                    return Err((
                        key(&format!("coinservers[{j}].name")),
                        "names must be unique within the chain".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The effective config as JSON for the monitor, with every secret removed (by the
    /// monitor's own rule, so what counts as a secret is decided in one place).
    pub fn redacted(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        crate::monitor::redact(&mut v);
        v
    }

    /// The keys that differ between `self` (running) and `new` and only take effect after a
    /// restart: everything but `logging.level`, which a reload applies live. Keys only, never
    /// values, since some are secrets.
    pub fn changes_needing_restart(&self, new: &Config) -> Vec<String> {
        let a = serde_json::to_value(self).unwrap_or_default();
        let b = serde_json::to_value(new).unwrap_or_default();
        let mut out = Vec::new();
        diff_paths(&a, &b, "", &mut out);
        out.retain(|k| !LIVE_KEYS.contains(&k.as_str()));
        out
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.new_blocks.poll_interval_ms)
    }
}

/// Keys a SIGHUP reload applies without a restart.
pub const LIVE_KEYS: &[&str] = &["logging.level"];

/// Appends the paths where `a` and `b` differ, as deep as both sides have the same shape (a
/// list that changed length is named as a whole).
fn diff_paths(a: &serde_json::Value, b: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => diff_paths(va, vb, &join(k), out),
                    None => out.push(join(k)),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(join(k));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff_paths(va, vb, &format!("{prefix}[{i}]"), out);
            }
        }
        _ if a != b => out.push(prefix.to_owned()),
        _ => {}
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

/// A coinserver RPC URL the client can dial. The RPC client is built without TLS (no TLS
/// stack in the binary), so an https URL would be accepted here and fail at every request.
fn check_rpc_url(key: &str, url: &str) -> Result<(), (String, String)> {
    if url.starts_with("https://") {
        return Err((
            key.to_owned(),
            "https is not supported (the RPC client has no TLS): use http:// to a node on a \
             private network, or terminate TLS in a local proxy (e.g. stunnel) and give its \
             http:// address here"
                .into(),
        ));
    }
    if !url.starts_with("http://") {
        return Err((
            key.to_owned(),
            "must start with http://, e.g. http://127.0.0.1:8332".into(),
        ));
    }
    Ok(())
}

/// The key paths of `v` (`a.b`, with `[]` for any element of a list), objects included.
#[cfg(test)]
fn key_paths(v: &serde_json::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone());
                key_paths(val, &path, out);
            }
        }
        serde_json::Value::Array(a) => {
            for val in a {
                key_paths(val, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
coin:
  network: regtest
  payout_address: bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080
coinservers:
  - name: node1
    url: http://127.0.0.1:18443
    cookie_file: /tmp/.cookie
"#;

    #[test]
    fn minimal_config_takes_defaults() {
        let c = Config::parse(MIN, "t.yml").unwrap();
        assert_eq!(c.stratum.len(), 1);
        assert_eq!(c.stratum[0].bind.port(), 3333);
        assert_eq!(c.store.backend, StoreBackend::Embedded);
        assert_eq!(c.new_blocks.poll_interval_ms, 250);
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let text = format!("{MIN}stratum:\n  - name: a\n    bnid: 0.0.0.0:1\n");
        let e = Config::parse(&text, "pool.yml").unwrap_err().to_string();
        assert!(e.starts_with("pool.yml:11:"), "{e}");
        assert!(e.contains("bnid"), "{e}");
        assert!(e.contains("config.yml.example"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_key_and_fix() {
        let text = MIN.replace(
            "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
        );
        let e = Config::parse(&text, "p.yml").unwrap_err().to_string();
        assert!(e.contains("coin.payout_address"), "{e}");
        let text = format!("{MIN}server_number: 300\n");
        let e = Config::parse(&text, "p.yml").unwrap_err().to_string();
        assert!(e.contains("server_number") && e.contains("use 8"), "{e}");
        let text =
            format!("{MIN}stratum:\n  - policy: {{min_difficulty: 10, max_difficulty: 1}}\n");
        let e = Config::parse(&text, "p.yml").unwrap_err().to_string();
        assert!(e.contains("stratum[0].policy"), "{e}");
    }

    /// The example documents every key with its default: with the two required keys filled
    /// in, it must parse to exactly the defaults.
    #[test]
    fn example_file_parses_to_the_defaults() {
        let text = include_str!("../../config.yml.example")
            .replace(
                "payout_address: \"\"",
                "payout_address: 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
            )
            .replace(
                "coinservers: []",
                "coinservers: [{name: n, url: \"http://127.0.0.1:8332\"}]",
            );
        let parsed = Config::parse(&text, "config.yml.example").unwrap();
        let mut want = Config::default();
        want.coin.payout_address = "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa".into();
        want.coinservers = parsed.coinservers.clone();
        assert_eq!(parsed, want);
    }

    const AUX: &str = r#"
aux_chains:
  - currency: NMC
    payout_address: bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080
    coinservers:
      - {name: nmc1, url: "http://127.0.0.1:18336", username: u, password: p}
  - currency: DOGE
    payout_address: bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080
    poll_interval_ms: 250
    coinservers:
      - {name: doge1, url: "http://127.0.0.1:18332", priority: 1}
      - {name: doge2, url: "http://127.0.0.1:18333"}
"#;

    #[test]
    fn aux_chains_parse_with_defaults() {
        assert!(Config::parse(MIN, "t").unwrap().aux_chains.is_empty());
        let c = Config::parse(&format!("{MIN}{AUX}"), "t").unwrap();
        assert_eq!(c.aux_chains.len(), 2);
        assert_eq!(c.aux_chains[0].poll_interval_ms, 1000);
        assert_eq!(c.aux_chains[1].poll_interval_ms, 250);
        assert_eq!(c.aux_chains[1].coinservers[0].priority, 1);
        assert_eq!(c.aux_chains[1].coinservers[1].priority, 0);
    }

    #[test]
    fn aux_chain_mistakes_name_the_key() {
        let bad = |from: &str, to: &str| {
            let text = format!("{MIN}{AUX}").replacen(from, to, 1);
            Config::parse(&text, "p.yml").unwrap_err().to_string()
        };
        let e = bad("currency: DOGE", "currency: NMC");
        assert!(
            e.contains("aux_chains[1].currency") && e.contains("twice"),
            "{e}"
        );
        let e = bad("currency: NMC", "currency: BTC");
        assert!(
            e.contains("aux_chains[0].currency") && e.contains("coin.currency"),
            "{e}"
        );
        let e = bad(
            "    coinservers:\n      - {name: nmc1, url: \"http://127.0.0.1:18336\", username: u, password: p}",
            "    coinservers: []",
        );
        assert!(e.contains("aux_chains[0].coinservers"), "{e}");
        let e = bad("name: doge2", "name: doge1");
        assert!(e.contains("aux_chains[1].coinservers[1].name"), "{e}");
        let e = bad("poll_interval_ms: 250", "poll_interval_ms: 0");
        assert!(e.contains("aux_chains[1].poll_interval_ms"), "{e}");
        let e = bad("poll_interval_ms: 250", "poll_interval: 250");
        assert!(e.contains("poll_interval"), "{e}");
    }

    #[test]
    fn secrets_are_redacted_and_nothing_else() {
        let mut c = Config::parse(MIN, "t").unwrap();
        c.coinservers[0].password = Some("hunter2".into());
        c.coinservers[0].username = Some("rpcuser".into());
        c.new_blocks.udp.secret = Some("s3cret".into());
        c.store.redis.url = "redis://:pw@host:6379/0".into();
        let v = c.redacted();
        let text = v.to_string();
        for leaked in ["hunter2", "s3cret", ":pw@", "/tmp/.cookie"] {
            assert!(!text.contains(leaked), "{leaked} leaked: {text}");
        }
        let r = crate::monitor::REDACTED;
        assert_eq!(v["coinservers"][0]["password"], r);
        assert_eq!(v["coinservers"][0]["cookie_file"], r);
        assert_eq!(v["new_blocks"]["udp"]["secret"], r);
        // Settings that merely mention authorization, and plain names, are shown as they are.
        assert_eq!(v["limits"]["auth_timeout_secs"], 60);
        assert_eq!(v["limits"]["max_connections"], 50_000);
        assert_eq!(v["store"]["redis"]["key_prefix"], "powerpool:");
        assert_eq!(v["coinservers"][0]["username"], "rpcuser");
        assert_eq!(v["coinservers"][0]["url"], "http://127.0.0.1:18443");
    }

    #[test]
    fn https_coinserver_is_refused_with_the_way_out() {
        let text = MIN.replace("http://127.0.0.1:18443", "https://node.example:8332");
        let e = Config::parse(&text, "p.yml").unwrap_err().to_string();
        assert!(e.contains("`coinservers[0].url`"), "{e}");
        assert!(e.contains("http://") && e.contains("proxy"), "{e}");
        let text = format!("{MIN}{AUX}").replace("http://127.0.0.1:18333", "https://d:1");
        let e = Config::parse(&text, "p.yml").unwrap_err().to_string();
        assert!(e.contains("`aux_chains[1].coinservers[1].url`"), "{e}");
        assert!(e.contains("proxy"), "{e}");
        let text = MIN.replace("http://127.0.0.1:18443", "127.0.0.1:18443");
        let e = Config::parse(&text, "p.yml").unwrap_err().to_string();
        assert!(
            e.contains("coinservers[0].url") && e.contains("http://"),
            "{e}"
        );
    }

    #[test]
    fn ports_must_agree_on_extranonce2_size() {
        let ports = |second: usize| {
            format!(
                "{MIN}stratum:\n  - {{name: a, bind: \"0.0.0.0:3333\"}}\n  \
                 - {{name: b, bind: \"0.0.0.0:3334\", policy: {{extranonce2_size: {second}}}}}\n"
            )
        };
        let c = Config::parse(&ports(4), "p.yml").unwrap();
        assert_eq!(c.stratum.len(), 2);
        let e = Config::parse(&ports(8), "p.yml").unwrap_err().to_string();
        assert!(e.contains("`stratum[1].policy.extranonce2_size`"), "{e}");
        assert!(e.contains("same extranonce2_size"), "{e}");
    }

    #[test]
    fn proxy_protocol_needs_trusted_addresses_and_names_a_bad_one() {
        let port = |pp: &str| format!("{MIN}stratum:\n  - {{name: a, proxy_protocol: {pp}}}\n");
        let c = Config::parse(&port("{}"), "p.yml").unwrap();
        assert!(!c.stratum[0].proxy_protocol.enabled, "off by default");
        let c = Config::parse(
            &port("{enabled: true, trusted: [127.0.0.1, \"10.0.0.0/8\", \"fd00::/8\"]}"),
            "p.yml",
        )
        .unwrap();
        assert_eq!(c.stratum[0].proxy_protocol.header_timeout_ms, 5000);
        let e = Config::parse(&port("{enabled: true}"), "p.yml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`stratum[0].proxy_protocol.trusted`"), "{e}");
        let e = Config::parse(
            &port("{enabled: true, trusted: [127.0.0.1, \"10.0.0.0/33\"]}"),
            "p.yml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`stratum[0].proxy_protocol.trusted[1]`") && e.contains("10.0.0.0/33"),
            "{e}"
        );
        let e = Config::parse(&port("{trusted: [lb.example]}"), "p.yml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("proxy_protocol.trusted[0]"),
            "checked even when off: {e}"
        );
        let e = Config::parse(
            &port("{enabled: true, trusted: [127.0.0.1], header_timeout_ms: 0}"),
            "p.yml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("stratum[0].proxy_protocol.header_timeout_ms"),
            "{e}"
        );
    }

    #[test]
    fn tls_files_are_checked_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let port = |tls: &str| format!("{MIN}stratum:\n  - {{name: a, tls: {tls}}}\n");
        let e = |tls: &str| Config::parse(&port(tls), "p.yml").unwrap_err().to_string();
        let missing = dir.path().join("missing.pem");
        let m = missing.display();
        let err = e(&format!("{{cert_file: \"{m}\", key_file: \"{m}\"}}"));
        assert!(
            err.contains("`stratum[0].tls.cert_file`") && err.contains("missing.pem"),
            "{err}"
        );
        let err = e(&format!("{{key_file: \"{m}\"}}"));
        assert!(err.contains("`stratum[0].tls.cert_file`"), "{err}");
        let err = e(&format!("{{cert_file: \"{m}\"}}"));
        assert!(err.contains("`stratum[0].tls.key_file`"), "{err}");
        // A file that is not PEM, and a key file with no key in it.
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let j = junk.display();
        let err = e(&format!("{{cert_file: \"{j}\", key_file: \"{j}\"}}"));
        assert!(err.contains("`stratum[0].tls.cert_file`"), "{err}");
        let cert = dir.path().join("cert.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let c = cert.display();
        let err = e(&format!("{{cert_file: \"{c}\", key_file: \"{j}\"}}"));
        assert!(err.contains("`stratum[0].tls.key_file`"), "{err}");
        // A real certificate with someone else's key, then with its own.
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        let key = dir.path().join("key.pem");
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key, other.serialize_pem()).unwrap();
        let k = key.display();
        let err = e(&format!("{{cert_file: \"{c}\", key_file: \"{k}\"}}"));
        assert!(
            err.contains("`stratum[0].tls.cert_file`") && err.contains("key_file"),
            "{err}"
        );
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let ok = Config::parse(
            &port(&format!("{{cert_file: \"{c}\", key_file: \"{k}\"}}")),
            "p",
        );
        assert!(ok.unwrap().stratum[0].tls.key_file.is_some());
        assert!(
            Config::parse(&port("{}"), "p.yml").unwrap().stratum[0]
                .tls
                .cert_file
                .is_none()
        );
    }

    /// The lines after `anchor` that are commented out up to the next blank line, uncommented:
    /// the example's templates for list entries.
    fn commented_template(text: &str, anchor: &str) -> String {
        let rest = &text[text.find(anchor).expect("anchor in the example") + anchor.len()..];
        rest.lines()
            .skip(1)
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", &l[1..]))
            .collect()
    }

    /// Every key of the schema appears in the example and every key of the example is in the
    /// schema. Defaults cannot hide a missing key here: the example is read untyped, and the
    /// schema's keys come from serializing a config with one of each list entry.
    #[test]
    fn example_file_has_every_key_and_no_other() {
        let example = include_str!("../../config.yml.example");
        // The list templates are comments (the lists are empty by default): make them live.
        let mut text = example.to_owned();
        for anchor in ["coinservers: []", "aux_chains: []"] {
            let template = commented_template(example, anchor);
            assert!(!template.is_empty(), "{anchor} has a commented template");
            let key = &anchor[..anchor.len() - 3];
            text = text.replacen(anchor, &format!("{key}\n{template}"), 1);
        }
        let documented: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let entry = CoinserverEntry {
            name: "n".into(),
            url: "http://127.0.0.1:8332".into(),
            username: None,
            password: None,
            cookie_file: None,
            priority: 0,
        };
        let mut full = Config {
            coinservers: vec![entry.clone()],
            ..Config::default()
        };
        full.aux_chains = vec![AuxChainConfig {
            currency: "NMC".into(),
            payout_address: String::new(),
            poll_interval_ms: 1000,
            coinservers: vec![entry],
        }];
        let schema = serde_json::to_value(&full).unwrap();
        let (mut want, mut have) = (Default::default(), Default::default());
        key_paths(&schema, "", &mut want);
        key_paths(&documented, "", &mut have);
        let missing: Vec<_> = want.difference(&have).collect();
        let unknown: Vec<_> = have.difference(&want).collect();
        assert!(
            missing.is_empty(),
            "config.yml.example lacks {missing:?}: document each with its default"
        );
        assert!(
            unknown.is_empty(),
            "config.yml.example has keys the schema does not: {unknown:?}"
        );
    }

    #[test]
    fn reload_names_every_change_that_needs_a_restart() {
        let running = Config::parse(MIN, "t").unwrap();
        let mut new = running.clone();
        assert!(running.changes_needing_restart(&new).is_empty());
        new.logging.level = "debug".into();
        assert!(
            running.changes_needing_restart(&new).is_empty(),
            "applied live"
        );
        new.logging.format = LogFormat::Json;
        new.limits.idle_timeout_secs = 5;
        new.coinservers[0].password = Some("hunter2".into());
        new.stratum.push(StratumPortConfig::default());
        let changed = running.changes_needing_restart(&new);
        assert_eq!(
            changed,
            [
                "coinservers[0].password",
                "limits.idle_timeout_secs",
                "logging.format",
                "stratum",
            ],
        );
    }
}
