//! The runbook actions scriptbox runs, one module each, dispatched through one enum.
//!
//! Each module owns its action's input keys, its load-time checks, its implicit outputs and its
//! run (the crate-internal trait `ActionSpec`); [`Action`] is the only place that lists them,
//! and the only code that knows an action's name. Everything else (the document checker, the
//! executor, the CLI) asks the enum. Adding an action is one file here and one variant: see
//! `docs/actions.md`.

use std::collections::HashMap;

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::Problem;
use super::document::{FileDecl, LoadOptions, StepDecl, StepKind};
use super::executor::{ExecOptions, RunEvent, StepRunner, attempts};
use super::interpolate::Scope;
use super::selector::ValueType;
use super::yaml::{Format, Node, Pos};
use crate::result::{LogLine, StepStatus};

pub mod approve;
pub mod assert_resource;
pub mod aws_call;
pub mod branch;
pub mod change_instance_state;
pub mod copy_image;
pub mod create_image;
pub mod create_stack;
pub mod create_tags;
pub mod delete_image;
pub mod delete_stack;
pub mod execute_automation;
pub mod execute_aws_api;
pub mod execute_script;
pub mod invoke_lambda;
pub mod loop_steps;
pub mod pause;
pub(crate) mod resources;
#[cfg(test)]
mod resources_tests;
pub mod run_command;
pub mod run_instances;
pub mod sleep;
pub mod update_variable;
pub mod wait_for_resource;

/// A runbook action scriptbox runs (`action:` of a step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `aws:executeScript`: a script in a fresh container.
    ExecuteScript,
    /// `aws:sleep`: waits for a duration or until a timestamp.
    Sleep,
    /// `aws:branch`: chooses the next step.
    Branch,
    /// `aws:executeAwsApi`: one AWS API call, outputs selected from its response.
    ExecuteAwsApi,
    /// `aws:waitForAwsResourceProperty`: calls until a selected value is one of the desired ones.
    WaitForAwsResourceProperty,
    /// `aws:assertAwsResourceProperty`: one call; fails unless the selected value is a desired one.
    AssertAwsResourceProperty,
    /// `aws:changeInstanceState`: starts, stops or terminates instances, then waits.
    ChangeInstanceState,
    /// `aws:createTags`: tags EC2 or SSM resources.
    CreateTags,
    /// `aws:runInstances`: launches instances and waits until they run.
    RunInstances,
    /// `aws:createImage`: an AMI from an instance, waited for.
    CreateImage,
    /// `aws:copyImage`: copies an AMI, waited for.
    CopyImage,
    /// `aws:deleteImage`: deregisters an AMI and deletes its snapshots.
    DeleteImage,
    /// `aws:createStack`: a CloudFormation stack, waited for.
    CreateStack,
    /// `aws:deleteStack`: deletes a CloudFormation stack, waited for.
    DeleteStack,
    /// `aws:invokeLambdaFunction`: invokes a Lambda function.
    InvokeLambdaFunction,
    /// `aws:runCommand`: sends a Run Command and polls its invocations.
    RunCommand,
    /// `aws:executeAutomation`: a child runbook execution, its outputs flowing back.
    ExecuteAutomation,
    /// `aws:loop`: runs inner steps over iterators or while a condition holds.
    Loop,
    /// `aws:pause`: waits for a Resume signal.
    Pause,
    /// `aws:approve`: waits for approvals or a rejection.
    Approve,
    /// `aws:updateVariable`: sets a runbook variable.
    UpdateVariable,
}

/// Expands `$body` once per action with `$A` naming the action's `ActionSpec` type: the one
/// place the variants meet their modules (every dispatch below goes through it).
macro_rules! each_action {
    ($self:expr, $A:ident => $body:expr) => {
        match $self {
            Action::ExecuteScript => {
                use execute_script::ExecuteScript as $A;
                $body
            }
            Action::Sleep => {
                use sleep::Sleep as $A;
                $body
            }
            Action::Branch => {
                use branch::Branch as $A;
                $body
            }
            Action::ExecuteAwsApi => {
                use execute_aws_api::ExecuteAwsApi as $A;
                $body
            }
            Action::WaitForAwsResourceProperty => {
                use wait_for_resource::WaitForAwsResourceProperty as $A;
                $body
            }
            Action::AssertAwsResourceProperty => {
                use assert_resource::AssertAwsResourceProperty as $A;
                $body
            }
            Action::ChangeInstanceState => {
                use change_instance_state::ChangeInstanceState as $A;
                $body
            }
            Action::CreateTags => {
                use create_tags::CreateTags as $A;
                $body
            }
            Action::RunInstances => {
                use run_instances::RunInstances as $A;
                $body
            }
            Action::CreateImage => {
                use create_image::CreateImage as $A;
                $body
            }
            Action::CopyImage => {
                use copy_image::CopyImage as $A;
                $body
            }
            Action::DeleteImage => {
                use delete_image::DeleteImage as $A;
                $body
            }
            Action::CreateStack => {
                use create_stack::CreateStack as $A;
                $body
            }
            Action::DeleteStack => {
                use delete_stack::DeleteStack as $A;
                $body
            }
            Action::InvokeLambdaFunction => {
                use invoke_lambda::InvokeLambdaFunction as $A;
                $body
            }
            Action::RunCommand => {
                use run_command::RunCommand as $A;
                $body
            }
            Action::ExecuteAutomation => {
                use execute_automation::ExecuteAutomation as $A;
                $body
            }
            Action::Loop => {
                use loop_steps::Loop as $A;
                $body
            }
            Action::Pause => {
                use pause::Pause as $A;
                $body
            }
            Action::Approve => {
                use approve::Approve as $A;
                $body
            }
            Action::UpdateVariable => {
                use update_variable::UpdateVariable as $A;
                $body
            }
        }
    };
}

impl Action {
    /// Every action, in the order the refusal of an unsupported one lists them.
    pub const ALL: [Action; 21] = [
        Action::ExecuteScript,
        Action::Sleep,
        Action::Branch,
        Action::ExecuteAwsApi,
        Action::WaitForAwsResourceProperty,
        Action::AssertAwsResourceProperty,
        Action::ChangeInstanceState,
        Action::CreateTags,
        Action::RunInstances,
        Action::CreateImage,
        Action::CopyImage,
        Action::DeleteImage,
        Action::CreateStack,
        Action::DeleteStack,
        Action::InvokeLambdaFunction,
        Action::RunCommand,
        Action::ExecuteAutomation,
        Action::Loop,
        Action::Pause,
        Action::Approve,
        Action::UpdateVariable,
    ];

    /// AWS's name of the action (`aws:executeScript`).
    pub fn name(self) -> &'static str {
        match self {
            Action::ExecuteScript => "aws:executeScript",
            Action::Sleep => "aws:sleep",
            Action::Branch => "aws:branch",
            Action::ExecuteAwsApi => "aws:executeAwsApi",
            Action::WaitForAwsResourceProperty => "aws:waitForAwsResourceProperty",
            Action::AssertAwsResourceProperty => "aws:assertAwsResourceProperty",
            Action::ChangeInstanceState => "aws:changeInstanceState",
            Action::CreateTags => "aws:createTags",
            Action::RunInstances => "aws:runInstances",
            Action::CreateImage => "aws:createImage",
            Action::CopyImage => "aws:copyImage",
            Action::DeleteImage => "aws:deleteImage",
            Action::CreateStack => "aws:createStack",
            Action::DeleteStack => "aws:deleteStack",
            Action::InvokeLambdaFunction => "aws:invokeLambdaFunction",
            Action::RunCommand => "aws:runCommand",
            Action::ExecuteAutomation => "aws:executeAutomation",
            Action::Loop => "aws:loop",
            Action::Pause => "aws:pause",
            Action::Approve => "aws:approve",
            Action::UpdateVariable => "aws:updateVariable",
        }
    }

    /// The action named `name` (exactly as AWS spells it), if scriptbox runs it.
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The keys its `inputs` may hold.
    pub fn input_keys(self) -> &'static [&'static str] {
        each_action!(self, A => A::INPUT_KEYS)
    }

    /// Outputs a step of this action has without declaring them (`Payload` for executeScript).
    pub fn implicit_outputs(self) -> &'static [&'static str] {
        each_action!(self, A => A::IMPLICIT_OUTPUTS)
    }

    /// Whether a step of this action may declare `outputs` (Name, Selector, Type).
    pub fn declares_outputs(self) -> bool {
        each_action!(self, A => A::DECLARES_OUTPUTS)
    }

    /// Whether a failed or timed-out attempt is retried up to `maxAttempts`.
    pub fn retries(self) -> bool {
        each_action!(self, A => A::RETRIES)
    }

    /// Checks a step's `inputs` at load; problems go to `cx`; `None` when the step is refused.
    pub(crate) fn check(self, cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        each_action!(self, A => A::check(cx, step))
    }

    /// Checks a read step against the whole document (its files, the other steps), after
    /// every step is read.
    pub(crate) fn check_in_document(
        self,
        cx: &mut CheckCx<'_>,
        step: &StepDecl,
        doc: &DocFacts<'_>,
    ) {
        each_action!(self, A => A::check_in_document(cx, step, doc))
    }

    /// Completes a checked step's `kind` with what only the whole document tells (executeScript
    /// validates its inputs here when they are known at load), after every other check.
    pub(crate) fn complete(self, cx: &mut CheckCx<'_>, step: &mut StepDecl, doc: &DocFacts<'_>) {
        each_action!(self, A => A::complete(cx, step, doc))
    }

    /// The steps a step of this action may go to besides `nextStep`, `onFailure` and
    /// `onCancel` (aws:branch's choices), with where each is written.
    pub(crate) fn targets(self, step: &StepDecl) -> Vec<(String, Pos)> {
        each_action!(self, A => A::targets(step))
    }

    /// Runs one step of this action with its resolved `inputs`: what is resolved once, then
    /// one attempt, then more while [`Action::retries`] and `maxAttempts` allow.
    pub(crate) fn run<'a>(
        self,
        cx: &'a mut RunCx<'_>,
        step: &'a StepDecl,
        inputs: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Ran> {
        each_action!(self, A => attempts::<A>(cx, step, inputs))
    }
}

/// What one action is: its keys, its load-time checks, its implicit outputs, its run.
///
/// Implemented by one zero-sized type per action module; [`Action`] dispatches to it.
pub(crate) trait ActionSpec {
    /// The variant of [`Action`] this is.
    const ACTION: Action;
    /// The keys `inputs` may hold.
    const INPUT_KEYS: &'static [&'static str];
    /// Outputs a step has without declaring them (`Payload` for executeScript).
    const IMPLICIT_OUTPUTS: &'static [&'static str];
    /// Whether a step may declare `outputs` (Name, Selector, Type; checked by the document).
    const DECLARES_OUTPUTS: bool;
    /// Whether failed attempts are retried up to `maxAttempts` **(ours: only executeScript is,
    /// as before the actions had modules)**.
    const RETRIES: bool;
    /// What [`ActionSpec::prepare`] resolves once for all attempts (it may borrow the step).
    type Ready<'s>: Send + Sync;

    /// Checks `inputs` at load; problems go to `cx`; `None` when refused.
    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind>;

    /// Checks the read step against the whole document; nothing by default.
    fn check_in_document(cx: &mut CheckCx<'_>, step: &StepDecl, doc: &DocFacts<'_>) {
        let _ = (cx, step, doc);
    }

    /// Completes the step's `kind` after every check; nothing by default.
    fn complete(cx: &mut CheckCx<'_>, step: &mut StepDecl, doc: &DocFacts<'_>) {
        let _ = (cx, step, doc);
    }

    /// Steps this step may go to that its inputs name; none by default.
    fn targets(step: &StepDecl) -> Vec<(String, Pos)> {
        let _ = step;
        Vec::new()
    }

    /// Resolves, once before the first attempt, what every attempt needs; a failure ends the
    /// step without an attempt.
    fn prepare<'s>(
        cx: &RunCx<'_>,
        step: &'s StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<Self::Ready<'s>, StepFailure>;

    /// One attempt.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        ready: &'a Self::Ready<'s>,
    ) -> BoxFuture<'a, Attempt>;
}

/// What a load-time check writes to and reads: the problems, the format, the load options.
pub(crate) struct CheckCx<'c> {
    /// Where problems go.
    pub problems: &'c mut Vec<Problem>,
    /// Where notes go: what is accepted against a reference page's rule (refuses nothing).
    pub notes: &'c mut Vec<crate::runbook::document::Note>,
    /// YAML or JSON (AWS's rule: a JSON runbook cannot use executeScript's `Script`; noted).
    pub format: Format,
    /// The catalog and the operator's timeout ceiling.
    pub options: &'c LoadOptions<'c>,
}

impl CheckCx<'_> {
    /// Reports an invalid-document problem.
    pub fn invalid(&mut self, pos: Pos, ctx: impl Into<String>, msg: impl Into<String>) {
        self.problems.push(Problem::invalid(pos, ctx, msg));
    }
}

/// A step as its action's check sees it: the step's properties already checked, its inputs.
pub(crate) struct StepHead<'s> {
    /// `mainSteps[2] (step "copyImage")`, the prefix of every problem.
    pub ctx: &'s str,
    /// The step's map.
    pub node: &'s Node,
    /// `inputs` as written (empty when missing or not a map: that is already reported).
    pub inputs: &'s Map<String, Value>,
    /// The `inputs` node, if there is one.
    pub inputs_node: Option<&'s Node>,
}

/// What the whole document tells a step's check: the nodes of the steps, its files.
pub(crate) struct DocFacts<'d> {
    /// Every `mainSteps` item, by index.
    pub nodes: &'d [&'d Node],
    /// The declarations under `files` that are well formed.
    pub files: &'d [FileDecl],
    /// Names declared under `files` (including those with problems).
    pub declared_files: &'d [String],
    /// The attachments' verified bytes.
    pub attachments: &'d HashMap<String, Vec<u8>>,
    /// The declared runbook variables (top-level `variables`) and their types.
    pub variables: &'d HashMap<String, ValueType>,
}

/// What a step's run uses: the runner, the options, the scope, the observer, cancellation.
pub(crate) struct RunCx<'r> {
    /// Runs executeScript steps' containers.
    pub runner: &'r dyn StepRunner,
    /// The execution's options (catalog, timeout ceiling).
    pub options: &'r ExecOptions<'r>,
    /// The document's verified attachments.
    pub attachments: &'r HashMap<String, Vec<u8>>,
    /// Parameters and earlier steps' outputs (aws:branch reads them; mutable so that an action
    /// such as aws:updateVariable or aws:loop's inner steps can write to it).
    pub scope: &'r mut Scope,
    /// The runbook execution's id.
    pub automation_id: &'r str,
    /// This step execution's id.
    pub step_execution_id: &'r str,
    /// Told of each log line as it arrives.
    pub observer: &'r mut (dyn FnMut(RunEvent<'_>) + Send),
    /// Cancels the step.
    pub cancel: &'r CancellationToken,
    /// The runbook's role (`assumeRole`, substituted and checked): the credentials of its
    /// executeScript steps come from it when AWS access is on.
    pub assume_role: Option<String>,
}

/// Why a step failed before any attempt: `kind` is AWS's failure type (`InvalidInput`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StepFailure {
    /// AWS's failure type.
    pub kind: &'static str,
    /// The message.
    pub message: String,
}

impl StepFailure {
    /// A failure of type `kind`.
    pub fn new(kind: &'static str, message: impl Into<String>) -> StepFailure {
        StepFailure {
            kind,
            message: message.into(),
        }
    }
}

/// The end of one attempt.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    /// How it ended.
    pub status: StepStatus,
    /// Declared outputs, typed (kept on success).
    pub outputs: Vec<(String, ValueType, Value)>,
    /// executeScript's Payload, when the script returned.
    pub payload: Option<Value>,
    /// The failure, AWS-shaped.
    pub failure: Option<String>,
    /// The attempt's log.
    pub log: Vec<LogLine>,
    /// aws:branch's chosen step.
    pub next: Option<String>,
    /// The engine itself failed (Docker down): no retry, and the execution ends.
    pub engine_failed: bool,
    /// What the attempt's AWS egress did.
    pub egress: Option<crate::egress::EgressCounts>,
}

impl Attempt {
    /// An attempt that ended with `status` and nothing else.
    pub fn ended(status: StepStatus, failure: Option<String>) -> Attempt {
        Attempt {
            status,
            outputs: Vec::new(),
            payload: None,
            failure,
            log: Vec::new(),
            next: None,
            engine_failed: false,
            egress: None,
        }
    }
}

/// How a step's run ended, for the executor's record.
pub(crate) enum Ran {
    /// Ended before an attempt.
    Failed(StepFailure),
    /// The last attempt, and how many were made. `log` holds every attempt's lines.
    Attempted {
        /// The last attempt (its `log` is every attempt's, bounded).
        last: Attempt,
        /// Attempts made.
        attempts: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_action_is_found_by_its_name_and_only_by_it() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(a));
            assert!(a.name().starts_with("aws:"), "{}", a.name());
        }
        assert_eq!(Action::from_name("aws:putServerUpgradeMetrics"), None);
        assert_eq!(Action::from_name("aws:Sleep"), None);
        assert_eq!(Action::from_name(""), None);
        assert_eq!(Action::ExecuteScript.implicit_outputs(), ["Payload"]);
        assert!(Action::Sleep.implicit_outputs().is_empty());
        assert!(Action::ExecuteScript.declares_outputs() && !Action::Branch.declares_outputs());
        assert!(Action::ExecuteScript.retries() && !Action::Sleep.retries());
    }
}
