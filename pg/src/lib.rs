//! `strata-pg`: what Strata's server and projection workers share over
//! PostgreSQL, so that each of these has one home:
//!
//! - [`migrate`]: the schema (`migrations/`, the only source of it) and the
//!   check that a database is current;
//! - [`connect`]: the session settings every Strata pool uses;
//! - [`log`]: the stored event and the `$all` reader every reader shares
//!   (reads, the live tail, persistent subscriptions, projection workers);
//! - [`lease`]: leases with fencing, leader placement, and the names of the
//!   resources that are led ([`lease::Resource`]);
//! - [`notify`]: the NOTIFY channels and their payloads, and the one function
//!   that sends a notification;
//! - [`retry`]: the one backoff policy for work that waits on PostgreSQL;
//! - [`report`]: an error and its causes on one line, each said once (sqlx's
//!   errors repeat their causes in their messages).
//! - [`erasure`]: the lock by which hard deletes and projection batches
//!   keep erased events out of read models.
//! - [`audit`]: the audit trail, one `$audit` event per admin action in the
//!   action's own transaction.
//!
//! `strata-core` holds the wire types only; this crate is where a database
//! crate enters the tree, and the SDK does not depend on it.

pub mod audit;
pub mod connect;
pub mod erasure;
pub mod lease;
pub mod log;
pub mod migrate;
pub mod notify;
pub mod report;
pub mod retry;
