//! `strata-server`: the Strata event store server.
//!
//! - [`auth`]: API keys and the principal a request carries;
//! - [`config`]: the command line and its validation;
//! - [`startup`]: [`startup::Application`], one node built and served;
//! - [`http`]: routes, extractors and the one `ApiError`;
//! - [`store`]: every SQL statement (appends through group commit, reads,
//!   deletes, snapshots);
//! - [`notifications`]: the node's LISTEN connection and commit notices,
//!   with a wake-up for each consumer;
//! - [`live`]: the node's tail reader and fan-out to Server-Sent Events
//!   subscribers;
//! - [`cluster`] and [`subscriptions`]: leases, leaders, and the persistent
//!   subscriptions this node leads;
//! - [`health`]: whether the database answers, probed ahead of requests;
//! - [`embedded`]: the private PostgreSQL of `strata dev` and the tests.
//!
//! See ARCHITECTURE.md at the top of the repository for how they fit.

#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod embedded;
pub mod health;
pub mod http;
pub mod live;
pub mod notifications;
pub mod startup;
pub mod store;
pub mod subscriptions;
