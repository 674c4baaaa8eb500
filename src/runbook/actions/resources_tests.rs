//! Unit tests of the resource actions (changeInstanceState … runCommand) through the executor,
//! on a `StepRunner` whose `call_aws` records each call and answers canned responses.

use crate::runbook::actions::Action;
use crate::runbook::document::{OnCancel, OnFailure, StepDecl, StepKind};

/// A step with nothing but its timeout, for the helpers' tests.
pub(crate) fn bare_step(timeout: Option<i64>) -> StepDecl {
    StepDecl {
        index: 0,
        name: "s".into(),
        pos: Default::default(),
        kind: StepKind::Checked(Action::Sleep),
        inputs: Default::default(),
        outputs: Vec::new(),
        max_attempts: 1,
        timeout_seconds: timeout,
        on_failure: OnFailure::Abort,
        on_cancel: OnCancel::Abort,
        is_end: false,
        next_step: None,
        is_critical: true,
    }
}
