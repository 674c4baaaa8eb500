//! scriptbox: run AWS Systems Manager Automation `aws:executeScript` steps, each in a fresh,
//! hardened Docker container of the right runtime.
//!
//! Data flows one way: request → validated step ([`step`]) → [`execute::Runner`] → container
//! (a [`sandbox::Backend`], Docker's in `sandbox/docker.rs`, fed by [`protocol`]) → result
//! ([`result`], assembled by [`execute`]). The daemon ([`server`]) runs the same code behind an
//! HTTP API, with records in [`store`]; [`client`] talks to it.

pub mod aws;
pub mod cli;
pub mod client;
pub mod config;
pub mod context;
pub mod cpython;
pub mod daemon;
pub mod egress;
pub mod execute;
pub mod images;
pub mod pool;
pub mod protocol;
pub mod record;
pub mod report;
pub mod result;
pub mod runbook;
pub mod runtimes;
pub mod sandbox;
pub mod server;
pub mod ssm;
pub mod step;
pub mod store;
pub mod timestamp;
