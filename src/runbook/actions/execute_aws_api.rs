//! `aws:executeAwsApi`: one AWS API call, outputs selected from its response.
//!
//! Not built yet: a step of this action is refused at load (issue 14 builds it).

not_built_yet!(ExecuteAwsApi, ExecuteAwsApi);
