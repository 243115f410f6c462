//! `strata-core`: the vocabulary every part of Strata shares.
//!
//! - [`auth`]: scopes, grants and API keys;
//! - [`wire`]: the JSON bodies of the HTTP API ([`RecordedEvent`], [`AppendRequest`], …);
//! - [`names`]: the naming rules for streams, categories, event types and resources;
//! - [`ExpectedVersion`] and [`WrongExpectedVersion`]: optimistic concurrency as types;
//! - [`subscription`]: persistent subscriptions and the cluster view;
//! - [`projection`]: projection states and status;
//! - [`cluster`]: the cluster view;
//! - [`time`]: how timestamps look on the wire.
//!
//! It has no database and no HTTP dependency, so the SDK can use it as is;
//! what the server and the projection workers share over PostgreSQL is in
//! `strata-pg`.
//!
//! ```
//! use strata_core::{AppendRequest, ExpectedVersion, NewEvent};
//!
//! let request: AppendRequest = serde_json::from_value(serde_json::json!({
//!     "expected_version": "no_stream",
//!     "events": [{"type": "Opened", "data": {"owner": "ada"}}]
//! }))
//! .unwrap();
//! assert_eq!(request.expected_version, ExpectedVersion::NoStream);
//! assert_eq!(request.events[0].event_type, "Opened");
//! ```

#![warn(missing_docs)]

pub mod auth;
pub mod cluster;
pub mod names;
pub mod projection;
pub mod subscription;
pub mod time;
mod version;
pub mod wire;

pub use version::{ExpectedVersion, StreamState, WrongExpectedVersion};
pub use wire::{
    AllPage, AppendRequest, AppendResult, AppendSnapshot, AppendedEvent, Direction, ErrorBody,
    JsonObject, NewEvent, PutSnapshot, RecordedEvent, Snapshot, StreamInfo, StreamList, StreamPage,
};
