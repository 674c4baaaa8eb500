//! `aws:sleep`: an ISO 8601 `Duration` or an RFC 3339 `Timestamp`, cancellable.
//!
//! AWS's maximum holds: a `Duration` of at most [`MAX_SLEEP_SECS`] (604,799 s, 7 days minus a
//! second), a `Timestamp` at most that far ahead **(ours: AWS states the maximum for durations
//! only)**. A literal beyond it refuses the document; a value that arrives through `{{ }}` fails
//! the step. Nothing here panics on any input.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::{Action, ActionSpec, Attempt, CheckCx, RunCx, StepFailure, StepHead};
use crate::result::StepStatus;
use crate::runbook::document::{StepDecl, StepKind};
use crate::runbook::interpolate;

/// aws:sleep's longest sleep, seconds (AWS: 604,799, 7 days minus a second).
pub const MAX_SLEEP_SECS: u64 = 604_799;

/// Why a sleep's `Duration` or `Timestamp` is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SleepError {
    /// Not an ISO 8601 duration, for the reason given.
    #[error("{text:?} is not an ISO 8601 duration ({why}), e.g. PT10S, PT1M30S, P1D")]
    NotADuration {
        /// As written.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// A duration in years or months.
    #[error(
        "{0:?}: years and months are not supported (their length depends on the calendar); use days, e.g. P30D"
    )]
    YearsOrMonths(String),
    /// A duration beyond [`MAX_SLEEP_SECS`].
    #[error(
        "{0:?} is longer than aws:sleep's maximum of {max} seconds (7 days minus a second)",
        max = MAX_SLEEP_SECS
    )]
    TooLong(String),
    /// Not an RFC 3339 timestamp.
    #[error("{text:?} is not an RFC 3339 timestamp such as 2026-01-01T10:00:00Z: {reason}")]
    NotATimestamp {
        /// As written.
        text: String,
        /// chrono's reason.
        reason: chrono::ParseError,
    },
    /// A timestamp more than [`MAX_SLEEP_SECS`] ahead.
    #[error(
        "{0:?} is more than aws:sleep's maximum of {max} seconds (7 days minus a second) ahead",
        max = MAX_SLEEP_SECS
    )]
    TooFarAhead(String),
    /// Both inputs given.
    #[error("give Duration or Timestamp, not both")]
    Both,
    /// Neither input given.
    #[error("Duration or Timestamp is required")]
    Neither,
    /// The input is not a string.
    #[error("must be a string, not {0}")]
    NotAString(Value),
}

fn too_long(s: &str) -> SleepError {
    SleepError::TooLong(s.to_string())
}

/// Parses an ISO 8601 duration: `PT10S`, `PT1M30S`, `PT0.5S`, `P1D`, `P1DT2H`, `P2W`.
/// Years and months are refused: their length depends on the calendar.
pub fn parse_duration(s: &str) -> Result<Duration, SleepError> {
    let bad = |why: &str| SleepError::NotADuration {
        text: s.to_string(),
        why: why.to_string(),
    };
    let body = s
        .strip_prefix('P')
        .ok_or_else(|| bad("it must start with P"))?;
    if body.is_empty() || body == "T" {
        return Err(bad("no amount is given"));
    }
    let mut secs = 0f64;
    let mut in_time = false;
    let mut number = String::new();
    let mut seen_any = false;
    for c in body.chars() {
        match c {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' | '.' | ',' => number.push(if c == ',' { '.' } else { c }),
            unit => {
                if number.is_empty() {
                    return Err(bad(&format!("{unit:?} has no number before it")));
                }
                let n: f64 = number.parse().map_err(|_| bad("a number is malformed"))?;
                let factor = match (in_time, unit) {
                    (false, 'W') => 7.0 * 86400.0,
                    (false, 'D') => 86400.0,
                    (true, 'H') => 3600.0,
                    (true, 'M') => 60.0,
                    (true, 'S') => 1.0,
                    (false, 'Y') | (false, 'M') => {
                        return Err(SleepError::YearsOrMonths(s.to_string()));
                    }
                    _ => return Err(bad(&format!("unknown unit {unit:?}"))),
                };
                secs += n * factor;
                number.clear();
                seen_any = true;
            }
        }
    }
    if !number.is_empty() || !seen_any {
        return Err(bad("a number has no unit"));
    }
    // Checked before the conversion, which panics on a value too large for a Duration.
    if !secs.is_finite() || secs > Duration::from_secs(MAX_SLEEP_SECS).as_secs_f64() {
        return Err(too_long(s));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| too_long(s))
}

/// Parses an RFC 3339 timestamp such as `2026-01-01T10:00:00Z`.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, SleepError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|reason| SleepError::NotATimestamp {
            text: s.to_string(),
            reason,
        })
}

/// How long to sleep for resolved inputs (`Duration` or `Timestamp`), from `now`.
/// A timestamp in the past means no sleep.
pub fn how_long(
    inputs: &serde_json::Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Duration, SleepError> {
    match (inputs.get("Duration"), inputs.get("Timestamp")) {
        (Some(Value::String(d)), None) => parse_duration(d),
        (None, Some(Value::String(t))) => until(t, parse_timestamp(t)?, now),
        (Some(_), Some(_)) => Err(SleepError::Both),
        (None, None) => Err(SleepError::Neither),
        (Some(v), None) | (None, Some(v)) => Err(SleepError::NotAString(v.clone())),
    }
}

/// How long from `now` until the timestamp `at` (written `text`); zero when it has passed,
/// refused when it is more than [`MAX_SLEEP_SECS`] ahead.
pub fn until(text: &str, at: DateTime<Utc>, now: DateTime<Utc>) -> Result<Duration, SleepError> {
    let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
    if wait > Duration::from_secs(MAX_SLEEP_SECS) {
        return Err(SleepError::TooFarAhead(text.to_string()));
    }
    Ok(wait)
}

/// How a sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepEnd {
    /// The whole duration passed.
    Slept,
    /// The step's timeoutSeconds passed first.
    TimedOut,
    /// The execution was cancelled.
    Cancelled,
}

/// Sleeps, honouring the step's timeout and cancellation.
pub async fn sleep(d: Duration, timeout: Option<Duration>, cancel: &CancellationToken) -> SleepEnd {
    let (wait, end) = match timeout {
        Some(t) if t < d => (t, SleepEnd::TimedOut),
        _ => (d, SleepEnd::Slept),
    };
    tokio::select! {
        _ = tokio::time::sleep(wait) => end,
        _ = cancel.cancelled() => SleepEnd::Cancelled,
    }
}

/// `aws:sleep`.
pub(crate) struct Sleep;

impl ActionSpec for Sleep {
    const ACTION: Action = Action::Sleep;
    const INPUT_KEYS: &'static [&'static str] = &["Duration", "Timestamp"];
    const IMPLICIT_OUTPUTS: &'static [&'static str] = &[];
    const DECLARES_OUTPUTS: bool = false;
    const RETRIES: bool = false;
    type Ready<'s> = Duration;

    /// One of `Duration` or `Timestamp`; a literal must parse and be within the maximum.
    fn check(cx: &mut CheckCx<'_>, step: &StepHead<'_>) -> Option<StepKind> {
        let (ctx, inputs, node) = (step.ctx, step.inputs, step.inputs_node);
        let pos = |key: &str| {
            node.and_then(|n| n.get(key))
                .map(|n| n.pos)
                .unwrap_or_default()
        };
        for k in inputs.keys() {
            if !Self::INPUT_KEYS.contains(&k.as_str()) {
                cx.invalid(
                    pos(k),
                    format!("{ctx}: inputs"),
                    format!(
                        "unknown input {k:?} of {} (known: {})",
                        Self::ACTION.name(),
                        Self::INPUT_KEYS.join(", ")
                    ),
                );
            }
        }
        let (key, v) = match (inputs.get("Duration"), inputs.get("Timestamp")) {
            (Some(_), Some(_)) => {
                cx.invalid(
                    pos("Duration"),
                    format!("{ctx}: inputs"),
                    "give Duration or Timestamp, not both",
                );
                return Some(StepKind::Sleep);
            }
            (None, None) => {
                cx.invalid(
                    node.map(|n| n.pos).unwrap_or_default(),
                    format!("{ctx}: inputs"),
                    "Duration or Timestamp is required",
                );
                return Some(StepKind::Sleep);
            }
            (Some(v), None) => ("Duration", v),
            (None, Some(v)) => ("Timestamp", v),
        };
        match v {
            // Only run time knows the value.
            Value::String(_) if interpolate::has_refs(v) => {}
            Value::String(s) => {
                let r = if key == "Duration" {
                    parse_duration(s).map(|_| ())
                } else {
                    parse_timestamp(s)
                        .and_then(|at| until(s, at, Utc::now()))
                        .map(|_| ())
                };
                if let Err(e) = r {
                    cx.invalid(pos(key), format!("{ctx}: inputs.{key}"), e.to_string());
                }
            }
            other => cx.invalid(
                pos(key),
                format!("{ctx}: inputs.{key}"),
                format!(
                    "must be a string, not {}",
                    crate::step::json_type_name(other)
                ),
            ),
        }
        Some(StepKind::Sleep)
    }

    /// How long, from the resolved inputs.
    fn prepare(
        _cx: &RunCx<'_>,
        _step: &StepDecl,
        inputs: &Map<String, Value>,
    ) -> Result<Duration, StepFailure> {
        how_long(inputs, Utc::now()).map_err(|e| StepFailure::new("InvalidInput", e.to_string()))
    }

    /// Sleeps, within the step's `timeoutSeconds`, until cancelled.
    fn attempt<'a, 's: 'a>(
        cx: &'a mut RunCx<'_>,
        step: &'s StepDecl,
        wait: &'a Duration,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let wait = *wait;
            let timeout = step
                .timeout_seconds
                .map(|t| Duration::from_secs(u64::try_from(t).unwrap_or(0)));
            match sleep(wait, timeout, cx.cancel).await {
                SleepEnd::Slept => Attempt::ended(StepStatus::Success, None),
                SleepEnd::TimedOut => Attempt::ended(
                    StepStatus::TimedOut,
                    Some(format!(
                        "Step timed out: timeoutSeconds {} passed before the sleep of {} s ended.",
                        step.timeout_seconds.unwrap_or_default(),
                        wait.as_secs_f64()
                    )),
                ),
                SleepEnd::Cancelled => Attempt::ended(
                    StepStatus::Cancelled,
                    Some("The step was cancelled.".into()),
                ),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT10S").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("PT1M30S").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("P1D").unwrap(), Duration::from_secs(86400));
        assert_eq!(
            parse_duration("P1DT2H").unwrap(),
            Duration::from_secs(93600)
        );
        // A week is one second past aws:sleep's maximum (refused below); half a week is not.
        assert_eq!(
            parse_duration("P0.5W").unwrap(),
            Duration::from_secs(302400)
        );
        assert_eq!(
            parse_duration("PT0.5S").unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_duration("10S").is_err());
        assert!(parse_duration("PT").is_err());
        assert!(parse_duration("PT10").is_err());
        assert!(
            parse_duration("P1M")
                .unwrap_err()
                .to_string()
                .contains("months are not supported")
        );
        assert!(parse_duration("PT-5S").is_err());
        assert!(parse_duration("P1H").is_err());
    }

    #[test]
    fn durations_are_bounded_and_never_panic() {
        assert_eq!(
            parse_duration("PT604799S").unwrap(),
            Duration::from_secs(MAX_SLEEP_SECS)
        );
        assert_eq!(
            parse_duration("P6DT23H59M59S").unwrap(),
            Duration::from_secs(MAX_SLEEP_SECS)
        );
        // Duration::from_secs_f64 panicked on this one.
        for huge in [
            "PT99999999999999999999S",
            "PT604800S",
            "P1W",
            "P99999999999999999999999999999999999999999W",
            "PT1e400S",
            "PT1.2.3S",
        ] {
            let e = parse_duration(huge).unwrap_err().to_string();
            assert!(
                e.contains("maximum of 604799 seconds")
                    || e.contains("is not an ISO 8601 duration"),
                "{huge}: {e}"
            );
        }
        let mut m = serde_json::Map::new();
        m.insert("Duration".into(), json!("PT99999999999999999999S"));
        assert!(
            how_long(&m, Utc::now())
                .unwrap_err()
                .to_string()
                .contains("604799")
        );
    }

    #[test]
    fn timestamps_are_at_most_seven_days_ahead() {
        let now = parse_timestamp("2026-01-01T10:00:00Z").unwrap();
        let mut m = serde_json::Map::new();
        m.insert("Timestamp".into(), json!("2026-01-08T09:59:59Z"));
        assert_eq!(
            how_long(&m, now).unwrap(),
            Duration::from_secs(MAX_SLEEP_SECS)
        );
        for far in ["2026-01-08T10:00:00Z", "9999-12-31T23:59:59Z"] {
            m.insert("Timestamp".into(), json!(far));
            assert!(
                how_long(&m, now)
                    .unwrap_err()
                    .to_string()
                    .contains("more than aws:sleep's maximum of 604799 seconds"),
                "{far}"
            );
        }
    }

    #[test]
    fn timestamps() {
        let now = parse_timestamp("2026-01-01T10:00:00Z").unwrap();
        let mut m = serde_json::Map::new();
        m.insert("Timestamp".into(), json!("2026-01-01T10:00:05Z"));
        assert_eq!(how_long(&m, now).unwrap(), Duration::from_secs(5));
        m.insert("Timestamp".into(), json!("2025-01-01T10:00:00+02:00"));
        assert_eq!(how_long(&m, now).unwrap(), Duration::ZERO);
        m.insert("Timestamp".into(), json!("tomorrow"));
        assert!(
            how_long(&m, now)
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
        m.insert("Duration".into(), json!("PT1S"));
        assert!(
            how_long(&m, now)
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
    }

    #[tokio::test]
    async fn sleep_is_cancellable_and_bounded() {
        let cancel = CancellationToken::new();
        let t = std::time::Instant::now();
        assert_eq!(
            sleep(
                Duration::from_secs(30),
                Some(Duration::from_millis(50)),
                &cancel
            )
            .await,
            SleepEnd::TimedOut
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.cancel();
        });
        assert_eq!(
            sleep(Duration::from_secs(30), None, &cancel).await,
            SleepEnd::Cancelled
        );
        assert_eq!(
            sleep(Duration::from_millis(10), None, &CancellationToken::new()).await,
            SleepEnd::Slept
        );
    }
}
