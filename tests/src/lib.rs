//! The test harness of Strata's end-to-end tests.
//!
//! - [`TestDatabase`]: a fresh database per test, on the PostgreSQL at
//!   `DATABASE_URL` when set, otherwise on a private PostgreSQL this process
//!   starts from the system's binaries (the same launcher as `strata dev`);
//!   dropped when the test ends.
//! - [`StrataNode`]: a real `strata serve` process on a free port.
//! - [`Api`]: a small JSON client for assertions on status and body.
//! - [`Sse`]: a Server-Sent Events client that parses frames.
//! - [`TcpProxy`]: a proxy in front of PostgreSQL that a test can cut.
//! - [`wait_until`]: bounded waiting for an asynchronous outcome.
//! - [`history`] and [`workload`]: the fault-injection suite's recorder,
//!   checker and load.

mod api;
pub mod bank_account;
pub mod history;
mod node;
mod postgres;
mod proxy;
mod sse;
mod wait;
mod worker;
pub mod workload;

pub use api::{Api, Reply};
pub use node::{NodeBuilder, StrataNode, node_binary, run_to_end};
pub use postgres::{TestDatabase, admin_url};
pub use proxy::TcpProxy;
pub use sse::{Frame, Sse};
pub use wait::wait_until;
pub use worker::WorkerProcess;
