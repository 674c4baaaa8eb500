//! A raw SSM client for hostile-request tests: SigV4-signs with the daemon's own verifier's
//! functions (checked against botocore's vectors in `src/ssm/sigv4.rs`) but lets a test choose
//! what is signed, the scope, the date, and change headers after signing.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use scriptbox::ssm::sigv4::{Authorization, canonical_request, signature};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Credentials and what the signature covers.
#[derive(Clone)]
pub struct Signer {
    pub key: String,
    pub secret: String,
    pub region: String,
    pub service: String,
    /// Header names signed (lower case); `None`: all that are sent.
    pub signed: Option<Vec<String>>,
    /// Seconds added to now for `X-Amz-Date`.
    pub clock_offset: i64,
}

impl Signer {
    pub fn new(key: &str, secret: &str) -> Signer {
        Signer {
            key: key.into(),
            secret: secret.into(),
            region: "us-east-1".into(),
            service: "ssm".into(),
            signed: None,
            clock_offset: 0,
        }
    }
}

/// The answer: HTTP status and JSON body (Null when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["__type"].as_str().unwrap_or("")
    }
}

/// `AmazonSSM.<op>` with `body`, signed by `signer`; `after_signing` may change headers.
pub async fn call_with(
    addr: &str,
    signer: &Signer,
    op: &str,
    body: &Value,
    after_signing: impl FnOnce(&mut Vec<(String, String)>),
) -> Answer {
    let body = body.to_string();
    let now = chrono::Utc::now() + chrono::Duration::seconds(signer.clock_offset);
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = now.format("%Y%m%d").to_string();
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), addr.into()),
        ("content-type".into(), "application/x-amz-json-1.1".into()),
        ("x-amz-date".into(), amz_date.clone()),
        ("x-amz-target".into(), format!("AmazonSSM.{op}")),
    ];
    let signed: Vec<String> = match &signer.signed {
        Some(s) => s.clone(),
        None => {
            let mut all: Vec<String> = headers.iter().map(|(k, _)| k.clone()).collect();
            all.sort();
            all
        }
    };
    let mut map = HeaderMap::new();
    for (k, v) in &headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let auth = Authorization {
        access_key: signer.key.clone(),
        date: date.clone(),
        region: signer.region.clone(),
        service: signer.service.clone(),
        signed_headers: signed.clone(),
        signature: String::new(),
    };
    let canonical = canonical_request(&Method::POST, "/", "", &map, &signed, body.as_bytes());
    let sig = signature(&signer.secret, &auth, &amz_date, &canonical);
    headers.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{date}/{}/{}/aws4_request, SignedHeaders={}, Signature={sig}",
            signer.key,
            signer.region,
            signer.service,
            signed.join(";")
        ),
    ));
    after_signing(&mut headers);
    let mut req = String::from("POST / HTTP/1.1\r\n");
    for (k, v) in &headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    };
    let raw = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .expect("the SSM API answers within 60 s");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let text = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

/// `AmazonSSM.<op>` with `body`, correctly signed.
pub async fn call(addr: &str, signer: &Signer, op: &str, body: &Value) -> Answer {
    call_with(addr, signer, op, body, |_| {}).await
}

/// The daemon's health over its Unix socket, timed: (status, seconds).
pub async fn timed_health(socket: &std::path::Path) -> (u16, f64) {
    let client =
        scriptbox::client::Client::new(scriptbox::client::Endpoint::Unix(socket.to_path_buf()));
    let began = std::time::Instant::now();
    let status = match tokio::time::timeout(Duration::from_secs(5), client.get("/v1/health")).await
    {
        Ok(Ok(a)) => a.status,
        _ => 0,
    };
    (status, began.elapsed().as_secs_f64())
}

/// Resident memory of a process, bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}
