//! Signals sent to a running execution (`scriptbox signal`, SSM's `SendAutomationSignal`):
//! `aws:pause` waits for `Resume`, `aws:approve` for `Approve` / `Reject`.
//!
//! Whoever runs an execution keeps its [`SignalSender`] and passes the [`SignalInbox`] in
//! `ExecOptions::signals`. A waiting step declares what it waits for ([`SignalInbox::wait_for`]);
//! [`SignalSender::send`] checks a signal against that at once, so the sender learns whether
//! it was taken or why not. Decisions where AWS is silent **(ours)**:
//! - A signal the execution is not waiting for right now (no step waiting, or a step waiting for
//!   another type) is refused, never queued: AWS's `InvalidAutomationSignalException` ("the
//!   signal isn't valid for the current Automation execution") is the answer.
//! - `StartStep` and `StopStep` drive executions in Interactive mode; scriptbox runs Auto mode
//!   only, so they are always refused.
//! - `Payload` is bounded ([`check_payload`]): at most [`MAX_PAYLOAD_KEYS`] keys of at most
//!   [`MAX_PAYLOAD_KEY_CHARS`] characters, each at most [`MAX_PAYLOAD_VALUES`] strings of at
//!   most [`MAX_PAYLOAD_VALUE_CHARS`] characters (SSM's `AutomationParameterKey` / `Value`).
//! - `StepName` in a Resume's payload is optional; when given it must name the waiting step.
//! - An approver is matched by name ([`approver_matches`]): an `Approvers` entry names the
//!   sender when it equals the sender's name or ends in it (`arn:aws:iam::…:user/NAME`,
//!   `…:role/NAME`, `…:assumed-role/ROLE/SESSION` for ROLE or SESSION). A local sender is the OS
//!   user name (`scriptbox signal` to `scriptbox run` or to the daemon's native API, both owner
//!   only); an SSM caller is its access key id. Each approver decides once.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

/// A signal's type, as SSM's `SignalType` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalKind {
    /// Approves an `aws:approve` step.
    Approve,
    /// Rejects an `aws:approve` step.
    Reject,
    /// Resumes an `aws:pause` step.
    Resume,
    /// Starts a step (`StepName`): Interactive mode, refused by scriptbox.
    StartStep,
    /// Stops a step (`StepExecutionId`): Interactive mode, refused by scriptbox.
    StopStep,
}

impl SignalKind {
    /// Every type, as SSM lists them.
    pub const ALL: [SignalKind; 5] = [
        SignalKind::Approve,
        SignalKind::Reject,
        SignalKind::StartStep,
        SignalKind::StopStep,
        SignalKind::Resume,
    ];

    /// SSM's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Approve => "Approve",
            SignalKind::Reject => "Reject",
            SignalKind::Resume => "Resume",
            SignalKind::StartStep => "StartStep",
            SignalKind::StopStep => "StopStep",
        }
    }

    /// The type spelled `s` exactly as SSM spells it.
    pub fn parse(s: &str) -> Option<SignalKind> {
        SignalKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for SignalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One signal, with its payload (`Comment`, `StepName`...) and who sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Its type.
    pub kind: SignalKind,
    /// SSM's `Payload`: each key a list of strings (checked by [`check_payload`]).
    pub payload: Map<String, Value>,
    /// Who sent it (the SSM caller's access key id, or the local user's name).
    pub sender: String,
    /// The `Approvers` entry the sender matched (set by [`SignalSender::send`] for Approve and
    /// Reject).
    pub approver: Option<String>,
}

impl Signal {
    /// A signal of `kind` from `sender`, with `payload`.
    pub fn new(kind: SignalKind, payload: Map<String, Value>, sender: impl Into<String>) -> Signal {
        Signal {
            kind,
            payload,
            sender: sender.into(),
            approver: None,
        }
    }

    /// The payload's first `key` value (`Comment`, `StepName`).
    pub fn first(&self, key: &str) -> Option<&str> {
        match self.payload.get(key)? {
            Value::Array(a) => a.first().and_then(Value::as_str),
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// The most keys a signal's payload may hold **(ours)**.
pub const MAX_PAYLOAD_KEYS: usize = 10;
/// The longest payload key, characters (SSM's `AutomationParameterKey`).
pub const MAX_PAYLOAD_KEY_CHARS: usize = 50;
/// The most values one payload key may hold **(ours)**.
pub const MAX_PAYLOAD_VALUES: usize = 10;
/// The longest payload value, characters (SSM's `AutomationParameterValue`).
pub const MAX_PAYLOAD_VALUE_CHARS: usize = 512;

/// Why a signal was not taken. Its `Display` is the message the sender sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// No step is waiting for a signal now.
    #[error(
        "the execution is not waiting for a signal (no aws:pause or aws:approve step is waiting); the {0} signal is refused, not queued"
    )]
    NotWaiting(SignalKind),
    /// The waiting step waits for other types.
    #[error("step {step:?} is waiting for {accepts}, not {kind}")]
    NotAccepted {
        /// The type sent.
        kind: SignalKind,
        /// The waiting step.
        step: String,
        /// What it waits for (`Resume`, `Approve or Reject`).
        accepts: String,
    },
    /// StartStep / StopStep.
    #[error(
        "{0} applies to executions in Interactive mode; scriptbox runs executions in Auto mode only"
    )]
    Interactive(SignalKind),
    /// `StepName` names another step than the waiting one.
    #[error("StepName {named:?} is not the waiting step (step {waiting:?} is waiting)")]
    WrongStep {
        /// As sent.
        named: String,
        /// The waiting step.
        waiting: String,
    },
    /// The sender is none of the step's approvers.
    #[error("{sender:?} is not one of step {step:?}'s approvers ({approvers})")]
    NotAnApprover {
        /// Who sent it.
        sender: String,
        /// The waiting step.
        step: String,
        /// The Approvers, joined.
        approvers: String,
    },
    /// This approver already decided.
    #[error("approver {0:?} has already decided on this step")]
    AlreadyDecided(String),
    /// The payload breaks a bound or is not a map of string lists.
    #[error("Payload: {0}")]
    BadPayload(String),
    /// The queue is full (the step is not reading: it is ending).
    #[error("the execution's signal queue is full; try again")]
    Full,
    /// The execution ended.
    #[error("the execution has ended")]
    Ended,
}

/// Checks a signal's `Payload` (absent or null: empty): a map of at most [`MAX_PAYLOAD_KEYS`]
/// keys, each a string or a list of at most [`MAX_PAYLOAD_VALUES`] strings, within the lengths.
/// A lone string becomes a one-item list.
pub fn check_payload(v: Option<&Value>) -> Result<Map<String, Value>, SignalError> {
    let bad = |m: String| SignalError::BadPayload(m);
    let m = match v {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad("must be a map of string lists".into())),
    };
    if m.len() > MAX_PAYLOAD_KEYS {
        return Err(bad(format!("{} keys; at most {MAX_PAYLOAD_KEYS}", m.len())));
    }
    let mut out = Map::new();
    for (k, v) in m {
        let n = k.chars().count();
        if n == 0 || n > MAX_PAYLOAD_KEY_CHARS {
            return Err(bad(format!(
                "a key must be 1 to {MAX_PAYLOAD_KEY_CHARS} characters"
            )));
        }
        let items: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            s @ Value::String(_) => vec![s],
            _ => return Err(bad(format!("{k}: must be a list of strings"))),
        };
        if items.len() > MAX_PAYLOAD_VALUES {
            return Err(bad(format!(
                "{k}: {} values; at most {MAX_PAYLOAD_VALUES}",
                items.len()
            )));
        }
        let mut list = Vec::new();
        for item in items {
            let Some(s) = item.as_str() else {
                return Err(bad(format!("{k}: must be a list of strings")));
            };
            if s.chars().count() > MAX_PAYLOAD_VALUE_CHARS {
                return Err(bad(format!(
                    "{k}: a value is longer than {MAX_PAYLOAD_VALUE_CHARS} characters"
                )));
            }
            list.push(Value::String(s.to_string()));
        }
        out.insert(k.clone(), Value::Array(list));
    }
    Ok(out)
}

/// Whether the `Approvers` entry `entry` names `sender` **(ours)**: equal, or the entry is an ARN
/// whose last name is the sender (`user/NAME`, `role/NAME`, the role or the session of
/// `assumed-role/ROLE/SESSION`).
pub fn approver_matches(entry: &str, sender: &str) -> bool {
    if sender.is_empty() {
        return false;
    }
    if entry == sender {
        return true;
    }
    let Some(resource) = entry
        .strip_prefix("arn:")
        .and_then(|r| r.splitn(5, ':').nth(4))
    else {
        return false;
    };
    let parts: Vec<&str> = resource.split('/').collect();
    match parts.as_slice() {
        ["assumed-role", role, session] => *role == sender || *session == sender,
        [kind, .., name] if matches!(*kind, "user" | "role") => *name == sender,
        _ => false,
    }
}

/// What a waiting step waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The step's name.
    pub step: String,
    /// The signal types it takes.
    pub accepts: Vec<SignalKind>,
    /// For aws:approve: the `Approvers` entries.
    pub approvers: Vec<String>,
    /// The entries that have decided (each decides once).
    decided: Vec<String>,
}

impl Waiting {
    /// aws:pause's wait: a Resume.
    pub fn resume(step: &str) -> Waiting {
        Waiting {
            step: step.to_string(),
            accepts: vec![SignalKind::Resume],
            approvers: Vec::new(),
            decided: Vec::new(),
        }
    }

    /// aws:approve's wait: Approve or Reject from one of `approvers`.
    pub fn approval(step: &str, approvers: Vec<String>) -> Waiting {
        Waiting {
            step: step.to_string(),
            accepts: vec![SignalKind::Approve, SignalKind::Reject],
            approvers,
            decided: Vec::new(),
        }
    }

    /// Checks `signal` against the wait; for an approval, records and names the approver.
    fn admit(&mut self, signal: &mut Signal) -> Result<(), SignalError> {
        if matches!(signal.kind, SignalKind::StartStep | SignalKind::StopStep) {
            return Err(SignalError::Interactive(signal.kind));
        }
        if !self.accepts.contains(&signal.kind) {
            return Err(SignalError::NotAccepted {
                kind: signal.kind,
                step: self.step.clone(),
                accepts: self
                    .accepts
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
            });
        }
        if let Some(named) = signal.first("StepName")
            && named != self.step
        {
            return Err(SignalError::WrongStep {
                named: named.to_string(),
                waiting: self.step.clone(),
            });
        }
        if signal.kind == SignalKind::Resume {
            return Ok(());
        }
        let Some(entry) = self
            .approvers
            .iter()
            .find(|a| approver_matches(a, &signal.sender))
            .cloned()
        else {
            return Err(SignalError::NotAnApprover {
                sender: signal.sender.clone(),
                step: self.step.clone(),
                approvers: self.approvers.join(", "),
            });
        };
        if self.decided.contains(&entry) {
            return Err(SignalError::AlreadyDecided(entry));
        }
        self.decided.push(entry.clone());
        signal.approver = Some(entry);
        Ok(())
    }
}

/// Signals a running execution has been sent and its waiting step has not read yet.
#[derive(Debug)]
pub struct SignalInbox {
    receiver: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Signal>>,
    waiting: Arc<Mutex<Option<Waiting>>>,
}

/// The sending side of an execution's [`SignalInbox`] (kept by whoever runs the execution).
#[derive(Debug, Clone)]
pub struct SignalSender {
    tx: tokio::sync::mpsc::Sender<Signal>,
    waiting: Arc<Mutex<Option<Waiting>>>,
}

/// The most signals queued for one execution before a sender is refused **(ours)**.
pub const MAX_QUEUED_SIGNALS: usize = 100;

/// A new inbox and its sender.
pub fn inbox() -> (SignalSender, SignalInbox) {
    let (tx, rx) = tokio::sync::mpsc::channel(MAX_QUEUED_SIGNALS);
    let waiting = Arc::new(Mutex::new(None));
    (
        SignalSender {
            tx,
            waiting: waiting.clone(),
        },
        SignalInbox {
            receiver: tokio::sync::Mutex::new(rx),
            waiting,
        },
    )
}

impl SignalSender {
    /// Delivers `signal` if the execution waits for it now; returns the waiting step's name, or
    /// why it was refused.
    pub fn send(&self, mut signal: Signal) -> Result<String, SignalError> {
        let mut guard = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(signal.kind, SignalKind::StartStep | SignalKind::StopStep) {
            return Err(SignalError::Interactive(signal.kind));
        }
        let Some(waiting) = guard.as_mut() else {
            return Err(if self.tx.is_closed() {
                SignalError::Ended
            } else {
                SignalError::NotWaiting(signal.kind)
            });
        };
        // Checked on a copy: a signal the queue refuses leaves no decision behind.
        let mut admitted = waiting.clone();
        admitted.admit(&mut signal)?;
        match self.tx.try_send(signal) {
            Ok(()) => {
                let step = admitted.step.clone();
                *waiting = admitted;
                Ok(step)
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => Err(SignalError::Full),
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Err(SignalError::Ended),
        }
    }
}

/// A step's wait, declared until dropped (then signals are refused again, and any left unread
/// are dropped).
#[derive(Debug)]
pub struct WaitGuard<'i> {
    inbox: &'i SignalInbox,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        *self.inbox.waiting.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // Nothing can be sent now; what came after the step stopped reading goes.
        if let Ok(mut rx) = self.inbox.receiver.try_lock() {
            while rx.try_recv().is_ok() {}
        }
    }
}

impl SignalInbox {
    /// Declares that a step waits for `waiting` until the guard is dropped.
    pub fn wait_for(&self, waiting: Waiting) -> WaitGuard<'_> {
        *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) = Some(waiting);
        WaitGuard { inbox: self }
    }

    /// The next signal; `None` once every sender is gone.
    pub async fn next(&self) -> Option<Signal> {
        self.receiver.lock().await.recv().await
    }
}

/// The name of the OS user running this process (a local signal's sender): the password
/// database's name for the real uid, else `$USER`, else `uid:N`.
pub fn local_user() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut buf = vec![0u8; 4096];
    // SAFETY: a zeroed passwd is a valid out-parameter; buf outlives the call and its length
    // is passed; getpwuid_r writes only within them.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: on success pw_name points at a NUL-terminated string inside buf.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        if let Ok(s) = name.to_str()
            && !s.is_empty()
        {
            return s.to_string();
        }
    }
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid:{uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sig(kind: SignalKind, sender: &str, payload: Value) -> Signal {
        Signal::new(kind, check_payload(Some(&payload)).unwrap(), sender)
    }

    #[test]
    fn kinds_parse_as_ssm_spells_them() {
        for k in SignalKind::ALL {
            assert_eq!(SignalKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(SignalKind::parse("resume"), None);
    }

    #[test]
    fn approvers_match_names_and_arns() {
        assert!(approver_matches("alice", "alice"));
        assert!(approver_matches(
            "arn:aws:iam::123456789012:user/alice",
            "alice"
        ));
        assert!(approver_matches(
            "arn:aws:iam::123456789012:user/team/alice",
            "alice"
        ));
        assert!(approver_matches(
            "arn:aws:iam::123456789012:role/Ops",
            "Ops"
        ));
        assert!(approver_matches(
            "arn:aws:sts::123456789012:assumed-role/Ops/alice",
            "alice"
        ));
        assert!(!approver_matches(
            "arn:aws:iam::123456789012:user/alice",
            "bob"
        ));
        assert!(!approver_matches("alice", "alic"));
        assert!(!approver_matches(
            "arn:aws:iam::123456789012:user/alice",
            ""
        ));
        assert!(!approver_matches("arn:aws:sns:us-east-1:1:alice", "alice"));
    }

    #[test]
    fn payloads_are_bounded() {
        assert_eq!(check_payload(None).unwrap(), Map::new());
        assert_eq!(
            check_payload(Some(&json!({"Comment": "ok"}))).unwrap()["Comment"],
            json!(["ok"])
        );
        assert!(check_payload(Some(&json!(["x"]))).is_err());
        assert!(check_payload(Some(&json!({"Comment": [1]}))).is_err());
        let long = "x".repeat(MAX_PAYLOAD_VALUE_CHARS + 1);
        assert!(
            check_payload(Some(&json!({"Comment": [long]})))
                .unwrap_err()
                .to_string()
                .contains("longer than 512")
        );
        let many: Map<String, Value> = (0..11).map(|i| (format!("k{i}"), json!([]))).collect();
        assert!(check_payload(Some(&Value::Object(many))).is_err());
        assert!(check_payload(Some(&json!({"k": vec!["v"; 11]}))).is_err());
        assert!(check_payload(Some(&json!({ "k".repeat(51): [] }))).is_err());
    }

    #[tokio::test]
    async fn a_signal_is_refused_unless_a_step_waits_for_it() {
        let (tx, rx) = inbox();
        let resume = || sig(SignalKind::Resume, "me", json!({}));
        assert_eq!(
            tx.send(resume()),
            Err(SignalError::NotWaiting(SignalKind::Resume))
        );
        {
            let _w = rx.wait_for(Waiting::resume("pause1"));
            assert!(matches!(
                tx.send(sig(SignalKind::Approve, "me", json!({}))),
                Err(SignalError::NotAccepted { .. })
            ));
            assert!(matches!(
                tx.send(sig(
                    SignalKind::Resume,
                    "me",
                    json!({"StepName": ["other"]})
                )),
                Err(SignalError::WrongStep { .. })
            ));
            assert_eq!(
                tx.send(sig(SignalKind::StartStep, "me", json!({}))),
                Err(SignalError::Interactive(SignalKind::StartStep))
            );
            assert_eq!(tx.send(resume()), Ok("pause1".to_string()));
            assert_eq!(rx.next().await.unwrap().kind, SignalKind::Resume);
            // Sent while waiting but never read: dropped with the wait.
            assert!(tx.send(resume()).is_ok());
        }
        assert_eq!(
            tx.send(resume()),
            Err(SignalError::NotWaiting(SignalKind::Resume))
        );
        let _w = rx.wait_for(Waiting::resume("pause2"));
        assert!(rx.receiver.lock().await.try_recv().is_err());
        drop(_w);
        drop(rx);
        assert_eq!(tx.send(resume()), Err(SignalError::Ended));
    }

    #[tokio::test]
    async fn each_approver_decides_once_and_only_approvers_decide() {
        let (tx, rx) = inbox();
        let _w = rx.wait_for(Waiting::approval(
            "approve",
            vec!["arn:aws:iam::1:user/alice".into(), "bob".into()],
        ));
        assert!(matches!(
            tx.send(sig(SignalKind::Approve, "mallory", json!({}))),
            Err(SignalError::NotAnApprover { .. })
        ));
        assert!(
            tx.send(sig(SignalKind::Approve, "alice", json!({})))
                .is_ok()
        );
        assert_eq!(
            tx.send(sig(SignalKind::Reject, "alice", json!({}))),
            Err(SignalError::AlreadyDecided(
                "arn:aws:iam::1:user/alice".into()
            ))
        );
        let got = rx.next().await.unwrap();
        assert_eq!(got.approver.as_deref(), Some("arn:aws:iam::1:user/alice"));
        assert!(
            tx.send(sig(SignalKind::Reject, "bob", json!({"Comment": "no"})))
                .is_ok()
        );
        assert_eq!(rx.next().await.unwrap().first("Comment"), Some("no"));
    }

    #[test]
    fn the_local_user_has_a_name() {
        assert!(!local_user().is_empty());
    }
}
