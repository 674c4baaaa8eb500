//! The stdin request / stdout result exchange with the in-container bootstrap.
//!
//! See `docs/protocol.md`. The host builds the whole request itself (a JSON header line and a
//! ustar archive of validated files); the bootstrap answers in frames on stdout: `O` for the
//! handler's stdout, `R` for the single result.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Protocol version spoken by this host and the bootstraps in `images/`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Frame type of a chunk of the handler's stdout.
pub const FRAME_STDOUT: u8 = b'O';
/// Frame type of a chunk of the handler's stderr.
pub const FRAME_STDERR: u8 = b'E';
/// Frame type of the result.
pub const FRAME_RESULT: u8 = b'R';

/// The largest result frame the host buffers. The payload cap is 100 KB; the rest is room for a
/// long traceback. A larger frame is measured, not read.
pub const MAX_RESULT_FRAME: usize = 4 * 1024 * 1024;

/// Where the handler's module and function are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Dotted module name, importable from the task folder.
    pub module: String,
    /// Function name inside it.
    pub function: String,
}

/// Limits the bootstrap enforces inside the sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct BootstrapLimits {
    /// Bytes a zip attachment may expand to, counted while writing.
    pub unzip_bytes: u64,
    /// Entries all zip attachments may hold together.
    pub unzip_entries: u64,
    /// Items of a top-level list kept in the payload.
    pub payload_items: usize,
}

/// The header line of a request.
#[derive(Debug, Clone, Serialize)]
pub struct RequestHeader {
    /// Protocol version.
    pub v: u32,
    /// The task folder, `/tmp/<uuid>-<yyyy-mm-dd-HH-MM-SS>`.
    pub task_dir: String,
    /// `python` or `powershell`.
    pub language: &'static str,
    /// The handler (Python only).
    pub entry: Option<Entry>,
    /// The InputPayload.
    pub payload: Map<String, Value>,
    /// The context dict.
    pub context: Map<String, Value>,
    /// Zip attachments to expand, in order.
    pub zips: Vec<String>,
    /// Limits applied by the bootstrap.
    pub limits: BootstrapLimits,
    /// Length of the archive that follows the header line.
    pub archive_bytes: u64,
    /// The step's AWS access (absent in mode `none`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsRequest>,
}

/// What a step gets for AWS: credentials and region variables the bootstrap puts into the
/// handler's environment (never the container's, so never in `docker inspect`), and the relay
/// to the egress socket.
#[derive(Clone, Serialize)]
pub struct AwsRequest {
    /// `AWS_*` variables: the step's temporary credentials.
    pub env: std::collections::BTreeMap<String, String>,
    /// The egress relay, when the container has the socket.
    pub relay: Option<RelayRequest>,
}

impl std::fmt::Debug for AwsRequest {
    /// The names only: the values are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsRequest")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("relay", &self.relay)
            .finish()
    }
}

/// The in-container relay: listen on the container's loopback, forward to `socket`.
#[derive(Debug, Clone, Serialize)]
pub struct RelayRequest {
    /// The socket's path inside the container.
    pub socket: String,
    /// Emulator mode: point `AWS_ENDPOINT_URL` at the relay too.
    pub endpoint: bool,
}

/// Errors while building a request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Writing the archive failed (only possible for absurd sizes or names).
    #[error("cannot build the request archive for {name:?}: {source}")]
    Archive {
        /// The file being added.
        name: String,
        /// The error.
        source: std::io::Error,
    },
    /// The header did not serialize.
    #[error("cannot encode the request header: {0}")]
    Header(#[from] serde_json::Error),
}

/// Builds the full stdin byte stream: header line then the archive of `files`.
///
/// `files` are (plain name, bytes) pairs already validated by `step`; the archive holds regular
/// files only, with fixed mode, owner and time, so nothing about the host leaks in.
pub fn encode_request(
    mut header: RequestHeader,
    files: &[(String, Vec<u8>)],
) -> Result<Vec<u8>, RequestError> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut entry = tar::Header::new_ustar();
        entry.set_entry_type(tar::EntryType::Regular);
        entry.set_mode(0o644);
        entry.set_uid(0);
        entry.set_gid(0);
        entry.set_mtime(0);
        entry.set_size(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        builder
            .append_data(&mut entry, name, bytes.as_slice())
            .map_err(|source| RequestError::Archive {
                name: name.clone(),
                source,
            })?;
    }
    let archive = builder
        .into_inner()
        .map_err(|source| RequestError::Archive {
            name: "(end of archive)".into(),
            source,
        })?;
    header.archive_bytes = u64::try_from(archive.len()).unwrap_or(u64::MAX);
    let mut out = serde_json::to_vec(&header)?;
    out.push(b'\n');
    out.extend_from_slice(&archive);
    Ok(out)
}

/// One frame of a traceback, as the bootstrap reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceFrame {
    /// Source file.
    pub file: String,
    /// 1-based line.
    pub line: u64,
    /// Function name.
    pub function: String,
    /// The source line, stripped.
    #[serde(default)]
    pub code: String,
}

/// The error a handler raised (or the bootstrap reported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptError {
    /// Exception type name, e.g. `KeyError`.
    #[serde(rename = "type")]
    pub error_type: String,
    /// The exception's message.
    pub message: String,
    /// The customer's frames, outermost first.
    #[serde(default)]
    pub frames: Vec<TraceFrame>,
}

/// The body of an `R` frame.
#[derive(Debug, Clone, PartialEq)]
pub enum BootstrapResult {
    /// The handler returned.
    Returned {
        /// The returned value (lists already cut to the item limit).
        payload: Value,
        /// The original length of a cut top-level list.
        original_items: Option<u64>,
    },
    /// The handler (or the bootstrap on its behalf) failed.
    Raised(ScriptError),
}

#[derive(Deserialize)]
struct RawResult {
    ok: bool,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    payload_items: Option<u64>,
    #[serde(default)]
    error: Option<ScriptError>,
}

/// Why an `R` frame body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The body is not the result object.
    #[error("the result is not valid JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// `ok` is false but there is no `error`.
    #[error("the result says the handler failed but gives no error")]
    FailureWithoutError,
}

/// Parses an `R` frame body. The body comes from the sandbox: it is untrusted input.
pub fn parse_result(body: &[u8]) -> Result<BootstrapResult, ProtocolError> {
    let raw: RawResult = serde_json::from_slice(body)?;
    if raw.ok {
        Ok(BootstrapResult::Returned {
            payload: raw.payload,
            original_items: raw.payload_items,
        })
    } else {
        raw.error
            .map(BootstrapResult::Raised)
            .ok_or(ProtocolError::FailureWithoutError)
    }
}

/// One frame as the bootstrap writes it: the kind byte, the body's length (big-endian `u32`),
/// the body. A body longer than `u32::MAX` is announced as `u32::MAX` long (the decoder then
/// reports a result too large), never cut silently.
pub fn encode_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(body.len().saturating_add(5));
    frame.push(kind);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// What the frame decoder found in a chunk of stdout.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameEvent {
    /// Bytes the handler wrote to its stdout.
    Stdout(Vec<u8>),
    /// Bytes the handler wrote to its stderr.
    Stderr(Vec<u8>),
    /// A whole result frame body.
    Result(Vec<u8>),
    /// A result frame too large to buffer; its announced length.
    ResultTooLarge(u64),
    /// Bytes that are not frames (a broken bootstrap): shown as stdout, framing stops.
    Unframed(Vec<u8>),
}

#[derive(Debug)]
enum DecoderState {
    Header {
        have: [u8; 5],
        len: usize,
    },
    Body {
        kind: u8,
        remaining: usize,
        buffer: Option<Vec<u8>>,
    },
    Raw,
}

/// Incremental decoder of the stdout frame stream; never buffers more than one result frame.
#[derive(Debug)]
pub struct FrameDecoder {
    state: DecoderState,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self {
            state: DecoderState::Header {
                have: [0; 5],
                len: 0,
            },
        }
    }
}

impl FrameDecoder {
    /// Feeds bytes, calling `emit` for each event found.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut dyn FnMut(FrameEvent)) {
        while !data.is_empty() {
            match &mut self.state {
                DecoderState::Raw => {
                    emit(FrameEvent::Unframed(data.to_vec()));
                    return;
                }
                DecoderState::Header { have, len } => {
                    let take = (5 - *len).min(data.len());
                    have[*len..*len + take].copy_from_slice(&data[..take]);
                    *len += take;
                    data = &data[take..];
                    if *len < 5 {
                        return;
                    }
                    let kind = have[0];
                    let announced = u32::from_be_bytes([have[1], have[2], have[3], have[4]]);
                    let body = usize::try_from(announced).unwrap_or(usize::MAX);
                    match kind {
                        FRAME_STDOUT | FRAME_STDERR => {
                            self.state = DecoderState::Body {
                                kind,
                                remaining: body,
                                buffer: None,
                            }
                        }
                        FRAME_RESULT if body <= MAX_RESULT_FRAME => {
                            self.state = DecoderState::Body {
                                kind,
                                remaining: body,
                                buffer: Some(Vec::with_capacity(body.min(64 * 1024))),
                            }
                        }
                        FRAME_RESULT => {
                            emit(FrameEvent::ResultTooLarge(u64::from(announced)));
                            self.state = DecoderState::Body {
                                kind,
                                remaining: body,
                                buffer: None,
                            }
                        }
                        _ => {
                            let seen = have.to_vec();
                            self.state = DecoderState::Raw;
                            emit(FrameEvent::Unframed(seen));
                        }
                    }
                    self.finish_empty_body(emit);
                }
                DecoderState::Body {
                    kind,
                    remaining,
                    buffer,
                } => {
                    let take = (*remaining).min(data.len());
                    let chunk = &data[..take];
                    data = &data[take..];
                    *remaining -= take;
                    match (*kind, buffer.as_mut()) {
                        (FRAME_STDOUT, _) if !chunk.is_empty() => {
                            emit(FrameEvent::Stdout(chunk.to_vec()))
                        }
                        (FRAME_STDERR, _) if !chunk.is_empty() => {
                            emit(FrameEvent::Stderr(chunk.to_vec()))
                        }
                        (FRAME_STDOUT, _) => {}
                        (_, Some(buf)) => buf.extend_from_slice(chunk),
                        _ => {}
                    }
                    self.finish_empty_body(emit);
                }
            }
        }
    }

    /// Completes a frame whose body has been fully read.
    fn finish_empty_body(&mut self, emit: &mut dyn FnMut(FrameEvent)) {
        if let DecoderState::Body {
            kind,
            remaining: 0,
            buffer,
        } = &mut self.state
        {
            if *kind == FRAME_RESULT
                && let Some(buf) = buffer.take()
            {
                emit(FrameEvent::Result(buf));
            }
            self.state = DecoderState::Header {
                have: [0; 5],
                len: 0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn decode_all(chunks: &[&[u8]]) -> Vec<FrameEvent> {
        let mut d = FrameDecoder::default();
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut |e| out.push(e));
        }
        out
    }

    #[test]
    fn frames_split_at_every_byte_decode_the_same() {
        let mut stream = frame(FRAME_STDOUT, b"hello\n");
        stream.extend(frame(FRAME_STDOUT, b""));
        stream.extend(frame(FRAME_RESULT, br#"{"ok":true,"payload":1}"#));
        let whole = decode_all(&[&stream]);
        let singles: Vec<&[u8]> = stream.chunks(1).collect();
        let bytewise = decode_all(&singles);
        let join = |evs: Vec<FrameEvent>| {
            let mut out = Vec::new();
            let mut res = None;
            for e in evs {
                match e {
                    FrameEvent::Stdout(b) => out.extend(b),
                    FrameEvent::Result(r) => res = Some(r),
                    other => panic!("unexpected {other:?}"),
                }
            }
            (out, res)
        };
        assert_eq!(join(whole), join(bytewise));
    }

    #[test]
    fn a_bad_frame_type_switches_to_raw_output() {
        let evs = decode_all(&[b"Traceback (most recent call last):\n"]);
        assert_eq!(
            evs,
            vec![
                FrameEvent::Unframed(b"Trace".to_vec()),
                FrameEvent::Unframed(b"back (most recent call last):\n".to_vec())
            ]
        );
    }

    #[test]
    fn an_oversized_result_is_measured_not_buffered() {
        let mut head = vec![FRAME_RESULT];
        head.extend_from_slice(&(u32::MAX).to_be_bytes());
        let evs = decode_all(&[&head, &[b'x'; 1000]]);
        assert_eq!(evs, vec![FrameEvent::ResultTooLarge(u64::from(u32::MAX))]);
    }

    #[test]
    fn result_bodies_parse() {
        assert_eq!(
            parse_result(br#"{"ok":true,"payload":[1,2],"payload_items":250}"#).unwrap(),
            BootstrapResult::Returned {
                payload: serde_json::json!([1, 2]),
                original_items: Some(250)
            }
        );
        let err = parse_result(
            br#"{"ok":false,"error":{"type":"KeyError","message":"'x'","frames":[{"file":"f","line":3,"function":"h","code":"x"}]}}"#,
        )
        .unwrap();
        assert!(
            matches!(err, BootstrapResult::Raised(e) if e.error_type == "KeyError" && e.frames.len() == 1)
        );
        assert!(parse_result(b"{").is_err());
        assert!(parse_result(br#"{"ok":false}"#).is_err());
    }

    #[test]
    fn request_is_a_header_line_then_a_ustar_archive() {
        let header = RequestHeader {
            v: PROTOCOL_VERSION,
            task_dir: "/tmp/x".into(),
            language: "python",
            entry: Some(Entry {
                module: "customer_script".into(),
                function: "h".into(),
            }),
            payload: Map::new(),
            context: Map::new(),
            zips: vec![],
            limits: BootstrapLimits {
                unzip_bytes: 1,
                unzip_entries: 1,
                payload_items: 100,
            },
            archive_bytes: 0,
            aws: None,
        };
        let bytes = encode_request(
            header,
            &[(
                "customer_script.py".into(),
                b"def h(e, c):\n  return 1\n".to_vec(),
            )],
        )
        .unwrap();
        let nl = bytes.iter().position(|b| *b == b'\n').unwrap();
        let head: Value = serde_json::from_slice(&bytes[..nl]).unwrap();
        let archive = &bytes[nl + 1..];
        assert_eq!(
            usize::try_from(head["archive_bytes"].as_u64().unwrap()).unwrap(),
            archive.len()
        );
        let mut ar = tar::Archive::new(archive);
        let entries: Vec<_> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                    e.header().entry_type(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![(
                "customer_script.py".to_string(),
                0o644,
                tar::EntryType::Regular
            )]
        );
    }
}
