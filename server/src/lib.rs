//! `strata-server`: the Strata event store server.
//!
//! - [`config`]: the command line and its validation;
//! - [`startup`]: [`startup::Application`], one node built and served;
//! - [`http`]: routes, extractors and the one `ApiError`;
//! - [`store`]: every SQL statement (appends through group commit, reads,
//!   deletes, snapshots);
//! - [`embedded`]: the private PostgreSQL of `strata dev` and the tests.
//!
//! See ARCHITECTURE.md at the top of the repository for how they fit.

#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod embedded;
pub mod http;
pub mod startup;
pub mod store;
