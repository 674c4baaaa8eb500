//! `aws:approve`: the execution shows `Waiting` until enough `Approve` signals, or one `Reject`,
//! come from the step's approvers.
//!
//! AWS's inputs: `Approvers` (required, 1 to [`MAX_APPROVERS`] IAM user names or user, role or
//! assumed-role ARNs), `MinRequiredApprovals` (default 1, at most the number of approvers),
//! `Message` (at most [`MAX_MESSAGE_CHARS`] characters), `NotificationArn` (an SNS topic). Its
//! outputs: `ApprovalStatus` (`Approved`) and `ApproverDecisions` (a MapList). Its timeout: 7 days
//! by default, at most 30; when it passes "the step and the automation stop running and return
//! a status of Timed Out". A rejection fails the step (and, through `onFailure: Abort`, the
//! execution). Decisions where AWS is silent **(ours)**:
//! - `NotificationArn` is accepted and noted in the step's log, never sent: scriptbox publishes
//!   to no SNS topic; the `Message` is logged instead.
//! - Senders are matched to approvers as `signals::approver_matches` says; each approver
//!   decides once.
//! - An `ApproverDecisions` item is `{Approver, Decision: Approved|Rejected, Sender, Comment?,
//!   Time}`; outputs are kept only when the step succeeds (as for every action), so a rejected
//!   step's decisions are in its log and failure message.

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::pause::{WaitEnd, announce, next_signal, no_inbox, note, unknown_inputs, wait_timeout};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::result::StepStatus;
use crate::runbook::document::{StepDecl, StepKind};
use crate::runbook::interpolate;
use crate::runbook::selector::ValueType;
use crate::runbook::signals::{SignalKind, Waiting};

/// The most approvers a step may name (AWS: 10).
pub const MAX_APPROVERS: usize = 10;
/// The longest `Message`, characters (AWS: 4096).
pub const MAX_MESSAGE_CHARS: usize = 4096;
/// The longest `Approvers` entry or `NotificationArn`, characters **(ours: an ARN's 2048)**.
pub const MAX_NAME_CHARS: usize = 2048;

/// Why an aws:approve step's inputs are refused; each names its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApproveError {
    /// No `Approvers`.
    #[error("Approvers is required (a list of 1 to {MAX_APPROVERS} IAM user names or ARNs)")]
    NoApprovers,
    /// `Approvers` is not a list of non-empty strings within the bounds.
    #[error(
        "Approvers: {0} (a list of 1 to {MAX_APPROVERS} IAM user names or ARNs, each at most {MAX_NAME_CHARS} characters)"
    )]
    BadApprovers(String),
    /// `MinRequiredApprovals` is not a whole number from 1 to the number of approvers.
    #[error("MinRequiredApprovals: {0}")]
    BadMin(String),
    /// `Message` is not a string or is too long.
    #[error("Message: {0}")]
    BadMessage(String),
    /// `NotificationArn` is not a string within the bound.
    #[error("NotificationArn: must be a string of at most {MAX_NAME_CHARS} characters")]
    BadNotificationArn,
}

impl ApproveError {
    /// The input the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            ApproveError::NoApprovers | ApproveError::BadApprovers(_) => "Approvers",
            ApproveError::BadMin(_) => "MinRequiredApprovals",
            ApproveError::BadMessage(_) => "Message",
            ApproveError::BadNotificationArn => "NotificationArn",
        }
    }
}

/// An approval's resolved inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApproveSpec {
    /// Who may decide.
    pub approvers: Vec<String>,
    /// Approvals needed.
    pub min_required: usize,
    /// For the approvers (logged).
    pub message: Option<String>,
    /// The SNS topic AWS would notify (noted, not sent).
    pub notification_arn: Option<String>,
}

fn approvers_of(v: Option<&Value>) -> Result<Vec<String>, ApproveError> {
    let bad = |m: &str| ApproveError::BadApprovers(m.to_string());
    let list: Vec<Value> = match v {
        None | Some(Value::Null) => return Err(ApproveError::NoApprovers),
        Some(Value::Array(a)) => a.clone(),
        // A single name (a String parameter substituted whole).
        Some(s @ Value::String(_)) => vec![s.clone()],
        Some(_) => return Err(bad("must be a list of strings")),
    };
    if list.is_empty() {
        return Err(bad("the list is empty"));
    }
    if list.len() > MAX_APPROVERS {
        return Err(bad(&format!("{} approvers", list.len())));
    }
    let mut out = Vec::new();
    for item in list {
        match item {
            Value::String(s) if !s.trim().is_empty() && s.chars().count() <= MAX_NAME_CHARS => {
                out.push(s);
            }
            Value::String(_) => return Err(bad("an entry is empty or too long")),
            _ => return Err(bad("every entry must be a string")),
        }
    }
    Ok(out)
}

/// Reads resolved (or literal) inputs into an [`ApproveSpec`].
pub fn parse(inputs: &Map<String, Value>) -> Result<ApproveSpec, ApproveError> {
    let approvers = approvers_of(inputs.get("Approvers"))?;
    let min_required = match inputs.get("MinRequiredApprovals") {
        None | Some(Value::Null) => 1,
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n >= 1 && n <= approvers.len() => n,
            _ => {
                return Err(ApproveError::BadMin(format!(
                    "{n} must be a whole number from 1 to the number of approvers ({})",
                    approvers.len()
                )));
            }
        },
        Some(other) => {
            return Err(ApproveError::BadMin(format!(
                "must be an integer, not {}",
                crate::step::json_type_name(other)
            )));
        }
    };
    let message = match inputs.get("Message") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) if m.chars().count() <= MAX_MESSAGE_CHARS => Some(m.clone()),
        Some(Value::String(m)) => {
            return Err(ApproveError::BadMessage(format!(
                "{} characters; at most {MAX_MESSAGE_CHARS}",
                m.chars().count()
            )));
        }
        Some(other) => {
            return Err(ApproveError::BadMessage(format!(
                "must be a string, not {}",
                crate::step::json_type_name(other)
            )));
        }
    };
    let notification_arn = match inputs.get("NotificationArn") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) if a.chars().count() <= MAX_NAME_CHARS => Some(a.clone()),
        Some(_) => return Err(ApproveError::BadNotificationArn),
    };
    Ok(ApproveSpec {
        approvers,
        min_required,
        message,
        notification_arn,
    })
}

/// The shape of each input that holds a `{{ }}` reference, checked at load (its value only at
/// run time): a reference stands for a whole value, so any JSON type is let through here.
fn check_shapes(inputs: &Map<String, Value>) -> Result<(), ApproveError> {
    let literal = |k: &str| inputs.get(k).filter(|v| !interpolate::has_refs(v));
    let mut known = Map::new();
    for k in [
        "Approvers",
        "MinRequiredApprovals",
        "Message",
        "NotificationArn",
    ] {
        if let Some(v) = literal(k) {
            known.insert(k.to_string(), v.clone());
        }
    }
    if !inputs.contains_key("Approvers") {
        return Err(ApproveError::NoApprovers);
    }
    // Approvers unknown until run time: the other literals are checked against the largest list.
    if !known.contains_key("Approvers") {
        known.insert(
            "Approvers".into(),
            Value::Array(vec![Value::String("?".into()); MAX_APPROVERS]),
        );
    }
    parse(&known).map(|_| ())
}

/// Decision record for `ApproverDecisions`.
fn decision(approver: &str, sender: &str, decision: &str, comment: Option<&str>) -> Value {
    let mut d = json!({
        "Approver": approver,
        "Decision": decision,
        "Sender": sender,
        "Time": crate::timestamp::Timestamp::now(),
    });
    if let Some(c) = comment {
        d["Comment"] = json!(c);
    }
    d
}

/// `aws:approve`.
pub(crate) struct Approve;

impl ActionSpec for Approve {
    const ACTION: Action = Action::Approve;
    const INPUT_KEYS: &'static [&'static str] = &[
        "Approvers",
        "MinRequiredApprovals",
        "Message",
        "NotificationArn",
    ];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &["ApprovalStatus", "ApproverDecisions"];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = ApproveSpec;

    /// Known keys; `Approvers` present; every literal within AWS's bounds.
    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        unknown_inputs(cx, step, Self::ACTION, Self::INPUT_KEYS);
        if let Err(e) = check_shapes(step.inputs) {
            let pos = step
                .inputs_node
                .and_then(|n| n.get(e.key()).or(Some(n)))
                .map(|n| n.pos)
                .unwrap_or_else(|| step.node.pos);
            cx.invalid(
                pos,
                format!("{}: inputs.{}", step.ctx, e.key()),
                e.to_string(),
            );
        }
        Some(StepKind::Checked(Self::ACTION))
    }

    /// The resolved inputs, checked again (a `{{ }}` value is known only now).
    fn prepare(
        _cx: &RunCx<'_>,
        _step: &StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<ApproveSpec, StepFailure> {
        parse(inputs).map_err(|e| StepFailure::new("InvalidInput", e.to_string()))
    }

    /// Waits, `Waiting`, for the approvals or a rejection, within the step's timeout.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        spec: &'a ApproveSpec,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let options = cx.options;
            let Some(inbox) = options.signals else {
                return no_inbox(Self::ACTION);
            };
            let mut log = Vec::new();
            let timeout = wait_timeout(step);
            note(
                cx,
                step,
                &mut log,
                format!(
                    "waiting for {} approval(s) from: {}",
                    spec.min_required,
                    spec.approvers.join(", ")
                ),
            );
            if let Some(m) = &spec.message {
                note(cx, step, &mut log, format!("Message: {m}"));
            }
            if let Some(arn) = &spec.notification_arn {
                note(
                    cx,
                    step,
                    &mut log,
                    format!(
                        "NotificationArn {arn}: not notified (scriptbox publishes to no SNS topic)"
                    ),
                );
            }
            let _wait = inbox.wait_for(Waiting::approval(&step.name, spec.approvers.clone()));
            announce(cx, step, &[SignalKind::Approve, SignalKind::Reject]);
            let deadline = tokio::time::Instant::now() + timeout;
            let mut decisions: Vec<Value> = Vec::new();
            let mut end = loop {
                let s = match next_signal(inbox, deadline, cx.cancel).await {
                    WaitEnd::Signal(s) => s,
                    WaitEnd::TimedOut => {
                        break Attempt::ended(
                            StepStatus::TimedOut,
                            Some(format!(
                                "Step timed out: {} of {} required approvals came within {} s.",
                                decisions.len(),
                                spec.min_required,
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
                };
                let approver = s.approver.clone().unwrap_or_else(|| s.sender.clone());
                let comment = s.first("Comment").map(str::to_string);
                let said = comment
                    .as_deref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                match s.kind {
                    SignalKind::Approve => {
                        decisions.push(decision(
                            &approver,
                            &s.sender,
                            "Approved",
                            comment.as_deref(),
                        ));
                        note(
                            cx,
                            step,
                            &mut log,
                            format!("approved by {approver} ({}){said}", s.sender),
                        );
                        if decisions.len() >= spec.min_required {
                            let mut a = Attempt::ended(StepStatus::Success, None);
                            a.outputs = vec![
                                (
                                    "ApprovalStatus".into(),
                                    ValueType::String,
                                    json!("Approved"),
                                ),
                                (
                                    "ApproverDecisions".into(),
                                    ValueType::MapList,
                                    Value::Array(decisions),
                                ),
                            ];
                            break a;
                        }
                    }
                    SignalKind::Reject => {
                        note(
                            cx,
                            step,
                            &mut log,
                            format!("rejected by {approver} ({}){said}", s.sender),
                        );
                        break Attempt::ended(
                            StepStatus::Failed,
                            Some(format!("The step was rejected by {approver}{said}")),
                        );
                    }
                    // The inbox admits only what the wait declared.
                    _ => {}
                }
            };
            end.log = log;
            end
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::pause::tests::{load, run_signalled, statuses};
    use super::*;
    use crate::runbook::signals::{Signal, SignalError};
    use tokio_util::sync::CancellationToken;

    const DOC: &str = "schemaVersion: '0.3'
parameters:
  who: {type: StringList, default: [alice, 'arn:aws:iam::123456789012:user/bob']}
mainSteps:
  - name: gate
    action: aws:approve
    inputs:
      Approvers: '{{ who }}'
      MinRequiredApprovals: 2
      Message: Please look
      NotificationArn: arn:aws:sns:us-east-1:123456789012:Automation-Approvals
  - name: after
    action: aws:sleep
    inputs: {Duration: PT0S}
outputs:
  - gate.ApprovalStatus
";

    fn say(kind: SignalKind, who: &str, comment: &str) -> Signal {
        let mut p = Map::new();
        p.insert("Comment".into(), json!([comment]));
        Signal::new(kind, p, who)
    }

    #[tokio::test]
    async fn enough_approvals_resume_with_the_outputs() {
        let rb = load(DOC);
        let (e, events) = run_signalled(&rb, &CancellationToken::new(), true, |tx| async move {
            assert!(tx.send(say(SignalKind::Approve, "alice", "ok")).is_ok());
            assert!(matches!(
                tx.send(say(SignalKind::Approve, "alice", "again")),
                Err(SignalError::AlreadyDecided(_))
            ));
            assert!(matches!(
                tx.send(say(SignalKind::Approve, "mallory", "me too")),
                Err(SignalError::NotAnApprover { .. })
            ));
            assert!(tx.send(say(SignalKind::Approve, "bob", "fine")).is_ok());
        })
        .await;
        assert_eq!(
            statuses(&e),
            ["gate:Success", "after:Success"],
            "{events:?}"
        );
        let gate = &e.steps[0];
        assert_eq!(
            gate.outputs[0],
            (
                "ApprovalStatus".into(),
                ValueType::String,
                json!("Approved")
            )
        );
        let decisions = gate.outputs[1].2.as_array().unwrap();
        assert_eq!(decisions.len(), 2);
        assert_eq!(
            decisions[1]["Approver"],
            "arn:aws:iam::123456789012:user/bob"
        );
        assert_eq!(decisions[1]["Comment"], "fine");
        assert_eq!(e.outputs[0].1, Some(json!("Approved")));
        assert!(
            events.iter().any(|l| l.contains("NotificationArn arn:aws:sns:us-east-1:123456789012:Automation-Approvals: not notified")),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn one_rejection_fails_the_step_and_the_execution() {
        let rb = load(DOC);
        let (e, _) = run_signalled(&rb, &CancellationToken::new(), true, |tx| async move {
            assert!(tx.send(say(SignalKind::Approve, "alice", "ok")).is_ok());
            assert!(tx.send(say(SignalKind::Reject, "bob", "not today")).is_ok());
        })
        .await;
        assert_eq!(statuses(&e), ["gate:Failed"]);
        assert_eq!(e.status, StepStatus::Failed);
        assert!(
            e.failure_message
                .as_deref()
                .unwrap_or("")
                .contains("rejected by arn:aws:iam::123456789012:user/bob: not today"),
            "{:?}",
            e.failure_message
        );
        // onFailure: step:after goes on after a rejection.
        let rb = load(&DOC.replace(
            "  - name: after\n",
            "    onFailure: step:after\n  - name: after\n",
        ));
        let (e, _) = run_signalled(&rb, &CancellationToken::new(), true, |tx| async move {
            assert!(tx.send(say(SignalKind::Reject, "alice", "no")).is_ok());
        })
        .await;
        assert_eq!(statuses(&e), ["gate:Failed", "after:Success"]);
        assert_eq!(e.status, StepStatus::Failed);
    }

    #[tokio::test]
    async fn an_approval_times_out_as_aws_says() {
        let rb = load(&DOC.replace(
            "  - name: after\n",
            "    timeoutSeconds: 1\n  - name: after\n",
        ));
        let (e, _) = run_signalled(&rb, &CancellationToken::new(), true, |tx| async move {
            assert!(tx.send(say(SignalKind::Approve, "alice", "ok")).is_ok());
        })
        .await;
        assert_eq!(statuses(&e), ["gate:TimedOut"]);
        assert_eq!(e.status, StepStatus::TimedOut);
        assert!(
            e.failure_message
                .unwrap()
                .contains("1 of 2 required approvals")
        );
    }

    #[test]
    fn bad_literals_refuse_the_document() {
        let catalog = crate::runtimes::Catalog::builtin();
        let options = crate::runbook::document::LoadOptions {
            catalog: &catalog,
            max_timeout_secs: 600,
            attachments_dir: None,
        };
        let bad = DOC.replace("'{{ who }}'", "[a]").replace(
            "Message: Please look",
            "Message: Please look\n      Notify: me",
        );
        let e = crate::runbook::document::load_str(
            &bad,
            "t",
            crate::runbook::yaml::Format::Yaml,
            std::path::Path::new("."),
            &options,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown input \"Notify\" of aws:approve"), "{e}");
        assert!(e.contains("inputs.MinRequiredApprovals: MinRequiredApprovals: 2 must be a whole number from 1 to the number of approvers (1)"), "{e}");
    }

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn inputs_parse_with_aws_defaults_and_bounds() {
        let spec = parse(&m(json!({"Approvers": ["a", "arn:aws:iam::1:user/b"]}))).unwrap();
        assert_eq!(spec.min_required, 1);
        assert_eq!(spec.approvers.len(), 2);
        assert_eq!(parse(&m(json!({}))), Err(ApproveError::NoApprovers));
        assert!(parse(&m(json!({"Approvers": []}))).is_err());
        let eleven: Vec<String> = (0..11).map(|i| format!("u{i}")).collect();
        assert!(
            parse(&m(json!({ "Approvers": eleven })))
                .unwrap_err()
                .to_string()
                .contains("11 approvers")
        );
        assert!(
            parse(&m(json!({"Approvers": ["a"], "MinRequiredApprovals": 2})))
                .unwrap_err()
                .to_string()
                .contains("from 1 to the number of approvers (1)")
        );
        assert!(parse(&m(json!({"Approvers": ["a"], "MinRequiredApprovals": 0}))).is_err());
        assert!(parse(&m(json!({"Approvers": ["a"], "MinRequiredApprovals": "1"}))).is_err());
        let long = "x".repeat(MAX_MESSAGE_CHARS + 1);
        assert_eq!(
            parse(&m(json!({"Approvers": ["a"], "Message": long})))
                .unwrap_err()
                .key(),
            "Message"
        );
        assert!(parse(&m(json!({"Approvers": [1]}))).is_err());
        assert_eq!(
            parse(&m(json!({"Approvers": "solo"}))).unwrap().approvers,
            vec!["solo".to_string()]
        );
    }

    #[test]
    fn references_are_left_to_run_time_but_literals_are_checked() {
        assert!(
            check_shapes(&m(
                json!({"Approvers": "{{ who }}", "MinRequiredApprovals": 3})
            ))
            .is_ok()
        );
        assert!(
            check_shapes(&m(
                json!({"Approvers": "{{ who }}", "MinRequiredApprovals": 11})
            ))
            .is_err()
        );
        assert!(
            check_shapes(&m(
                json!({"Approvers": ["a"], "MinRequiredApprovals": "{{ n }}"})
            ))
            .is_ok()
        );
        assert_eq!(check_shapes(&m(json!({}))), Err(ApproveError::NoApprovers));
    }
}
