//! Signals sent to a running execution (`scriptbox signal`, SSM's `SendAutomationSignal`):
//! `aws:pause` waits for `Resume`, `aws:approve` for `Approve` / `Reject`.
//!
//! Issue 14 builds the inbox; this file holds the shapes.

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
    /// Starts a step (`StepName`).
    StartStep,
    /// Stops a step (`StepExecutionId`).
    StopStep,
}

/// One signal, with its payload (`Comment`, `StepName`...) and who sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Its type.
    pub kind: SignalKind,
    /// SSM's `Payload`: each key a list of strings.
    pub payload: Map<String, Value>,
    /// Who sent it (the SSM caller's identity, or the local user).
    pub sender: String,
}

/// Signals a running execution has been sent, in order, until a step takes them.
#[derive(Debug)]
pub struct SignalInbox {
    receiver: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Signal>>,
}

/// The sending side of an execution's [`SignalInbox`] (kept by whoever runs the execution).
#[derive(Debug, Clone)]
pub struct SignalSender(tokio::sync::mpsc::Sender<Signal>);

/// The most signals queued for one execution before a sender is refused **(ours)**.
pub const MAX_QUEUED_SIGNALS: usize = 100;

/// A new inbox and its sender.
pub fn inbox() -> (SignalSender, SignalInbox) {
    let (tx, rx) = tokio::sync::mpsc::channel(MAX_QUEUED_SIGNALS);
    (
        SignalSender(tx),
        SignalInbox {
            receiver: tokio::sync::Mutex::new(rx),
        },
    )
}

impl SignalSender {
    /// Queues `signal`; false when the queue is full or the execution has ended.
    pub fn send(&self, signal: Signal) -> bool {
        self.0.try_send(signal).is_ok()
    }
}

impl SignalInbox {
    /// The next signal; `None` once every sender is gone.
    pub async fn next(&self) -> Option<Signal> {
        self.receiver.lock().await.recv().await
    }
}
