//! The aux chain driver (merged mining): one task per aux chain that fetches the chain's work
//! and submits its blocks, over the same [`RpcClient`] as the parent's coinservers.
//!
//! Work: every `poll_interval` (and right after one of the chain's blocks was accepted, since
//! its tip then moved) `createauxblock <payout address>` is asked of the chain's nodes in
//! priority order (lowest first, ties in config order); the first valid answer is the chain's
//! work and is sent to the router as [`AuxEvent::Work`] when it differs from the last one sent.
//! A node that answers -32601 (no `createauxblock`, as older Dogecoin Core) is asked
//! `getauxblock` instead, then and afterwards. Trying the preferred node first on every round
//! is the failover: the work comes from the best node that answers, and comes back to a
//! preferred node as soon as it answers again. A node that fails costs at most its RPC timeout
//! per round.
//!
//! Blocks: an [`AuxBlockSubmission`] goes to every node of its chain at once
//! (`submitauxblock <hash> <auxpow>`, or `getauxblock <hash> <auxpow>` after -32601). A node
//! only accepts a block it handed out itself (Namecoin Core and Dogecoin Core keep the blocks
//! they created per node), so sending to every node is what makes the block reach the node
//! that created it even when the preferred node has changed since. An answer of `true` or
//! `null` is acceptance (a null result is what some daemons return on success). Only a node
//! that could not be reached is tried again (up to [`SUBMIT_ATTEMPTS`] times, a short pause
//! apart); a node that answered `false` or an RPC error has judged the proof and is not asked
//! again, unlike the original, which repeated any refusal five times a second apart. Nodes the
//! last work round found down get one attempt. The outcome is reported once: at the first
//! acceptance, or after every node has answered or given up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use powerpool_core::merged::{AuxBlockSubmission, AuxWork};
use powerpool_core::record::RecordId;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::rpc::{RpcClient, RpcError, RpcTransport};

/// Attempts per reachable node for one aux block.
pub const SUBMIT_ATTEMPTS: u32 = 3;
/// Pause between attempts on a node that could not be reached.
pub const SUBMIT_RETRY_DELAY: Duration = Duration::from_millis(300);

/// What the driver needs to know about one aux chain.
#[derive(Debug, Clone)]
pub struct AuxChainSpec {
    pub currency: String,
    pub payout_address: String,
    pub poll_interval: Duration,
    /// Node names and priorities, in config order (one RPC client each).
    pub nodes: Vec<(String, u32)>,
}

/// An aux block the router hands to its chain's driver.
#[derive(Debug, Clone)]
pub struct AuxSubmitMsg {
    /// The id of the block's record, echoed in the events.
    pub block_id: RecordId,
    pub submission: AuxBlockSubmission,
}

/// What an aux chain driver reports to the router.
#[derive(Debug, Clone, PartialEq)]
pub enum AuxEvent {
    /// New work for the chain (differs from the previous one sent).
    Work {
        node: String,
        work: AuxWork,
        /// The reply's `coinbasevalue` (the aux block's reward), when it had one.
        coinbase_value: Option<u64>,
    },
    /// A node could not give work (unreachable, RPC error or a reply that is not aux work).
    NodeDown {
        chain: String,
        node: String,
        reason: String,
    },
    /// A node that was down gives work again.
    NodeUp { chain: String, node: String },
    /// One node's final answer to one aux block.
    Submitted {
        block_id: RecordId,
        chain: String,
        node: String,
        result: Result<bool, String>,
    },
    /// The block's outcome: accepted by at least one node, or refused by all.
    Outcome {
        block_id: RecordId,
        chain: String,
        accepted: bool,
        /// Why each node refused it (when not accepted).
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuxDriverError {
    #[error("{clients} RPC clients for {nodes} nodes of aux chain {chain}: give one per node")]
    NodeCount {
        chain: String,
        clients: usize,
        nodes: usize,
    },
}

/// One node's answer to a work request: the work and its `coinbasevalue`, or why not.
type PollAnswer = Result<(AuxWork, Option<u64>), String>;

/// Per-node knowledge the driver keeps.
#[derive(Debug, Clone, Default)]
struct NodeStatus {
    down: bool,
    /// The node has no `createauxblock`: use `getauxblock`.
    legacy: bool,
}

/// Runs one aux chain until `shutdown` resolves or the router is gone. `clients[i]` serves
/// `spec.nodes[i]`.
pub async fn run_chain<T: RpcTransport>(
    spec: AuxChainSpec,
    clients: Vec<Arc<RpcClient<T>>>,
    mut submit_rx: mpsc::Receiver<AuxSubmitMsg>,
    events: mpsc::Sender<AuxEvent>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AuxDriverError> {
    if clients.len() != spec.nodes.len() {
        return Err(AuxDriverError::NodeCount {
            chain: spec.currency.clone(),
            clients: clients.len(),
            nodes: spec.nodes.len(),
        });
    }
    let spec = Arc::new(spec);
    let mut order: Vec<usize> = (0..spec.nodes.len()).collect();
    order.sort_by_key(|&i| spec.nodes[i].1);
    let status = Arc::new(std::sync::Mutex::new(vec![
        NodeStatus::default();
        spec.nodes.len()
    ]));
    let mut last_sent: Option<AuxWork> = None;
    let (poll_tx, mut poll_rx) = mpsc::channel::<Vec<(usize, PollAnswer)>>(4);
    let (accepted_tx, mut accepted_rx) = mpsc::unbounded_channel::<()>();
    let mut polling = false;
    let mut poll_again = false;
    let mut next_poll = tokio::time::Instant::now();
    let mut submissions = JoinSet::new();
    let mut submit_open = true;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            m = submit_rx.recv(), if submit_open => match m {
                Some(m) => {
                    let down: Vec<bool> = lock(&status).iter().map(|s| s.down).collect();
                    submissions.spawn(submit_block(
                        spec.clone(),
                        clients.clone(),
                        status.clone(),
                        down,
                        m,
                        events.clone(),
                        accepted_tx.clone(),
                    ));
                }
                None => submit_open = false,
            },
            Some(()) = accepted_rx.recv() => {
                if polling {
                    poll_again = true;
                } else {
                    next_poll = tokio::time::Instant::now();
                }
            }
            Some(round) = poll_rx.recv() => {
                polling = false;
                for (i, r) in round {
                    let node = spec.nodes[i].0.clone();
                    let was_down = std::mem::replace(&mut lock(&status)[i].down, r.is_err());
                    match r {
                        Ok((work, coinbase_value)) => {
                            if was_down {
                                tracing::info!(chain = %spec.currency, %node, "aux node up");
                                send(&events, AuxEvent::NodeUp { chain: spec.currency.clone(), node: node.clone() }).await;
                            }
                            if last_sent.as_ref() != Some(&work) {
                                last_sent = Some(work.clone());
                                send(&events, AuxEvent::Work { node, work, coinbase_value }).await;
                            }
                        }
                        Err(reason) => {
                            tracing::warn!(chain = %spec.currency, %node, %reason, "aux node gives no work");
                            send(&events, AuxEvent::NodeDown { chain: spec.currency.clone(), node, reason }).await;
                        }
                    }
                }
                next_poll = if std::mem::take(&mut poll_again) {
                    tokio::time::Instant::now()
                } else {
                    tokio::time::Instant::now() + spec.poll_interval
                };
            }
            () = tokio::time::sleep_until(next_poll), if !polling => {
                polling = true;
                let spec = spec.clone();
                let clients = clients.clone();
                let status = status.clone();
                let order = order.clone();
                let tx = poll_tx.clone();
                tokio::spawn(async move {
                    let round = poll_round(&spec, &clients, &status, &order).await;
                    let _ = tx.send(round).await;
                });
            }
            Some(_) = submissions.join_next(), if !submissions.is_empty() => {}
        }
        if events.is_closed() {
            break;
        }
    }
    // Blocks already handed over still get their answers, within the attempts' bounds.
    while submissions.join_next().await.is_some() {}
    Ok(())
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn send(events: &mpsc::Sender<AuxEvent>, ev: AuxEvent) {
    // The router stopping ends the driver at the loop's next turn.
    let _ = events.send(ev).await;
}

/// Asks nodes in `order` until one gives valid work; returns what each asked node answered.
async fn poll_round<T: RpcTransport>(
    spec: &AuxChainSpec,
    clients: &[Arc<RpcClient<T>>],
    status: &std::sync::Mutex<Vec<NodeStatus>>,
    order: &[usize],
) -> Vec<(usize, PollAnswer)> {
    let mut round = Vec::new();
    for &i in order {
        let legacy = lock(status)[i].legacy;
        let r = fetch_work(spec, &clients[i], legacy).await;
        let r = match r {
            Err(RpcError::Rpc { code: -32601, .. }) if !legacy => {
                lock(status)[i].legacy = true;
                fetch_work(spec, &clients[i], true).await
            }
            r => r,
        };
        let r = r.map_err(|e| e.to_string()).and_then(|v| {
            let value = v.get("coinbasevalue").and_then(Value::as_u64);
            AuxWork::from_rpc(&spec.currency, &v)
                .map(|w| (w, value))
                .map_err(|e| e.to_string())
        });
        let ok = r.is_ok();
        round.push((i, r));
        if ok {
            break;
        }
    }
    round
}

async fn fetch_work<T: RpcTransport>(
    spec: &AuxChainSpec,
    client: &RpcClient<T>,
    legacy: bool,
) -> Result<Value, RpcError> {
    if legacy {
        client.call("getauxblock", &json!([])).await
    } else {
        client
            .call("createauxblock", &json!([spec.payout_address]))
            .await
    }
}

/// Sends one aux block to every node of the chain; reports each node's answer and the
/// outcome.
async fn submit_block<T: RpcTransport>(
    spec: Arc<AuxChainSpec>,
    clients: Vec<Arc<RpcClient<T>>>,
    status: Arc<std::sync::Mutex<Vec<NodeStatus>>>,
    down: Vec<bool>,
    msg: AuxSubmitMsg,
    events: mpsc::Sender<AuxEvent>,
    accepted_tx: mpsc::UnboundedSender<()>,
) {
    let params = json!(msg.submission.rpc_params());
    let mut per_node = JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let params = params.clone();
        let status = status.clone();
        let attempts = if down[i] { 1 } else { SUBMIT_ATTEMPTS };
        per_node.spawn(async move {
            let r = submit_to_node(&client, &status, i, &params, attempts).await;
            (i, r)
        });
    }
    let chain = spec.currency.clone();
    let mut reported = false;
    let mut refusals = Vec::new();
    while let Some(joined) = per_node.join_next().await {
        let Ok((i, result)) = joined else { continue };
        let node = spec.nodes[i].0.clone();
        tracing::info!(chain = %chain, %node, hash = %msg.submission.aux_hash, ?result, "aux block submitted");
        match &result {
            Ok(true) => {}
            Ok(false) => refusals.push(format!("{node}: refused")),
            Err(e) => refusals.push(format!("{node}: {e}")),
        }
        let accepted = result == Ok(true);
        send(
            &events,
            AuxEvent::Submitted {
                block_id: msg.block_id,
                chain: chain.clone(),
                node,
                result,
            },
        )
        .await;
        if accepted && !reported {
            reported = true;
            let _ = accepted_tx.send(());
            send(
                &events,
                AuxEvent::Outcome {
                    block_id: msg.block_id,
                    chain: chain.clone(),
                    accepted: true,
                    reason: None,
                },
            )
            .await;
        }
    }
    if !reported {
        send(
            &events,
            AuxEvent::Outcome {
                block_id: msg.block_id,
                chain,
                accepted: false,
                reason: Some(refusals.join("; ")),
            },
        )
        .await;
    }
}

/// `Ok(true)` accepted (`true` or `null`), `Ok(false)` refused, `Err` an RPC error or the
/// node never answered.
async fn submit_to_node<T: RpcTransport>(
    client: &RpcClient<T>,
    status: &std::sync::Mutex<Vec<NodeStatus>>,
    node: usize,
    params: &Value,
    attempts: u32,
) -> Result<bool, String> {
    let mut last = String::new();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(SUBMIT_RETRY_DELAY).await;
        }
        let legacy = lock(status)[node].legacy;
        let method = if legacy {
            "getauxblock"
        } else {
            "submitauxblock"
        };
        let r = match client.call(method, params).await {
            Err(RpcError::Rpc { code: -32601, .. }) if !legacy => {
                lock(status)[node].legacy = true;
                client.call("getauxblock", params).await
            }
            r => r,
        };
        match r {
            Ok(Value::Bool(b)) => return Ok(b),
            Ok(Value::Null) => return Ok(true),
            Ok(other) => return Err(format!("unexpected result {other}")),
            Err(e @ RpcError::Rpc { .. }) => return Err(e.to_string()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{HttpReply, RpcAuth, TransportError};
    use std::sync::Mutex;

    type Answer = Box<dyn Fn(&str) -> Result<Value, (i64, String)> + Send + Sync>;

    /// Answers from a script, recording each request's method.
    struct Scripted {
        calls: Arc<Mutex<Vec<String>>>,
        answer: Answer,
        reachable: bool,
    }

    impl RpcTransport for Scripted {
        fn post(
            &self,
            body: Vec<u8>,
            _authorization: Option<String>,
            _timeout: Duration,
        ) -> impl Future<Output = Result<HttpReply, TransportError>> + Send {
            let req: Value = serde_json::from_slice(&body).unwrap();
            let method = req["method"].as_str().unwrap().to_owned();
            self.calls.lock().unwrap().push(method.clone());
            let reply = if self.reachable {
                let v = match (self.answer)(&method) {
                    Ok(r) => json!({"result": r, "error": null, "id": req["id"]}),
                    Err((code, message)) => {
                        json!({"result": null, "error": {"code": code, "message": message}, "id": req["id"]})
                    }
                };
                Ok(HttpReply {
                    status: 200,
                    body: serde_json::to_vec(&v).unwrap(),
                })
            } else {
                Err(TransportError::Io("connection refused".into()))
            };
            async move { reply }
        }
    }

    fn client(
        reachable: bool,
        answer: impl Fn(&str) -> Result<Value, (i64, String)> + Send + Sync + 'static,
    ) -> (Arc<RpcClient<Scripted>>, Arc<Mutex<Vec<String>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let t = Scripted {
            calls: calls.clone(),
            answer: Box::new(answer),
            reachable,
        };
        (
            Arc::new(RpcClient::new(t, RpcAuth::None, Duration::from_secs(1))),
            calls,
        )
    }

    fn work_reply() -> Value {
        // Namecoin Core regtest's createauxblock answer (fixture pos-single).
        json!({
            "hash": "e869730cefc8077b1080481844940785020f8a395f2a48d0f7182b70fcc1d294",
            "chainid": 1,
            "previousblockhash": "ea9e8f34da71efa43dc1635729e3e6b9ff0c70e878441435c86f8dba1eb50b00",
            "coinbasevalue": 5000000000u64,
            "bits": "207fffff",
            "height": 4,
            "_target": "0000000000000000000000000000000000000000000000000000000000ffff7f"
        })
    }

    fn spec(n: usize) -> AuxChainSpec {
        AuxChainSpec {
            currency: "NMC".into(),
            payout_address: "addr".into(),
            poll_interval: Duration::from_secs(60),
            nodes: (0..n).map(|i| (format!("n{i}"), i as u32)).collect(),
        }
    }

    #[tokio::test]
    async fn work_fails_over_and_falls_back_to_getauxblock() {
        let (down, down_calls) = client(false, |_| Ok(Value::Null));
        let (legacy, legacy_calls) = client(true, |m| match m {
            "getauxblock" => Ok(work_reply()),
            _ => Err((-32601, "Method not found".into())),
        });
        let status = Mutex::new(vec![NodeStatus::default(); 2]);
        let round = poll_round(&spec(2), &[down, legacy], &status, &[0, 1]).await;
        assert_eq!(round.len(), 2);
        assert!(round[0].1.is_err());
        let (w, value) = round[1].1.as_ref().unwrap();
        assert_eq!((w.chain_id, w.height, *value), (1, 4, Some(5_000_000_000)));
        assert_eq!(*down_calls.lock().unwrap(), ["createauxblock"]);
        assert_eq!(
            *legacy_calls.lock().unwrap(),
            ["createauxblock", "getauxblock"]
        );
        assert!(lock(&status)[1].legacy);
    }

    #[tokio::test]
    async fn submission_reaches_every_node_and_refusals_are_final() {
        let (acc, acc_calls) = client(true, |_| Ok(Value::Null));
        let (refuse, refuse_calls) = client(true, |_| Ok(json!(false)));
        let (gone, gone_calls) = client(false, |_| Ok(json!(true)));
        let (tx, mut rx) = mpsc::channel(16);
        let (atx, mut arx) = mpsc::unbounded_channel();
        let sub = AuxBlockSubmission {
            chain: "NMC".into(),
            chain_id: 1,
            aux_hash: powerpool_core::hash::Hash256([1; 32]),
            height: 4,
            target: powerpool_core::target::Target::MAX,
            parent_hash: powerpool_core::hash::Hash256([2; 32]),
            auxpow_hex: "00".into(),
            address: Arc::from("addr"),
            worker: Arc::from("w"),
        };
        let id = RecordId {
            server: 0,
            boot: 1,
            seq: 2,
        };
        submit_block(
            Arc::new(spec(3)),
            vec![acc, refuse, gone],
            Arc::new(Mutex::new(vec![NodeStatus::default(); 3])),
            vec![false, false, false],
            AuxSubmitMsg {
                block_id: id,
                submission: sub,
            },
            tx,
            atx,
        )
        .await;
        assert_eq!(acc_calls.lock().unwrap().len(), 1);
        assert_eq!(refuse_calls.lock().unwrap().len(), 1, "a refusal is final");
        assert_eq!(
            gone_calls.lock().unwrap().len(),
            SUBMIT_ATTEMPTS as usize,
            "an unreachable node is retried"
        );
        let mut outcomes = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            if let AuxEvent::Outcome { accepted, .. } = ev {
                outcomes.push(accepted);
            }
        }
        assert_eq!(outcomes, [true], "one outcome: accepted (null counts)");
        assert!(arx.try_recv().is_ok());
    }
}
