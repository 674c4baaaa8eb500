//! `aws:executeAutomation`: a child runbook execution, its outputs flowing back.
//!
//! Not built yet: a step of this action is refused at load (issue 14 builds it).

not_built_yet!(ExecuteAutomation, ExecuteAutomation);
