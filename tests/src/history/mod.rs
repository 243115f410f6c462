//! A history of what a fault-injection run asked and was answered, and a
//! checker of the guarantees against the log that is finally stored.
//!
//! [`History`] records append requests (client-chosen ids, the node tried,
//! the answer of every attempt) and what readers observed (`$all` polls, SSE
//! frames, persistent-subscription deliveries, subscription checkpoints, the
//! projection's read model). [`check`] then verifies, against the final log
//! ([`read_log`]): every acknowledged event is stored exactly once; nothing
//! answered with a 4xx is stored; per-stream versions are contiguous; every
//! `$all` reader saw strictly increasing positions and every stored event;
//! subscription delivery is at least once with per-partition order and a
//! checkpoint that never goes back; the projection equals the fold of the log.

mod check;
mod record;

pub use check::{StoredEvent, check, fold_accounts, read_log};
pub use record::{Answer, Attempt, History, ReaderKind, Request, RequestId, Seen};

#[cfg(test)]
mod tests;
