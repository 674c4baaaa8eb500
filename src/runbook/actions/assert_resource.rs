//! `aws:assertAwsResourceProperty`: one call; fails unless the selected value is a desired one.
//!
//! Not built yet: a step of this action is refused at load (issue 14 builds it).

not_built_yet!(AssertAwsResourceProperty, AssertAwsResourceProperty);
