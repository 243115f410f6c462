//! Wire types of persistent subscriptions (consumer groups), projections and
//! the cluster view.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::RecordedEvent;
pub use crate::cluster::{ClusterView, LeaseInfo, NodeInfo};
pub use crate::projection::ProjectionStatus;

/// What a subscription reads.
///
/// On the wire: `{"all": true}`, `{"stream": "account-42"}`,
/// `{"category": "account"}` or `{"type": "Deposited"}`.
///
/// ```
/// use strata_core::subscription::Source;
/// let s: Source = serde_json::from_str(r#"{"category": "account"}"#).unwrap();
/// assert_eq!(s, Source::Category("account".into()));
/// assert!(serde_json::from_str::<Source>(r#"{"all": true, "type": "X"}"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// Every event of `$all`.
    All,
    /// One stream.
    Stream(String),
    /// Every stream of a category.
    Category(String),
    /// Every event of a type.
    Type(String),
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SourceFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    all: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    category: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    event_type: Option<String>,
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fields = SourceFields::default();
        match self {
            Source::All => fields.all = Some(true),
            Source::Stream(s) => fields.stream = Some(s.clone()),
            Source::Category(c) => fields.category = Some(c.clone()),
            Source::Type(t) => fields.event_type = Some(t.clone()),
        }
        fields.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let f = SourceFields::deserialize(deserializer)?;
        let set = [
            f.all.is_some(),
            f.stream.is_some(),
            f.category.is_some(),
            f.event_type.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return Err(de::Error::custom(
                r#"source takes exactly one of {"all": true}, {"stream": …}, {"category": …}, {"type": …}"#,
            ));
        }
        Ok(match f {
            SourceFields {
                all: Some(true), ..
            } => Source::All,
            SourceFields {
                all: Some(false), ..
            } => {
                return Err(de::Error::custom(
                    r#"{"all": false} reads nothing; use {"all": true}"#,
                ));
            }
            SourceFields {
                stream: Some(s), ..
            } => Source::Stream(s),
            SourceFields {
                category: Some(c), ..
            } => Source::Category(c),
            SourceFields {
                event_type: Some(t),
                ..
            } => Source::Type(t),
            _ => unreachable!("exactly one field is set"),
        })
    }
}

/// Where something starts reading: `"start"`, `"end"` or a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The first event.
    #[default]
    Start,
    /// After the last event stored when the subscription is created.
    End,
    /// This position, inclusive.
    Position(u64),
}

impl Serialize for StartFrom {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StartFrom::Start => serializer.serialize_str("start"),
            StartFrom::End => serializer.serialize_str("end"),
            StartFrom::Position(p) => serializer.serialize_u64(*p),
        }
    }
}

impl<'de> Deserialize<'de> for StartFrom {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StartFrom;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""start", "end" or a position"#)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StartFrom, E> {
                if v > i64::MAX as u64 {
                    return Err(E::custom("position is too large"));
                }
                Ok(StartFrom::Position(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StartFrom, E> {
                u64::try_from(v)
                    .map(StartFrom::Position)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StartFrom, E> {
                match v {
                    "start" => Ok(StartFrom::Start),
                    "end" => Ok(StartFrom::End),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// How events are kept in order: one at a time per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PartitionBy {
    /// Events of one stream go out one at a time, in order.
    #[default]
    Stream,
    /// No ordering: any event may go to any consumer at any time.
    None,
    /// Events with one correlation id go out one at a time, in order.
    CorrelationId,
}

impl PartitionBy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionBy::Stream => "stream",
            PartitionBy::None => "none",
            PartitionBy::CorrelationId => "correlation_id",
        }
    }
}

fn default_max_in_flight() -> u32 {
    100
}
fn default_ack_timeout_ms() -> u64 {
    30_000
}
fn default_max_retries() -> u32 {
    10
}

/// The body of `PUT /subscriptions/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionSettings {
    /// What it reads.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub source: Source,
    /// Where a new subscription starts. Only creation applies it: an update
    /// leaves it out or repeats the stored one (another value is refused,
    /// `409 start_from_conflict`; `reset` moves a subscription).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub start_from: StartFrom,
    /// Ordering of deliveries.
    #[serde(default)]
    pub partition_by: PartitionBy,
    /// Events delivered and not yet acked, at most.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// After this long without an ack an event is delivered again.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// Deliveries after the first before an event is parked.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

/// A subscription as `GET /subscriptions/{name}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionStatus {
    /// Its name.
    pub name: String,
    /// What it reads.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub source: Source,
    /// Where it started.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub start_from: StartFrom,
    /// Ordering of deliveries.
    pub partition_by: PartitionBy,
    /// Events in flight at most.
    pub max_in_flight: u32,
    /// Ack timeout, in milliseconds.
    pub ack_timeout_ms: u64,
    /// Retries before parking.
    pub max_retries: u32,
    /// The node leading it, when its lease is alive.
    pub leader: Option<String>,
    /// The lease epoch (grows with every change of leader).
    pub epoch: u64,
    /// Every position up to this is settled.
    pub checkpoint: u64,
    /// The last position of `$all`.
    pub head: u64,
    /// `head - checkpoint`.
    pub lag: u64,
    /// Events delivered and not yet acked (as the leader last reported).
    pub in_flight: u64,
    /// Consumers connected to the leader (as it last reported).
    pub consumers: u64,
    /// Parked events.
    pub parked: u64,
}

/// The body of `POST /subscriptions/{name}/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AckRequest {
    /// Positions of the events handled.
    pub positions: Vec<u64>,
}

/// What to do with nacked events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NackAction {
    /// Deliver again (counts as a retry).
    Retry,
    /// Park now (dead-letter).
    Park,
    /// Give up on them, as if acked.
    Skip,
}

/// The body of `POST /subscriptions/{name}/nack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NackRequest {
    /// Positions of the events.
    pub positions: Vec<u64>,
    /// What to do with them.
    pub action: NackAction,
}

/// The body of `POST /subscriptions/{name}/reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResetRequest {
    /// `"start"` or a position to deliver from (inclusive).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub to: StartFrom,
}

/// Why an event was parked (dead-lettered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ParkReason {
    /// Delivered `max_retries` times after the first without an ack: the
    /// last attempt timed out or was nacked with `retry`.
    MaxRetries,
    /// A consumer nacked it with `park`.
    Nack,
}

impl ParkReason {
    /// The stored and wire name. The same words are stored in
    /// `subscription_parked.reason` and shown by
    /// `GET /subscriptions/{name}/parked`, so the spelling is part of the
    /// contract; [`str::parse`] reads it back.
    ///
    /// ```
    /// use strata_core::subscription::ParkReason;
    /// assert_eq!(ParkReason::MaxRetries.as_str(), "max_retries");
    /// assert_eq!("nack".parse::<ParkReason>(), Ok(ParkReason::Nack));
    /// assert_eq!(serde_json::to_string(&ParkReason::Nack).unwrap(), r#""nack""#);
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ParkReason::MaxRetries => "max_retries",
            ParkReason::Nack => "nack",
        }
    }
}

impl fmt::Display for ParkReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A park reason this version does not know (read from storage).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown park reason {0:?}")]
pub struct UnknownParkReason(pub String);

impl std::str::FromStr for ParkReason {
    type Err = UnknownParkReason;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "max_retries" => Ok(ParkReason::MaxRetries),
            "nack" => Ok(ParkReason::Nack),
            _ => Err(UnknownParkReason(text.to_owned())),
        }
    }
}

impl TryFrom<String> for ParkReason {
    type Error = UnknownParkReason;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// A parked (dead-lettered) event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParkedEvent {
    /// Its position.
    pub position: u64,
    /// Deliveries before it was parked.
    pub attempts: u32,
    /// Why it was parked.
    pub reason: ParkReason,
    /// Whether a replay put it back in line.
    pub replaying: bool,
    /// When it was parked.
    #[serde(with = "crate::time::micros")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub parked_at: DateTime<Utc>,
    /// The event itself (absent if it was erased since).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub event: Option<RecordedEvent>,
}

/// The answer of `GET /subscriptions/{name}/parked?after=&limit=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParkedList {
    /// Parked events by position.
    pub parked: Vec<ParkedEvent>,
    /// The `after` of the following page; `None` when there is none.
    #[serde(default)]
    pub next: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_defaults_and_refuse_unknown_fields() {
        let s: SubscriptionSettings = serde_json::from_str(r#"{"source": {"all": true}}"#).unwrap();
        assert_eq!(s.source, Source::All);
        assert_eq!(s.start_from, StartFrom::Start);
        assert_eq!(s.partition_by, PartitionBy::Stream);
        assert_eq!(
            (s.max_in_flight, s.ack_timeout_ms, s.max_retries),
            (100, 30_000, 10)
        );
        let s: SubscriptionSettings = serde_json::from_str(
            r#"{"source": {"type": "X"}, "start_from": 12, "partition_by": "correlation_id"}"#,
        )
        .unwrap();
        assert_eq!(s.start_from, StartFrom::Position(12));
        assert_eq!(s.partition_by, PartitionBy::CorrelationId);
        assert!(serde_json::from_str::<SubscriptionSettings>(r#"{"source": {}}"#).is_err());
        assert!(
            serde_json::from_str::<SubscriptionSettings>(r#"{"source": {"all": true}, "x": 1}"#)
                .is_err()
        );
        assert_eq!(
            serde_json::to_string(&Source::Type("T".into())).unwrap(),
            r#"{"type":"T"}"#
        );
        assert_eq!(serde_json::to_string(&StartFrom::End).unwrap(), r#""end""#);
    }

    #[test]
    fn park_reasons_keep_their_stored_and_wire_names() {
        for (reason, text) in [
            (ParkReason::MaxRetries, "max_retries"),
            (ParkReason::Nack, "nack"),
        ] {
            assert_eq!(reason.as_str(), text);
            assert_eq!(text.parse::<ParkReason>(), Ok(reason));
            assert_eq!(serde_json::to_value(reason).unwrap(), text);
            assert_eq!(
                serde_json::from_value::<ParkReason>(text.into()).unwrap(),
                reason
            );
        }
        assert_eq!(
            "ack_timeout".parse::<ParkReason>(),
            Err(UnknownParkReason("ack_timeout".into()))
        );
    }
}
