//! `aws:loop`: runs inner steps over iterators or while a condition holds.
//!
//! Not built yet: a step of this action is refused at load (issue 14 builds it).

not_built_yet!(Loop, Loop);
