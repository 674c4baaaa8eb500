//! AWS Signature Version 4: verifying the `Authorization` header of a request.
//!
//! Canonical request (AWS's "Create a canonical request"): method, URI path, query string
//! (sorted, URI-encoded), the signed headers (lower-case names, trimmed values with inner runs of
//! spaces folded, one `name:value` line each, in the order of `SignedHeaders`), the
//! `SignedHeaders` list, and the hex SHA-256 of the body. String to sign:
//! `AWS4-HMAC-SHA256\n<X-Amz-Date>\n<date>/<region>/<service>/aws4_request\n<hex sha256 of the
//! canonical request>`. Signing key: HMAC chain `AWS4<secret>` → date → region → service →
//! `aws4_request`.

use std::collections::HashMap;
use std::path::Path;

use axum::http::{HeaderMap, Method};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::errors::SsmError;

type HmacSha256 = Hmac<Sha256>;

/// How far a request's `X-Amz-Date` may be from now (AWS: 5 minutes).
pub const MAX_SKEW_SECS: i64 = 5 * 60;

/// The tenant of a key line without a third column (and of every anonymous caller).
pub const DEFAULT_TENANT: &str = "default";

/// The service name a credential scope must carry.
pub const SERVICE: &str = "ssm";

/// One access key: its secret and the tenant its caller acts as.
#[derive(Clone)]
struct Key {
    secret: String,
    tenant: String,
}

/// Access key id → secret and tenant.
#[derive(Clone, Default)]
pub struct AccessKeys {
    keys: HashMap<String, Key>,
}

/// Who a verified request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The access key id (`ExecutedBy`).
    pub access_key: Option<String>,
    /// The tenant whose documents and executions the caller sees.
    pub tenant: String,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessKeys({} keys)", self.keys.len())
    }
}

/// True for a tenant name that can be stored and compared as is.
fn valid_tenant(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Why the access keys file is refused.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// It cannot be read.
    #[error("cannot read the SSM access keys file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line breaks a rule.
    #[error("SSM access keys file {}: {line}", .path.display())]
    Line {
        /// The file.
        path: std::path::PathBuf,
        /// The line's rule.
        line: KeyLineError,
    },
    /// It holds no key.
    #[error("the SSM access keys file {} holds no key", .path.display())]
    Empty {
        /// The file.
        path: std::path::PathBuf,
    },
}

/// The rule a line of the access keys file breaks.
#[derive(Debug, thiserror::Error)]
pub enum KeyLineError {
    /// Not two or three fields.
    #[error("line {line}: expected `ACCESS_KEY_ID SECRET_ACCESS_KEY [TENANT]`")]
    Shape {
        /// 1-based.
        line: usize,
    },
    /// A tenant name out of its alphabet or length.
    #[error("line {line}: the tenant {tenant:?} must be 1 to 64 of A-Z a-z 0-9 _ - .")]
    Tenant {
        /// 1-based.
        line: usize,
        /// The name.
        tenant: String,
    },
    /// The same key twice.
    #[error("line {line}: the access key {id} appears twice")]
    Twice {
        /// 1-based.
        line: usize,
        /// The key id.
        id: String,
    },
}

impl AccessKeys {
    /// Reads `ACCESS_KEY_ID SECRET [TENANT]` lines (whitespace or `:` between; `#` comments,
    /// blanks). A line without a tenant belongs to [`DEFAULT_TENANT`].
    pub fn from_file(path: &Path) -> Result<AccessKeys, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let keys = AccessKeys::parse(&text).map_err(|line| KeysError::Line {
            path: path.to_path_buf(),
            line,
        })?;
        if keys.keys.is_empty() {
            return Err(KeysError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(keys)
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<AccessKeys, KeyLineError> {
        let mut keys = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line
                .split(|c: char| c.is_whitespace() || c == ':')
                .filter(|f| !f.is_empty())
                .collect();
            let (id, secret, tenant) = match fields.as_slice() {
                [id, secret] => (*id, *secret, DEFAULT_TENANT),
                [id, secret, tenant] => (*id, *secret, *tenant),
                _ => return Err(KeyLineError::Shape { line: n + 1 }),
            };
            if !valid_tenant(tenant) {
                return Err(KeyLineError::Tenant {
                    line: n + 1,
                    tenant: tenant.to_string(),
                });
            }
            if keys.contains_key(id) {
                return Err(KeyLineError::Twice {
                    line: n + 1,
                    id: id.to_string(),
                });
            }
            keys.insert(
                id.to_string(),
                Key {
                    secret: secret.to_string(),
                    tenant: tenant.to_string(),
                },
            );
        }
        Ok(AccessKeys { keys })
    }

    /// A set of keys from pairs (all in the default tenant).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> AccessKeys {
        AccessKeys {
            keys: pairs
                .iter()
                .map(|(a, b)| {
                    (
                        a.to_string(),
                        Key {
                            secret: b.to_string(),
                            tenant: DEFAULT_TENANT.to_string(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The tenant of a key id.
    pub fn tenant_of(&self, id: &str) -> Option<&str> {
        self.keys.get(id).map(|k| k.tenant.as_str())
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id.
    pub access_key: String,
    /// `yyyymmdd`.
    pub date: String,
    /// The region.
    pub region: String,
    /// The service.
    pub service: String,
    /// Lower-case header names, in order.
    pub signed_headers: Vec<String>,
    /// Hex.
    pub signature: String,
}

fn incomplete(what: &str) -> SsmError {
    SsmError::client(
        "IncompleteSignatureException",
        format!("Authorization header requires {what}."),
    )
}

/// Parses the header; `None` when absent.
pub fn parse_authorization(headers: &HeaderMap) -> Result<Option<Authorization>, SsmError> {
    let Some(value) = headers.get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| incomplete("an ASCII value"))?
        .trim();
    let Some(rest) = value.strip_prefix("AWS4-HMAC-SHA256") else {
        return Err(SsmError::client(
            "IncompleteSignatureException",
            "Authorization header must use the AWS4-HMAC-SHA256 algorithm.",
        ));
    };
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k.trim() {
            "Credential" => credential = Some(v.trim().to_string()),
            "SignedHeaders" => signed = Some(v.trim().to_string()),
            "Signature" => signature = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| incomplete("'Credential' parameter"))?;
    let signed = signed.ok_or_else(|| incomplete("'SignedHeaders' parameter"))?;
    let signature = signature.ok_or_else(|| incomplete("'Signature' parameter"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 || parts[4] != "aws4_request" {
        return Err(incomplete(
            "a Credential of the form <key>/<date>/<region>/<service>/aws4_request",
        ));
    }
    Ok(Some(Authorization {
        access_key: parts[0].to_string(),
        date: parts[1].to_string(),
        region: parts[2].to_string(),
        service: parts[3].to_string(),
        signed_headers: signed.split(';').map(|h| h.to_ascii_lowercase()).collect(),
        signature,
    }))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// URI-encodes per SigV4 (unreserved characters kept; `/` kept when `path`).
fn uri_encode(s: &str, path: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if path => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The canonical request.
pub fn canonical_request(
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    signed_headers: &[String],
    body: &[u8],
) -> String {
    let mut lines = String::new();
    for h in signed_headers {
        let v = header_value(headers, h).unwrap_or_default();
        lines.push_str(&format!("{h}:{v}\n"));
    }
    let path = if path.is_empty() { "/" } else { path };
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.as_str(),
        uri_encode(&percent_decode(path), true),
        canonical_query(query),
        lines,
        signed_headers.join(";"),
        hex(&Sha256::digest(body))
    )
}

/// The expected signature of a request with this secret.
pub fn signature(secret: &str, auth: &Authorization, amz_date: &str, canonical: &str) -> String {
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    let k_region = hmac(&k_date, auth.region.as_bytes());
    let k_service = hmac(&k_region, auth.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex(&hmac(&k_signing, to_sign.as_bytes()))
}

fn parse_amz_date(s: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// What a signature must cover: the daemon's region (the scope's service must be [`SERVICE`]).
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// The region of the credential scope (`context.region`).
    pub region: &'a str,
}

fn refused(message: impl Into<String>) -> SsmError {
    SsmError::client("InvalidSignatureException", message)
}

/// The headers that must be signed when present: `host`, `x-amz-date` and every `x-amz-*`
/// (the operation's `X-Amz-Target` among them) always; `content-type` too, since it selects
/// the protocol. A signed header the request does not carry is refused as well.
fn check_signed_headers(auth: &Authorization, headers: &HeaderMap) -> Result<(), SsmError> {
    for must in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == must) {
            return Err(refused(format!("The {must} header must be signed.")));
        }
    }
    for name in headers.keys() {
        let n = name.as_str();
        if (n.starts_with("x-amz-") || n == "content-type")
            && !auth.signed_headers.iter().any(|h| h == n)
        {
            return Err(refused(format!(
                "The {n} header is present but not signed: sign every x-amz-* header and Content-Type."
            )));
        }
    }
    for h in &auth.signed_headers {
        if !headers.contains_key(h.as_str()) {
            return Err(refused(format!(
                "The signed header {h} is not in the request."
            )));
        }
    }
    Ok(())
}

/// Verifies a request against the keys; `now` is epoch seconds. Returns the caller: the
/// access key id and its tenant.
#[allow(clippy::too_many_arguments)] // reason: the parts of one HTTP request, kept apart for tests
pub fn verify(
    keys: &AccessKeys,
    expect: &Expect<'_>,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Caller, SsmError> {
    let auth = parse_authorization(headers)?.ok_or_else(|| {
        SsmError::client(
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token",
        )
    })?;
    let Some(key) = keys.keys.get(&auth.access_key) else {
        return Err(SsmError::client(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    };
    let amz_date = header_value(headers, "x-amz-date").ok_or_else(|| {
        SsmError::client(
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
    })?;
    check_signed_headers(&auth, headers)?;
    if auth.service != SERVICE {
        return Err(refused(format!(
            "Credential should be scoped to correct service: '{SERVICE}'."
        )));
    }
    if auth.region != expect.region {
        return Err(refused(format!(
            "Credential should be scoped to a valid region: '{}'.",
            expect.region
        )));
    }
    let when = parse_amz_date(&amz_date).ok_or_else(|| {
        SsmError::client(
            "IncompleteSignatureException",
            format!("X-Amz-Date {amz_date:?} is not of the form yyyyMMddTHHmmssZ."),
        )
    })?;
    if !amz_date.starts_with(&auth.date) {
        return Err(refused("The Credential's date does not match X-Amz-Date."));
    }
    if now.abs_diff(when) > MAX_SKEW_SECS.unsigned_abs() {
        return Err(refused(format!(
            "Signature expired: {amz_date} is now earlier or later than 5 minutes from the server's time."
        )));
    }
    let canonical = canonical_request(method, path, query, headers, &auth.signed_headers, body);
    let expected = signature(&key.secret, &auth, &amz_date, &canonical);
    let same: bool = expected
        .as_bytes()
        .ct_eq(auth.signature.to_ascii_lowercase().as_bytes())
        .into();
    if !same {
        return Err(SsmError {
            status: axum::http::StatusCode::BAD_REQUEST,
            code: "InvalidSignatureException",
            message: "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.".into(),
        });
    }
    Ok(Caller {
        access_key: Some(auth.access_key),
        tenant: key.tenant.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    // 2015-08-30T12:36:00Z
    const AT: i64 = 1_440_938_160;
    const US: Expect<'static> = Expect {
        region: "us-east-1",
    };

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// AWS's SigV4 test suite, `get-vanilla` (botocore computes the same signature).
    #[test]
    fn aws_get_vanilla_vector() {
        let h = headers(&[
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
        ]);
        let keys = AccessKeys::from_pairs(&[("AKIDEXAMPLE", SECRET)]);
        let canonical = canonical_request(
            &Method::GET,
            "/",
            "",
            &h,
            &["host".into(), "x-amz-date".into()],
            b"",
        );
        assert_eq!(
            canonical,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // The vector's scope names the service `service`: the daemon takes only `ssm`.
        assert_eq!(
            verify(&keys, &US, &Method::GET, "/", "", &h, b"", AT)
                .unwrap_err()
                .code,
            "InvalidSignatureException"
        );
    }

    /// An SSM request signed by botocore 1.x (`SigV4Auth(creds, "ssm", "us-east-1")` at the
    /// same instant), as the AWS CLI and boto3 send it.
    fn botocore_ssm_request() -> (HeaderMap, &'static [u8]) {
        (
            headers(&[
                ("host", "127.0.0.1:4583"),
                ("x-amz-target", "AmazonSSM.GetDocument"),
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-date", "20150830T123600Z"),
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/ssm/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=1580eec04f895832d9f8ee447d4075bc409ec97f7d41186be214ebfd16abdd1d",
                ),
            ]),
            br#"{"Name":"MyDoc"}"#,
        )
    }

    #[test]
    fn a_botocore_signed_ssm_request_verifies() {
        let (h, body) = botocore_ssm_request();
        let keys = AccessKeys::from_pairs(&[("AKIDEXAMPLE", SECRET)]);
        let caller = verify(&keys, &US, &Method::POST, "/", "", &h, body, AT).unwrap();
        assert_eq!(caller.access_key.as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(caller.tenant, DEFAULT_TENANT);
    }

    #[test]
    fn tampering_wrong_secret_unknown_key_and_old_requests_are_refused() {
        let (h, body) = botocore_ssm_request();
        let keys = AccessKeys::from_pairs(&[("AKIDEXAMPLE", SECRET)]);
        let code = |r: Result<Caller, SsmError>| r.unwrap_err().code;
        // The body changed.
        assert_eq!(
            code(verify(
                &keys,
                &US,
                &Method::POST,
                "/",
                "",
                &h,
                br#"{"Name":"Other"}"#,
                AT
            )),
            "InvalidSignatureException"
        );
        // A signed header changed.
        let mut h2 = h.clone();
        h2.insert(
            "x-amz-target",
            HeaderValue::from_static("AmazonSSM.DeleteDocument"),
        );
        assert_eq!(
            code(verify(&keys, &US, &Method::POST, "/", "", &h2, body, AT)),
            "InvalidSignatureException"
        );
        // Another secret for the key.
        let other = AccessKeys::from_pairs(&[("AKIDEXAMPLE", "not-the-secret")]);
        assert_eq!(
            code(verify(&other, &US, &Method::POST, "/", "", &h, body, AT)),
            "InvalidSignatureException"
        );
        // An unknown key.
        let unknown = AccessKeys::from_pairs(&[("SOMEONE", SECRET)]);
        assert_eq!(
            code(verify(&unknown, &US, &Method::POST, "/", "", &h, body, AT)),
            "UnrecognizedClientException"
        );
        // Replayed 6 minutes later (AWS's window is 5 minutes).
        assert_eq!(
            code(verify(
                &keys,
                &US,
                &Method::POST,
                "/",
                "",
                &h,
                body,
                AT + 6 * 60
            )),
            "InvalidSignatureException"
        );
        // No Authorization at all.
        let mut h3 = h.clone();
        h3.remove("authorization");
        assert_eq!(
            code(verify(&keys, &US, &Method::POST, "/", "", &h3, body, AT)),
            "MissingAuthenticationTokenException"
        );
    }

    #[test]
    fn the_keys_file_is_read() {
        let k = AccessKeys::parse("# comment\n\nAKID1 secret1\nAKID2:secret2\nAKID3 s3 team-a\n")
            .unwrap();
        assert_eq!(k.keys["AKID1"].secret, "secret1");
        assert_eq!(k.keys["AKID2"].secret, "secret2");
        assert_eq!(k.tenant_of("AKID1"), Some(DEFAULT_TENANT));
        assert_eq!(k.tenant_of("AKID3"), Some("team-a"));
        assert!(AccessKeys::parse("lonely\n").is_err());
        assert!(AccessKeys::parse("a b c d\n").is_err());
        assert!(AccessKeys::parse("a b ten/ant\n").is_err());
        assert!(AccessKeys::parse("a b\na c\n").is_err());
    }

    /// Signs `h` (adding the Authorization header) over `signed` with the test secret.
    fn sign(h: &mut HeaderMap, signed: &[&str], region: &str, service: &str, body: &[u8]) {
        let signed: Vec<String> = signed.iter().map(|s| s.to_string()).collect();
        let auth = Authorization {
            access_key: "AKIDEXAMPLE".into(),
            date: "20150830".into(),
            region: region.into(),
            service: service.into(),
            signed_headers: signed.clone(),
            signature: String::new(),
        };
        let canonical = canonical_request(&Method::POST, "/", "", h, &signed, body);
        let sig = signature(SECRET, &auth, "20150830T123600Z", &canonical);
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/{region}/{service}/aws4_request, SignedHeaders={}, Signature={sig}",
                signed.join(";")
            ))
            .unwrap(),
        );
    }

    #[test]
    fn unsigned_amz_headers_and_foreign_scopes_are_refused() {
        let keys = AccessKeys::from_pairs(&[("AKIDEXAMPLE", SECRET)]);
        let body = br#"{"Name":"MyDoc"}"#;
        let base = || {
            headers(&[
                ("host", "127.0.0.1:4583"),
                ("x-amz-target", "AmazonSSM.DeleteDocument"),
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-date", "20150830T123600Z"),
            ])
        };
        let all = ["content-type", "host", "x-amz-date", "x-amz-target"];
        let check = |h: &HeaderMap| {
            verify(&keys, &US, &Method::POST, "/", "", h, body, AT)
                .err()
                .map(|e| (e.code, e.message))
        };
        let mut ok = base();
        sign(&mut ok, &all, "us-east-1", "ssm", body);
        assert_eq!(check(&ok), None);
        // Signed over host and x-amz-date only: the target could be switched.
        let mut h = base();
        sign(&mut h, &["host", "x-amz-date"], "us-east-1", "ssm", body);
        let (code, msg) = check(&h).unwrap();
        assert_eq!(code, "InvalidSignatureException");
        assert!(
            msg.contains("content-type") || msg.contains("x-amz-target"),
            "{msg}"
        );
        let mut h = base();
        sign(
            &mut h,
            &["content-type", "host", "x-amz-date"],
            "us-east-1",
            "ssm",
            body,
        );
        assert!(check(&h).unwrap().1.contains("x-amz-target"));
        // Another service or region.
        for (region, service) in [("mars-1", "s3"), ("us-east-1", "s3"), ("eu-west-1", "ssm")] {
            let mut h = base();
            sign(&mut h, &all, region, service, body);
            assert_eq!(
                check(&h).unwrap().0,
                "InvalidSignatureException",
                "{region} {service}"
            );
        }
        // A signed header that the request lacks.
        let mut h = base();
        sign(
            &mut h,
            &[
                "content-type",
                "host",
                "x-amz-date",
                "x-amz-target",
                "x-amz-security-token",
            ],
            "us-east-1",
            "ssm",
            body,
        );
        assert_eq!(check(&h).unwrap().0, "InvalidSignatureException");
    }

    #[test]
    fn queries_are_sorted_and_encoded() {
        assert_eq!(canonical_query("b=2&a=1&c=x%20y"), "a=1&b=2&c=x%20y");
        assert_eq!(uri_encode("/a b/c", true), "/a%20b/c");
    }
}
