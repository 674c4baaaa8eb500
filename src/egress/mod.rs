//! The guarded way out of the sandbox for AWS calls (issue 13, `SECURITY.md` "AWS egress").
//!
//! A container keeps `NetworkMode: none`. Per step run, [`EgressSession::start`] creates a
//! folder holding one Unix socket, which the sandbox mounts read-only into the container; the
//! bootstrap relays the container's loopback to it. This side decides what passes
//! ([`EgressPolicy`]): CONNECT to AWS host names of the configured partition and regions on 443
//! (plus hosts the operator adds) in `aws` mode, the emulator's address only in `emulator` mode.
//! Everything else is refused, and each refusal becomes a line of the step's log. The caps of
//! [`EgressLimits`] hold per execution through a shared [`EgressBudget`]; the counts go into the
//! execution's record ([`EgressCounts`]).
//!
//! This module depends on no other module of the crate: `aws` builds its policy.

use serde::{Deserialize, Serialize};

mod policy;
mod proxy;

pub use policy::{Decision, EgressPolicy, HostPort, MAX_HOST_PORT_LEN};
pub use proxy::{
    EgressBudget, EgressError, EgressSession, MAX_HEAD_BYTES, MAX_LOG_LINES, default_egress_dir,
};

/// The socket's file name inside the session folder.
pub const SOCKET_NAME: &str = "aws.sock";
/// Where the session folder is mounted (read-only) inside the container.
pub const CONTAINER_DIR: &str = "/run/scriptbox-egress";
/// The socket's path inside the container.
pub const CONTAINER_SOCKET: &str = "/run/scriptbox-egress/aws.sock";

/// Caps on one execution's egress (`[egress]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressLimits {
    /// Connections accepted over the whole execution (refused ones included).
    pub max_connections: u64,
    /// Connections open at once.
    pub max_concurrent_connections: u64,
    /// Bytes in both directions over the whole execution.
    pub max_bytes: u64,
    /// The longest one connection may stay open.
    pub max_connection_seconds: u64,
    /// Deadline for reading a request head and for connecting upstream.
    pub connect_timeout_seconds: u64,
}

impl Default for EgressLimits {
    fn default() -> Self {
        EgressLimits {
            max_connections: 1000,
            max_concurrent_connections: 32,
            max_bytes: 256 * 1024 * 1024,
            max_connection_seconds: 300,
            connect_timeout_seconds: 10,
        }
    }
}

/// What one execution's egress did, for its record (`Egress` of a step's result,
/// `ScriptboxEgress` of a runbook's step and of the whole runbook).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct EgressCounts {
    /// Connections the socket accepted.
    pub connections: u64,
    /// Of those, the ones refused (off the list, over a cap, malformed).
    pub refused: u64,
    /// Bytes from the container to upstream.
    pub bytes_out: u64,
    /// Bytes from upstream to the container.
    pub bytes_in: u64,
    /// The first cap reached, named as in `[egress]` (`max_bytes`...), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_reached: Option<String>,
}

impl EgressCounts {
    /// Adds `other` (a later step's counts) to these.
    pub fn add(&mut self, other: &EgressCounts) {
        self.connections = self.connections.saturating_add(other.connections);
        self.refused = self.refused.saturating_add(other.refused);
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        if self.limit_reached.is_none() {
            self.limit_reached.clone_from(&other.limit_reached);
        }
    }
}
