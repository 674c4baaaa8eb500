//! The AWS context of an execution: the values of the handler's context dict and the
//! allowlisted environment of its container. Shared by the runner ([`crate::execute`]), the warm
//! pool ([`crate::pool`]), the runbook executor and the configuration, so none of them depends on
//! another for it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Values of the context dict and the AWS environment of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsContext {
    /// `global:ACCOUNT_ID`.
    pub account_id: String,
    /// `global:REGION`, and `AWS_REGION` / `AWS_DEFAULT_REGION` in the container.
    pub region: String,
    /// `global:AWS_PARTITION`.
    pub partition: String,
}

impl Default for AwsContext {
    fn default() -> Self {
        Self {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            partition: "aws".into(),
        }
    }
}

/// Builds the context dict a handler receives.
pub fn context_dict(
    ctx: &AwsContext,
    execution_id: &str,
    now: DateTime<Utc>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("automation:EXECUTION_ID".into(), execution_id.into());
    m.insert("global:ACCOUNT_ID".into(), ctx.account_id.clone().into());
    m.insert("global:REGION".into(), ctx.region.clone().into());
    m.insert("global:AWS_PARTITION".into(), ctx.partition.clone().into());
    m.insert(
        "global:DATE".into(),
        now.format("%Y-%m-%d").to_string().into(),
    );
    m.insert(
        "global:DATE_TIME".into(),
        now.format("%Y-%m-%d_%H.%M.%S").to_string().into(),
    );
    m
}

/// The environment of every sandbox: an allowlist, never scriptbox's own environment.
pub fn container_env(context: &AwsContext) -> Vec<String> {
    let region = &context.region;
    vec![
        "HOME=/tmp".into(),
        "LANG=C.UTF-8".into(),
        format!("AWS_REGION={region}"),
        format!("AWS_DEFAULT_REGION={region}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_has_the_documented_keys_and_formats() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T12:30:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let m = context_dict(&AwsContext::default(), "exec-1", now);
        assert_eq!(m["automation:EXECUTION_ID"], "exec-1");
        assert_eq!(m["global:ACCOUNT_ID"], "123456789012");
        assert_eq!(m["global:REGION"], "us-east-1");
        assert_eq!(m["global:AWS_PARTITION"], "aws");
        assert_eq!(m["global:DATE"], "2026-11-27");
        assert_eq!(m["global:DATE_TIME"], "2026-11-27_12.30.05");
    }
}
