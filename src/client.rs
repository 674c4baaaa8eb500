//! A small HTTP client for the daemon's API, over its Unix socket or over TCP with a bearer
//! token. One connection per request (hyper's HTTP/1 connection API, no pool).

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Where the daemon is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// Its Unix socket.
    Unix(PathBuf),
    /// A TCP address (`127.0.0.1:8080`) and the token to present.
    Tcp {
        /// host:port.
        addr: String,
        /// The bearer token.
        token: Option<String>,
    },
}

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody answered.
    #[error(
        "cannot reach the scriptbox daemon at {endpoint}: {source} (is `scriptbox serve` running? use --socket or SCRIPTBOX_SOCKET)"
    )]
    Connect {
        /// Where.
        endpoint: String,
        /// Why.
        source: std::io::Error,
    },
    /// HTTP failed.
    #[error("talking to the daemon: {0}")]
    Http(String),
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After`, when given.
    pub retry_after: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The error message of an error body, or the body text.
    pub fn error_message(&self) -> String {
        let v = self.json();
        match v["Error"]["Message"].as_str() {
            Some(m) => m.to_string(),
            None => String::from_utf8_lossy(&self.body).into_owned(),
        }
    }
}

/// The client.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Client {
    /// A client of the daemon at `endpoint`.
    pub fn new(endpoint: Endpoint) -> Client {
        Client { endpoint }
    }

    fn describe(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(p) => format!("unix:{}", p.display()),
            Endpoint::Tcp { addr, .. } => format!("tcp:{addr}"),
        }
    }

    async fn connect(&self) -> Result<Sender, ClientError> {
        let err = |source| ClientError::Connect {
            endpoint: self.describe(),
            source,
        };
        let http = |e: hyper::Error| ClientError::Http(e.to_string());
        let sender = match &self.endpoint {
            Endpoint::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path).await.map_err(err)?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .map_err(http)?;
                tokio::spawn(conn);
                sender
            }
            Endpoint::Tcp { addr, .. } => {
                let s = tokio::net::TcpStream::connect(addr).await.map_err(err)?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .map_err(http)?;
                tokio::spawn(conn);
                sender
            }
        };
        Ok(sender)
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let mut sender = self.connect().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "scriptbox");
        if let Endpoint::Tcp {
            token: Some(token), ..
        } = &self.endpoint
        {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req
            .body(body)
            .map_err(|e| ClientError::Http(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))
    }

    /// Sends a request and reads the whole answer.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header("retry-after");
        let content_type = header("content-type");
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        Ok(Answer {
            status,
            retry_after,
            content_type,
            body,
        })
    }

    /// `GET` and read.
    pub async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.request("GET", path, None).await
    }

    /// `POST` a JSON value and read.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Answer, ClientError> {
        self.request("POST", path, Some(body.to_string().into_bytes()))
            .await
    }

    /// Follows a Server-Sent Events stream, calling `on_event(event, data)` for each event
    /// until the stream ends or `on_event` returns false. Returns the HTTP status (an error
    /// answer's body is returned too).
    pub async fn events(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &str) -> bool,
    ) -> Result<(u16, Option<Answer>), ClientError> {
        let resp = self.send("GET", path, None).await?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?
                .to_bytes();
            return Ok((
                status,
                Some(Answer {
                    status,
                    retry_after: None,
                    content_type: None,
                    body,
                }),
            ));
        }
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let mut event = String::new();
        let mut data = String::new();
        // Where the search for the next newline resumes: a long line (the `end` event carries
        // the execution object) arrives in many chunks and is scanned once, not once per chunk.
        let mut scanned = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
            let Some(chunk) = frame.data_ref() else {
                continue;
            };
            buf.extend_from_slice(chunk);
            while let Some(found) = buf[scanned..].iter().position(|b| *b == b'\n') {
                let pos = scanned + found;
                scanned = 0;
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1])
                    .trim_end_matches('\r')
                    .to_string();
                if line.is_empty() {
                    if !data.is_empty() || !event.is_empty() {
                        let name = if event.is_empty() { "message" } else { &event };
                        if !on_event(name, &data) {
                            return Ok((status, None));
                        }
                    }
                    event.clear();
                    data.clear();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim_start().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            scanned = buf.len();
        }
        Ok((status, None))
    }
}
