//! `aws:runCommand`: sends a Run Command and polls its invocations.
//!
//! Not built yet: a step of this action is refused at load (issue 14 builds it).

not_built_yet!(RunCommand, RunCommand);
