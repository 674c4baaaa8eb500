//! `aws:changeInstanceState`: starts, stops or terminates instances, then waits.
//!
//! Not built yet: a step of this action is refused at load (issue 14 builds it).

not_built_yet!(ChangeInstanceState, ChangeInstanceState);
