//! Every found block is submitted exactly once to every live coinserver: each acknowledged
//! share that meets the network target reaches each node in `live` once, no node ever sees a
//! block twice, and every block the pool recorded is one a miner found.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use powerpool_drivers::node::Node;

use super::Violations;
use crate::obs::Observations;

pub fn check(
    obs: &Observations,
    nodes: &[Arc<Node>],
    live: &[bool],
    recorded: &[String],
) -> Violations {
    let mut v = Vec::new();
    let found: BTreeSet<&str> = obs
        .submits
        .iter()
        .filter(|s| s.accepted == Some(true) && s.meets_network)
        .map(|s| s.hash.as_str())
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for b in node.submitted_blocks() {
            if let Some(h) = b.hash {
                *counts.entry(h.to_display_hex()).or_default() += 1;
            }
        }
        for (h, n) in &counts {
            if *n > 1 {
                v.push(format!("node{i}: block {h} submitted {n} times"));
            }
        }
        if live.get(i).copied().unwrap_or(false) {
            for h in &found {
                if !counts.contains_key(*h) {
                    v.push(format!("node{i}: found block {h} never submitted"));
                }
            }
        }
    }
    for h in recorded {
        if found.contains(h.as_str()) {
            continue;
        }
        // A share whose reply never arrived (the miner hung up first) may well be a block.
        let sent: Vec<_> = obs.submits.iter().filter(|s| &s.hash == h).collect();
        if sent.iter().any(|s| s.accepted.is_none() && s.meets_network) {
            continue;
        }
        let seen = sent
            .iter()
            .map(|s| {
                format!(
                    "{:?} from miner {} answered {:?}",
                    s.intent, s.miner, s.accepted
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        v.push(format!(
            "pool recorded block {h} that no miner had acknowledged (submits: [{seen}])"
        ));
    }
    for h in &found {
        if !recorded.iter().any(|r| r == h) {
            v.push(format!("found block {h} has no block record"));
        }
    }
    v
}
