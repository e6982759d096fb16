//! The receiver's anti-replay window, RFC 4303 §3.4.3 (algorithm of RFC 4301 Appendix, as
//! refined by RFC 6479: a circular bitmap, so sliding the window never shifts the whole map).
//!
//! Contract: [`ReplayWindow::check`] is called before the ICV is verified and never changes
//! state; [`ReplayWindow::accept`] is called only after the ICV verified, so a forged packet
//! can never move the window. Sequence number 0 is never valid (senders start at 1,
//! RFC 4303 §3.3.3). 32-bit sequence numbers only (no ESN).

use super::ConfigError;

/// RFC 4303 §3.4.3: "a window size of 64 is preferred and SHOULD be the default".
pub const DEFAULT_REPLAY_WINDOW: usize = 64;

/// The largest window accepted (bits of bitmap allocated once when the SA is built).
pub const MAX_REPLAY_WINDOW: usize = 4096;

/// Anti-replay state of one inbound SA.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// Window size in packets: sequence numbers older than `top - size + 1` are rejected.
    size: u32,
    /// Highest sequence number accepted so far; 0 before the first packet.
    top: u32,
    /// Circular bitmap, bit `seq % bits` set when `seq` was accepted. At least `size` bits,
    /// rounded up to whole words, so every sequence inside the window has its own bit.
    bitmap: Box<[u64]>,
}

impl ReplayWindow {
    /// A window of `size` packets (1..=[`MAX_REPLAY_WINDOW`]); nothing received yet.
    ///
    /// # Errors
    /// [`ConfigError::ReplayWindow`] for a size outside that range.
    pub fn new(size: usize) -> Result<Self, ConfigError> {
        if !(1..=MAX_REPLAY_WINDOW).contains(&size) {
            return Err(ConfigError::ReplayWindow {
                got: size,
                max: MAX_REPLAY_WINDOW,
            });
        }
        let words = size.div_ceil(64);
        Ok(Self {
            size: u32::try_from(size).unwrap_or(u32::MAX),
            top: 0,
            bitmap: vec![0; words].into_boxed_slice(),
        })
    }

    /// The window size in packets.
    #[must_use]
    pub fn size(&self) -> usize {
        self.size as usize
    }

    /// The highest sequence number accepted so far (0 before the first packet).
    #[must_use]
    pub fn highest(&self) -> u32 {
        self.top
    }

    /// Refuses every sequence number up to `ceiling`, as if all had been accepted: what a
    /// receiver restarting with a persisted replay ceiling must do (nothing it may have accepted
    /// before is accepted again). Only moves the window forward.
    pub fn start_above(&mut self, ceiling: u32) {
        if ceiling > self.top {
            self.top = ceiling;
            self.bitmap.fill(u64::MAX);
        }
    }

    /// Forgets everything: the window accepts any sequence number but 0 again (the operator's
    /// reset for a peer that restarted at 1).
    pub fn reset(&mut self) {
        self.top = 0;
        self.bitmap.fill(0);
    }

    fn bits(&self) -> u32 {
        // At most MAX_REPLAY_WINDOW bits, so this never truncates.
        u32::try_from(self.bitmap.len() * 64).unwrap_or(u32::MAX)
    }

    fn slot(&self, seq: u32) -> (usize, u64) {
        let bit = seq % self.bits();
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    /// True when `seq` may be new: not 0, not older than the window, not already accepted.
    /// Does not change the window.
    #[must_use]
    pub fn check(&self, seq: u32) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            return true;
        }
        if self.top - seq >= self.size {
            return false;
        }
        let (word, mask) = self.slot(seq);
        self.bitmap[word] & mask == 0
    }

    /// Records `seq` as received after its ICV verified, sliding the window when `seq` is the
    /// new highest. Returns false (and changes nothing) when `check` would have refused it, so
    /// a caller that skips `check` still cannot accept a replay.
    pub fn accept(&mut self, seq: u32) -> bool {
        if !self.check(seq) {
            return false;
        }
        if seq > self.top {
            let advance = seq - self.top;
            if advance >= self.bits() {
                self.bitmap.fill(0);
            } else {
                // Clear the slots of the sequence numbers skipped over (and of `seq`): they
                // still hold bits from one lap of the ring ago. Bounded by the bitmap size.
                for skipped in self.top + 1..=seq {
                    let (word, mask) = self.slot(skipped);
                    self.bitmap[word] &= !mask;
                }
            }
            self.top = seq;
        }
        let (word, mask) = self.slot(seq);
        self.bitmap[word] |= mask;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(size: usize) -> ReplayWindow {
        ReplayWindow::new(size).expect("building a replay window")
    }

    #[test]
    fn first_packet_duplicate_and_zero() {
        let mut w = window(64);
        assert!(!w.check(0), "sequence 0 is never sent");
        assert!(w.check(1));
        assert!(w.accept(1));
        assert!(!w.check(1), "duplicate");
        assert!(!w.accept(1));
        assert!(w.accept(2));
        assert_eq!(w.highest(), 2);
        assert!(!w.accept(0));
    }

    #[test]
    fn first_packet_may_be_any_number() {
        let mut w = window(64);
        assert!(w.accept(1000));
        assert!(w.accept(937), "inside the window: 1000 - 937 = 63 < 64");
        assert!(!w.check(936), "1000 - 936 = 64: just left the window");
        assert!(w.check(999));
    }

    #[test]
    fn window_edges_and_slide() {
        let mut w = window(64);
        assert!(w.accept(100));
        // The oldest sequence still inside is top - size + 1.
        assert!(w.check(37));
        assert!(!w.check(36), "too old");
        assert!(w.accept(37));
        assert!(!w.accept(37), "duplicate at the edge");
        // Sliding by one pushes 37 out and frees nothing inside.
        assert!(w.accept(101));
        assert!(!w.check(37), "slid out");
        assert!(w.check(38));
        // A slide by exactly the window size empties it.
        assert!(w.accept(165));
        assert!(!w.check(101), "165 - 101 = 64");
        assert!(w.check(102));
        // A jump far ahead clears everything.
        assert!(w.accept(1_000_000));
        assert!(w.check(999_999));
        assert!(!w.check(165));
    }

    #[test]
    fn ring_slots_are_cleared_when_reused() {
        let mut w = window(64);
        for seq in 1..=64 {
            assert!(w.accept(seq));
        }
        // 65 and 129 reuse the slots of 1 and 65; they must read as unseen.
        assert!(w.accept(65));
        assert!(!w.check(65));
        assert!(w.accept(129));
        assert!(!w.check(129));
        assert!(w.check(128));
        assert!(w.accept(128));
        // 66 is inside (129 - 66 = 63) and never seen.
        assert!(w.check(66));
    }

    #[test]
    fn out_of_order_within_window_matches_a_model() {
        // Compare against a plain set-based model over a pseudo-random walk.
        let mut w = window(32);
        let mut seen = std::collections::BTreeSet::new();
        let mut top = 0u32;
        let mut x = 12345u32;
        for _ in 0..5000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let seq = (top + 8).saturating_sub((x >> 16) % 48).max(1);
            let model_ok = seq > top || (top - seq < 32 && !seen.contains(&seq));
            assert_eq!(w.check(seq), model_ok, "seq {seq} top {top}");
            assert_eq!(w.accept(seq), model_ok);
            if model_ok {
                seen.insert(seq);
                top = top.max(seq);
            }
        }
    }

    #[test]
    fn last_sequence_number() {
        let mut w = window(64);
        assert!(w.accept(u32::MAX - 1));
        assert!(w.accept(u32::MAX));
        assert!(!w.accept(u32::MAX), "duplicate of 2^32-1");
        assert!(w.check(u32::MAX - 63));
        assert!(!w.check(u32::MAX - 64));
    }

    #[test]
    fn start_above_refuses_everything_up_to_the_ceiling_and_reset_forgets() {
        let mut w = window(64);
        assert!(w.accept(10));
        w.start_above(1000);
        for seq in [1, 10, 500, 936, 937, 999, 1000] {
            assert!(!w.check(seq), "{seq} at or below the ceiling");
        }
        assert!(w.accept(1001));
        assert!(!w.check(1000), "still refused after the window moved");
        w.start_above(5);
        assert_eq!(w.highest(), 1001, "never moves back");
        w.reset();
        assert!(w.accept(1));
        assert!(w.accept(5));
    }

    #[test]
    fn sizes() {
        assert!(ReplayWindow::new(0).is_err());
        assert!(ReplayWindow::new(MAX_REPLAY_WINDOW + 1).is_err());
        let mut w = window(MAX_REPLAY_WINDOW);
        assert!(w.accept(5000));
        assert!(w.check(5000 - 4095));
        assert!(!w.check(5000 - 4096));
        let mut w = window(1);
        assert!(w.accept(5));
        assert!(!w.check(4));
        assert!(w.accept(6));
        assert_eq!(w.size(), 1);
    }
}
