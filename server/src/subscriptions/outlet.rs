//! The channel between a dispatcher and one consumer's SSE response, with
//! a way to take back deliveries that have not reached the consumer yet.
//!
//! Frames wait in the channel while the consumer's connection is slow. A
//! reset voids every delivery made before it, and a hard delete the
//! deliveries of the erased events: the consumer's side skips those
//! frames instead of writing them ([`Deliveries::recv`]), so that no frame
//! of a void delivery, nor any copy of an erased event, leaves the node
//! after the dispatcher learnt of it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use tokio::sync::mpsc;

/// Frames a consumer's channel holds before the dispatcher waits for it
/// (a delivery that does not fit goes to another consumer, or waits).
pub const CAPACITY: usize = 256;

/// One delivery on its way to the consumer.
#[derive(Debug)]
struct Frame {
    position: i64,
    generation: u64,
    bytes: Bytes,
}

/// What the consumer's side must not write.
#[derive(Debug, Default)]
struct Revoked {
    /// Frames of generations before this one are void (a reset).
    generation: AtomicU64,
    /// Positions whose frames are void (erased events).
    positions: Mutex<HashSet<i64>>,
}

impl Revoked {
    fn keeps(&self, frame: &Frame) -> bool {
        if frame.generation < self.generation.load(Ordering::Acquire) {
            return false;
        }
        let mut positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        positions.is_empty() || !positions.remove(&frame.position)
    }
}

/// A new channel: the dispatcher's end, and the consumer's.
pub fn channel() -> (Outlet, Deliveries) {
    let (sender, receiver) = mpsc::channel(CAPACITY);
    let revoked = Arc::new(Revoked::default());
    (
        Outlet {
            sender,
            revoked: Arc::clone(&revoked),
        },
        Deliveries { receiver, revoked },
    )
}

/// The dispatcher's end of a consumer's channel.
#[derive(Debug)]
pub struct Outlet {
    sender: mpsc::Sender<Frame>,
    revoked: Arc<Revoked>,
}

impl Outlet {
    /// Queues a frame for the consumer; `false` when its channel is full or
    /// closed.
    pub(super) fn try_send(&self, position: i64, generation: u64, bytes: Bytes) -> bool {
        let frame = Frame {
            position,
            generation,
            bytes,
        };
        self.sender.try_send(frame).is_ok()
    }

    /// Whether the consumer went away.
    pub(super) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Frames of generations before `generation` are void.
    pub(super) fn revoke_before(&self, generation: u64) {
        self.revoked
            .generation
            .fetch_max(generation, Ordering::AcqRel);
    }

    /// The frame of `position` is void, if still queued.
    pub(super) fn revoke(&self, position: i64) {
        self.revoked
            .positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(position);
    }
}

/// The consumer's end: the frames to write, void ones skipped.
#[derive(Debug)]
pub struct Deliveries {
    receiver: mpsc::Receiver<Frame>,
    revoked: Arc<Revoked>,
}

impl Deliveries {
    /// The next frame to write; `None` once the dispatcher is gone.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            let frame = self.receiver.recv().await?;
            if self.revoked.keeps(&frame) {
                return Some(frame.bytes);
            }
        }
    }

    /// The next frame already queued, if any.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        while let Ok(frame) = self.receiver.try_recv() {
            if self.revoked.keeps(&frame) {
                return Some(frame.bytes);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn revoked_frames_are_skipped_and_the_others_kept() {
        // Given frames of generation 0 (positions 1, 2) and 1 (position 3)
        // queued.
        let (outlet, mut deliveries) = channel();
        for (position, generation) in [(1, 0), (2, 0), (3, 1), (4, 1)] {
            assert!(outlet.try_send(position, generation, Bytes::from(position.to_string())));
        }

        // When generation 0 is void and position 4 is revoked.
        outlet.revoke_before(1);
        outlet.revoke(4);

        // Then only 3 is written.
        assert_eq!(deliveries.recv().await, Some(Bytes::from("3")));
        assert_eq!(deliveries.try_recv(), None);
        drop(outlet);
        assert_eq!(deliveries.recv().await, None);
    }
}
