//! `aws:waitForAwsResourceProperty`: calls until a selected value is one of the desired ones.
//!
//! Not built yet: a step of this action is refused at load (issue 14 builds it).

not_built_yet!(WaitForAwsResourceProperty, WaitForAwsResourceProperty);
