//! `aws:createTags`: tags EC2 resources (EC2 CreateTags, the default) or one Systems Manager
//! resource (SSM AddTagsToResource for ManagedInstance, MaintenanceWindow, Parameter, which
//! takes a single id, as AWS's page says). No outputs.

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::aws_call::{call_in_step, failed};
use super::resources::{self, Input, InputError, Ty, opt, req};
use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::runbook::document::{StepDecl, StepKind};

/// The resource types AWS's page lists.
const TYPES: &[&str] = &["EC2", "ManagedInstance", "MaintenanceWindow", "Parameter"];

/// The most tags one call sets (EC2 and SSM: 50 per resource).
pub const MAX_TAGS: usize = 50;

/// The most EC2 resources one step tags **(ours: EC2's CreateTags takes up to 1000 ids)**.
pub const MAX_RESOURCES: usize = 1000;

const SPEC: &[Input] = &[
    req("ResourceIds", Ty::StrList).at_most(MAX_RESOURCES),
    req("Tags", Ty::MapList).at_most(MAX_TAGS),
    opt("ResourceType", Ty::OneOf(TYPES)),
];

/// `aws:createTags`.
pub(crate) struct CreateTags;

impl ActionSpec for CreateTags {
    const ACTION: Action = Action::CreateTags;
    const INPUT_KEYS: &'static [&'static str] = &["ResourceIds", "Tags", "ResourceType"];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &[];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = Map<String, Value>;

    /// Types of the inputs; each literal tag a `{Key, Value}`; one id for a non-EC2 type.
    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        resources::check(cx, step, Self::ACTION, SPEC);
        if let Ok(read) = literal_read(step.inputs) {
            if let Err(e) = rules(&read) {
                let pos = step.inputs_node.map(|n| n.pos).unwrap_or(step.node.pos);
                cx.invalid(pos, step.ctx, e.to_string());
            }
        }
        Some(StepKind::Checked(Self::ACTION))
    }

    fn prepare<'s>(
        _cx: &RunCx<'_>,
        _step: &'s StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<Map<String, Value>, StepFailure> {
        let read = resources::read(inputs, SPEC).map_err(|e| e.failure())?;
        rules(&read).map_err(|e| e.failure())?;
        Ok(read)
    }

    /// One call: EC2 CreateTags, or SSM AddTagsToResource.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        inputs: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let (service, api, params) = request(inputs);
            let mut log = Vec::new();
            match call_in_step(cx, step, &mut log, service, api, params).await {
                Ok(_) => resources::succeeded(Vec::new(), log),
                Err(f) => resources::with_log(failed(f), log),
            }
        })
    }
}

/// The inputs when every one is written literally (only then can the rules be checked at load).
fn literal_read(inputs: &Map<String, Value>) -> Result<Map<String, Value>, InputError> {
    if crate::runbook::interpolate::has_refs(&Value::Object(inputs.clone())) {
        return Err(InputError::Rule("known at run time".into()));
    }
    resources::read(inputs, SPEC)
}

/// Every tag a `{Key, Value}` of strings; a non-EC2 type tags exactly one resource.
fn rules(read: &Map<String, Value>) -> Result<(), InputError> {
    let ids = resources::strings(read, "ResourceIds");
    let ty = resources::text(read, "ResourceType").unwrap_or("EC2");
    if ids.is_empty() {
        return Err(InputError::Rule(
            "inputs.ResourceIds: at least one resource id is required".into(),
        ));
    }
    if ty != "EC2" && ids.len() != 1 {
        return Err(InputError::Rule(format!(
            "inputs.ResourceIds: ResourceType {ty} tags one resource only (SSM AddTagsToResource), not {}",
            ids.len()
        )));
    }
    for (i, tag) in read
        .get("Tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(m) = tag.as_object() else { continue };
        let key_ok = m.get("Key").is_some_and(Value::is_string);
        let value_ok = m.get("Value").is_none_or(Value::is_string);
        let known = m.keys().all(|k| k == "Key" || k == "Value");
        if !(key_ok && value_ok && known) {
            return Err(InputError::Rule(format!(
                "inputs.Tags[{i}]: a tag is {{Key: string, Value: string}}"
            )));
        }
        if ty != "EC2" && m.get("Value").is_none() {
            return Err(InputError::Rule(format!(
                "inputs.Tags[{i}]: SSM AddTagsToResource requires a Value"
            )));
        }
    }
    Ok(())
}

/// The call for read inputs: `(service, api, parameters)`.
fn request(read: &Map<String, Value>) -> (&'static str, &'static str, Map<String, Value>) {
    let ids = resources::strings(read, "ResourceIds");
    let tags = read.get("Tags").cloned().unwrap_or_else(|| json!([]));
    let mut params = Map::new();
    match resources::text(read, "ResourceType").unwrap_or("EC2") {
        "EC2" => {
            params.insert("Resources".into(), json!(ids));
            params.insert("Tags".into(), tags);
            ("ec2", "CreateTags", params)
        }
        ty => {
            params.insert("ResourceType".into(), json!(ty));
            params.insert(
                "ResourceId".into(),
                json!(ids.first().cloned().unwrap_or_default()),
            );
            params.insert("Tags".into(), tags);
            ("ssm", "AddTagsToResource", params)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: Value) -> Map<String, Value> {
        resources::read(v.as_object().unwrap(), SPEC).unwrap()
    }

    #[test]
    fn ec2_or_ssm() {
        let (s, a, p) = request(&read(
            json!({"ResourceIds": ["i-1", "ami-2"], "Tags": [{"Key": "k", "Value": "v"}]}),
        ));
        assert_eq!((s, a), ("ec2", "CreateTags"));
        assert_eq!(
            Value::Object(p),
            json!({"Resources": ["i-1", "ami-2"], "Tags": [{"Key": "k", "Value": "v"}]})
        );
        let (s, a, p) = request(&read(
            json!({"ResourceIds": ["/app/x"], "ResourceType": "Parameter", "Tags": [{"Key": "k", "Value": "v"}]}),
        ));
        assert_eq!((s, a), ("ssm", "AddTagsToResource"));
        assert_eq!(
            Value::Object(p),
            json!({"ResourceType": "Parameter", "ResourceId": "/app/x", "Tags": [{"Key": "k", "Value": "v"}]})
        );
    }

    #[test]
    fn rules_name_the_field() {
        let two = read(
            json!({"ResourceIds": ["a", "b"], "ResourceType": "Parameter", "Tags": [{"Key": "k", "Value": "v"}]}),
        );
        assert!(
            rules(&two)
                .unwrap_err()
                .to_string()
                .contains("tags one resource only")
        );
        let bad = read(json!({"ResourceIds": ["a"], "Tags": [{"Name": "k"}]}));
        assert_eq!(
            rules(&bad).unwrap_err().to_string(),
            "inputs.Tags[0]: a tag is {Key: string, Value: string}"
        );
        assert!(rules(&read(json!({"ResourceIds": ["a"], "Tags": [{"Key": "k"}]}))).is_ok());
    }
}
