//! `aws:approve`: waits for approvals or a rejection.
//!
//! Not built yet: a step of this action is refused at load (issue 14 builds it).

not_built_yet!(Approve, Approve);
