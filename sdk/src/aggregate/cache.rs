//! The repository's optional cache of aggregates this process saved.

use std::collections::HashMap;
use std::sync::Mutex;

/// Aggregates as this process last saved them: (state, version) by id.
pub(super) struct Cache<A> {
    pub(super) entries: Mutex<HashMap<String, (A, u64)>>,
    pub(super) capacity: usize,
    pub(super) clone: fn(&A) -> A,
}

impl<A> Cache<A> {
    pub(super) fn take(&self, id: &str) -> Option<(A, u64)> {
        self.entries.lock().ok()?.remove(id)
    }

    pub(super) fn put(&self, id: &str, state: &A, version: u64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity && !entries.contains_key(id) {
            // Bounded: make room by dropping any one entry (a miss costs
            // one load, never correctness).
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        entries.insert(id.to_owned(), ((self.clone)(state), version));
    }
}
