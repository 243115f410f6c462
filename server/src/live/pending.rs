//! The node's own commits, waiting for the tail to send them: the group
//! statement returned what it stored (see `Committed::events` in
//! `crate::store`), so the tail sends those events without reading them back
//! — once every lower position has been sent (the ordering guarantee).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::store::StoredEvent;

/// One commit's events, consecutive from the key they are held under.
struct Commit {
    /// The last position it covers (its events may have been erased since).
    last: i64,
    events: Vec<StoredEvent>,
    bytes: usize,
}

#[derive(Default)]
struct State {
    /// By first position.
    commits: BTreeMap<i64, Commit>,
    bytes: usize,
}

/// Local commits not sent yet, bounded in bytes: beyond the bound a commit
/// is refused and the tail reads it from the database like another node's.
pub(super) struct Pending {
    state: Mutex<State>,
    max_bytes: usize,
}

/// About the memory an event holds here.
pub(super) fn event_bytes(event: &StoredEvent) -> usize {
    event.data.len() + event.metadata.len() + event.stream.len() + event.event_type.len() + 160
}

impl Pending {
    pub(super) fn new(max_bytes: usize) -> Self {
        Pending {
            state: Mutex::new(State::default()),
            max_bytes,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the pending commits' lock is not poisoned")
    }

    /// Holds a commit's events (consecutive, in position order) for the
    /// tail; `false` when that would pass the bound (nothing held).
    pub(super) fn offer(&self, events: Vec<StoredEvent>) -> bool {
        let (Some(first), Some(last)) = (
            events.first().map(|e| e.position),
            events.last().map(|e| e.position),
        ) else {
            return true;
        };
        let bytes: usize = events.iter().map(event_bytes).sum();
        let mut state = self.state();
        if state.bytes + bytes > self.max_bytes {
            return false;
        }
        state.bytes += bytes;
        state.commits.insert(
            first,
            Commit {
                last,
                events,
                bytes,
            },
        );
        true
    }

    /// The held commit that starts at `next`, if any (the last position it
    /// covers and its events), after dropping those
    /// that start below it (the tail read them from the database already: a
    /// commit is visible whole or not at all, so none of them reaches
    /// `next`).
    pub(super) fn take(&self, next: i64) -> Option<(i64, Vec<StoredEvent>)> {
        let mut state = self.state();
        while let Some(entry) = state.commits.first_entry() {
            if *entry.key() > next {
                return None;
            }
            let found = *entry.key() == next;
            let commit = entry.remove();
            state.bytes -= commit.bytes;
            if found {
                return Some((commit.last, commit.events));
            }
        }
        None
    }

    /// Drops the commits that start below `next` (the tail moved past them),
    /// keeping one that starts at `next` or later.
    pub(super) fn drop_below(&self, next: i64) {
        let mut state = self.state();
        while let Some(entry) = state.commits.first_entry() {
            if *entry.key() >= next {
                return;
            }
            let commit = entry.remove();
            state.bytes -= commit.bytes;
        }
    }

    /// Drops the held events of `stream` (it was hard-deleted). The commits
    /// keep their place, so the positions they covered are still known.
    pub(super) fn erase(&self, stream: &str) {
        let mut state = self.state();
        let mut freed = 0;
        for commit in state.commits.values_mut() {
            let before = commit.bytes;
            commit.events.retain(|e| e.stream != stream);
            commit.bytes = commit.events.iter().map(event_bytes).sum();
            freed += before - commit.bytes;
        }
        state.bytes -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: i64, stream: &str) -> StoredEvent {
        StoredEvent {
            position,
            stream: stream.into(),
            version: 1,
            id: uuid::Uuid::new_v4(),
            event_type: "T".into(),
            data: "{}".into(),
            metadata: "{}".into(),
            correlation_id: None,
            causation_id: None,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_commit_is_taken_only_at_its_first_position_and_stale_ones_are_dropped() {
        let pending = Pending::new(1 << 20);
        assert!(pending.offer(vec![event(1, "a-1"), event(2, "a-1")]));
        assert!(pending.offer(vec![event(5, "a-1")]));
        assert!(pending.take(0).is_none());
        // 1..=2 was read from the database meanwhile: dropped, 5 not yet due.
        assert!(pending.take(3).is_none());
        assert_eq!(
            pending.take(5).map(|(last, e)| (last, e.len())),
            Some((5, 1))
        );
        assert_eq!(pending.state().bytes, 0);
    }

    #[test]
    fn dropping_below_keeps_the_commit_at_the_cursor() {
        let pending = Pending::new(1 << 20);
        assert!(pending.offer(vec![event(1, "a-1")]));
        assert!(pending.offer(vec![event(2, "a-1")]));
        pending.drop_below(2);
        assert_eq!(pending.take(2).map(|(last, _)| last), Some(2));
    }

    #[test]
    fn commits_beyond_the_bound_are_refused() {
        let one = event_bytes(&event(1, "a-1"));
        let pending = Pending::new(one * 2);
        assert!(pending.offer(vec![event(1, "a-1"), event(2, "a-1")]));
        assert!(!pending.offer(vec![event(3, "a-1")]));
        assert!(pending.take(1).is_some());
        assert!(pending.offer(vec![event(3, "a-1")]));
    }

    #[test]
    fn an_erased_stream_leaves_the_commit_but_not_its_events() {
        let pending = Pending::new(1 << 20);
        assert!(pending.offer(vec![event(1, "gone-1"), event(2, "kept-1")]));
        pending.erase("gone-1");
        let (last, events) = pending.take(1).expect("the commit keeps its place");
        assert_eq!(last, 2);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].stream, "kept-1");
    }
}
