//! Every found block is submitted exactly once to every live coinserver: each acknowledged
//! share that meets the network target reaches each node in `live` once, no node ever sees a
//! block twice, every block the pool recorded is one a miner found, and the node's block
//! checks (proof of work, merkle root, witness commitment, coinbase height and value, every
//! transaction known and unspent) pass for every block a miner found: the node answers
//! accepted, "inconclusive" for a valid block that lost a race, or "prev-blk-not-found" for
//! one that overtook its parent (another of the pool's blocks, found a moment before, whose
//! call reached the node later).
//!
//! [`check_windows`] narrows "live" to time windows: a block found while a node was
//! unreachable (or before the pool saw it back) is not owed to that node — on a real network
//! it arrives there from peers.
//!
//! ## When a block may reach a node twice
//! The pool's rule (the coinserver machine's): a submission that failed in transport — no
//! connection, or no reply before the call's deadline — is retried, up to the configured
//! number of attempts per node. A timed-out call's outcome is unknown: the pool cannot tell a
//! lost request from a lost reply, and sending the block again is right, since a node that
//! already holds it answers "duplicate". So a node may receive one block more than once when,
//! and only when:
//! - the pool's call could have gone unanswered: the block was found inside one of the
//!   node's fault windows, or less than one reply deadline ([`Retries::reply_deadline_ms`])
//!   before a window opened (its call was in flight when the link failed);
//! - every copy after the first is answered "duplicate" (the node had it already);
//! - and there are at most [`Retries::attempts`] copies.
//!
//! Anywhere else a second submission is a bug: the pool resent a block whose outcome it
//! knew.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use powerpool_core::hash::Hash256;
use powerpool_devnode::Node;

use super::Violations;
use crate::obs::Observations;

/// The pool's retry rule for block submissions, which decides when a block may reach a node
/// more than once (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// How long the pool waits for a submission's reply before calling its outcome unknown.
    pub reply_deadline_ms: u64,
    /// Submissions of one block to one node, at most.
    pub attempts: u32,
}

pub fn check(
    obs: &Observations,
    nodes: &[Arc<Node>],
    live: &[bool],
    recorded: &[String],
    retries: Retries,
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
    check_windows(obs, nodes, &down, recorded, retries)
}

/// `down[i]`: the half-open windows `[from, to)` of simulated ms during which node `i` is not
/// owed the blocks found: those the pool may have handled inside a window (between the share's
/// sending and its acknowledgement).
pub fn check_windows(
    obs: &Observations,
    nodes: &[Arc<Node>],
    down: &[Vec<(u64, u64)>],
    recorded: &[String],
    retries: Retries,
) -> Violations {
    let mut v = Vec::new();
    if nodes.is_empty() {
        v.push("no node to submit to: block submission was not tested".into());
    }
    // When the pool may have handled each found block: between the share's sending and its
    // acknowledgement (far apart on a held link).
    let found_at: BTreeMap<&str, (u64, u64)> = obs
        .submits
        .iter()
        .filter(|s| s.accepted == Some(true) && s.meets_network)
        .map(|s| {
            (
                s.hash.as_str(),
                (s.sent_ms, s.answered_ms.unwrap_or(s.sent_ms)),
            )
        })
        .collect();
    let found: BTreeSet<&str> = found_at.keys().copied().collect();
    if found.is_empty() {
        v.push("no acknowledged share was a block: block submission was not tested".into());
    }
    for (i, node) in nodes.iter().enumerate() {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for b in node.submitted_blocks() {
            if let Some(h) = b.hash {
                *counts.entry(h.to_display_hex()).or_default() += 1;
            }
        }
        let windows = down.get(i).map_or(&[][..], Vec::as_slice);
        let in_window =
            |(sent, answered): (u64, u64)| windows.iter().any(|(a, b)| sent < *b && answered >= *a);
        // The pool's call for a block found by `answered` has its reply due by then plus the
        // deadline: a window opening before that may have cost it the reply.
        let unanswered = |(sent, answered): (u64, u64)| {
            windows
                .iter()
                .any(|(a, b)| sent < *b && answered + retries.reply_deadline_ms >= *a)
        };
        let submitted = node.submitted_blocks();
        let parent = |h: &str| -> Option<String> {
            let hash = Hash256::from_display_hex(h).ok()?;
            nodes.iter().find_map(|n| {
                n.with_chain(|c| {
                    c.block(&hash)
                        .map(|e| e.block.header.prev_blockhash.to_display_hex())
                })
            })
        };
        // A missing parent is excused when the pool did not owe it to this node (found in a
        // window, so never submitted here) or its own submission was excused the same way:
        // the node's peers had not relayed it yet. A parent the pool did get accepted here, or
        // owed and never sent, leaves the child's refusal unexplained.
        let excused = |child: &str| {
            let mut h = child.to_owned();
            for _ in 0..64 {
                let Some(p) = parent(&h) else { return false };
                let replies: Vec<_> = submitted
                    .iter()
                    .filter(|b| b.hash.is_some_and(|x| x.to_display_hex() == p))
                    .collect();
                if replies.is_empty() {
                    return found_at.get(p.as_str()).is_some_and(|at| in_window(*at));
                }
                if !replies
                    .iter()
                    .all(|b| matches!(&b.reply, Ok(Some(r)) if r == "prev-blk-not-found"))
                {
                    return false;
                }
                h = p;
            }
            false
        };
        // The pool sends each block the moment it is found, so a block found on top of one
        // it just found may overtake its parent on the way to a node (separate calls, racing):
        // the node then refuses the child, and takes the parent when it arrives. Up the
        // chain: the parent may itself have been refused for a grandparent still on its way.
        let overtook = |k: usize, child: &str| {
            let mut h = child.to_owned();
            for _ in 0..64 {
                let Some(p) = parent(&h) else { return false };
                let is_p = |b: &&powerpool_devnode::SubmittedBlock| {
                    b.hash.is_some_and(|x| x.to_display_hex() == p)
                };
                if submitted[k + 1..].iter().any(|b| is_p(&b)) {
                    return true;
                }
                let earlier: Vec<_> = submitted[..k].iter().filter(is_p).collect();
                if earlier.is_empty()
                    || !earlier
                        .iter()
                        .all(|b| matches!(&b.reply, Ok(Some(r)) if r == "prev-blk-not-found"))
                {
                    return false;
                }
                h = p;
            }
            false
        };
        for (k, b) in submitted.iter().enumerate() {
            let Some(h) = b.hash.map(|h| h.to_display_hex()) else {
                continue;
            };
            let Some(at) = found_at.get(h.as_str()) else {
                continue;
            };
            let fine = match &b.reply {
                // "duplicate": the node already had it (from a peer, or an earlier attempt
                // whose reply was lost); how often it was sent is judged below.
                Ok(None) => true,
                Ok(Some(r)) if r == "inconclusive" || r == "duplicate" => true,
                // A block whose parent the node missed while cut off from the pool, before
                // its peers caught it up.
                Ok(Some(r)) if r == "prev-blk-not-found" => {
                    in_window(*at) || excused(&h) || overtook(k, &h)
                }
                _ => false,
            };
            if !fine {
                v.push(format!(
                    "node{i}: block {h} found at {} ms answered {:?}",
                    at.0, b.reply
                ));
            }
        }
        for (h, n) in &counts {
            if *n < 2 {
                continue;
            }
            let copies: Vec<&Result<Option<String>, _>> = submitted
                .iter()
                .filter(|b| b.hash.is_some_and(|x| x.to_display_hex() == *h))
                .map(|b| &b.reply)
                .collect();
            let retried = found_at.get(h.as_str()).is_some_and(|at| unanswered(*at));
            let later_duplicates = copies
                .iter()
                .skip(1)
                .all(|r| matches!(r, Ok(Some(x)) if x == "duplicate"));
            if !retried {
                v.push(format!(
                    "node{i}: block {h} submitted {n} times, though the pool's first call was \
                     answered before any fault"
                ));
            } else if !later_duplicates {
                v.push(format!(
                    "node{i}: block {h} submitted {n} times, a later copy not answered \
                     \"duplicate\": {copies:?}"
                ));
            } else if *n > retries.attempts as usize {
                v.push(format!(
                    "node{i}: block {h} submitted {n} times, more than the {} attempts allowed",
                    retries.attempts
                ));
            }
        }
        for (h, at) in &found_at {
            let owed = !in_window(*at);
            if owed && !counts.contains_key(*h) {
                v.push(format!(
                    "node{i}: block {h} found at {} ms (acknowledged at {} ms) never submitted",
                    at.0, at.1
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
