//! `aws:pause`: waits for a Resume signal.
//!
//! Not built yet: a step of this action is refused at load (issue 14 builds it).

not_built_yet!(Pause, Pause);
