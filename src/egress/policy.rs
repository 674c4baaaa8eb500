//! What may pass: the allowlist of each mode (helper A implements).

/// A host name (or IP literal) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Lower-case host name or IP literal (no brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

/// The rules of one mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressPolicy {
    /// Every request goes to the emulator; CONNECT only to the emulator's own address.
    Emulator {
        /// The emulator (`127.0.0.1:5000`).
        address: HostPort,
    },
    /// CONNECT only to AWS service host names of `partition` in `regions` (and the global
    /// endpoints) on 443, or to an operator's extra host.
    Aws {
        /// `aws`, `aws-cn`, `aws-us-gov`.
        partition: String,
        /// The regions allowed (the configured one first).
        regions: Vec<String>,
        /// Hosts the operator adds (`[aws] allow_hosts`).
        extra: Vec<HostPort>,
    },
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Connect to this address.
    Allow(HostPort),
    /// Refuse, with the reason for the log line.
    Refuse(String),
}

// LEAD STUB: replaced by helper A's implementation at merge.
impl HostPort {
    /// Stub.
    pub fn parse(text: &str, default_port: u16) -> Result<HostPort, super::EgressError> {
        match text.rsplit_once(':') {
            Some((h, p)) => Ok(HostPort {
                host: h.to_ascii_lowercase(),
                port: p.parse().map_err(|_| super::EgressError::Stub)?,
            }),
            None => Ok(HostPort {
                host: text.to_ascii_lowercase(),
                port: default_port,
            }),
        }
    }
}
impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}
impl EgressPolicy {
    /// Stub.
    pub fn aws(
        partition: &str,
        regions: Vec<String>,
        extra: Vec<HostPort>,
    ) -> Result<EgressPolicy, super::EgressError> {
        Ok(EgressPolicy::Aws {
            partition: partition.into(),
            regions,
            extra,
        })
    }
    /// Stub.
    pub fn emulator(address: HostPort) -> EgressPolicy {
        EgressPolicy::Emulator { address }
    }
}
