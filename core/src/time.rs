//! Timestamps on the wire: RFC 3339, UTC, always with six fractional digits
//! (`2026-11-25T12:00:00.123456Z`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Formats a timestamp the way the wire contract wants it.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// let t = Utc.timestamp_opt(0, 5_000).unwrap();
/// assert_eq!(strata_core::time::format(&t), "1970-01-01T00:00:00.000005Z");
/// ```
pub fn format(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `#[serde(with = "strata_core::time::micros")]` for `DateTime<Utc>` fields.
pub mod micros {
    use super::*;

    /// Serializes as RFC 3339 UTC with microseconds.
    ///
    /// # Errors
    ///
    /// Whatever the serializer reports.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&t.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    }

    /// Accepts any RFC 3339 timestamp.
    ///
    /// # Errors
    ///
    /// When the text is not an RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    #[test]
    fn serializes_with_exactly_six_fraction_digits() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct T {
            #[serde(with = "super::micros")]
            at: chrono::DateTime<chrono::Utc>,
        }
        let at = chrono::Utc
            .timestamp_opt(1_700_000_000, 123_456_000)
            .unwrap();
        let json = serde_json::to_string(&T { at }).unwrap();
        assert_eq!(json, r#"{"at":"2023-11-14T22:13:20.123456Z"}"#);
        let back: T = serde_json::from_str(&json).unwrap();
        assert_eq!(back.at, at);
    }
}
