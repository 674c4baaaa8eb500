//! What may pass: the allowlist of each mode.
//!
//! Every verdict is taken from the request's text alone, before any DNS lookup, so a name off
//! the list never even reaches a resolver. Names are bounded and checked as DNS names (or IP
//! literals) before they are compared with anything.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::EgressError;

/// The longest host-and-port text parsed at all (a DNS name is at most 253 bytes).
pub const MAX_HOST_PORT_LEN: usize = 300;
/// The longest DNS name (without its trailing dot).
const MAX_NAME_LEN: usize = 253;
/// The longest label of a DNS name.
const MAX_LABEL_LEN: usize = 63;
/// The longest region name accepted (`us-isob-east-1` is 14).
const MAX_REGION_LEN: usize = 32;
/// Bounds on the configured lists.
const MAX_REGIONS: usize = 64;
const MAX_EXTRA_HOSTS: usize = 256;

/// The partitions known, with their DNS suffixes (the first is the one of global endpoints).
const PARTITIONS: &[(&str, &[&str])] = &[
    ("aws", &["amazonaws.com", "api.aws"]),
    (
        "aws-cn",
        &["amazonaws.com.cn", "api.amazonwebservices.com.cn"],
    ),
    ("aws-us-gov", &["amazonaws.com", "api.aws"]),
    ("aws-iso", &["c2s.ic.gov"]),
    ("aws-iso-b", &["sc2s.sgov.gov"]),
];

/// Services with one global endpoint, `<name>.<suffix>`, outside any region.
const GLOBAL_SERVICES: &[&str] = &[
    "iam",
    "sts",
    "s3",
    "route53",
    "cloudfront",
    "organizations",
    "globalaccelerator",
    "waf",
    "shield",
    "support",
    "global.health",
];

/// The only port of an AWS endpoint the egress allows.
const AWS_PORT: u16 = 443;

/// A host name (or IP literal) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Lower-case host name or IP literal (no brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl HostPort {
    /// Parses `host`, `host:port`, `[v6]:port`, `[v6]` or `v4:port` (`default_port` when none is
    /// given). The host is lower-cased and must be a DNS name (labels of 1..=63 of `[a-z0-9-]`,
    /// not starting or ending with `-`, at most 253 bytes, a trailing dot dropped, a last label
    /// that is not numeric) or an IP literal. The text is bounded (300 bytes) before parsing.
    /// Errors name the value and the rule it breaks.
    pub fn parse(text: &str, default_port: u16) -> Result<HostPort, EgressError> {
        let (host, port) = split_host_port(text)?;
        Ok(HostPort {
            host,
            port: port.unwrap_or(default_port),
        })
    }

    /// The IP address, when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn invalid(value: &str, rule: &'static str) -> EgressError {
    EgressError::InvalidHost {
        value: super::proxy::clip_for_log(value, 80),
        rule,
    }
}

/// Splits and checks `text`; the port is `None` when the text names none.
fn split_host_port(text: &str) -> Result<(String, Option<u16>), EgressError> {
    if text.len() > MAX_HOST_PORT_LEN {
        return Err(invalid(text, "longer than 300 bytes"));
    }
    if text.is_empty() {
        return Err(invalid(text, "empty"));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid(text, "'[' without ']'"))?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| invalid(text, "not an IPv6 address inside [ ]"))?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(
                text,
                after
                    .strip_prefix(':')
                    .ok_or_else(|| invalid(text, "junk after ']'"))?,
            )?),
        };
        return Ok((ip.to_string(), port));
    }
    if let Ok(ip) = text.parse::<Ipv6Addr>() {
        return Ok((ip.to_string(), None));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(parse_port(text, port)?)),
        None => (text, None),
    };
    Ok((check_host(text, host)?, port))
}

fn parse_port(text: &str, port: &str) -> Result<u16, EgressError> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(text, "the port is not a number of 1 to 5 digits"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid(text, "the port is not in 1..=65535")),
        Ok(port) => Ok(port),
    }
}

/// A lower-cased IPv4 literal or DNS name.
fn check_host(text: &str, host: &str) -> Result<String, EgressError> {
    let lower = host.to_ascii_lowercase();
    if let Ok(ip) = lower.parse::<Ipv4Addr>() {
        return Ok(ip.to_string());
    }
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err(invalid(text, "the host is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(text, "the host name is longer than 253 bytes"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(invalid(
                text,
                "a label of the host name is not 1 to 63 bytes",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                text,
                "the host name has a byte other than [a-z0-9-.]",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid(
                text,
                "a label of the host name starts or ends with '-'",
            ));
        }
    }
    // A numeric last label would let a resolver read the name as an IPv4 address
    // (`127.1`, `0x7f000001`): such a name is no DNS name.
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if hex || last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(text, "the last label of the host name is numeric"));
    }
    Ok(name.to_owned())
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

impl EgressPolicy {
    /// The `aws` mode's policy. Checks the partition (`aws`, `aws-cn`, `aws-us-gov`, `aws-iso`,
    /// `aws-iso-b`) and each region's name (`us-east-1`, `cn-north-1`, `us-gov-west-1`...),
    /// which must belong to the partition; duplicates are dropped, the order kept.
    pub fn aws(
        partition: &str,
        regions: Vec<String>,
        extra: Vec<HostPort>,
    ) -> Result<EgressPolicy, EgressError> {
        if !PARTITIONS.iter().any(|(name, _)| *name == partition) {
            return Err(EgressError::InvalidPartition {
                partition: super::proxy::clip_for_log(partition, 40),
            });
        }
        if regions.len() > MAX_REGIONS {
            return Err(EgressError::TooMany {
                what: "regions",
                count: regions.len(),
                max: MAX_REGIONS,
            });
        }
        if extra.len() > MAX_EXTRA_HOSTS {
            return Err(EgressError::TooMany {
                what: "extra hosts",
                count: extra.len(),
                max: MAX_EXTRA_HOSTS,
            });
        }
        let mut unique: Vec<String> = Vec::with_capacity(regions.len());
        for region in regions {
            check_region(partition, &region)?;
            if !unique.contains(&region) {
                unique.push(region);
            }
        }
        Ok(EgressPolicy::Aws {
            partition: partition.to_owned(),
            regions: unique,
            extra,
        })
    }

    /// The `emulator` mode's policy: everything goes to `address`.
    pub fn emulator(address: HostPort) -> EgressPolicy {
        EgressPolicy::Emulator { address }
    }

    /// The verdict on a CONNECT request's target as received (authority form `host:port`),
    /// taken before any DNS lookup.
    pub fn decide_connect(&self, target: &str) -> Decision {
        let (host, port) = match split_host_port(target) {
            Ok((host, Some(port))) => (host, port),
            Ok((_, None)) => return Decision::Refuse("the target names no port".to_owned()),
            Err(EgressError::InvalidHost { rule, .. }) => {
                return Decision::Refuse(format!("not a valid host:port ({rule})"));
            }
            Err(_) => return Decision::Refuse("not a valid host:port".to_owned()),
        };
        let wanted = HostPort { host, port };
        match self {
            EgressPolicy::Emulator { address } => {
                if wanted == *address {
                    Decision::Allow(wanted)
                } else {
                    Decision::Refuse(format!("not the emulator's address {address}"))
                }
            }
            EgressPolicy::Aws {
                partition,
                regions,
                extra,
            } => {
                if extra.contains(&wanted) {
                    return Decision::Allow(wanted);
                }
                if wanted.ip().is_some() {
                    return Decision::Refuse("an IP address is not an AWS host".to_owned());
                }
                if !is_aws_host(partition, regions, &wanted.host) {
                    let regions = if regions.is_empty() {
                        "no region".to_owned()
                    } else {
                        regions.join(", ")
                    };
                    return Decision::Refuse(format!(
                        "not an AWS host of partition {partition} in {regions}"
                    ));
                }
                if wanted.port != AWS_PORT {
                    return Decision::Refuse(format!("port {} is not {AWS_PORT}", wanted.port));
                }
                Decision::Allow(wanted)
            }
        }
    }

    /// The verdict on a non-CONNECT request (origin-form or absolute-form target): in emulator
    /// mode the request goes to the emulator as is, whatever host it names; in aws mode it is
    /// refused (TLS goes through CONNECT). `target` is only for the refusal's text.
    pub fn decide_plain(&self, _target: &str) -> Decision {
        match self {
            EgressPolicy::Emulator { address } => Decision::Allow(address.clone()),
            EgressPolicy::Aws { .. } => {
                Decision::Refuse("a plain HTTP request is not allowed, only CONNECT".to_owned())
            }
        }
    }

    /// Whether the addresses `allowed` resolves to must be checked (loopback, link-local...)
    /// before connecting: for AWS names, not for what the operator named or the emulator.
    pub(super) fn checks_addresses(&self, allowed: &HostPort) -> bool {
        match self {
            EgressPolicy::Emulator { .. } => false,
            EgressPolicy::Aws { extra, .. } => !extra.contains(allowed),
        }
    }
}

/// `us-east-1`, `us-gov-west-1`: two letters, one or more words, a number; in the partition.
fn check_region(partition: &str, region: &str) -> Result<(), EgressError> {
    let err = |rule: &'static str| EgressError::InvalidRegion {
        region: super::proxy::clip_for_log(region, 40),
        partition: partition.to_owned(),
        rule,
    };
    if region.len() > MAX_REGION_LEN {
        return Err(err("longer than 32 bytes"));
    }
    let parts: Vec<&str> = region.split('-').collect();
    let shape = parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].len() <= 2
        && !parts[parts.len() - 1].is_empty()
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit());
    if !shape {
        return Err(err(
            "not a region name like us-east-1 (two letters, words, a number, joined by '-')",
        ));
    }
    let of = region_partition(region);
    if of != partition {
        return Err(err("the region belongs to another partition"));
    }
    Ok(())
}

/// The partition a (well-formed) region name belongs to.
fn region_partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.split('-').any(|p| p.starts_with("iso")) {
        // aws-iso-e, aws-iso-f...: partitions this egress does not know.
        "unknown"
    } else {
        "aws"
    }
}

/// Whether `host` (a checked, lower-case DNS name) is an endpoint of `partition` in `regions`
/// or one of its global endpoints.
fn is_aws_host(partition: &str, regions: &[String], host: &str) -> bool {
    let Some((_, suffixes)) = PARTITIONS.iter().find(|(name, _)| *name == partition) else {
        return false;
    };
    for (index, suffix) in suffixes.iter().enumerate() {
        let Some(prefix) = host
            .strip_suffix(suffix)
            .and_then(|rest| rest.strip_suffix('.'))
        else {
            continue;
        };
        if prefix.is_empty() {
            continue;
        }
        let labels: Vec<&str> = prefix.split('.').collect();
        if labels.iter().any(|label| names_region(regions, label)) {
            return true;
        }
        if index == 0 && is_global(prefix, &labels) {
            return true;
        }
    }
    false
}

/// `us-east-1`, or the legacy `s3-us-east-1` / `s3-website-us-east-1` forms.
fn names_region(regions: &[String], label: &str) -> bool {
    regions.iter().any(|region| {
        label == region
            || (label.starts_with("s3-")
                && label
                    .strip_suffix(region.as_str())
                    .is_some_and(|rest| rest.ends_with('-')))
    })
}

/// `iam`, `sts`, `global.health`..., or `<bucket>.s3` (a bucket under the global S3 name).
fn is_global(prefix: &str, labels: &[&str]) -> bool {
    GLOBAL_SERVICES.contains(&prefix) || (labels.len() >= 2 && labels.last() == Some(&"s3"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(partition: &str, regions: &[&str], extra: &[&str]) -> EgressPolicy {
        let extra = extra
            .iter()
            .map(|e| HostPort::parse(e, 443).unwrap())
            .collect();
        EgressPolicy::aws(
            partition,
            regions.iter().map(|r| (*r).to_owned()).collect(),
            extra,
        )
        .unwrap()
    }

    #[test]
    fn host_port_parse_accepts_and_normalizes() {
        let cases: &[(&str, &str, u16)] = &[
            ("example.com", "example.com", 443),
            ("Example.COM:8443", "example.com", 8443),
            ("example.com.", "example.com", 443),
            ("example.com.:80", "example.com", 80),
            ("127.0.0.1:5000", "127.0.0.1", 5000),
            ("[::1]:443", "::1", 443),
            ("[::1]", "::1", 443),
            ("::1", "::1", 443),
            ("[FE80::1]:80", "fe80::1", 80),
            ("a-b.c-d.example", "a-b.c-d.example", 443),
            ("localhost", "localhost", 443),
            ("xn--bcher-kva.example:1", "xn--bcher-kva.example", 1),
        ];
        for (text, host, port) in cases {
            let parsed = HostPort::parse(text, 443).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed.host, *host, "{text}");
            assert_eq!(parsed.port, *port, "{text}");
        }
        assert_eq!(
            HostPort::parse("[::1]:443", 1).unwrap().to_string(),
            "[::1]:443"
        );
        assert_eq!(
            HostPort::parse("Ec2.amazonaws.com", 443)
                .unwrap()
                .to_string(),
            "ec2.amazonaws.com:443"
        );
    }

    #[test]
    fn host_port_parse_refuses() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        let too_long = "a".repeat(301);
        let cases: Vec<&str> = vec![
            "",
            ":443",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "example.com:+1",
            "example.com:44a",
            "example.com:000443",
            "a@example.com",
            "a@example.com:443",
            "exa mple.com",
            "example..com",
            ".example.com",
            "-a.example.com",
            "a-.example.com",
            "exam_ple.com",
            "ex%41mple.com",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[127.0.0.1]:443",
            "[fe80::1%eth0]:443",
            "127.1",
            "127.0.0.01:443",
            "0x7f000001:443",
            "2130706433",
            "host.0x7f",
            "exämple.com",
            "example.com\n",
            "http://example.com",
            &long_label,
            &long_name,
            &too_long,
        ];
        for text in cases {
            assert!(
                HostPort::parse(text, 443).is_err(),
                "{text:?} should be refused"
            );
        }
        let err = HostPort::parse("a@b.com", 443).unwrap_err().to_string();
        assert!(
            err.contains("a@b.com") && err.contains("[a-z0-9-.]"),
            "{err}"
        );
    }

    #[test]
    fn aws_policy_validates_partition_and_regions() {
        for (partition, region) in [
            ("aws", "us-east-1"),
            ("aws", "eu-central-1"),
            ("aws", "ap-southeast-2"),
            ("aws", "il-central-1"),
            ("aws-cn", "cn-north-1"),
            ("aws-cn", "cn-northwest-1"),
            ("aws-us-gov", "us-gov-west-1"),
            ("aws-iso", "us-iso-east-1"),
            ("aws-iso-b", "us-isob-east-1"),
        ] {
            EgressPolicy::aws(partition, vec![region.to_owned()], vec![])
                .unwrap_or_else(|e| panic!("{partition} {region}: {e}"));
        }
        for (partition, region) in [
            ("aws", "cn-north-1"),
            ("aws", "us-gov-west-1"),
            ("aws", "us-iso-east-1"),
            ("aws", "eu-isoe-west-1"),
            ("aws-cn", "us-east-1"),
            ("aws-us-gov", "us-east-1"),
            ("aws-iso", "us-isob-east-1"),
            ("aws", "US-EAST-1"),
            ("aws", "us-east"),
            ("aws", "useast1"),
            ("aws", "us-east-1a"),
            ("aws", "us-east-123"),
            ("aws", "u-east-1"),
            ("aws", "us--1"),
            ("aws", "us-east-1.evil.com"),
            ("aws", ""),
        ] {
            assert!(
                EgressPolicy::aws(partition, vec![region.to_owned()], vec![]).is_err(),
                "{partition} {region:?} should be refused"
            );
        }
        let err = EgressPolicy::aws("aws-mars", vec![], vec![]).unwrap_err();
        assert!(err.to_string().contains("aws-mars"), "{err}");
        let err = EgressPolicy::aws("aws", vec!["cn-north-1".into()], vec![]).unwrap_err();
        assert!(err.to_string().contains("cn-north-1"), "{err}");
    }

    #[test]
    fn aws_connect_table() {
        let policy = aws(
            "aws",
            &["us-east-1", "eu-west-1"],
            &["www.powershellgallery.com"],
        );
        let allowed = [
            "ec2.us-east-1.amazonaws.com:443",
            "ec2-fips.us-east-1.amazonaws.com:443",
            "ssm.eu-west-1.amazonaws.com:443",
            "bucket.s3.us-east-1.amazonaws.com:443",
            "my.dotted.bucket.s3.us-east-1.amazonaws.com:443",
            "s3.dualstack.us-east-1.amazonaws.com:443",
            "s3-us-east-1.amazonaws.com:443",
            "bucket.s3-us-east-1.amazonaws.com:443",
            "s3-website-us-east-1.amazonaws.com:443",
            "s3.us-east-1.amazonaws.com:443",
            "ssm.us-east-1.api.aws:443",
            "sts.us-east-1.amazonaws.com:443",
            "EC2.US-EAST-1.AMAZONAWS.COM:443",
            "ec2.us-east-1.amazonaws.com.:443",
            "iam.amazonaws.com:443",
            "sts.amazonaws.com:443",
            "s3.amazonaws.com:443",
            "bucket.s3.amazonaws.com:443",
            "route53.amazonaws.com:443",
            "cloudfront.amazonaws.com:443",
            "organizations.amazonaws.com:443",
            "globalaccelerator.amazonaws.com:443",
            "waf.amazonaws.com:443",
            "shield.amazonaws.com:443",
            "support.amazonaws.com:443",
            "global.health.amazonaws.com:443",
            "www.powershellgallery.com:443",
        ];
        for target in allowed {
            match policy.decide_connect(target) {
                Decision::Allow(hp) => assert_eq!(hp.port, 443, "{target}"),
                Decision::Refuse(why) => panic!("{target} refused: {why}"),
            }
        }
        let long = format!("{}.us-east-1.amazonaws.com:443", "a".repeat(64));
        let overlong = format!("{}us-east-1.amazonaws.com:443", "abcdefgh.".repeat(30));
        let refused = [
            ("amazonaws.com.evil.com:443", "not an AWS host"),
            (
                "ec2.us-east-1.amazonaws.com.evil.com:443",
                "not an AWS host",
            ),
            ("evilamazonaws.com:443", "not an AWS host"),
            ("us-east-1.evilamazonaws.com:443", "not an AWS host"),
            ("amazonaws.com:443", "not an AWS host"),
            ("api.aws:443", "not an AWS host"),
            ("ec2.us-east-1.amazonaws.com:22", "port 22 is not 443"),
            ("ec2.us-east-1.amazonaws.com:80", "port 80 is not 443"),
            ("ec2.us-east-1.amazonaws.com", "no port"),
            ("a@ec2.us-east-1.amazonaws.com:443", "not a valid host:port"),
            ("ec2.us-west-2.amazonaws.com:443", "not an AWS host"),
            ("s3-us-west-2.amazonaws.com:443", "not an AWS host"),
            ("xs3-us-east-1.amazonaws.com:443", "not an AWS host"),
            ("ec2.us-east-1x.amazonaws.com:443", "not an AWS host"),
            ("ec2.cn-north-1.amazonaws.com.cn:443", "not an AWS host"),
            ("ec2.amazonaws.com:443", "not an AWS host"),
            ("health.amazonaws.com:443", "not an AWS host"),
            ("iam.api.aws:443", "not an AWS host"),
            ("s3.amazonaws.com.cn:443", "not an AWS host"),
            ("169.254.169.254:443", "IP address"),
            ("[::1]:443", "IP address"),
            ("127.0.0.1:443", "IP address"),
            ("localhost:443", "not an AWS host"),
            ("www.powershellgallery.com:80", "not an AWS host"),
            ("example.com:443", "not an AWS host"),
            ("ec2.us-east-1.amazonaws.com:443/", "not a valid host:port"),
            ("ec2.us-east-1.amazonaws.com:443 x", "not a valid host:port"),
            (
                "ec2.us-east-1.amazonaws.com\r\n:443",
                "not a valid host:port",
            ),
            ("", "not a valid host:port"),
            (long.as_str(), "not a valid host:port"),
            (overlong.as_str(), "not a valid host:port"),
        ];
        for (target, why) in refused {
            match policy.decide_connect(target) {
                Decision::Allow(hp) => panic!("{target:?} allowed as {hp}"),
                Decision::Refuse(reason) => {
                    assert!(reason.contains(why), "{target}: {reason}");
                }
            }
        }
        assert_eq!(
            policy.decide_connect("example.com:443"),
            Decision::Refuse("not an AWS host of partition aws in us-east-1, eu-west-1".to_owned())
        );
    }

    #[test]
    fn other_partitions_use_their_suffixes() {
        let cn = aws("aws-cn", &["cn-north-1"], &[]);
        let gov = aws("aws-us-gov", &["us-gov-west-1"], &[]);
        let iso = aws("aws-iso", &["us-iso-east-1"], &[]);
        let isob = aws("aws-iso-b", &["us-isob-east-1"], &[]);
        let cases = [
            (&cn, "ec2.cn-north-1.amazonaws.com.cn:443", true),
            (&cn, "ssm.cn-north-1.api.amazonwebservices.com.cn:443", true),
            (&cn, "iam.amazonaws.com.cn:443", true),
            (&cn, "ec2.cn-north-1.amazonaws.com:443", false),
            (&cn, "iam.amazonaws.com:443", false),
            (&gov, "ec2.us-gov-west-1.amazonaws.com:443", true),
            (&gov, "ec2.us-gov-west-1.api.aws:443", true),
            (&gov, "ec2.us-east-1.amazonaws.com:443", false),
            (&iso, "ec2.us-iso-east-1.c2s.ic.gov:443", true),
            (&iso, "ec2.us-iso-east-1.amazonaws.com:443", false),
            (&isob, "ec2.us-isob-east-1.sc2s.sgov.gov:443", true),
            (&isob, "ec2.us-isob-east-1.c2s.ic.gov:443", false),
        ];
        for (policy, target, allowed) in cases {
            let got = matches!(policy.decide_connect(target), Decision::Allow(_));
            assert_eq!(got, allowed, "{target}");
        }
    }

    #[test]
    fn extras_may_be_ips_and_other_ports() {
        let policy = aws("aws", &["us-east-1"], &["127.0.0.1:8080", "[::1]:9000"]);
        assert_eq!(
            policy.decide_connect("127.0.0.1:8080"),
            Decision::Allow(HostPort::parse("127.0.0.1:8080", 1).unwrap())
        );
        assert!(matches!(
            policy.decide_connect("[::1]:9000"),
            Decision::Allow(_)
        ));
        assert!(matches!(
            policy.decide_connect("127.0.0.1:8081"),
            Decision::Refuse(_)
        ));
        let extra = HostPort::parse("127.0.0.1:8080", 1).unwrap();
        assert!(!policy.checks_addresses(&extra));
        let aws_host = HostPort::parse("sts.amazonaws.com:443", 1).unwrap();
        assert!(policy.checks_addresses(&aws_host));
        assert!(matches!(
            policy.decide_plain("http://127.0.0.1:8080/"),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn emulator_policy() {
        let address = HostPort::parse("127.0.0.1:5000", 80).unwrap();
        let policy = EgressPolicy::emulator(address.clone());
        assert_eq!(
            policy.decide_connect("127.0.0.1:5000"),
            Decision::Allow(address.clone())
        );
        for target in [
            "127.0.0.1:5001",
            "localhost:5000",
            "sts.amazonaws.com:443",
            "127.0.0.1",
        ] {
            assert!(
                matches!(policy.decide_connect(target), Decision::Refuse(_)),
                "{target}"
            );
        }
        assert_eq!(
            policy.decide_plain("http://evil.example/x"),
            Decision::Allow(address.clone())
        );
        assert_eq!(policy.decide_plain("/"), Decision::Allow(address.clone()));
        assert!(!policy.checks_addresses(&address));
    }
}
