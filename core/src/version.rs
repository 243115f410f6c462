//! Optimistic concurrency as types: what a writer expects of a stream, and the
//! typed conflict it gets when the stream is elsewhere.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What an append (or a delete) expects the stream's version to be.
///
/// On the wire: `"any"`, `"no_stream"`, `"exists"` or a non-negative integer.
///
/// ```
/// use strata_core::ExpectedVersion;
///
/// let v: ExpectedVersion = serde_json::from_str("7").unwrap();
/// assert_eq!(v, ExpectedVersion::Exact(7));
/// let v: ExpectedVersion = serde_json::from_str("\"no_stream\"").unwrap();
/// assert_eq!(v, ExpectedVersion::NoStream);
/// assert_eq!(serde_json::to_string(&ExpectedVersion::Any).unwrap(), "\"any\"");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExpectedVersion {
    /// No check at all.
    #[default]
    Any,
    /// The stream must not exist: it never had an event, or it was soft-deleted.
    NoStream,
    /// The stream must exist (have at least one readable event).
    Exists,
    /// The stream's version must be exactly this (0: the stream has no events).
    Exact(u64),
}

/// The state of a stream that an [`ExpectedVersion`] is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    /// The number of events ever appended to the stream.
    pub version: u64,
    /// Whether the stream can be read: it has events and is not soft-deleted.
    pub exists: bool,
}

impl ExpectedVersion {
    /// Whether a stream in `state` satisfies this expectation.
    ///
    /// A soft-deleted stream does not exist, but keeps its version: both
    /// `no_stream` and its exact version are accepted, as appends to it go on
    /// numbering from where it was.
    ///
    /// ```
    /// use strata_core::{ExpectedVersion, StreamState};
    ///
    /// let fresh = StreamState { version: 0, exists: false };
    /// assert!(ExpectedVersion::NoStream.accepts(fresh));
    /// assert!(ExpectedVersion::Exact(0).accepts(fresh));
    /// assert!(!ExpectedVersion::Exists.accepts(fresh));
    /// ```
    pub fn accepts(self, state: StreamState) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => !state.exists,
            ExpectedVersion::Exists => state.exists,
            ExpectedVersion::Exact(n) => state.version == n,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no_stream"),
            ExpectedVersion::Exists => f.write_str("exists"),
            ExpectedVersion::Exact(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for ExpectedVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ExpectedVersion::Exact(n) => serializer.serialize_u64(*n),
            other => serializer.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for ExpectedVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ExpectedVisitor;

        impl Visitor<'_> for ExpectedVisitor {
            type Value = ExpectedVersion;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""any", "no_stream", "exists" or a non-negative integer"#)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                if v > i64::MAX as u64 {
                    return Err(E::custom("expected_version is too large"));
                }
                Ok(ExpectedVersion::Exact(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ExpectedVersion::Exact)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "any" => Ok(ExpectedVersion::Any),
                    "no_stream" => Ok(ExpectedVersion::NoStream),
                    "exists" => Ok(ExpectedVersion::Exists),
                    other => v
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n <= i64::MAX as u64)
                        .map(ExpectedVersion::Exact)
                        .ok_or_else(|| E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
        }

        deserializer.deserialize_any(ExpectedVisitor)
    }
}

impl std::str::FromStr for ExpectedVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            format!(r#"expected_version must be "any", "no_stream", "exists" or a non-negative integer, not {s:?}"#)
        })
    }
}

/// The typed conflict of an optimistic concurrency check: what the writer
/// expected, and what the stream's version actually is (`None` when the stream
/// has never had an event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("wrong expected version: expected {expected}, actual {}", actual.map_or("no stream".to_owned(), |v| v.to_string()))]
pub struct WrongExpectedVersion {
    /// What the writer expected.
    pub expected: ExpectedVersion,
    /// The stream's version, `None` when it has never had an event.
    pub actual: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_rejects_the_rest() {
        for (text, want) in [
            ("\"any\"", ExpectedVersion::Any),
            ("\"no_stream\"", ExpectedVersion::NoStream),
            ("\"exists\"", ExpectedVersion::Exists),
            ("0", ExpectedVersion::Exact(0)),
            ("42", ExpectedVersion::Exact(42)),
        ] {
            let got: ExpectedVersion = serde_json::from_str(text).unwrap();
            assert_eq!(got, want);
            assert_eq!(serde_json::to_string(&got).unwrap(), text);
        }
        for bad in [
            "-1",
            "1.5",
            "\"never\"",
            "null",
            "true",
            "18446744073709551615",
        ] {
            assert!(
                serde_json::from_str::<ExpectedVersion>(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn soft_deleted_streams_accept_no_stream_and_their_version() {
        let deleted = StreamState {
            version: 5,
            exists: false,
        };
        assert!(ExpectedVersion::NoStream.accepts(deleted));
        assert!(ExpectedVersion::Exact(5).accepts(deleted));
        assert!(!ExpectedVersion::Exact(0).accepts(deleted));
        assert!(!ExpectedVersion::Exists.accepts(deleted));
    }
}
