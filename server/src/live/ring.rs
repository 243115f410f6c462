//! The live feed's fan-out: a broadcast of [`Batch`]es bounded in **bytes**.
//!
//! tokio's `broadcast` bounds its buffer in items. Batches hold up to a page
//! of events of any size, so 256 of them were anything from a few kilobytes
//! to gigabytes, and one subscriber that stopped reading pinned all of it
//! (each batch stays until every receiver has read it or it is overwritten).
//! Here a batch is dropped when every receiver has read it, as there, *or*
//! when the batches held pass the byte budget (`--live-buffer-bytes`),
//! oldest first: a receiver that had not read it yet learns that it
//! [lagged](RecvError::Lagged) and pages from the database, as the contract
//! says a lagging subscriber does. So the node holds at most the budget (plus
//! the one batch each receiver is working through) whatever the event sizes
//! and however slow its clients, and gives it back as they read or leave.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use super::{Batch, LiveEvent};

/// Why [`Receiver::recv`] returned no batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// Batches this receiver had not read were dropped (to keep the byte
    /// budget); it goes on with the newest. The number is how many.
    Lagged(u64),
    /// The feed stopped (the node shuts down).
    Closed,
}

/// The sending side, held by the tail.
pub(super) struct Ring {
    state: RwLock<State>,
    /// Wakes receivers waiting for the next batch.
    published: Notify,
    closed: AtomicBool,
    budget: usize,
}

struct State {
    /// Batches not yet read by every receiver, oldest first, numbered
    /// consecutively from `first`.
    entries: VecDeque<Entry>,
    /// The number of `entries[0]`.
    first: u64,
    /// The bytes of the batches in `entries`.
    bytes: usize,
    receivers: usize,
}

struct Entry {
    batch: Arc<Batch>,
    bytes: usize,
    /// Receivers that have yet to read it.
    unread: AtomicUsize,
}

impl State {
    fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// Drops the read-by-all batches at the front, then the oldest ones
    /// while over the budget.
    fn trim(&mut self, budget: usize) {
        while let Some(front) = self.entries.front() {
            let read_by_all = front.unread.load(Ordering::Acquire) == 0;
            if !read_by_all && self.bytes <= budget {
                break;
            }
            if !read_by_all {
                metrics::counter!("strata_live_batches_dropped_total").increment(1);
            }
            self.bytes -= front.bytes;
            self.entries.pop_front();
            self.first += 1;
        }
        metrics::gauge!("strata_live_buffer_bytes").set(self.bytes as f64);
    }
}

impl Ring {
    /// A ring that holds at most `budget` bytes of unread batches (a single
    /// batch larger than that is held alone until read).
    pub(super) fn new(budget: usize) -> Ring {
        Ring {
            state: RwLock::new(State {
                entries: VecDeque::new(),
                first: 0,
                bytes: 0,
                receivers: 0,
            }),
            published: Notify::new(),
            closed: AtomicBool::new(false),
            budget,
        }
    }

    /// Hands `batch` to every current receiver.
    pub(super) fn send(&self, batch: Arc<Batch>) {
        {
            let mut state = self.state.write().expect("the ring's lock is not poisoned");
            if state.receivers > 0 {
                let bytes = batch.bytes();
                let unread = AtomicUsize::new(state.receivers);
                state.entries.push_back(Entry {
                    batch,
                    bytes,
                    unread,
                });
                state.bytes += bytes;
                // Keep the newest batch even when it alone is over the budget.
                if state.entries.len() > 1 {
                    state.trim(self.budget);
                } else {
                    metrics::gauge!("strata_live_buffer_bytes").set(state.bytes as f64);
                }
            }
        }
        self.published.notify_waiters();
    }

    /// Drops the events of `stream` from every batch still held (the
    /// stream was hard-deleted): a receiver that has not read them yet never
    /// will. The batches keep their ranges, so receivers see holes, as they
    /// would reading the database now.
    pub(super) fn erase(&self, stream: &str) {
        let mut state = self.state.write().expect("the ring's lock is not poisoned");
        let mut bytes = 0;
        for entry in &mut state.entries {
            if entry.batch.events.iter().any(|e| e.stream == stream) {
                let kept = Batch {
                    start: entry.batch.start,
                    end: entry.batch.end,
                    events: entry
                        .batch
                        .events
                        .iter()
                        .filter(|e| e.stream != stream)
                        .map(LiveEvent::clone)
                        .collect(),
                };
                entry.bytes = kept.bytes();
                entry.batch = Arc::new(kept);
            }
            bytes += entry.bytes;
        }
        state.bytes = bytes;
    }

    /// How many receivers there are.
    pub(super) fn receiver_count(&self) -> usize {
        self.state
            .read()
            .expect("the ring's lock is not poisoned")
            .receivers
    }

    /// Ends every receiver's wait with [`RecvError::Closed`].
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.published.notify_waiters();
    }

    /// A receiver of every batch sent from now on.
    pub(super) fn subscribe(self: &Arc<Ring>) -> Receiver {
        let mut state = self.state.write().expect("the ring's lock is not poisoned");
        state.receivers += 1;
        Receiver {
            ring: Arc::clone(self),
            next: state.next(),
        }
    }
}

/// One subscriber's place in the feed.
pub struct Receiver {
    ring: Arc<Ring>,
    /// The number of the next batch to read.
    next: u64,
}

impl Receiver {
    /// The next batch, waiting for it; [`RecvError::Lagged`] when batches
    /// this receiver had not read were dropped meanwhile.
    ///
    /// # Errors
    ///
    /// [`RecvError::Lagged`] (go on calling: the next call waits for the
    /// next batch) or [`RecvError::Closed`] (the feed stopped).
    pub async fn recv(&mut self) -> Result<Arc<Batch>, RecvError> {
        // The fast path touches no lock but the ring's read lock: with
        // thousands of receivers, registering each with the `Notify` for
        // every batch (its waiter list is one mutex) cost more than the
        // delivery itself.
        if let Some(received) = self.try_recv() {
            return received;
        }
        let ring = Arc::clone(&self.ring);
        loop {
            // Registered before looking again, so that a batch sent in
            // between still wakes this wait.
            let published = ring.published.notified();
            let mut published = std::pin::pin!(published);
            published.as_mut().enable();
            if let Some(received) = self.try_recv() {
                return received;
            }
            if ring.closed.load(Ordering::Acquire) {
                return Err(RecvError::Closed);
            }
            published.await;
        }
    }

    fn try_recv(&mut self) -> Option<Result<Arc<Batch>, RecvError>> {
        let state = self
            .ring
            .state
            .read()
            .expect("the ring's lock is not poisoned");
        if self.next < state.first {
            // Go on with the newest: the subscriber pages what it missed
            // from the database, and would only lag again behind old ones.
            // What it skips that is still held no longer waits for it.
            let newest = state.next();
            let missed = newest - self.next;
            for entry in &state.entries {
                entry.unread.fetch_sub(1, Ordering::AcqRel);
            }
            self.next = newest;
            drop(state);
            self.ring
                .state
                .write()
                .expect("the ring's lock is not poisoned")
                .trim(self.ring.budget);
            return Some(Err(RecvError::Lagged(missed)));
        }
        let entry = state.entries.get((self.next - state.first) as usize)?;
        self.next += 1;
        let batch = Arc::clone(&entry.batch);
        let read_by_all = entry.unread.fetch_sub(1, Ordering::AcqRel) == 1;
        let at_front = self.next - 1 == state.first;
        drop(state);
        if read_by_all && at_front {
            // The last reader of the oldest batch lets it go.
            self.ring
                .state
                .write()
                .expect("the ring's lock is not poisoned")
                .trim(self.ring.budget);
        }
        Some(Ok(batch))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self
            .ring
            .state
            .write()
            .expect("the ring's lock is not poisoned");
        state.receivers -= 1;
        // What this receiver had not read no longer waits for it.
        let from = self.next.max(state.first);
        for n in from..state.next() {
            let entry = &state.entries[(n - state.first) as usize];
            entry.unread.fetch_sub(1, Ordering::AcqRel);
        }
        state.trim(self.ring.budget);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{RecvError, Ring};
    use crate::live::{Batch, LiveEvent};

    fn batch(start: i64, bytes: usize) -> Arc<Batch> {
        Arc::new(Batch {
            start,
            end: start,
            events: vec![LiveEvent::for_test(start, bytes)],
        })
    }

    fn held(ring: &Ring) -> (usize, usize) {
        let state = ring.state.read().unwrap();
        (state.entries.len(), state.bytes)
    }

    #[tokio::test]
    async fn a_batch_read_by_every_receiver_is_let_go() {
        let ring = Arc::new(Ring::new(1 << 20));
        let mut a = ring.subscribe();
        let mut b = ring.subscribe();
        ring.send(batch(1, 100));
        assert_eq!(a.recv().await.unwrap().start, 1);
        assert_eq!(held(&ring).0, 1, "b has not read it");
        assert_eq!(b.recv().await.unwrap().start, 1);
        assert_eq!(held(&ring), (0, 0));
    }

    #[tokio::test]
    async fn a_stalled_receiver_lags_instead_of_holding_more_than_the_budget() {
        let ring = Arc::new(Ring::new(10_000));
        let mut stalled = ring.subscribe();
        let mut reader = ring.subscribe();
        for n in 1..=100 {
            ring.send(batch(n, 1_000));
            assert_eq!(reader.recv().await.unwrap().start, n);
            let (_, bytes) = held(&ring);
            assert!(bytes <= 10_000 + 2_000, "{bytes} bytes held");
        }
        assert!(matches!(stalled.recv().await, Err(RecvError::Lagged(_))));
        // After the lag it goes on with what comes next.
        ring.send(batch(101, 1_000));
        assert_eq!(stalled.recv().await.unwrap().start, 101);
        assert_eq!(reader.recv().await.unwrap().start, 101);
        assert_eq!(held(&ring), (0, 0));
    }

    #[tokio::test]
    async fn what_a_receiver_leaves_unread_goes_with_it() {
        let ring = Arc::new(Ring::new(1 << 20));
        let gone = ring.subscribe();
        for n in 1..=5 {
            ring.send(batch(n, 1_000));
        }
        assert_eq!(held(&ring).0, 5);
        drop(gone);
        assert_eq!(held(&ring), (0, 0));
        assert_eq!(ring.receiver_count(), 0);
    }

    #[tokio::test]
    async fn an_erased_stream_leaves_the_held_batches_but_not_their_ranges() {
        let ring = Arc::new(Ring::new(1 << 20));
        let mut reader = ring.subscribe();
        ring.send(Arc::new(Batch {
            start: 1,
            end: 3,
            events: vec![
                LiveEvent::for_test(1, 10),
                LiveEvent::for_test(2, 10).in_stream("gone-1"),
                LiveEvent::for_test(3, 10),
            ],
        }));
        ring.erase("gone-1");
        let batch = reader.recv().await.unwrap();
        assert_eq!((batch.start, batch.end), (1, 3));
        let positions: Vec<i64> = batch.events.iter().map(|e| e.position).collect();
        assert_eq!(positions, vec![1, 3]);
    }

    #[tokio::test]
    async fn nothing_is_held_without_receivers_and_close_ends_waits() {
        let ring = Arc::new(Ring::new(1 << 20));
        ring.send(batch(1, 1_000));
        assert_eq!(held(&ring), (0, 0));
        let mut late = ring.subscribe();
        let waiting = tokio::spawn(async move { late.recv().await.map(|b| b.start) });
        tokio::task::yield_now().await;
        ring.close();
        assert_eq!(waiting.await.unwrap(), Err(RecvError::Closed));
    }
}
