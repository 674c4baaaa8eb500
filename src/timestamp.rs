//! The one timestamp type: every instant scriptbox records or shows (the execution record, the
//! runbook report, SSM's epoch seconds) is a [`Timestamp`], formatted here only.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant: RFC 3339 UTC with milliseconds on the native API and in the store, epoch seconds
/// on SSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Timestamp(Utc::now())
    }

    /// The instant of a chrono time.
    pub fn from_utc(t: DateTime<Utc>) -> Self {
        Timestamp(t)
    }

    /// Parses RFC 3339.
    pub fn parse(rfc3339: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(rfc3339)
            .ok()
            .map(|t| Timestamp(t.with_timezone(&Utc)))
    }

    /// The chrono time (for formats other than these).
    pub fn utc(&self) -> DateTime<Utc> {
        self.0
    }

    /// RFC 3339 UTC with milliseconds (`2026-01-01T00:00:00.000Z`).
    pub fn rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Epoch seconds with milliseconds (what the AWS JSON 1.1 protocol carries).
    pub fn epoch_secs(&self) -> f64 {
        let millis = self.0.timestamp_millis();
        // Exact for any date within ±285 000 years of 1970 (|millis| < 2^53).
        #[allow(clippy::cast_precision_loss, reason = "exact below 2^53 ms")]
        let secs = millis as f64 / 1000.0;
        secs
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_instant_in_every_form_scriptbox_shows() {
        let t = Timestamp::parse("2026-01-01T01:00:00.1239+01:00").unwrap();
        // UTC, milliseconds truncated, `Z`: the native API, the store and the runbook report.
        assert_eq!(t.rfc3339(), "2026-01-01T00:00:00.123Z");
        assert_eq!(json_of(t), "\"2026-01-01T00:00:00.123Z\"");
        // SSM's epoch seconds.
        assert!((t.epoch_secs() - 1_767_225_600.123).abs() < 1e-6);
        // What is shown reads back as the same shown instant.
        let shown = Timestamp::parse(&t.rfc3339()).unwrap();
        assert_eq!(shown.rfc3339(), t.rfc3339());
    }

    fn json_of(t: Timestamp) -> String {
        serde_json::to_string(&t).unwrap()
    }
}
