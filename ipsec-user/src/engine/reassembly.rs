//! IPv6 fragment reassembly for the outbound worker (RFC 8200 §4.5), bounded and I/O-free.
//!
//! Why: ESP protects whole datagrams (RFC 4303 §3.3.4, "ESP before fragmentation"). When the
//! local stack has already fragmented a datagram of a protected flow, TC egress hands every
//! fragment to the engine's TUN; the engine puts the datagram back together here, classifies
//! and encapsulates it once, and the kernel fragments the ESP packet if it exceeds the MTU. A
//! fragment is never sent on by itself, so none ever leaves in clear.
//!
//! Contract of [`Reassembler::push`]:
//! - A packet without a fragment header is [`Outcome::NotFragment`] (the caller handles it as
//!   before). An atomic fragment (offset 0, M = 0, RFC 6946) completes on its own and touches no
//!   state.
//! - Fragments are keyed by (source, destination, identification). The unfragmentable part
//!   (IPv6 header and the extension headers in front of the fragment header) is taken from the
//!   first fragment (offset 0), as RFC 8200 §4.5 says; on completion the fragment header is
//!   removed, the Next Header field in front of it takes the fragment header's Next Header, and
//!   Payload Length is fixed. The datagram is appended to the caller's buffer.
//! - Dropped: a non-last fragment whose length is not a multiple of 8 or is 0; a fragment that
//!   would make the datagram exceed 65,535 bytes of payload ([`Drop::TooBig`]); a fragment of a
//!   datagram already in [`MAX_FRAGMENTS`] pieces. **Overlap (RFC 5722):** a fragment that
//!   overlaps one already received drops the whole datagram, and every later fragment of it
//!   until its state times out. An exact duplicate (same offset, length and bytes, RFC 8200
//!   §4.5) is ignored and reassembly continues. A second "last" fragment with another end, or
//!   data beyond the last fragment's end, counts as an overlap.
//! - Tiny fragments (8 bytes, or a first fragment without the upper-layer header) are
//!   reassembled like any other: nothing is classified before the whole datagram exists, so a
//!   header split over fragments cannot hide ports from the policy.
//! - Bounds: a datagram not complete within [`Limits::timeout`] is dropped (30 s by default:
//!   RFC 8200 §4.5 abandons reassembly after 60 s at most; half that frees memory sooner when
//!   fragments are lost, and no sender that still waits for an answer spreads one datagram's
//!   fragments over 30 s). At most [`Limits::max_datagrams`] datagrams and [`Limits::max_bytes`]
//!   bytes are held; past either the oldest datagram is evicted. Every drop is counted in
//!   [`Counts`].
//! - Once warm the steady state allocates nothing: finished datagrams return their buffers to a
//!   small pool that new datagrams take from.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::wire::{ExtWalk, FRAGMENT_HEADER_LEN, IPV6_HEADER_LEN, Ipv6Packet};

/// Most fragments one datagram may arrive in (a 64 KiB datagram at the IPv6 minimum MTU of
/// 1,280 takes 52); more are dropped with the datagram.
pub const MAX_FRAGMENTS: usize = 128;

/// Largest reassembled IPv6 payload (no jumbograms, RFC 8200 §4.5).
const MAX_PAYLOAD: usize = u16::MAX as usize;

/// Buffers kept for reuse.
const POOL: usize = 16;

/// How long and how much the reassembler holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub max_datagrams: usize,
    pub max_bytes: usize,
}

/// 30 s, 1,024 datagrams, 8 MiB (see the module contract).
pub const DEFAULT_LIMITS: Limits = Limits {
    timeout: Duration::from_secs(30),
    max_datagrams: 1024,
    max_bytes: 8 << 20,
};

/// Why a fragment (or its whole datagram) was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Cut short, a bad length, or a header chain that does not parse.
    Malformed,
    /// The datagram would exceed 65,535 bytes of payload.
    TooBig,
    /// Overlapping fragments, or a fragment of a datagram already dropped for that (RFC 5722).
    Overlap,
    /// More than [`MAX_FRAGMENTS`] pieces.
    TooManyFragments,
}

/// What [`Reassembler::push`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No fragment header: not ours to handle.
    NotFragment,
    /// Kept; the datagram is not complete yet.
    Pending,
    /// An exact duplicate of a fragment already held: ignored.
    Duplicate,
    /// The datagram is complete and was appended to the output buffer.
    Complete,
    /// Dropped, and why.
    Dropped(Drop),
}

/// Datagrams given up on without a packet to blame, since the last [`Reassembler::take_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Incomplete when their time ran out.
    pub timed_out: u64,
    /// Evicted, oldest first, to stay within the entry or byte bound.
    pub evicted: u64,
}

/// Where the fragment header sits in a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FragmentView {
    /// Offset of the fragment header = length of the unfragmentable part.
    header_offset: usize,
    /// Offset of the Next Header field that says 44 (6 for the fixed header).
    next_header_field: usize,
    /// The Next Header of the fragment header.
    next_header: u8,
    /// Fragment offset in bytes.
    offset: usize,
    more: bool,
    /// Source, destination, identification: the datagram the fragment belongs to.
    key: Key,
    /// Where the packet ends (`40 + Payload Length`): link-layer padding is not part of it.
    end: usize,
}

/// Finds the fragment header of an IPv6 packet (the one bounded walk, `wire::ExtWalk`).
/// `Ok(None)` when there is none, `Err` when the packet or the header chain in front of it
/// does not parse.
fn fragment_view(packet: &[u8]) -> Result<Option<FragmentView>, Drop> {
    let ip = Ipv6Packet::new_checked(packet).map_err(|_| Drop::Malformed)?;
    for header in ExtWalk::new(ip) {
        let header = header.map_err(|_| Drop::Malformed)?;
        if let Some(fragment) = header.fragment() {
            return Ok(Some(FragmentView {
                header_offset: header.start,
                next_header_field: header.announced_at,
                next_header: fragment.next_header(),
                offset: usize::from(fragment.frag_offset()) * 8,
                more: fragment.more_fragments(),
                key: (ip.src_octets(), ip.dst_octets(), fragment.identification()),
                end: ip.total_len(),
            }));
        }
    }
    Ok(None)
}

/// Whether the IPv6 packet `packet` carries a fragment header (or a header chain that does not
/// parse, which is treated the same: nothing behind it can be checked).
pub fn has_fragment_header(packet: &[u8]) -> bool {
    !matches!(fragment_view(packet), Ok(None))
}

/// One datagram being put together.
#[derive(Default)]
struct Datagram {
    created: Option<Instant>,
    /// The unfragmentable part of the first fragment (empty until it arrives), Next Header
    /// already pointing past the fragment header.
    header: Vec<u8>,
    /// The fragmentable part, by offset; holes are zero until filled.
    data: Vec<u8>,
    /// Received fragments as (start, end) byte offsets, in arrival order.
    pieces: Vec<(usize, usize)>,
    /// The end of the fragmentable part, once the last fragment arrived.
    total: Option<usize>,
    /// Dropped for an overlap: later fragments are dropped too, until the state times out.
    poisoned: bool,
}

impl Datagram {
    fn bytes(&self) -> usize {
        self.header.len() + self.data.len()
    }

    fn reset(&mut self) {
        self.created = None;
        self.header.clear();
        self.data.clear();
        self.pieces.clear();
        self.total = None;
        self.poisoned = false;
    }

    /// Every byte from 0 to the last fragment's end received, and the first fragment's header.
    fn is_complete(&mut self) -> bool {
        let Some(total) = self.total else {
            return false;
        };
        if self.header.is_empty() {
            return false;
        }
        self.pieces.sort_unstable();
        let mut reached = 0;
        for &(start, end) in &self.pieces {
            if start > reached {
                return false;
            }
            reached = reached.max(end);
        }
        reached == total
    }
}

type Key = ([u8; 16], [u8; 16], u32);

/// The reassembly state; see the module contract.
pub struct Reassembler {
    limits: Limits,
    datagrams: HashMap<Key, Datagram>,
    /// Keys in creation order (with their creation time, to skip stale entries) for timeouts
    /// and eviction.
    order: VecDeque<(Instant, Key)>,
    bytes: usize,
    pool: Vec<Datagram>,
    counts: Counts,
}

impl Reassembler {
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            datagrams: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            pool: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// Datagrams held now (complete ones are handed out and forgotten).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// Bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }

    /// Timeouts and evictions since the last call.
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }

    /// Handles one IPv6 packet `packet` at time `now`; on [`Outcome::Complete`] the whole
    /// datagram is appended to `out`. See the module contract.
    pub fn push(&mut self, packet: &[u8], now: Instant, out: &mut Vec<u8>) -> Outcome {
        let view = match fragment_view(packet) {
            Ok(Some(view)) => view,
            Ok(None) => return Outcome::NotFragment,
            Err(drop) => return Outcome::Dropped(drop),
        };
        self.expire(now);
        // The walk checked that the fragment header lies within the packet.
        let Some(body) = packet.get(view.header_offset + FRAGMENT_HEADER_LEN..view.end) else {
            return Outcome::Dropped(Drop::Malformed);
        };
        let (start, end) = (view.offset, view.offset + body.len());
        if view.more && (body.is_empty() || !body.len().is_multiple_of(8)) {
            return Outcome::Dropped(Drop::Malformed);
        }
        // RFC 8200 §4.5: the reassembled payload must fit 65,535 bytes.
        if view.header_offset - IPV6_HEADER_LEN + end > MAX_PAYLOAD {
            return Outcome::Dropped(Drop::TooBig);
        }
        if start == 0 && !view.more {
            // An atomic fragment (RFC 6946): a whole datagram on its own.
            let at = out.len();
            if !emit(out, &packet[..view.header_offset], body) {
                return Outcome::Dropped(Drop::TooBig);
            }
            out[at + view.next_header_field] = view.next_header;
            return Outcome::Complete;
        }

        let key = view.key;
        if !self.datagrams.contains_key(&key) {
            let mut fresh = self.pool.pop().unwrap_or_default();
            fresh.created = Some(now);
            self.datagrams.insert(key, fresh);
            self.order.push_back((now, key));
        }
        let datagram = self.datagrams.get_mut(&key).expect("inserted above");
        if datagram.poisoned {
            return Outcome::Dropped(Drop::Overlap);
        }
        let before = datagram.bytes();
        let outcome = place(datagram, packet, view, body, start, end);
        let after = datagram.bytes();
        // A fragment only ever adds bytes.
        self.bytes += after.saturating_sub(before);
        match outcome {
            Placed::Kept => {}
            Placed::Duplicate => return Outcome::Duplicate,
            Placed::Overlap => {
                // RFC 5722: the whole datagram goes; remember that until it times out.
                self.bytes -= datagram.bytes();
                datagram.header.clear();
                datagram.data.clear();
                datagram.pieces.clear();
                datagram.poisoned = true;
                return Outcome::Dropped(Drop::Overlap);
            }
            Placed::TooMany => {
                self.remove(&key);
                return Outcome::Dropped(Drop::TooManyFragments);
            }
        }
        if datagram.is_complete() {
            let total = datagram.total.unwrap_or(0);
            let result = if emit(out, &datagram.header, &datagram.data[..total]) {
                Outcome::Complete
            } else {
                Outcome::Dropped(Drop::TooBig)
            };
            self.remove(&key);
            return result;
        }
        self.enforce_bounds(&key);
        if self.datagrams.contains_key(&key) {
            Outcome::Pending
        } else {
            // Evicted at once: larger than the byte bound allows.
            Outcome::Dropped(Drop::TooBig)
        }
    }

    /// Drops the datagrams whose time ran out.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(created, key)) = self.order.front() {
            if now.duration_since(created) < self.limits.timeout {
                break;
            }
            self.order.pop_front();
            if self.is_current(&key, created) {
                let datagram = self.remove(&key);
                if !datagram {
                    continue;
                }
                self.counts.timed_out += 1;
            }
        }
        // Completed datagrams leave stale keys behind; keep the queue proportional to the map.
        if self.order.len() > 2 * self.limits.max_datagrams.max(self.datagrams.len()) {
            let datagrams = &self.datagrams;
            self.order.retain(|(created, key)| {
                datagrams.get(key).and_then(|d| d.created) == Some(*created)
            });
        }
    }

    fn is_current(&self, key: &Key, created: Instant) -> bool {
        self.datagrams.get(key).and_then(|d| d.created) == Some(created)
    }

    /// Evicts the oldest datagrams until both bounds hold (possibly `keep` itself, last).
    fn enforce_bounds(&mut self, keep: &Key) {
        while self.datagrams.len() > self.limits.max_datagrams || self.bytes > self.limits.max_bytes
        {
            let Some((created, key)) = self.order.pop_front() else {
                break;
            };
            if !self.is_current(&key, created) {
                continue;
            }
            if key == *keep && self.datagrams.len() > 1 {
                // Evict the others first; the newest keeps its place at the back.
                self.order.push_back((created, key));
                continue;
            }
            self.remove(&key);
            self.counts.evicted += 1;
        }
    }

    /// Forgets `key`, returning its buffers to the pool; false if it was not held.
    fn remove(&mut self, key: &Key) -> bool {
        let Some(mut datagram) = self.datagrams.remove(key) else {
            return false;
        };
        self.bytes -= datagram.bytes();
        if self.pool.len() < POOL {
            datagram.reset();
            self.pool.push(datagram);
        }
        true
    }
}

enum Placed {
    Kept,
    Duplicate,
    Overlap,
    TooMany,
}

/// Copies one fragment into its datagram.
fn place(
    datagram: &mut Datagram,
    packet: &[u8],
    view: FragmentView,
    body: &[u8],
    start: usize,
    end: usize,
) -> Placed {
    if let Some(&(s, e)) = datagram.pieces.iter().find(|&&(s, e)| start < e && s < end) {
        let same = s == start && e == end && datagram.data.get(s..e) == Some(body);
        let same_end = view.more || datagram.total == Some(end);
        return if same && same_end {
            Placed::Duplicate
        } else {
            Placed::Overlap
        };
    }
    if !view.more {
        if datagram.total.is_some_and(|total| total != end) {
            return Placed::Overlap;
        }
        if datagram.pieces.iter().any(|&(_, e)| e > end) {
            return Placed::Overlap;
        }
        datagram.total = Some(end);
    } else if datagram.total.is_some_and(|total| end > total) {
        return Placed::Overlap;
    }
    if datagram.pieces.len() >= MAX_FRAGMENTS {
        return Placed::TooMany;
    }
    if start == 0 {
        datagram.header.clear();
        datagram
            .header
            .extend_from_slice(&packet[..view.header_offset]);
        datagram.header[view.next_header_field] = view.next_header;
    }
    if datagram.data.len() < end {
        datagram.data.resize(end, 0);
    }
    datagram.data[start..end].copy_from_slice(body);
    datagram.pieces.push((start, end));
    Placed::Kept
}

/// Appends `unfragmentable` + `body` to `out` as one packet, Payload Length set; `false`, and
/// nothing appended, if the payload would exceed 65,535 bytes.
fn emit(out: &mut Vec<u8>, unfragmentable: &[u8], body: &[u8]) -> bool {
    let payload = unfragmentable.len().saturating_sub(IPV6_HEADER_LEN) + body.len();
    let Ok(payload) = u16::try_from(payload) else {
        return false;
    };
    let at = out.len();
    out.extend_from_slice(unfragmentable);
    out.extend_from_slice(body);
    Ipv6Packet::new_unchecked(&mut out[at..]).set_payload_len(payload);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FragmentRepr, Ipv6Repr, MAX_EXT_HEADERS, proto};

    /// An IPv6 header from fd00:ee::1 to fd00:ee::2 announcing `next_header` and `payload_len`.
    fn header(next_header: u8, payload_len: usize) -> Vec<u8> {
        Ipv6Repr {
            src_addr: "fd00:ee::1".parse().expect("an address"),
            dst_addr: "fd00:ee::2".parse().expect("an address"),
            next_header,
            payload_len: u16::try_from(payload_len).expect("fits"),
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
        .to_bytes()
        .to_vec()
    }

    /// A whole IPv6/UDP datagram with `payload` bytes.
    fn datagram(payload: usize, id_seed: u8) -> Vec<u8> {
        let len = u16::try_from(8 + payload).expect("fits");
        let mut p = header(proto::UDP, 8 + payload);
        p.extend_from_slice(&[0x30, 0x39, 0x23, 0x28]);
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0xab, 0xcd]);
        p.extend((0..payload).map(|i| {
            u8::try_from(i % 256)
                .expect("a byte")
                .wrapping_mul(7)
                .wrapping_add(id_seed)
        }));
        p
    }

    /// A fragment header: `next_header`, byte offset `start`, the M flag and `id`.
    fn fragment_header(next_header: u8, start: usize, more: bool, id: u32) -> [u8; 8] {
        FragmentRepr {
            next_header,
            frag_offset: u16::try_from(start / 8).expect("fits"),
            more_fragments: more,
            identification: id,
        }
        .to_bytes()
    }

    /// The fragment of `whole` covering `[start, end)` of its fragmentable part (after the
    /// 40-byte header), as the kernel builds it.
    fn fragment(whole: &[u8], id: u32, start: usize, end: usize, more: bool) -> Vec<u8> {
        let body = &whole[40 + start..40 + end];
        let mut p = header(proto::FRAGMENT, 8 + body.len());
        p.extend_from_slice(&fragment_header(whole[6], start, more, id));
        p.extend_from_slice(body);
        p
    }

    /// Splits `whole` into fragments of `size` bytes (a multiple of 8).
    fn split(whole: &[u8], id: u32, size: usize) -> Vec<Vec<u8>> {
        let total = whole.len() - 40;
        (0..total)
            .step_by(size)
            .map(|start| {
                let end = (start + size).min(total);
                fragment(whole, id, start, end, end < total)
            })
            .collect()
    }

    fn feed(r: &mut Reassembler, fragments: &[Vec<u8>], now: Instant) -> (Vec<Outcome>, Vec<u8>) {
        let mut out = Vec::new();
        let outcomes = fragments.iter().map(|f| r.push(f, now, &mut out)).collect();
        (outcomes, out)
    }

    fn reassembler() -> Reassembler {
        Reassembler::new(DEFAULT_LIMITS)
    }

    #[test]
    fn in_order_fragments_give_back_the_datagram() {
        let whole = datagram(4000, 1);
        let fragments = split(&whole, 7, 1448);
        assert_eq!(fragments.len(), 3);
        let mut r = reassembler();
        let (outcomes, out) = feed(&mut r, &fragments, Instant::now());
        assert_eq!(
            outcomes,
            [Outcome::Pending, Outcome::Pending, Outcome::Complete]
        );
        assert_eq!(out, whole);
        assert_eq!((r.len(), r.bytes()), (0, 0), "nothing held afterwards");
    }

    #[test]
    fn reordered_fragments_give_back_the_datagram() {
        let whole = datagram(8000, 2);
        let mut fragments = split(&whole, 9, 1232);
        fragments.reverse();
        fragments.swap(1, 4);
        let mut r = reassembler();
        let (outcomes, out) = feed(&mut r, &fragments, Instant::now());
        assert_eq!(outcomes.last(), Some(&Outcome::Complete));
        assert!(
            outcomes[..outcomes.len() - 1]
                .iter()
                .all(|o| *o == Outcome::Pending)
        );
        assert_eq!(out, whole);
    }

    #[test]
    fn interleaved_datagrams_are_kept_apart() {
        let (a, b) = (datagram(3000, 3), datagram(3000, 4));
        let (fa, fb) = (split(&a, 1, 1448), split(&b, 2, 1448));
        let mut r = reassembler();
        let now = Instant::now();
        let mut out = Vec::new();
        for (x, y) in fa.iter().zip(&fb) {
            let _ = r.push(x, now, &mut out);
            let _ = r.push(y, now, &mut out);
        }
        assert_eq!(out.len(), a.len() + b.len());
        assert_eq!(out[..a.len()], a[..]);
        assert_eq!(out[a.len()..], b[..]);
    }

    #[test]
    fn overlapping_fragments_drop_the_whole_datagram() {
        use Outcome::{Dropped, Pending};
        let whole = datagram(4000, 5);
        let piece = |id, start, end, more| fragment(&whole, id, start, end, more);
        let first = piece(4, 0, 1448, true);
        let mut forged = first.clone();
        *forged.last_mut().expect("non-empty") ^= 1;
        let overlap = Dropped(Drop::Overlap);
        let cases = [
            // Starts inside the first fragment: overlap. Every later fragment of that
            // datagram is dropped too, even ones that would complete it.
            (
                vec![
                    piece(3, 0, 1448, true),
                    piece(3, 1440, 2888, true),
                    piece(3, 1448, 2896, true),
                    piece(3, 2896, 4008, false),
                ],
                vec![Pending, overlap, overlap, overlap],
            ),
            // Same range with different bytes is an overlap, not a duplicate.
            (vec![first, forged], vec![Pending, overlap]),
            // A second last fragment with another end is an overlap too.
            (
                vec![piece(5, 2896, 4008, false), piece(5, 1448, 2896, false)],
                vec![Pending, overlap],
            ),
        ];
        for (i, (fragments, expected)) in cases.into_iter().enumerate() {
            let (outcomes, out) = feed(&mut reassembler(), &fragments, Instant::now());
            assert_eq!(outcomes, expected, "case {i}");
            assert!(out.is_empty(), "case {i}");
        }
    }

    #[test]
    fn exact_duplicates_are_ignored() {
        let whole = datagram(4000, 6);
        let f = split(&whole, 11, 1448);
        let order = [0, 0, 2, 2, 1].map(|i| f[i].clone());
        let (outcomes, out) = feed(&mut reassembler(), &order, Instant::now());
        assert_eq!(
            outcomes,
            [
                Outcome::Pending,
                Outcome::Duplicate,
                Outcome::Pending,
                Outcome::Duplicate,
                Outcome::Complete
            ]
        );
        assert_eq!(out, whole);
    }

    #[test]
    fn tiny_fragments_reassemble_and_bad_lengths_are_dropped() {
        // 8-byte fragments: the UDP header alone in the first one, ports and all.
        let whole = datagram(40, 7);
        let fragments = split(&whole, 12, 8);
        assert_eq!(fragments.len(), 6);
        let mut r = reassembler();
        let (outcomes, out) = feed(&mut r, &fragments, Instant::now());
        assert_eq!(outcomes.last(), Some(&Outcome::Complete));
        assert_eq!(out, whole);
        // A non-last fragment must be a multiple of 8 bytes, and not empty.
        let mut out = Vec::new();
        let now = Instant::now();
        assert_eq!(
            r.push(&fragment(&whole, 13, 0, 12, true), now, &mut out),
            Outcome::Dropped(Drop::Malformed)
        );
        assert_eq!(
            r.push(&fragment(&whole, 13, 8, 8, true), now, &mut out),
            Outcome::Dropped(Drop::Malformed)
        );
        // Cut short: the payload length says more than there is.
        let mut cut = fragment(&whole, 13, 0, 16, true);
        cut.truncate(cut.len() - 4);
        assert_eq!(
            r.push(&cut, now, &mut out),
            Outcome::Dropped(Drop::Malformed)
        );
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn datagrams_over_65535_bytes_are_dropped() {
        let whole = datagram(8000, 8);
        let mut r = reassembler();
        let mut out = Vec::new();
        let mut last = fragment(&whole, 14, 0, 16, false);
        // Offset 65,528 + 16 bytes: past 65,535.
        last[40..48].copy_from_slice(&fragment_header(proto::UDP, 65_528, false, 14));
        assert_eq!(
            r.push(&last, Instant::now(), &mut out),
            Outcome::Dropped(Drop::TooBig)
        );
        // The largest that fits still completes: offset 65,520 + 15 bytes = 65,535.
        let mut r = reassembler();
        let big = datagram(65_535 - 8, 9);
        let fragments = split(&big, 15, 1448);
        let (outcomes, out) = feed(&mut r, &fragments, Instant::now());
        assert_eq!(outcomes.last(), Some(&Outcome::Complete));
        assert_eq!(out, big);
    }

    #[test]
    fn atomic_fragments_and_non_fragments() {
        let whole = datagram(100, 10);
        let mut r = reassembler();
        let mut out = Vec::new();
        let now = Instant::now();
        assert_eq!(r.push(&whole, now, &mut out), Outcome::NotFragment);
        let atomic = fragment(&whole, 16, 0, 108, false);
        assert_eq!(r.push(&atomic, now, &mut out), Outcome::Complete);
        assert_eq!(out, whole);
        assert_eq!(r.len(), 0, "an atomic fragment leaves no state");
        assert_eq!(
            r.push(&whole[..20], now, &mut out),
            Outcome::Dropped(Drop::Malformed)
        );
    }

    #[test]
    fn extension_headers_in_front_stay_and_the_fragment_header_goes() {
        // Hop-by-hop (8 bytes of padding options) in front of the fragment header.
        let whole = datagram(3000, 11);
        let body = &whole[40..];
        let mut with_hbh = header(proto::HOP_BY_HOP, 8 + body.len());
        with_hbh.extend_from_slice(&[proto::UDP, 0, 1, 4, 0, 0, 0, 0]);
        with_hbh.extend_from_slice(body);
        let fragments: Vec<Vec<u8>> = [(0, 1448, true), (1448, 3008, false)]
            .into_iter()
            .map(|(start, end, more)| {
                let mut f = header(proto::HOP_BY_HOP, 16 + end - start);
                f.extend_from_slice(&[proto::FRAGMENT, 0, 1, 4, 0, 0, 0, 0]);
                f.extend_from_slice(&fragment_header(proto::UDP, start, more, 21));
                f.extend_from_slice(&body[start..end]);
                f
            })
            .collect();
        let mut r = reassembler();
        let (outcomes, out) = feed(&mut r, &fragments, Instant::now());
        assert_eq!(outcomes, [Outcome::Pending, Outcome::Complete]);
        assert_eq!(out, with_hbh);
    }

    #[test]
    fn fragment_headers_are_found_behind_extension_headers() {
        let whole = datagram(100, 15);
        assert!(!has_fragment_header(&whole));
        assert!(has_fragment_header(&fragment(&whole, 1, 0, 48, true)));
        let mut behind_hbh = header(proto::HOP_BY_HOP, 16);
        behind_hbh.extend_from_slice(&[proto::FRAGMENT, 0, 1, 4, 0, 0, 0, 0]);
        behind_hbh.extend_from_slice(&fragment_header(proto::UDP, 0, true, 9));
        assert!(has_fragment_header(&behind_hbh));
        // Behind as many extension headers as the walk steps over, and one more.
        let mut deep = header(proto::DEST_OPTS, 8 * MAX_EXT_HEADERS);
        for i in 1..MAX_EXT_HEADERS {
            let next = if i + 1 == MAX_EXT_HEADERS {
                proto::FRAGMENT
            } else {
                proto::DEST_OPTS
            };
            deep.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
        deep.extend_from_slice(&fragment_header(proto::UDP, 0, true, 9));
        assert!(has_fragment_header(&deep), "the last header walked");
        deep[6] = proto::HOP_BY_HOP;
        deep.splice(40..40, [proto::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        let len = u16::try_from(deep.len() - 40).expect("fits");
        deep[4..6].copy_from_slice(&len.to_be_bytes());
        assert_eq!(fragment_view(&deep), Err(Drop::Malformed), "past the bound");
        assert!(
            has_fragment_header(&whole[..30]),
            "unparsable counts as unsafe"
        );
    }

    #[test]
    fn incomplete_datagrams_time_out() {
        let whole = datagram(4000, 12);
        let fragments = split(&whole, 17, 1448);
        let mut r = reassembler();
        let t0 = Instant::now();
        let mut out = Vec::new();
        assert_eq!(r.push(&fragments[0], t0, &mut out), Outcome::Pending);
        assert_eq!(r.push(&fragments[1], t0, &mut out), Outcome::Pending);
        r.expire(t0 + Duration::from_secs(29));
        assert_eq!(r.len(), 1, "still inside the timeout");
        // The last fragment after the timeout starts a new datagram that never completes.
        let late = t0 + DEFAULT_LIMITS.timeout;
        assert_eq!(r.push(&fragments[2], late, &mut out), Outcome::Pending);
        assert!(out.is_empty());
        assert_eq!(r.take_counts().timed_out, 1);
        r.expire(late + DEFAULT_LIMITS.timeout);
        assert_eq!((r.len(), r.bytes()), (0, 0));
        assert_eq!(r.take_counts().timed_out, 1);
        // An overlap tombstone times out too, and the datagram can then be sent again.
        let t1 = late + DEFAULT_LIMITS.timeout * 2;
        let _ = r.push(&fragments[0], t1, &mut out);
        let _ = r.push(&fragment(&whole, 17, 8, 16, true), t1, &mut out);
        let t2 = t1 + DEFAULT_LIMITS.timeout;
        let (outcomes, out) = feed(&mut r, &fragments, t2);
        assert_eq!(outcomes.last(), Some(&Outcome::Complete));
        assert_eq!(out, whole);
    }

    #[test]
    fn bounds_evict_the_oldest_and_count_it() {
        let limits = Limits {
            timeout: Duration::from_secs(30),
            max_datagrams: 4,
            max_bytes: 5 * 1448,
        };
        let mut r = Reassembler::new(limits);
        let now = Instant::now();
        let mut out = Vec::new();
        let wholes: Vec<Vec<u8>> = (0..6).map(|i| datagram(4000, i)).collect();
        for (i, whole) in wholes.iter().enumerate() {
            let id = u32::try_from(i).expect("fits");
            assert_eq!(
                r.push(&fragment(whole, id, 0, 1448, true), now, &mut out),
                Outcome::Pending
            );
        }
        assert_eq!(r.len(), 4);
        assert_eq!(r.take_counts().evicted, 2);
        // The two oldest are gone: their remaining fragments cannot complete them.
        let rest = |whole: &[u8], id| {
            vec![
                fragment(whole, id, 1448, 2896, true),
                fragment(whole, id, 2896, 4008, false),
            ]
        };
        let (outcomes, _) = feed(&mut r, &rest(&wholes[0], 0), now);
        assert_ne!(outcomes.last(), Some(&Outcome::Complete));
        // The byte bound: more bytes than allowed evicts the oldest first.
        assert!(r.bytes() <= limits.max_bytes);
        // The newest complete normally.
        let (outcomes, mut out) = feed(&mut r, &rest(&wholes[5], 5), now);
        assert_eq!(outcomes.last(), Some(&Outcome::Complete));
        assert_eq!(out, wholes[5]);
        // Lots of datagrams never grow the queues beyond the bound.
        for i in 0..10_000u32 {
            let _ = r.push(&fragment(&wholes[0], 100 + i, 0, 8, true), now, &mut out);
        }
        assert!(r.len() <= 4);
        assert!(r.order.len() <= 2 * 4 + 1, "{}", r.order.len());
    }

    #[test]
    fn too_many_fragments_drop_the_datagram() {
        let whole = datagram(8 * (MAX_FRAGMENTS + 4), 13);
        let fragments = split(&whole, 18, 8);
        let mut r = reassembler();
        let (outcomes, out) = feed(&mut r, &fragments, Instant::now());
        assert!(outcomes.contains(&Outcome::Dropped(Drop::TooManyFragments)));
        assert!(out.is_empty());
    }

    #[test]
    fn untrusted_bytes_never_panic() {
        let whole = datagram(300, 14);
        let base = split(&whole, 19, 152);
        let mut r = reassembler();
        let mut out = Vec::new();
        let now = Instant::now();
        let mut x = 7u32;
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let mut f = base[(x >> 8) as usize % base.len()].clone();
            let at = (x >> 12) as usize % f.len();
            f[at] = x.to_be_bytes()[1];
            if x.trailing_zeros() >= 2 {
                f.truncate(at);
            }
            let _ = r.push(&f, now, &mut out);
        }
    }
}
