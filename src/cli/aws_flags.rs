//! The AWS flags of `invoke` and `run` (`--aws`, `--aws-endpoint`, `--aws-profile`,
//! `--region`), declared once. They set the operator's `[aws]` mode for this run; a runbook or
//! a payload can never widen it.

use std::sync::Arc;

use clap::Args;

use super::CliError;
use crate::aws::{AwsAccess, AwsMode};
use crate::config::Settings;

/// How this run's steps reach AWS (default: the configuration's `[aws]`, mode `none`).
#[derive(Debug, Clone, Default, Args)]
pub struct AwsFlags {
    /// Real AWS: the runbook's assumeRole is assumed with your credentials (environment,
    /// --aws-profile, instance or container metadata); steps reach AWS through scriptbox's
    /// CONNECT allowlist only.
    #[arg(long, conflicts_with = "aws_endpoint")]
    pub aws: bool,
    /// An AWS emulator (moto, LocalStack) at this http:// URL: every AWS call of the steps goes
    /// there, STS included, and nothing else is reachable.
    #[arg(long, value_name = "URL")]
    pub aws_endpoint: Option<String>,
    /// The profile of your own credentials (with --aws or --aws-endpoint).
    #[arg(long, value_name = "NAME")]
    pub aws_profile: Option<String>,
    /// The region of the steps (AWS_REGION, AWS_DEFAULT_REGION, global:REGION).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
}

impl AwsFlags {
    /// Applies the flags over `settings`, checks the result (errors name the flag or key) and
    /// builds the AWS access of this run (`None` in mode `none`).
    pub async fn access(
        &self,
        settings: &mut Settings,
    ) -> Result<Option<Arc<AwsAccess>>, CliError> {
        self.apply(settings)?;
        AwsAccess::from_settings(
            &settings.aws,
            &settings.egress,
            &settings.context,
            &settings.sandbox.user,
        )
        .await
        .map_err(|e| CliError::Invalid(format!("AWS access: {e}")))
    }

    /// Applies the flags over `settings` and checks the result.
    fn apply(&self, settings: &mut Settings) -> Result<(), CliError> {
        if self.aws {
            settings.aws.mode = AwsMode::Aws;
        }
        if let Some(url) = &self.aws_endpoint {
            settings.aws.mode = AwsMode::Emulator;
            settings.aws.endpoint = Some(url.clone());
        }
        if let Some(profile) = &self.aws_profile {
            if settings.aws.mode == AwsMode::None {
                return Err(CliError::Invalid(
                    "--aws-profile: needs --aws or --aws-endpoint (AWS access is off)".into(),
                ));
            }
            settings.aws.profile = Some(profile.clone());
        }
        if let Some(region) = &self.region {
            settings.context.region = region.clone();
        }
        settings
            .check()
            .map_err(|e| CliError::Invalid(format!("{e}")))
    }
}
