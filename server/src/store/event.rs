//! Events as stored: the type and its JSON writer live in `strata-pg`
//! (shared with the projection workers).

pub use strata_pg::log::{EVENT_COLUMNS, StoredEvent, write_json_array};
