//! A bounded per-client outbound queue, as the Go server keeps one per connection.

use std::collections::VecDeque;

use bytes::Bytes;
use ironscale_keys::NodePublic;

use crate::frame::{is_disco, Frame};

/// Default number of packets per class (Go uses 32).
pub const DEFAULT_QUEUE_LEN: usize = 32;
/// Control frames (PeerGone, PeerPresent) kept at most.
pub const DEFAULT_CONTROL_LEN: usize = 1024;

/// What happened to a pushed item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued, nothing lost.
    Queued,
    /// Queued after dropping the oldest item of its class (the client is slow).
    DroppedOldest,
    /// Not queued (control queue full).
    Dropped,
}

/// Bounded outbound queue for one client: control frames first, then disco
/// packets, then other data packets. A full packet class drops its oldest
/// entry, so a slow reader costs a fixed amount of memory and always gets the
/// freshest packets.
#[derive(Debug)]
pub struct PacketQueue {
    cap: usize,
    control_cap: usize,
    control: VecDeque<Frame>,
    disco: VecDeque<(NodePublic, Bytes)>,
    data: VecDeque<(NodePublic, Bytes)>,
    dropped: u64,
}

impl Default for PacketQueue {
    fn default() -> Self {
        Self::new(DEFAULT_QUEUE_LEN)
    }
}

impl PacketQueue {
    /// A queue holding up to `cap` packets of each class (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            control_cap: DEFAULT_CONTROL_LEN,
            control: VecDeque::new(),
            disco: VecDeque::new(),
            data: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Queue a packet from `src`.
    pub fn push_packet(&mut self, src: NodePublic, packet: Bytes) -> Pushed {
        let cap = self.cap;
        let q = if is_disco(&packet) {
            &mut self.disco
        } else {
            &mut self.data
        };
        let mut res = Pushed::Queued;
        if q.len() >= cap {
            q.pop_front();
            self.dropped += 1;
            res = Pushed::DroppedOldest;
        }
        q.push_back((src, packet));
        res
    }

    /// Queue a control frame (PeerGone, PeerPresent, …).
    pub fn push_control(&mut self, frame: Frame) -> Pushed {
        if self.control.len() >= self.control_cap {
            self.dropped += 1;
            return Pushed::Dropped;
        }
        self.control.push_back(frame);
        Pushed::Queued
    }

    /// The next frame to write.
    pub fn pop(&mut self) -> Option<Frame> {
        if let Some(f) = self.control.pop_front() {
            return Some(f);
        }
        let (src, packet) = self.disco.pop_front().or_else(|| self.data.pop_front())?;
        Some(Frame::RecvPacket { src, packet })
    }

    pub fn len(&self) -> usize {
        self.control.len() + self.disco.len() + self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items dropped since creation.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}
