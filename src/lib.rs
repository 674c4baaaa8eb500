//! scriptbox: run AWS Systems Manager Automation `aws:executeScript` steps, each in a fresh,
//! hardened Docker container of the right runtime.
//!
//! Data flows one way: request → validated step ([`step`]) → container ([`sandbox`], fed by
//! [`protocol`]) → result ([`result`], assembled by [`execute`]).

pub mod cli;
pub mod config;
pub mod execute;
pub mod images;
pub mod pool;
pub mod protocol;
pub mod result;
pub mod runbook;
pub mod runtimes;
pub mod sandbox;
pub mod step;
