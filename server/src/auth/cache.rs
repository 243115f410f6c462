//! The in-memory side of checking credentials: entries by id (an API
//! key's public id, a session's digest), each trusted for a short time
//! (`ttl`) after it was read from the database. [`KeyStore`] and
//! [`SessionStore`] each hold one; what an entry holds is theirs.
//!
//! Two maps, each bounded by `capacity`: entries found, and ids the database
//! did not know (or whose row no longer counts: a revoked key, an ended
//! session). Made-up ids fill only the second, so a flood of them never
//! pushes a real entry out or keeps one from being cached. A full map first
//! drops the entries older than `ttl` (at most four times per `ttl`, so a
//! flood does not make every insert a scan); when none is, the new entry is
//! simply not cached and the next request reads the database again.
//!
//! A read of the database that started before a [`Cache::forget`] does not
//! fill the cache: it may have seen the row before its revocation or end.
//!
//! [`KeyStore`]: super::keys::KeyStore
//! [`SessionStore`]: super::sessions::SessionStore

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// What the cache knows of an id.
pub(super) enum Lookup<V> {
    /// An entry, read less than `ttl` ago.
    Found(Arc<V>),
    /// Nothing usable, as of less than `ttl` ago.
    Missing,
    /// Nothing recent: read the database.
    Unknown,
}

/// How long entries are trusted and how many there may be.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Age after which an entry is read again.
    pub(super) ttl: Duration,
    /// Most entries held, and most missing ids held.
    pub(super) capacity: usize,
}

/// The cache; shared by every clone of the store that owns it.
pub(super) struct Cache<V> {
    limits: Limits,
    state: Mutex<State<V>>,
}

struct State<V> {
    found: Bounded<Arc<V>>,
    missing: Bounded<()>,
    /// Counts [`Cache::forget`] calls; see [`Cache::epoch`].
    epoch: u64,
}

impl<V> Cache<V> {
    /// An empty cache.
    pub(super) fn new(limits: Limits) -> Cache<V> {
        Cache {
            limits,
            state: Mutex::new(State {
                found: Bounded::default(),
                missing: Bounded::default(),
                epoch: 0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<V>> {
        // Nothing panics while the lock is held; a poisoned state is whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What is known of `id` at `now`.
    pub(super) fn get(&self, id: &str, now: Instant) -> Lookup<V> {
        let state = self.state();
        let ttl = self.limits.ttl;
        if let Some(value) = state.found.get(id, now, ttl) {
            Lookup::Found(Arc::clone(value))
        } else if state.missing.get(id, now, ttl).is_some() {
            Lookup::Missing
        } else {
            Lookup::Unknown
        }
    }

    /// To be taken before reading the database and handed to [`Cache::put`].
    pub(super) fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// Records what the database said of `id` (`None`: nothing usable),
    /// unless something was forgotten since `epoch` was taken.
    pub(super) fn put(&self, id: &str, value: Option<Arc<V>>, epoch: u64, now: Instant) {
        let mut state = self.state();
        if state.epoch != epoch {
            return;
        }
        let Limits { ttl, capacity } = self.limits;
        match value {
            Some(value) => {
                state.missing.remove(id);
                state.found.insert(id, value, now, ttl, capacity);
            }
            None => {
                state.found.remove(id);
                state.missing.insert(id, (), now, ttl, capacity);
            }
        }
    }

    /// Drops the entries `drop` picks (by id and value), so that their next
    /// use reads the database, and keeps reads already under way from
    /// putting anything back.
    pub(super) fn forget(&self, mut drop: impl FnMut(&str, &V) -> bool) {
        let mut state = self.state();
        state.epoch += 1;
        state
            .found
            .entries
            .retain(|id, (_, value)| !drop(id, value));
    }

    /// Entries and missing ids held (stale ones included).
    #[cfg(test)]
    pub(super) fn len(&self) -> (usize, usize) {
        let state = self.state();
        (state.found.entries.len(), state.missing.entries.len())
    }
}

/// Entries by id with the time each was read.
struct Bounded<V> {
    entries: HashMap<String, (Instant, V)>,
    /// When a full map may drop its stale entries again.
    next_sweep: Option<Instant>,
}

impl<V> Default for Bounded<V> {
    fn default() -> Self {
        Bounded {
            entries: HashMap::new(),
            next_sweep: None,
        }
    }
}

impl<V> Bounded<V> {
    fn get(&self, id: &str, now: Instant, ttl: Duration) -> Option<&V> {
        let (read, value) = self.entries.get(id)?;
        (now.saturating_duration_since(*read) < ttl).then_some(value)
    }

    fn remove(&mut self, id: &str) {
        self.entries.remove(id);
    }

    fn insert(&mut self, id: &str, value: V, now: Instant, ttl: Duration, capacity: usize) {
        if self.entries.len() >= capacity && !self.entries.contains_key(id) {
            if self.next_sweep.is_some_and(|at| now < at) {
                return;
            }
            self.entries
                .retain(|_, (read, _)| now.saturating_duration_since(*read) < ttl);
            self.next_sweep = Some(now + ttl / 4);
            if self.entries.len() >= capacity {
                return;
            }
        }
        self.entries.insert(id.to_owned(), (now, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(1);

    fn cache(capacity: usize) -> Cache<String> {
        Cache::new(Limits { ttl: TTL, capacity })
    }

    fn entry(name: &str) -> Arc<String> {
        Arc::new(name.to_owned())
    }

    fn found(lookup: Lookup<String>) -> Option<String> {
        match lookup {
            Lookup::Found(value) => Some(value.as_ref().clone()),
            _ => None,
        }
    }

    #[test]
    fn an_entry_is_trusted_for_the_ttl_only() {
        let cache = cache(10);
        let t0 = Instant::now();
        assert!(matches!(cache.get("a", t0), Lookup::Unknown));
        cache.put("a", Some(entry("ka")), cache.epoch(), t0);
        cache.put("b", None, cache.epoch(), t0);
        assert_eq!(found(cache.get("a", t0 + TTL / 2)), Some("ka".into()));
        assert!(matches!(cache.get("b", t0 + TTL / 2), Lookup::Missing));
        assert!(matches!(cache.get("a", t0 + TTL), Lookup::Unknown));
        assert!(matches!(cache.get("b", t0 + TTL), Lookup::Unknown));
    }

    #[test]
    fn an_entry_read_again_replaces_its_miss_and_back() {
        let cache = cache(10);
        let t0 = Instant::now();
        cache.put("a", None, cache.epoch(), t0);
        cache.put("a", Some(entry("ka")), cache.epoch(), t0);
        assert_eq!(found(cache.get("a", t0)), Some("ka".into()));
        cache.put("a", None, cache.epoch(), t0);
        assert!(matches!(cache.get("a", t0), Lookup::Missing));
        assert_eq!(cache.len(), (0, 1));
    }

    #[test]
    fn forget_drops_the_entry_and_voids_reads_under_way() {
        let cache = cache(10);
        let t0 = Instant::now();
        cache.put("a", Some(entry("ka")), cache.epoch(), t0);
        cache.put("b", Some(entry("kb")), cache.epoch(), t0);
        let before = cache.epoch();
        cache.forget(|_, name| name == "ka");
        assert!(matches!(cache.get("a", t0), Lookup::Unknown));
        assert_eq!(found(cache.get("b", t0)), Some("kb".into()));
        // A read that began before the revocation was heard.
        cache.put("a", Some(entry("ka")), before, t0);
        assert!(matches!(cache.get("a", t0), Lookup::Unknown));
        cache.put("a", None, cache.epoch(), t0);
        assert!(matches!(cache.get("a", t0), Lookup::Missing));
    }

    #[test]
    fn made_up_ids_never_keep_a_real_entry_out() {
        let cache = cache(3);
        let t0 = Instant::now();
        for i in 0..100 {
            cache.put(&format!("fake{i}"), None, cache.epoch(), t0);
        }
        assert_eq!(cache.len(), (0, 3));
        cache.put("real", Some(entry("k")), cache.epoch(), t0);
        assert_eq!(found(cache.get("real", t0)), Some("k".into()));
    }

    #[test]
    fn a_full_map_makes_room_from_stale_entries_only() {
        let cache = cache(2);
        let t0 = Instant::now();
        cache.put("a", Some(entry("ka")), cache.epoch(), t0);
        cache.put("b", Some(entry("kb")), cache.epoch(), t0 + TTL / 2);
        // Full of fresh entries: the newcomer is not cached.
        cache.put("c", Some(entry("kc")), cache.epoch(), t0 + TTL / 2);
        assert!(matches!(cache.get("c", t0 + TTL / 2), Lookup::Unknown));
        // Once `a` is stale (and a sweep is due), it makes room.
        let later = t0 + TTL + TTL / 4;
        cache.put("c", Some(entry("kc")), cache.epoch(), later);
        assert_eq!(found(cache.get("c", later)), Some("kc".into()));
        assert_eq!(found(cache.get("b", later)), Some("kb".into()));
        assert_eq!(cache.len(), (2, 0));
        // An entry already held is refreshed even when the map is full.
        cache.put("b", Some(entry("kb2")), cache.epoch(), later);
        assert_eq!(found(cache.get("b", later)), Some("kb2".into()));
    }

    #[test]
    fn forget_can_pick_entries_by_id() {
        let cache = cache(10);
        let t0 = Instant::now();
        cache.put("a", Some(entry("x")), cache.epoch(), t0);
        cache.put("b", Some(entry("x")), cache.epoch(), t0);
        cache.forget(|id, _| id == "a");
        assert!(matches!(cache.get("a", t0), Lookup::Unknown));
        assert_eq!(found(cache.get("b", t0)), Some("x".into()));
    }
}
