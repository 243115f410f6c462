//! The in-memory side of [`KeyStore::authenticate`](super::KeyStore::authenticate):
//! keys by id, each trusted for a short time (`ttl`) after it was read.
//!
//! Two maps, each bounded by `capacity`: keys found, and ids the database
//! did not know (or whose key is revoked). Made-up ids fill only the second,
//! so a flood of them never pushes a real key out or keeps one from being
//! cached. A full map first drops the entries older than `ttl` (at most four
//! times per `ttl`, so a flood does not make every insert a scan); when none
//! is, the new entry is simply not cached and the next request reads the
//! database again.
//!
//! A read of the database that started before a [`Cache::forget`] does not
//! fill the cache: it may have seen the key before its revocation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::token::{SecretHash, Token};
use crate::auth::Principal;

/// A key as the cache holds it: what a request needs to be checked, and
/// the principal it then carries (shared, so a hit allocates nothing).
pub(super) struct CachedKey {
    /// The SHA-256 of its secret.
    pub(super) secret_hash: SecretHash,
    /// Its name, grants and expiry.
    pub(super) principal: Arc<Principal>,
}

impl CachedKey {
    /// Whether `token` is this key's and the key has not expired at `now`.
    pub(super) fn admits(&self, token: &Token, now: DateTime<Utc>) -> bool {
        token.matches(&self.secret_hash) && self.principal.expires_at.is_none_or(|at| at > now)
    }
}

/// What the cache knows of an id.
pub(super) enum Lookup {
    /// A key, read less than `ttl` ago.
    Found(Arc<CachedKey>),
    /// No usable key, as of less than `ttl` ago.
    Missing,
    /// Nothing recent: read the database.
    Unknown,
}

/// How long entries are trusted and how many there may be.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Age after which an entry is read again.
    pub(super) ttl: Duration,
    /// Most keys held, and most missing ids held.
    pub(super) capacity: usize,
}

/// The cache; shared by every clone of a `KeyStore`.
pub(super) struct Cache {
    limits: Limits,
    state: Mutex<State>,
}

struct State {
    keys: Bounded<Arc<CachedKey>>,
    missing: Bounded<()>,
    /// Counts [`Cache::forget`] calls; see [`Cache::epoch`].
    epoch: u64,
}

impl Cache {
    /// An empty cache.
    pub(super) fn new(limits: Limits) -> Cache {
        Cache {
            limits,
            state: Mutex::new(State {
                keys: Bounded::default(),
                missing: Bounded::default(),
                epoch: 0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; a poisoned state is whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What is known of `id` at `now`.
    pub(super) fn get(&self, id: &str, now: Instant) -> Lookup {
        let state = self.state();
        let ttl = self.limits.ttl;
        if let Some(key) = state.keys.get(id, now, ttl) {
            Lookup::Found(Arc::clone(key))
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

    /// Records what the database said of `id` (`None`: no usable key),
    /// unless a key was forgotten since `epoch` was taken.
    pub(super) fn put(&self, id: &str, key: Option<Arc<CachedKey>>, epoch: u64, now: Instant) {
        let mut state = self.state();
        if state.epoch != epoch {
            return;
        }
        let Limits { ttl, capacity } = self.limits;
        match key {
            Some(key) => {
                state.missing.remove(id);
                state.keys.insert(id, key, now, ttl, capacity);
            }
            None => {
                state.keys.remove(id);
                state.missing.insert(id, (), now, ttl, capacity);
            }
        }
    }

    /// Drops the key called `name`, and keeps reads already under way from
    /// putting it back.
    pub(super) fn forget(&self, name: &str) {
        let mut state = self.state();
        state.epoch += 1;
        state
            .keys
            .entries
            .retain(|_, (_, key)| key.principal.name != name);
    }

    /// Keys and missing ids held (stale ones included).
    #[cfg(test)]
    pub(super) fn len(&self) -> (usize, usize) {
        let state = self.state();
        (state.keys.entries.len(), state.missing.entries.len())
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

    fn cache(capacity: usize) -> Cache {
        Cache::new(Limits { ttl: TTL, capacity })
    }

    fn key(name: &str) -> Arc<CachedKey> {
        Arc::new(CachedKey {
            secret_hash: [0; 32],
            principal: Arc::new(Principal {
                name: name.into(),
                grants: Vec::new(),
                expires_at: None,
            }),
        })
    }

    fn found(lookup: Lookup) -> Option<String> {
        match lookup {
            Lookup::Found(key) => Some(key.principal.name.clone()),
            _ => None,
        }
    }

    #[test]
    fn an_entry_is_trusted_for_the_ttl_only() {
        let cache = cache(10);
        let t0 = Instant::now();
        assert!(matches!(cache.get("a", t0), Lookup::Unknown));
        cache.put("a", Some(key("ka")), cache.epoch(), t0);
        cache.put("b", None, cache.epoch(), t0);
        assert_eq!(found(cache.get("a", t0 + TTL / 2)), Some("ka".into()));
        assert!(matches!(cache.get("b", t0 + TTL / 2), Lookup::Missing));
        assert!(matches!(cache.get("a", t0 + TTL), Lookup::Unknown));
        assert!(matches!(cache.get("b", t0 + TTL), Lookup::Unknown));
    }

    #[test]
    fn a_key_read_again_replaces_its_miss_and_back() {
        let cache = cache(10);
        let t0 = Instant::now();
        cache.put("a", None, cache.epoch(), t0);
        cache.put("a", Some(key("ka")), cache.epoch(), t0);
        assert_eq!(found(cache.get("a", t0)), Some("ka".into()));
        cache.put("a", None, cache.epoch(), t0);
        assert!(matches!(cache.get("a", t0), Lookup::Missing));
        assert_eq!(cache.len(), (0, 1));
    }

    #[test]
    fn forget_drops_the_key_and_voids_reads_under_way() {
        let cache = cache(10);
        let t0 = Instant::now();
        cache.put("a", Some(key("ka")), cache.epoch(), t0);
        cache.put("b", Some(key("kb")), cache.epoch(), t0);
        let before = cache.epoch();
        cache.forget("ka");
        assert!(matches!(cache.get("a", t0), Lookup::Unknown));
        assert_eq!(found(cache.get("b", t0)), Some("kb".into()));
        // A read that began before the revocation was heard.
        cache.put("a", Some(key("ka")), before, t0);
        assert!(matches!(cache.get("a", t0), Lookup::Unknown));
        cache.put("a", None, cache.epoch(), t0);
        assert!(matches!(cache.get("a", t0), Lookup::Missing));
    }

    #[test]
    fn made_up_ids_never_keep_a_real_key_out() {
        let cache = cache(3);
        let t0 = Instant::now();
        for i in 0..100 {
            cache.put(&format!("fake{i}"), None, cache.epoch(), t0);
        }
        assert_eq!(cache.len(), (0, 3));
        cache.put("real", Some(key("k")), cache.epoch(), t0);
        assert_eq!(found(cache.get("real", t0)), Some("k".into()));
    }

    #[test]
    fn a_full_map_makes_room_from_stale_entries_only() {
        let cache = cache(2);
        let t0 = Instant::now();
        cache.put("a", Some(key("ka")), cache.epoch(), t0);
        cache.put("b", Some(key("kb")), cache.epoch(), t0 + TTL / 2);
        // Full of fresh entries: the newcomer is not cached.
        cache.put("c", Some(key("kc")), cache.epoch(), t0 + TTL / 2);
        assert!(matches!(cache.get("c", t0 + TTL / 2), Lookup::Unknown));
        // Once `a` is stale (and a sweep is due), it makes room.
        let later = t0 + TTL + TTL / 4;
        cache.put("c", Some(key("kc")), cache.epoch(), later);
        assert_eq!(found(cache.get("c", later)), Some("kc".into()));
        assert_eq!(found(cache.get("b", later)), Some("kb".into()));
        assert_eq!(cache.len(), (2, 0));
        // A key already held is refreshed even when the map is full.
        cache.put("b", Some(key("kb2")), cache.epoch(), later);
        assert_eq!(found(cache.get("b", later)), Some("kb2".into()));
    }
}
