//! The HTTP monitor: JSON views of the pool, Prometheus metrics, a health check and the one
//! operator action, lifting a ban; served with axum on `127.0.0.1:3855` by default.
//!
//! | path | response |
//! |---|---|
//! | `/` | `{"status": <MonitorSource::status>, "links": {name: path}}` |
//! | `/clients` | `{"clients": <MonitorSource::clients>}` (connections grouped by address) |
//! | `/clients/{address}` | `{"address": address, "connections": <MonitorSource::client>}`, 404 if unknown |
//! | `/counters` | [`crate::metrics::MetricsSnapshot`] as JSON |
//! | `/components` | `{"components": <MonitorSource::components>}` |
//! | `/components/{name}` | `{"name": name, "status": <that member of components>}`, 404 if absent |
//! | `/config` | `{"config": <MonitorSource::config>}`, secrets redacted |
//! | `/metrics` | Prometheus text exposition, `text/plain; version=0.0.4` |
//! | `/health` | `200 ok` when [`MonitorSource::healthy`], else `503 unhealthy` |
//! | `/bans` | `{"bans": <MonitorSource::bans>}` (the bans in force, oldest first) |
//! | `/shares` | a page of share records from the store: `{"records": [...], "next": cursor or null}`; query `since`, `until` (Unix s or ms), `round` (block hash), `all_kinds`, `after` (cursor), `limit` (see [`crate::store::export`]) |
//! | `/store/blocks` | block records from the embedded store, newest first: `{"blocks": [...], "next": cursor or null}`; query `before` (cursor), `limit` |
//! | `/store/addresses/{address}` | `{"address": a, "workers": {worker: {kind: summed difficulty}}}` from the embedded store's minute sums; query `since`, `until` (Unix s or ms) |
//! | `DELETE /bans/{key}` | lifts the ban on `ip:<IP>` or `address:<payout address>`: `{"lifted": key}`, 404 when none, 400 for a malformed key |
//!
//! Any other path answers a JSON 404. A trailing slash is accepted on the list paths, as the
//! original's URLs had one (`/counters/`). Responses are compact JSON objects; links are
//! relative paths, so they stay right behind a reverse proxy without trusting the original's
//! `X-Script-Name`/`X-Scheme` headers. Every request is logged at debug level (peer, method,
//! path, status, duration). At most [`MAX_CONCURRENT_REQUESTS`] requests run at once (the
//! original's 100); more are answered 503 at once rather than queued.
//!
//! ## Fixes over the original monitor
//! - Secrets never leave: every JSON document from the [`MonitorSource`] (not only `/config`)
//!   goes through [`redact`] before it is served, so a source that forgets a field still leaks
//!   nothing. A member whose key [`is_secret_key`] (password, secret, token, cookie, auth, pass
//!   and their spellings, at any depth, inside arrays too) has its value replaced by
//!   [`REDACTED`]; `user:password@` in any URL-like string value is replaced as well.
//! - There is no `/debug/` view (it dumped every object's attributes and answered HEAD with
//!   500); HEAD works on every GET path.
//! - `address_worker_count` is the source's to compute; nothing here derives counts.
//!
//! There is no authentication, as in the original: bind the monitor to loopback (the default)
//! or put it behind a proxy that authenticates. The legacy `/05/` paths are not served.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::store::export::{ExportQuery, StoreReader, parse_time_ms};

/// The original's default port.
pub const DEFAULT_PORT: u16 = 3855;
/// Requests served at once; the rest get 503.
pub const MAX_CONCURRENT_REQUESTS: usize = 100;
/// What a secret value is replaced with.
pub const REDACTED: &str = "[redacted]";
/// Content type of `/metrics` (Prometheus text format 0.0.4).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `monitor:` section of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Serve the monitor. Default `true`.
    pub enabled: bool,
    /// Address to bind. Default `127.0.0.1`: the monitor has no authentication.
    pub address: IpAddr,
    /// Port to bind. Default `3855`.
    pub port: u16,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
        }
    }
}

impl MonitorConfig {
    #[must_use]
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// What the pool shows through the monitor. Each method is called on an HTTP request, on a
/// tokio worker: keep them quick and non-blocking (read snapshots, take short locks).
/// Values may contain secrets; the monitor redacts them (see [`redact`]).
pub trait MonitorSource: Send + Sync + 'static {
    /// General status (uptime, version, counts, hashrate, last flushed job...).
    fn status(&self) -> Value;
    /// Every connection, grouped by payout address: `{address: {client_id: summary}}`.
    fn clients(&self) -> Value;
    /// The connections of one payout address in detail; `None` when it has none.
    fn client(&self, address: &str) -> Option<Value>;
    /// Each component's status as a JSON object keyed by component name (coinservers,
    /// store, stratum ports, last push signal...).
    fn components(&self) -> Value;
    /// The effective configuration.
    fn config(&self) -> Value;
    /// Whether the pool can do its job (for load balancers and supervisors).
    fn healthy(&self) -> bool;
    /// The bans in force, as a JSON array.
    fn bans(&self) -> Value {
        json!([])
    }
    /// Lifts the ban on `key` (`ip:<IP>` or `address:<payout address>`): `Ok(false)` when
    /// there was none, `Err` naming what is wrong with a malformed key.
    fn lift_ban(&self, key: &str) -> Result<bool, String> {
        Err(format!("{key}: this monitor has no bans"))
    }
    /// The store share records are read back from (`/shares`); `None` when there is none.
    fn store(&self) -> Option<StoreReader> {
        None
    }
}

#[derive(Clone)]
struct AppState {
    source: Arc<dyn MonitorSource>,
    metrics: Arc<Metrics>,
}

/// The monitor's routes, for [`serve`] or for embedding in another axum app.
pub fn router(source: Arc<dyn MonitorSource>, metrics: Arc<Metrics>) -> Router {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    Router::new()
        .route("/", get(index))
        .route("/clients", get(clients))
        .route("/clients/", get(clients))
        .route("/clients/{address}", get(client))
        .route("/counters", get(counters))
        .route("/counters/", get(counters))
        .route("/components", get(components))
        .route("/components/", get(components))
        .route("/components/{name}", get(component))
        .route("/config", get(config))
        .route("/config/", get(config))
        .route("/metrics", get(prometheus))
        .route("/health", get(health))
        .route("/bans", get(bans))
        .route("/bans/", get(bans))
        .route("/bans/{key}", axum::routing::delete(lift_ban))
        .route("/shares", get(shares))
        .route("/store/blocks", get(store_blocks))
        .route("/store/addresses/{address}", get(store_address))
        .fallback(not_found)
        .with_state(AppState { source, metrics })
        .layer(middleware::from_fn_with_state(permits, limit))
        .layer(middleware::from_fn(access_log))
}

/// Serves the monitor on `listener` until `shutdown` completes, then finishes the requests in
/// flight. Returns an error only if accepting fails for good.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn MonitorSource>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(source, metrics).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

async fn index(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": redacted(s.source.status()),
        "links": {
            "clients": "/clients",
            "counters": "/counters",
            "components": "/components",
            "config": "/config",
            "metrics": "/metrics",
            "health": "/health",
        },
    }))
}

async fn clients(State(s): State<AppState>) -> Json<Value> {
    Json(json!({ "clients": redacted(s.source.clients()) }))
}

async fn client(State(s): State<AppState>, Path(address): Path<String>) -> Response {
    match s.source.client(&address) {
        Some(v) => Json(json!({ "address": address, "connections": redacted(v) })).into_response(),
        None => error(StatusCode::NOT_FOUND, "no connections for this address"),
    }
}

async fn counters(State(s): State<AppState>) -> Json<crate::metrics::MetricsSnapshot> {
    Json(s.metrics.snapshot())
}

async fn components(State(s): State<AppState>) -> Json<Value> {
    Json(json!({ "components": redacted(s.source.components()) }))
}

async fn component(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let mut all = s.source.components();
    match all.get_mut(&name).map(Value::take) {
        Some(v) => Json(json!({ "name": name, "status": redacted(v) })).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such component"),
    }
}

async fn config(State(s): State<AppState>) -> Json<Value> {
    Json(json!({ "config": redacted(s.source.config()) }))
}

async fn bans(State(s): State<AppState>) -> Json<Value> {
    Json(json!({ "bans": redacted(s.source.bans()) }))
}

async fn lift_ban(State(s): State<AppState>, Path(key): Path<String>) -> Response {
    match s.source.lift_ban(&key) {
        Ok(true) => {
            tracing::info!(%key, "ban lifted from the monitor");
            Json(json!({ "lifted": key })).into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, "no such ban"),
        Err(m) => error(StatusCode::BAD_REQUEST, &m),
    }
}

/// A page of share records from the store: `since`, `until` (Unix s or ms), `round` (a block
/// hash), `all_kinds` (any value: refused shares' counted records too), `after` (the cursor
/// the previous page gave), `limit` (at most [`crate::store::export::MAX_PAGE`]).
async fn shares(
    State(s): State<AppState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let (store, since_ms, until_ms, limit) = match store_query(&s, &q, 10_000) {
        Ok(x) => x,
        Err((code, m)) => return error(code, &m),
    };
    let query = ExportQuery {
        since_ms,
        until_ms,
        round: q.get("round").cloned(),
        all_kinds: q.contains_key("all_kinds"),
    };
    let filter = match store.filter(&query).await {
        Ok(f) => f,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    match store
        .page(&filter, q.get("after").map(String::as_str), limit)
        .await
    {
        Ok(page) => Json(page).into_response(),
        Err(m) => error(StatusCode::SERVICE_UNAVAILABLE, &m),
    }
}

async fn store_blocks(
    State(s): State<AppState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let (store, _, _, limit) = match store_query(&s, &q, 100) {
        Ok(x) => x,
        Err((code, m)) => return error(code, &m),
    };
    match store
        .blocks_page(q.get("before").map(String::as_str), limit)
        .await
    {
        Ok((blocks, next)) => Json(json!({ "blocks": blocks, "next": next })).into_response(),
        Err(m) => error(StatusCode::BAD_REQUEST, &m),
    }
}

async fn store_address(
    State(s): State<AppState>,
    Path(address): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let (store, since, until, _) = match store_query(&s, &q, 0) {
        Ok(x) => x,
        Err((code, m)) => return error(code, &m),
    };
    let (since, until) = (since.unwrap_or(0), until.unwrap_or(u64::MAX));
    match store.address_totals(&address, since, until).await {
        Ok(workers) => Json(json!({ "address": address, "workers": workers })).into_response(),
        Err(m) => error(StatusCode::BAD_REQUEST, &m),
    }
}

/// What every store view reads from its request: the store, `since` and `until` (Unix s or
/// ms), and `limit` (`default` when absent); otherwise the status and what is wrong.
#[allow(clippy::type_complexity)]
fn store_query(
    s: &AppState,
    q: &std::collections::HashMap<String, String>,
    default_limit: usize,
) -> Result<(StoreReader, Option<u64>, Option<u64>, usize), (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let store = s.source.store().ok_or((
        StatusCode::NOT_FOUND,
        "this pool has no store to read".to_owned(),
    ))?;
    let time = |k: &str| q.get(k).map(|v| parse_time_ms(v)).transpose().map_err(bad);
    let (since, until) = (time("since")?, time("until")?);
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => default_limit,
        Some(Ok(l)) => l,
        Some(Err(_)) => return Err(bad("limit: a number".into())),
    };
    Ok((store, since, until, limit))
}

async fn prometheus(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        s.metrics.render_prometheus(),
    )
        .into_response()
}

async fn health(State(s): State<AppState>) -> Response {
    if s.source.healthy() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy").into_response()
    }
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "not found", "path": uri.path() })),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn limit(State(permits): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    match permits.try_acquire() {
        Ok(_permit) => next.run(req).await,
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "too many monitor requests"),
    }
}

async fn access_log(req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    tracing::debug!(
        peer = ?peer,
        %method,
        %path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "monitor request"
    );
    response
}

// ---------------------------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------------------------

/// Key fragments that mark a secret wherever they appear (compared against the key lowercased
/// with everything but letters and digits removed, so `api-key`, `API_KEY` and `apiKey` all
/// read `apikey`).
const SECRET_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "cookie",
    "credential",
    "apikey",
    "privatekey",
    "privkey",
    "authorization",
];

/// Last words of a key that make it a setting or a count *about* credentials, never one
/// (`auth_timeout_secs`, `auth_failures`, `pass_enabled`). Only the looser word rule below
/// defers to them; [`SECRET_FRAGMENTS`] always win.
const MEASURE_WORDS: &[&str] = &[
    "timeout", "secs", "seconds", "ms", "millis", "interval", "enabled", "count", "attempts",
    "retries", "failures", "limit", "max", "min", "size",
];

/// Whether a JSON member named `key` holds a secret. Any of [`SECRET_FRAGMENTS`] anywhere in
/// the key marks one, as does a last word `key` (`hmac_key`; `key_prefix` is kept). So does a
/// word of the key (split at non-alphanumerics and lower→upper case changes) that is or ends
/// with `pass` or `auth` (`pass`, `rpcpass`, `rpc_auth`, `basicAuth`) or is `pwd`, unless the
/// key ends in one of [`MEASURE_WORDS`] (`auth_timeout_secs` is a duration, shown as such).
/// Words merely *starting* with `auth` are kept (`client_count_authed`, `authorized`), as
/// status fields use them.
#[must_use]
pub fn is_secret_key(key: &str) -> bool {
    let compact: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if SECRET_FRAGMENTS.iter().any(|f| compact.contains(f)) {
        return true;
    }
    let words: Vec<String> = words(key).collect();
    let Some(last) = words.last() else {
        return false;
    };
    if last == "key" {
        return true;
    }
    !MEASURE_WORDS.contains(&last.as_str())
        && words
            .iter()
            .any(|w| w == "pwd" || w.ends_with("pass") || w.ends_with("auth"))
}

fn words(key: &str) -> impl Iterator<Item = String> + '_ {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out.into_iter()
}

/// Replaces, anywhere in `value`, every member whose key [`is_secret_key`] with [`REDACTED`]
/// (a `null` stays `null`: "not set" is no secret), and the `user:password@` part of every
/// URL-like string with `[redacted]@`.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_key(key) {
                    if !v.is_null() {
                        *v = Value::String(REDACTED.to_owned());
                    }
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) => {
            if let Some(clean) = scrub_userinfo(s) {
                *s = clean;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn redacted(mut value: Value) -> Value {
    redact(&mut value);
    value
}

/// `scheme://user:pass@host/...` → `scheme://[redacted]@host/...`, for every URL in `s`;
/// `None` when there is nothing to scrub.
fn scrub_userinfo(s: &str) -> Option<String> {
    if !s.contains("://") {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
                changed = true;
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for k in [
            "password",
            "rpc_password",
            "rpcpassword",
            "RPCPassword",
            "pass",
            "rpcpass",
            "rpcPass",
            "secret",
            "hmac_secret",
            "token",
            "authToken",
            "cookie_file",
            "auth",
            "rpcauth",
            "basicAuth",
            "Authorization",
            "api-key",
            "apiKey",
            "pwd",
            "credentials",
            "key",
            "hmac_key",
            "signingKey",
            "auth_pass",
            "rpcauth_value",
            "auth_header",
            "password_timeout_secs",
            "token_count",
            "secret_size",
        ] {
            assert!(is_secret_key(k), "{k} must be secret");
        }
        for k in [
            "client_count_authed",
            "authorized",
            "address",
            "port",
            "user",
            "host",
            "worker",
            "passive",
            "auth_timeout_secs",
            "authTimeoutSecs",
            "auth_failures",
            "pass_enabled",
            "key_prefix",
            "keyspace",
            "max_connections_per_ip",
        ] {
            assert!(!is_secret_key(k), "{k} must be kept");
        }
    }

    #[test]
    fn redacts_nested_and_in_arrays() {
        let mut v = json!({
            "coinservers": [
                {"host": "127.0.0.1", "port": 8332, "username": "u", "password": "hunter2"},
                {"url": "http://bob:s3cret@10.0.0.1:8332/wallet", "rpc": {"token": 5}},
            ],
            "store": {"redis": {"url": "redis://:redispw@localhost:6379/0"}},
            "push": {"secret": null},
            "client_count_authed": 3,
        });
        redact(&mut v);
        let text = v.to_string();
        for leaked in ["hunter2", "s3cret", "bob", "redispw"] {
            assert!(!text.contains(leaked), "{leaked} leaked: {text}");
        }
        assert_eq!(v["coinservers"][0]["password"], REDACTED);
        assert_eq!(v["coinservers"][0]["username"], "u");
        assert_eq!(v["coinservers"][1]["rpc"]["token"], REDACTED);
        assert_eq!(
            v["coinservers"][1]["url"],
            "http://[redacted]@10.0.0.1:8332/wallet"
        );
        assert_eq!(
            v["store"]["redis"]["url"],
            "redis://[redacted]@localhost:6379/0"
        );
        assert_eq!(v["push"]["secret"], Value::Null);
        assert_eq!(v["client_count_authed"], 3);
    }

    #[test]
    fn userinfo_scrub_leaves_plain_urls() {
        assert_eq!(scrub_userinfo("http://127.0.0.1:8332/"), None);
        assert_eq!(scrub_userinfo("mail me@example.com"), None);
        assert_eq!(
            scrub_userinfo("a http://x:y@h/p?q=a@b and tcp://u@h2").as_deref(),
            Some("a http://[redacted]@h/p?q=a@b and tcp://[redacted]@h2")
        );
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: MonitorConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.socket_addr(), "127.0.0.1:3855".parse().unwrap());
        assert!(c.enabled);
        assert!(serde_json::from_str::<MonitorConfig>(r#"{"prot": 1}"#).is_err());
    }
}
