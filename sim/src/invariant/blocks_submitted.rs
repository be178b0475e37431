//! Every found block is submitted exactly once to every live coinserver: each acknowledged
//! share that meets the network target reaches each node in `live` once, no node ever sees a
//! block twice, and every block the pool recorded is one a miner found.
//!
//! [`check_windows`] narrows "live" to time windows: a block found while a node was
//! unreachable (or before the pool saw it back) is not owed to that node — on a real network
//! it arrives there from peers — and, since the pool cannot tell a lost request from a lost
//! reply, may reach it more than once; outside such windows a second submission is a bug.

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
    let down: Vec<Vec<(u64, u64)>> = (0..nodes.len())
        .map(|i| {
            if live.get(i).copied().unwrap_or(false) {
                Vec::new()
            } else {
                vec![(0, u64::MAX)]
            }
        })
        .collect();
    check_windows(obs, nodes, &down, recorded)
}

/// `down[i]`: the half-open windows `[from, to)` of simulated ms during which node `i` is not
/// owed the blocks found (by the time the share was sent).
pub fn check_windows(
    obs: &Observations,
    nodes: &[Arc<Node>],
    down: &[Vec<(u64, u64)>],
    recorded: &[String],
) -> Violations {
    let mut v = Vec::new();
    let found_at: BTreeMap<&str, u64> = obs
        .submits
        .iter()
        .filter(|s| s.accepted == Some(true) && s.meets_network)
        .map(|s| (s.hash.as_str(), s.sent_ms))
        .collect();
    let found: BTreeSet<&str> = found_at.keys().copied().collect();
    for (i, node) in nodes.iter().enumerate() {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for b in node.submitted_blocks() {
            if let Some(h) = b.hash {
                *counts.entry(h.to_display_hex()).or_default() += 1;
            }
        }
        let windows = down.get(i).map_or(&[][..], Vec::as_slice);
        let in_window = |at: u64| windows.iter().any(|(a, b)| at >= *a && at < *b);
        for (h, n) in &counts {
            // On a link that loses replies the pool cannot know its submission arrived, and
            // sending the block again is right (the node answers "duplicate"); anywhere else
            // a second submission is a bug.
            let lossy = found_at.get(h.as_str()).is_some_and(|at| in_window(*at));
            if *n > 1 && !lossy {
                v.push(format!("node{i}: block {h} submitted {n} times"));
            }
        }
        for (h, at) in &found_at {
            let owed = !in_window(*at);
            if owed && !counts.contains_key(*h) {
                v.push(format!(
                    "node{i}: block {h} found at {at} ms never submitted"
                ));
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
