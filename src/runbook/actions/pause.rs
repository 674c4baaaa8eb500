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
pub(crate) mod tests {
    use super::*;
    use crate::context::AwsContext;
    use crate::runbook::document::{LoadOptions, Runbook, load_str};
    use crate::runbook::executor::{ExecOptions, Execution, RunContext, StepRunner, execute};
    use crate::runbook::signals::{SignalSender, inbox};
    use crate::runtimes::Catalog;

    /// Runs no containers: the documents here have no script steps.
    struct NoRunner;

    impl StepRunner for NoRunner {
        fn run<'a>(
            &'a self,
            _step: &'a crate::step::ValidatedStep,
            _ctx: RunContext<'a>,
        ) -> BoxFuture<'a, Result<crate::result::StepResult, crate::execute::ExecuteError>>
        {
            Box::pin(async { panic!("no script step runs here") })
        }
    }

    pub(crate) fn load(yaml: &str) -> Runbook {
        let catalog = Catalog::builtin();
        let options = LoadOptions {
            catalog: &catalog,
            max_timeout_secs: 600,
            attachments_dir: None,
        };
        load_str(
            yaml,
            "test",
            crate::runbook::yaml::Format::Yaml,
            std::path::Path::new("."),
            &options,
        )
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    /// Runs `rb` with an inbox; `send` runs (spawned) with the sender once the first step
    /// waits; returns the execution and the events.
    pub(crate) async fn run_signalled<F, Fut>(
        rb: &Runbook,
        cancel: &CancellationToken,
        with_inbox: bool,
        send: F,
    ) -> (Execution, Vec<String>)
    where
        F: FnOnce(SignalSender) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let catalog = Catalog::builtin();
        let ctx = AwsContext::default();
        let (tx, rx) = inbox();
        // Held for the whole run, as whoever runs an execution holds its sender.
        let _held = tx.clone();
        let options = ExecOptions {
            execution_id: Some("exec-1".into()),
            context: &ctx,
            catalog: &catalog,
            max_timeout_secs: 600,
            max_run_secs: 86_400,
            children: None,
            signals: with_inbox.then_some(&rx),
            depth: 0,
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            if ready_rx.await.is_ok() {
                send(tx).await;
            }
        });
        let mut events = Vec::new();
        let params = crate::runbook::parameters::resolve(&rb.parameters, &[]).unwrap();
        let e = execute(
            rb,
            params,
            &NoRunner,
            &options,
            &mut |ev| {
                events.push(match ev {
                    RunEvent::StepStarted { step, .. } => format!("start {}", step.name),
                    RunEvent::Log { step, line } => format!("log {} {}", step.name, line.text),
                    RunEvent::Waiting {
                        step,
                        execution_id,
                        accepts,
                    } => {
                        if let Some(t) = ready_tx.take() {
                            let _ = t.send(());
                        }
                        format!("waiting {} {execution_id} {accepts:?}", step.name)
                    }
                    RunEvent::StepFinished { record } => {
                        format!("end {} {}", record.name, record.status)
                    }
                })
            },
            cancel,
        )
        .await;
        (e, events)
    }

    pub(crate) fn resume(
        tx: &SignalSender,
    ) -> Result<String, crate::runbook::signals::SignalError> {
        tx.send(Signal::new(SignalKind::Resume, Map::new(), "tester"))
    }

    pub(crate) fn statuses(e: &Execution) -> Vec<String> {
        e.steps
            .iter()
            .map(|s| format!("{}:{}", s.name, s.status))
            .collect()
    }

    const PAUSE: &str = "schemaVersion: '0.3'
mainSteps:
  - name: hold
    action: aws:pause
    inputs: {}
  - name: after
    action: aws:sleep
    inputs: {Duration: PT0S}
";

    #[tokio::test]
    async fn a_pause_waits_and_goes_on_after_resume() {
        let rb = load(PAUSE);
        let (e, events) = run_signalled(&rb, &CancellationToken::new(), true, |tx| async move {
            assert_eq!(resume(&tx), Ok("hold".into()));
        })
        .await;
        assert_eq!(e.status, StepStatus::Success, "{events:?}");
        assert_eq!(statuses(&e), ["hold:Success", "after:Success"]);
        assert!(
            events.contains(&"waiting hold exec-1 [Resume]".to_string()),
            "{events:?}"
        );
        assert!(
            events.contains(&"log hold resumed by tester".to_string()),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn a_pause_times_out_and_on_failure_continue_goes_on() {
        let rb = load(&PAUSE.replace("inputs: {}", "inputs: {}\n    timeoutSeconds: 1"));
        let (e, _) = run_signalled(&rb, &CancellationToken::new(), true, |_| async {}).await;
        assert_eq!(e.status, StepStatus::TimedOut);
        assert_eq!(statuses(&e), ["hold:TimedOut"]);
        assert!(
            e.failure_message
                .as_deref()
                .unwrap_or("")
                .contains("no Resume signal came within 1 s"),
            "{:?}",
            e.failure_message
        );
        let rb = load(&PAUSE.replace(
            "inputs: {}",
            "inputs: {}\n    timeoutSeconds: 1\n    onFailure: Continue",
        ));
        let (e, _) = run_signalled(&rb, &CancellationToken::new(), true, |_| async {}).await;
        // Not critical (onFailure: Continue): the execution succeeds.
        assert_eq!(statuses(&e), ["hold:TimedOut", "after:Success"]);
        assert_eq!(e.status, StepStatus::Success);
        let rb = load(&PAUSE.replace(
            "inputs: {}",
            "inputs: {}\n    timeoutSeconds: 1\n    onFailure: Continue\n    isCritical: true",
        ));
        let (e, _) = run_signalled(&rb, &CancellationToken::new(), true, |_| async {}).await;
        assert_eq!(statuses(&e), ["hold:TimedOut", "after:Success"]);
        assert_eq!(e.status, StepStatus::TimedOut);
    }

    #[tokio::test]
    async fn cancelling_a_waiting_pause_runs_its_on_cancel_step() {
        let rb = load(&PAUSE.replace("inputs: {}", "inputs: {}\n    onCancel: step:after"));
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let (e, _) = run_signalled(&rb, &cancel, true, |_| async move { c2.cancel() }).await;
        assert_eq!(statuses(&e), ["hold:Cancelled", "after:Success"]);
        assert_eq!(e.status, StepStatus::Cancelled);
    }

    #[tokio::test]
    async fn without_an_inbox_a_pause_fails_at_once() {
        let rb = load(PAUSE);
        let (e, _) = run_signalled(&rb, &CancellationToken::new(), false, |_| async {}).await;
        assert_eq!(statuses(&e), ["hold:Failed"]);
        assert!(
            e.failure_message
                .unwrap()
                .contains("nothing can signal this execution")
        );
    }

    #[test]
    fn a_pause_takes_no_inputs_and_up_to_thirty_days() {
        let catalog = Catalog::builtin();
        let options = LoadOptions {
            catalog: &catalog,
            max_timeout_secs: 600,
            attachments_dir: None,
        };
        let bad = PAUSE.replace(
            "inputs: {}",
            "inputs: {Duration: PT1S}\n    timeoutSeconds: 2592001",
        );
        let e = load_str(
            &bad,
            "t",
            crate::runbook::yaml::Format::Yaml,
            std::path::Path::new("."),
            &options,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unknown input \"Duration\" of aws:pause (it takes none)"),
            "{e}"
        );
        assert!(e.contains("≤ 2592000"), "{e}");
        load(&PAUSE.replace("inputs: {}", "inputs: {}\n    timeoutSeconds: 1209600"));
    }

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
