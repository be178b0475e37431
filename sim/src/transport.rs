//! JSON-RPC transport for the pool's coinserver client over simulated TCP: hyper's HTTP/1
//! client on a turmoil stream, one connection per call (Core's RPC server accepts that, and it
//! makes a crashed node show up on the very next call).

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use powerpool_drivers::rpc::{HttpReply, RpcTransport, TransportError};

/// Posts to `host:port` inside the simulation.
#[derive(Debug, Clone)]
pub struct TurmoilHttp {
    pub host: String,
    pub port: u16,
}

impl TurmoilHttp {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        TurmoilHttp {
            host: host.into(),
            port,
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
        tokio::time::timeout(timeout, self.post_inner(body, authorization))
            .await
            .unwrap_or(Err(TransportError::Timeout))
    }
}
