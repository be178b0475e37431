//! What the HTTP monitor shows of a running pool: the [`MonitorSource`] over a [`PoolHandle`].
//! Everything is read from snapshots the pool keeps anyway; nothing here is on the share path.

use std::collections::{BTreeMap, BTreeSet};

use powerpool_core::pool::BanKey;
use powerpool_core::record::ShareKind;
use serde_json::{Value, json};

use crate::monitor::MonitorSource;
use crate::pool::PoolHandle;
use crate::store::export::StoreReader;
use crate::stratum::ClientInfo;

const SHARE_REJECTS: [ShareKind; 4] = [
    ShareKind::Duplicate,
    ShareKind::LowDifficulty,
    ShareKind::Stale,
    ShareKind::Invalid,
];

#[derive(Debug, Clone)]
pub struct PoolMonitor {
    pub pool: PoolHandle,
    /// Where `/shares` reads records back.
    pub store: Option<StoreReader>,
}

impl PoolMonitor {
    fn clients_snapshot(&self) -> Vec<ClientInfo> {
        self.pool.stratum.clients()
    }
}

impl MonitorSource for PoolMonitor {
    fn status(&self) -> Value {
        let clients = self.clients_snapshot();
        let authed = clients.iter().filter(|c| !c.workers.is_empty()).count();
        let addresses: BTreeSet<&str> = clients
            .iter()
            .flat_map(|c| c.workers.iter().map(|(a, _)| a.as_str()))
            .collect();
        let address_workers: BTreeSet<(&str, &str)> = clients
            .iter()
            .flat_map(|c| c.workers.iter().map(|(a, w)| (a.as_str(), w.as_str())))
            .collect();
        let state = self
            .pool
            .state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": self.pool.metrics.uptime_secs(),
            "currency": state.currency,
            "algo": self.pool.config.coin.algo.name(),
            "server_number": self.pool.config.server_number,
            "height": state.height,
            "network_difficulty": state.network_difficulty,
            "hashrate": self.pool.metrics.accepted_hashrate(),
            "client_count": clients.len(),
            "client_count_authed": authed,
            "address_count": addresses.len(),
            "address_worker_count": address_workers.len(),
            "current_job": state.current_job,
            "jobs_published": state.jobs_published,
            "clean_jobs": state.clean_jobs,
            "shares_accepted": self.pool.metrics.shares_total(ShareKind::Accepted),
            "shares_rejected": SHARE_REJECTS.iter().map(|k| self.pool.metrics.shares_total(*k)).sum::<u64>(),
            "primary_coinserver": state.primary,
            "last_push_signal": state.last_push,
            "recent_blocks": state.blocks,
        })
    }

    fn clients(&self) -> Value {
        let mut by_address: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for c in self.clients_snapshot() {
            let address = c
                .workers
                .first()
                .map_or_else(|| "(unauthorized)".to_owned(), |(a, _)| a.clone());
            by_address.entry(address).or_default().push(json!({
                "serial": c.serial,
                "worker": c.workers.first().map(|(_, w)| w.clone()),
                "difficulty": c.difficulty,
                "accepted": c.accepted,
                "last_share_unix_ms": c.last_share_unix_ms,
            }));
        }
        json!(by_address)
    }

    fn client(&self, address: &str) -> Option<Value> {
        let conns: Vec<ClientInfo> = self
            .clients_snapshot()
            .into_iter()
            .filter(|c| c.workers.iter().any(|(a, _)| a == address))
            .collect();
        (!conns.is_empty()).then(|| json!(conns))
    }

    fn components(&self) -> Value {
        let state = self
            .pool
            .state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let store = self.pool.store_status.borrow().clone();
        let counters = self.pool.hub.view(|p| p.counters());
        json!({
            "coinservers": {
                "primary": state.primary,
                "nodes": state.nodes,
                "templates": state.templates,
                "bad_templates": state.bad_templates,
                "last_template_error": state.last_template_error,
                "last_push_signal": state.last_push,
            },
            "store": {
                "backend": self.pool.config.store.backend,
                "primary_up": store.primary_up,
                "pending_records": store.pending_records,
                "spooled_batches": store.spooled_batches,
                "spool_ok": store.spool_ok,
                "spool_full": store.spool_full,
                "needs_operator": store.needs_operator,
                "last_error": store.last_error,
            },
            "stratum": self.pool.config.stratum.iter().zip(&self.pool.stratum_ports).map(|(p, port)| json!({
                "name": p.name,
                "port": port,
                "policy": p.policy,
            })).collect::<Vec<_>>(),
            "connections": {
                "open": self.pool.stratum.connection_count(),
                "total": counters.connections_admitted,
                "refused": counters.connections_refused,
            },
        })
    }

    fn config(&self) -> Value {
        self.pool.config.redacted()
    }

    fn healthy(&self) -> bool {
        let has_primary = self
            .pool
            .state
            .lock()
            .map(|s| s.primary.is_some())
            .unwrap_or(false);
        let store = self.pool.store_status.borrow();
        has_primary && store.spool_ok && !store.spool_full
    }

    fn bans(&self) -> Value {
        let bans = self.pool.hub.with(|p, now| p.bans(now));
        Value::Array(
            bans.iter()
                .map(|b| {
                    json!({
                        "banned": b.key.to_string(),
                        "reason": b.reason,
                        "since_unix_ms": b.since_unix_ms,
                        "until_unix_ms": b.until_unix_ms,
                    })
                })
                .collect(),
        )
    }

    fn store(&self) -> Option<StoreReader> {
        self.store.clone()
    }

    fn lift_ban(&self, key: &str) -> Result<bool, String> {
        let key: BanKey = key.parse()?;
        Ok(self.pool.hub.with(|p, _| p.lift_ban(&key)))
    }
}
