//! JSON-RPC transport for the pool's coinserver client over simulated TCP: hyper's HTTP/1
//! client on a turmoil stream, one connection per call (Core's RPC server accepts that, and it
//! makes a crashed node show up on the very next call).
//!
//! Like a packet capture, a transport to an aux chain's node can log the aux work the node
//! handed out, so the merged-mining check knows which aux blocks a job committed to; the reply
//! itself goes to the pool untouched.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use powerpool_core::hash::Hash256;
use powerpool_drivers::rpc::{HttpReply, RpcTransport, TransportError};

/// An aux block a node of aux chain `chain` (index in the world's aux list) handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxWorkSeen {
    pub chain: usize,
    /// Internal byte order, as the coinbase commitment's tree holds it.
    pub hash: Hash256,
}

/// Shared by the pool hosts' transports (which must be `Send`) and the checks.
pub type AuxWorkLog = Arc<Mutex<Vec<AuxWorkSeen>>>;

/// Posts to `host:port` inside the simulation.
#[derive(Debug, Clone)]
pub struct TurmoilHttp {
    pub host: String,
    pub port: u16,
    aux_log: Option<(usize, AuxWorkLog)>,
}

impl TurmoilHttp {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        TurmoilHttp {
            host: host.into(),
            port,
            aux_log: None,
        }
    }

    /// Also logs every aux block a reply hands out, as aux chain `chain`'s.
    pub fn logging_aux(mut self, chain: usize, log: AuxWorkLog) -> Self {
        self.aux_log = Some((chain, log));
        self
    }

    fn log_aux(&self, reply: &HttpReply) {
        let Some((chain, log)) = &self.aux_log else {
            return;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&reply.body) else {
            return;
        };
        // Only work replies carry a hash and a chain id; submission replies are booleans.
        let replies = match v {
            serde_json::Value::Array(a) => a,
            one => vec![one],
        };
        for r in replies {
            let res = &r["result"];
            if res["chainid"].is_null() {
                continue;
            }
            if let Some(hash) = res["hash"]
                .as_str()
                .and_then(|h| Hash256::from_display_hex(h).ok())
            {
                let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                let seen = AuxWorkSeen {
                    chain: *chain,
                    hash,
                };
                if !l.contains(&seen) {
                    l.push(seen);
                }
            }
        }
    }

    async fn post_inner(
        &self,
        body: Vec<u8>,
        authorization: Option<String>,
    ) -> Result<HttpReply, TransportError> {
        let io_err = |e: &dyn std::fmt::Display| TransportError::Io(e.to_string());
        let stream = turmoil::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| io_err(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io_err(&e))?;
        let conn = tokio::spawn(conn);
        let mut req = Request::post("/")
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(a) = authorization {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| io_err(&e))?;
        let result = async {
            let resp = sender.send_request(req).await.map_err(|e| io_err(&e))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| io_err(&e))?
                .to_bytes()
                .to_vec();
            Ok(HttpReply { status, body })
        }
        .await;
        conn.abort();
        result
    }
}

impl RpcTransport for TurmoilHttp {
    async fn post(
        &self,
        body: Vec<u8>,
        authorization: Option<String>,
        timeout: Duration,
    ) -> Result<HttpReply, TransportError> {
        let reply = tokio::time::timeout(timeout, self.post_inner(body, authorization))
            .await
            .unwrap_or(Err(TransportError::Timeout));
        if let Ok(r) = &reply {
            self.log_aux(r);
        }
        reply
    }
}
