//! The aux chain driver (merged mining): runs one [`AuxChain`] per aux chain against its
//! nodes, over the same [`RpcClient`] as the parent's coinservers.
//!
//! A thin loop like the coinserver driver's: every call the machine asks for runs
//! concurrently on its own task; replies and aux blocks from the pool machine are fed back as
//! inputs; events go out on a channel, with node ids turned into names; between inputs the
//! loop sleeps until the machine's next timeout. Every decision (node order, the
//! `getauxblock` fallback, polling, retries, outcomes) is the machine's, and its module docs
//! say what they are.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use powerpool_core::auxchain::{AuxChain, AuxChainConfig, ConfigError, Event};
pub use powerpool_core::auxchain::{SUBMIT_ATTEMPTS, SUBMIT_RETRY_DELAY};
use powerpool_core::coinserver::{NodeConfig, Reply};
use powerpool_core::merged::{AuxBlockSubmission, AuxWork};
use powerpool_core::record::RecordId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clock::DriverClock;
use crate::rpc::{RpcClient, RpcTransport, spawn_call};

/// What the driver needs to know about one aux chain.
#[derive(Debug, Clone)]
pub struct AuxChainSpec {
    pub currency: String,
    pub payout_address: String,
    pub poll_interval: Duration,
    /// Node names and priorities, in config order (one RPC client each).
    pub nodes: Vec<(String, u32)>,
}

/// An aux block the pool machine hands to its chain's driver.
#[derive(Debug, Clone)]
pub struct AuxSubmitMsg {
    /// The id of the block's record, echoed in the events.
    pub block_id: RecordId,
    pub submission: AuxBlockSubmission,
}

/// What an aux chain driver reports to the pool machine.
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
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Runs one aux chain until `shutdown` resolves or its event consumer is gone, then finishes the
/// blocks already handed over. `clients[i]` serves `spec.nodes[i]`.
pub async fn run_chain<T: RpcTransport>(
    spec: AuxChainSpec,
    clients: Vec<Arc<RpcClient<T>>>,
    wall: impl Fn() -> u64,
    mut submit_rx: mpsc::UnboundedReceiver<AuxSubmitMsg>,
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
    let clock = DriverClock::new(Instant::now(), wall);
    let nodes = spec
        .nodes
        .iter()
        .map(|(name, priority)| NodeConfig {
            name: name.clone(),
            priority: *priority,
        })
        .collect();
    let cfg = AuxChainConfig::new(
        spec.currency.clone(),
        spec.payout_address.clone(),
        spec.poll_interval,
        nodes,
    );
    let mut machine = AuxChain::new(cfg, clock.now())?;
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<(u64, Reply)>();
    let mut submit_open = true;
    let mut stopping = false;
    tokio::pin!(shutdown);
    loop {
        while let Some(req) = machine.poll_request() {
            let client = clients[req.node].clone();
            spawn_call(
                client,
                req.id,
                req.call.method(),
                req.call.params(),
                reply_tx.clone(),
            );
        }
        while let Some(event) = machine.poll_event() {
            // A consumer that is gone only ends the driver; the blocks in hand still finish.
            let _ = events.send(named(&spec, event)).await;
        }
        if !stopping && events.is_closed() {
            stopping = true;
            machine.handle_shutdown(clock.now());
            continue;
        }
        if stopping && machine.is_finished() {
            return Ok(());
        }
        let deadline = clock.instant(machine.poll_timeout());
        tokio::select! {
            biased;
            () = &mut shutdown, if !stopping => {
                stopping = true;
                machine.handle_shutdown(clock.now());
            }
            // Found blocks before anything else: a block's chance shrinks by the millisecond.
            m = submit_rx.recv(), if submit_open && !stopping => match m {
                Some(m) => machine.handle_submit(clock.now(), m.block_id, &m.submission),
                None => submit_open = false,
            },
            Some((id, reply)) = reply_rx.recv() => machine.handle_reply(clock.now(), id, reply),
            () = tokio::time::sleep_until(deadline) => machine.handle_timeout(clock.now()),
        }
    }
}

/// The machine's event with the chain's and nodes' names, as the pool's view keys them.
fn named(spec: &AuxChainSpec, event: Event) -> AuxEvent {
    let chain = spec.currency.clone();
    let name = |node: usize| spec.nodes[node].0.clone();
    match event {
        Event::Work {
            node,
            work,
            coinbase_value,
        } => AuxEvent::Work {
            node: name(node),
            work,
            coinbase_value,
        },
        Event::NodeDown { node, reason } => AuxEvent::NodeDown {
            chain,
            node: name(node),
            reason,
        },
        Event::NodeUp { node } => AuxEvent::NodeUp {
            chain,
            node: name(node),
        },
        Event::Submitted {
            block_id,
            node,
            result,
        } => AuxEvent::Submitted {
            block_id,
            chain,
            node: name(node),
            result,
        },
        Event::Outcome {
            block_id,
            accepted,
            reason,
        } => AuxEvent::Outcome {
            block_id,
            chain,
            accepted,
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{HttpReply, RpcAuth, TransportError};
    use serde_json::{Value, json};
    use std::sync::Mutex;

    type Answer = Box<dyn Fn(&str, &Value) -> Result<Value, i64> + Send + Sync>;

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
                let v = match (self.answer)(&method, &req["params"]) {
                    Ok(r) => json!({"result": r, "error": null, "id": req["id"]}),
                    Err(code) => {
                        json!({"result": null, "error": {"code": code, "message": "no"}, "id": req["id"]})
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
        answer: impl Fn(&str, &Value) -> Result<Value, i64> + Send + Sync + 'static,
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

    /// The loop wires the machine to real RPC calls: names in events, the machine's choice
    /// of method per node, a block to every node, shutdown once the block is decided.
    #[tokio::test(start_paused = true)]
    async fn drives_the_machine_over_rpc() {
        let (down, down_calls) = client(false, |_, _| Ok(Value::Null));
        let (legacy, legacy_calls) = client(true, |m, params| match m {
            "getauxblock" if params.as_array().is_some_and(Vec::is_empty) => Ok(work_reply()),
            "getauxblock" => Ok(Value::Null),
            _ => Err(-32601),
        });
        let spec = AuxChainSpec {
            currency: "NMC".into(),
            payout_address: "addr".into(),
            poll_interval: Duration::from_secs(60),
            nodes: vec![("old".into(), 1), ("gone".into(), 0)],
        };
        let (submit_tx, submit_rx) = mpsc::unbounded_channel();
        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_chain(
            spec,
            vec![legacy, down],
            || crate::net::Net::unix_ms(&crate::net::TokioNet),
            submit_rx,
            ev_tx,
            async move {
                let _ = stop_rx.await;
            },
        ));
        let down_ev = ev_rx.recv().await.unwrap();
        assert!(
            matches!(&down_ev, AuxEvent::NodeDown { chain, node, .. } if chain == "NMC" && node == "gone"),
            "{down_ev:?}"
        );
        let AuxEvent::Work { node, work, .. } = ev_rx.recv().await.unwrap() else {
            panic!("work expected")
        };
        assert_eq!((node.as_str(), work.height), ("old", 4));

        let id = RecordId {
            server: 0,
            boot: 1,
            seq: 2,
        };
        let submission = AuxBlockSubmission {
            chain: "NMC".into(),
            chain_id: 1,
            aux_hash: work.hash,
            height: 4,
            target: powerpool_core::target::Target::MAX,
            parent_hash: powerpool_core::hash::Hash256([2; 32]),
            auxpow_hex: "00".into(),
            address: Arc::from("addr"),
            worker: Arc::from("w"),
        };
        submit_tx
            .send(AuxSubmitMsg {
                block_id: id,
                submission,
            })
            .unwrap();
        let mut outcomes = Vec::new();
        let mut answers = Vec::new();
        let mut stop = Some(stop_tx);
        while let Some(ev) = ev_rx.recv().await {
            match ev {
                AuxEvent::Submitted { node, result, .. } => answers.push((node, result)),
                AuxEvent::Outcome {
                    block_id, accepted, ..
                } => {
                    outcomes.push((block_id, accepted));
                    // Stopping now still lets the unreachable node's attempt finish.
                    if let Some(stop) = stop.take() {
                        stop.send(()).unwrap();
                    }
                }
                _ => {}
            }
        }
        task.await.unwrap().unwrap();
        assert_eq!(outcomes, [(id, true)]);
        answers.sort();
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[1], ("old".into(), Ok(true)));
        assert_eq!(answers[0].0, "gone");
        let down_calls = down_calls.lock().unwrap();
        assert_eq!(
            down_calls.iter().filter(|m| *m == "submitauxblock").count(),
            1,
            "found down: one attempt; {down_calls:?}"
        );
        assert_eq!(
            legacy_calls.lock().unwrap()[..3],
            ["createauxblock", "getauxblock", "getauxblock"]
        );
    }
}
