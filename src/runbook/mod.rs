//! Whole Automation runbooks (schema 0.3): read, validate, run.
//!
//! Data flows one way: text → marked tree ([`yaml`]) → checked document ([`document`], with
//! [`parameters`], [`interpolate`], [`selector`] and the attachments; each step's inputs by its
//! action's module in [`actions`]) → execution ([`executor`], each step run by its action:
//! one container per executeScript step through a [`executor::StepRunner`]) → AWS-shaped
//! report ([`output`]).
//!
//! Every check runs before the first step, and every problem is reported, not only the first.

use std::fmt;

pub mod actions;
pub mod children;
pub mod document;
pub mod executor;
pub mod interpolate;
pub mod output;
pub mod parameters;
pub mod runner;
pub mod selector;
pub mod signals;
pub mod yaml;

pub use yaml::Pos;

/// What sort of problem a document has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The text is not valid YAML/JSON.
    Syntax,
    /// The document breaks a rule of schema 0.3 (or a parameter value breaks its rule).
    Invalid,
    /// Valid for AWS, but uses something scriptbox does not run locally (an action, a tag,
    /// a Parameter Store reference...). `Problem::what` names it.
    Unsupported,
}

/// One problem of a document, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the text (line 0 when unknown).
    pub pos: Pos,
    /// Which part: `mainSteps[2] (step "copyImage"): inputs.Runtime`, `parameters.Name`...
    pub context: String,
    /// What is wrong.
    pub message: String,
    /// Syntax, invalid or unsupported.
    pub kind: ProblemKind,
    /// For an unsupported feature, its name (`aws:executeAwsApi`, `!GetAtt`, `{{ssm:...}}`).
    pub what: Option<String>,
}

impl Problem {
    /// An invalid-document problem.
    pub fn invalid(pos: Pos, context: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            pos,
            context: context.into(),
            message: message.into(),
            kind: ProblemKind::Invalid,
            what: None,
        }
    }

    /// An unsupported-feature problem naming the feature.
    pub fn unsupported(
        pos: Pos,
        context: impl Into<String>,
        what: impl Into<String>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            pos,
            context: context.into(),
            message: message.into(),
            kind: ProblemKind::Unsupported,
            what: Some(what.into()),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pos.known() {
            write!(f, "{}: ", self.pos)?;
        }
        if !self.context.is_empty() {
            write!(f, "{}: ", self.context)?;
        }
        f.write_str(&self.message)
    }
}

/// A document or its parameters refused, with every problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Refused {
    /// The problems, in document order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// The context prefix for a step: `mainSteps[2] (step "copyImage")`.
pub fn step_context(index: usize, name: &str) -> String {
    if name.is_empty() {
        format!("mainSteps[{index}]")
    } else {
        format!("mainSteps[{index}] (step {name:?})")
    }
}
