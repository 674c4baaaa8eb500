//! `aws:pause`: the execution shows `Waiting` until a `Resume` signal (`scriptbox signal`, SSM's
//! `SendAutomationSignal`).
//!
//! AWS: no inputs (`inputs: {}`), no outputs; the default timeout is 7 days
//! ([`DEFAULT_WAIT_SECS`]), at most 30 days through `timeoutSeconds`. When the timeout passes
//! the step ends `TimedOut` (and so, through `onFailure: Abort`, the execution). An execution
//! with no way to be signalled (no inbox: scriptbox was not asked to listen) fails the step at
//! once rather than waiting for a signal that cannot come **(ours)**. The wait, and the signal
//! handling shared with `aws:approve`, is here.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::result::{LogLine, LogStream, StepStatus};
use crate::runbook::document::{StepDecl, StepKind};
use crate::runbook::executor::RunEvent;
use crate::runbook::signals::{Signal, SignalInbox, SignalKind};

/// The timeout of an aws:pause or aws:approve step without `timeoutSeconds` (AWS: 7 days).
pub const DEFAULT_WAIT_SECS: u64 = 604_800;

/// How a wait for the next signal ended.
#[derive(Debug)]
pub(crate) enum WaitEnd {
    /// A signal came.
    Signal(Signal),
    /// The step's timeout passed.
    TimedOut,
    /// The step was cancelled.
    Cancelled,
    /// Every sender is gone: nobody can signal any more.
    Closed,
}

/// The step's wait: its `timeoutSeconds`, else [`DEFAULT_WAIT_SECS`].
pub(crate) fn wait_timeout(step: &StepDecl) -> Duration {
    Duration::from_secs(
        step.timeout_seconds
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(DEFAULT_WAIT_SECS),
    )
}

/// The next signal, until `deadline` or cancellation.
pub(crate) async fn next_signal(
    inbox: &SignalInbox,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
) -> WaitEnd {
    tokio::select! {
        s = inbox.next() => match s {
            Some(s) => WaitEnd::Signal(s),
            None => WaitEnd::Closed,
        },
        _ = tokio::time::sleep_until(deadline) => WaitEnd::TimedOut,
        _ = cancel.cancelled() => WaitEnd::Cancelled,
    }
}

/// The failure of a waiting step whose execution has no inbox.
pub(crate) fn no_inbox(action: Action) -> Attempt {
    Attempt::ended(
        StepStatus::Failed,
        Some(format!(
            "{} waits for a signal, and nothing can signal this execution (it was started without a signal inbox)",
            action.name()
        )),
    )
}

/// Refuses every input key not in `known`, at its position.
pub(crate) fn unknown_inputs(
    cx: &mut CheckCx<'_>,
    step: &StepHead<'_>,
    action: Action,
    known: &[&str],
) {
    for k in step.inputs.keys() {
        if !known.contains(&k.as_str()) {
            let pos = step
                .inputs_node
                .and_then(|n| n.get(k))
                .map(|n| n.pos)
                .unwrap_or_default();
            let known = if known.is_empty() {
                "it takes none".to_string()
            } else {
                format!("known: {}", known.join(", "))
            };
            cx.invalid(
                pos,
                format!("{}: inputs", step.ctx),
                format!("unknown input {k:?} of {} ({known})", action.name()),
            );
        }
    }
}

/// A scriptbox note in the step's log, told to the observer as it happens.
pub(crate) fn note(cx: &mut RunCx<'_>, step: &StepDecl, log: &mut Vec<LogLine>, text: String) {
    let line = LogLine {
        stream: LogStream::Scriptbox,
        text,
    };
    (cx.observer)(RunEvent::Log { step, line: &line });
    log.push(line);
}

/// Tells the observer that `step` waits for `accepts` (the record shows `Waiting`).
pub(crate) fn announce(cx: &mut RunCx<'_>, step: &StepDecl, accepts: &[SignalKind]) {
    let execution_id = cx.automation_id;
    (cx.observer)(RunEvent::Waiting {
        step,
        execution_id,
        accepts,
    });
}

/// `aws:pause`.
pub(crate) struct Pause;

impl ActionSpec for Pause {
    const ACTION: Action = Action::Pause;
    const INPUT_KEYS: &'static [&'static str] = &[];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &[];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = ();

    /// No inputs.
    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        unknown_inputs(cx, step, Self::ACTION, Self::INPUT_KEYS);
        Some(StepKind::Checked(Self::ACTION))
    }

    fn prepare(
        _cx: &RunCx<'_>,
        _step: &StepDecl,
        _inputs: &Map<String, Value>,
    ) -> Result<(), StepFailure> {
        Ok(())
    }

    /// Waits, `Waiting`, for a Resume, within the step's timeout, until cancelled.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        _ready: &'a (),
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let options = cx.options;
            let Some(inbox) = options.signals else {
                return no_inbox(Self::ACTION);
            };
            let timeout = wait_timeout(step);
            let mut log = Vec::new();
            let _wait = inbox.wait_for(crate::runbook::signals::Waiting::resume(&step.name));
            announce(cx, step, &[SignalKind::Resume]);
            let deadline = tokio::time::Instant::now() + timeout;
            let mut end = loop {
                match next_signal(inbox, deadline, cx.cancel).await {
                    WaitEnd::Signal(s) if s.kind == SignalKind::Resume => {
                        note(cx, step, &mut log, format!("resumed by {}", s.sender));
                        break Attempt::ended(StepStatus::Success, None);
                    }
                    // The inbox admits only what the wait declared.
                    WaitEnd::Signal(_) => continue,
                    WaitEnd::TimedOut => {
                        break Attempt::ended(
                            StepStatus::TimedOut,
                            Some(format!(
                                "Step timed out: no Resume signal came within {} s.",
                                timeout.as_secs()
                            )),
                        );
                    }
                    WaitEnd::Cancelled => {
                        break Attempt::ended(
                            StepStatus::Cancelled,
                            Some("The step was cancelled.".into()),
                        );
                    }
                    WaitEnd::Closed => break no_inbox(Self::ACTION),
                }
            };
            end.log = log;
            end
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_wait_ends_on_a_signal_a_deadline_or_a_cancel() {
        let (tx, rx) = crate::runbook::signals::inbox();
        let cancel = CancellationToken::new();
        let soon = || tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(matches!(
            next_signal(&rx, soon(), &cancel).await,
            WaitEnd::TimedOut
        ));
        let _w = rx.wait_for(crate::runbook::signals::Waiting::resume("p"));
        tx.send(Signal::new(SignalKind::Resume, Map::new(), "me"))
            .unwrap();
        assert!(matches!(
            next_signal(&rx, soon(), &cancel).await,
            WaitEnd::Signal(_)
        ));
        cancel.cancel();
        let far = tokio::time::Instant::now() + Duration::from_secs(60);
        assert!(matches!(
            next_signal(&rx, far, &cancel).await,
            WaitEnd::Cancelled
        ));
        drop(tx);
        assert!(matches!(
            next_signal(&rx, far, &CancellationToken::new()).await,
            WaitEnd::Closed
        ));
    }
}
