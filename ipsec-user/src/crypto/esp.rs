//! ESP, RFC 4303, over IPv6, as pure functions over buffers (no sockets, no kernel).
//!
//! Contract:
//! - [`OutboundSa::encapsulate`] turns one whole IPv6 packet into one ESP packet in `out` and
//!   says where to send it; [`InboundSa::decapsulate`] turns one ESP packet back into the
//!   protected IPv6 packet in `out` and says what it was. `out` is cleared and reused, so once
//!   its capacity has grown to the largest packet no call allocates.
//! - Each direction is two steps, so a burst can do the cryptography of many packets together:
//!   framing (outer or kept headers, ESP header, IV, payload, padding, trailer: per-SA state,
//!   sequence number and IV) and sealing (encryption and ICV: the keys only). Outbound:
//!   [`OutboundSa::frame`] then [`OutboundSa::seal`]; inbound: [`InboundSa::check`] (lengths,
//!   SPI, replay), [`InboundSa::open_sealed`] (ICV, then decryption), the window update, then
//!   [`InboundSa::unframe`] (trailer, mode).
//! - Packet layout (RFC 4303 §2): `SPI | Sequence Number | IV | ciphertext of (payload |
//!   padding 1, 2, 3, ... | Pad Length | Next Header) | ICV`. The ICV covers the ESP header, IV
//!   and ciphertext (encrypt-then-MAC, §3.3.2 and §2.8).
//! - Transport mode keeps the hop-by-hop, routing and fragment headers in front of ESP
//!   (§3.1.1); tunnel mode wraps the whole packet in a new IPv6 header from the SA's endpoints
//!   (§3.1.2).
//! - Inbound order (§3.4): SPI, then the anti-replay check (§3.4.3), then the ICV in constant
//!   time (§3.4.4.1), only then the window update and the decryption, then the padding check
//!   (§2.4). A forged packet never moves the replay window and is never decrypted.
//! - Sequence numbers start at 1 and never wrap (§3.3.3): once 2^32-1 has been sent,
//!   encapsulation fails with [`EspError::SequenceExhausted`] and the SA must be replaced.
//! - Untrusted input never panics; every failure is an [`EspError`] the daemon can count.

use super::replay::{DEFAULT_REPLAY_WINDOW, ReplayWindow};
use super::suite::Suite;
use super::wire::{self, IPV6_HEADER_LEN, proto};
use super::{CipherLengthError, ConfigError};
use crate::model::{EncryptionAlgorithm, IntegrityAlgorithm, Mode};
/// SPI and Sequence Number, RFC 4303 §2.1 and §2.2.
pub use crate::wire::ESP_HEADER_LEN;
use crate::wire::{EspPacket, Ipv6Packet, Ipv6Repr, esp_header};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::Ipv6Addr;

pub(crate) mod burst;

/// RFC 4303 §2.4 default padding: the pad bytes are 1, 2, 3, ... Longer than any block.
#[allow(clippy::cast_possible_truncation)] // i + 1 <= 255
const PADDING: [u8; 255] = {
    let mut padding = [0; 255];
    let mut i = 0;
    while i < padding.len() {
        padding[i] = (i + 1) as u8;
        i += 1;
    }
    padding
};

/// Hop limit of the outer header in tunnel mode (the usual default, as Linux and the spec use).
const TUNNEL_HOP_LIMIT: u8 = 64;

/// Why a packet could not be encapsulated or decapsulated. Each variant is one counter.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum EspError {
    /// The packet ends before a header or field it announces.
    #[error("truncated packet: {what}")]
    Truncated { what: &'static str },
    /// The packet is not well-formed IPv6/ESP (wrong version, bad lengths, too many headers).
    #[error("malformed packet: {what}")]
    Malformed { what: &'static str },
    /// The next-header chain of an inbound packet ends without reaching ESP.
    #[error("not an esp packet: header chain ends at next header {next_header}")]
    NotEsp { next_header: u8 },
    /// A fragment: ESP applies to whole datagrams only (RFC 4303 §3.3.4, §3.4.1).
    #[error("ipv6 fragment: reassemble before esp processing")]
    Fragment,
    /// The packet carries another SA's SPI.
    #[error("spi {got:#x} does not belong to this sa (spi {expected:#x})")]
    SpiMismatch { expected: u32, got: u32 },
    /// Sequence number 0, a duplicate, or older than the window (RFC 4303 §3.4.3).
    #[error("replayed or too old sequence number {seq}")]
    Replay { seq: u32 },
    /// The ICV did not verify: forged, corrupted or keyed differently.
    #[error("integrity check failed")]
    AuthFailed,
    /// The decrypted padding is not 1, 2, 3, ... or longer than the payload (RFC 4303 §2.4).
    #[error("bad esp padding")]
    BadPadding,
    /// The trailer's Next Header is not one this mode can deliver.
    #[error("unknown next header {next_header} in esp trailer")]
    UnknownNextHeader { next_header: u8 },
    /// 2^32-1 packets have been sent; the sequence number must not wrap (RFC 4303 §3.3.3).
    #[error("sequence numbers exhausted after 2^32-1 packets: the sa must be replaced")]
    SequenceExhausted,
    /// The ESP packet would exceed the IPv6 payload limit of 65535 bytes (no jumbograms).
    #[error("esp packet of {len} bytes exceeds the ipv6 maximum of 65575")]
    TooBig { len: usize },
    /// Authentic and new, but above the SA's persisted replay ceiling and the next ceiling
    /// could not be written: refused so a restart can never accept it again.
    #[error("replay ceiling for sequence number {seq} not persisted")]
    NotPersisted { seq: u32 },
    /// The cipher refused a buffer length: a bug here, reported rather than panicking.
    #[error(transparent)]
    Cipher(#[from] CipherLengthError),
}

impl EspError {
    /// A stable `snake_case` name per variant, for counters and logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated",
            Self::Malformed { .. } => "malformed",
            Self::NotEsp { .. } => "not_esp",
            Self::Fragment => "fragment",
            Self::SpiMismatch { .. } => "spi_mismatch",
            Self::Replay { .. } => "replay",
            Self::AuthFailed => "auth_failed",
            Self::BadPadding => "bad_padding",
            Self::UnknownNextHeader { .. } => "unknown_next_header",
            Self::SequenceExhausted => "sequence_exhausted",
            Self::TooBig { .. } => "too_big",
            Self::NotPersisted { .. } => "not_persisted",
            Self::Cipher(_) => "internal",
        }
    }
}

/// Everything needed to build one direction of an SA. Keys are borrowed: the SA keeps only
/// the scheduled forms.
#[derive(Clone, Copy)]
pub struct SaConfig<'a> {
    /// Security Parameters Index (the spec requires 0x100 or more; not re-checked here).
    pub spi: u32,
    pub mode: Mode,
    /// Tunnel mode: the outer source (this host for outbound, the peer for inbound).
    /// Transport mode: unused (may be `::`, the spec's `any`).
    pub source: Ipv6Addr,
    /// Tunnel mode: the outer destination. Transport mode: unused.
    pub destination: Ipv6Addr,
    pub encryption: EncryptionAlgorithm,
    /// Empty for `null`.
    pub encryption_key: &'a [u8],
    pub integrity: IntegrityAlgorithm,
    pub integrity_key: &'a [u8],
}

/// The parts both directions share: identity, mode and keyed algorithms.
struct Transform {
    spi: u32,
    mode: Mode,
    source: Ipv6Addr,
    destination: Ipv6Addr,
    suite: Suite,
    /// The same keys scheduled for the multi-buffer path (`burst`), where it has lanes.
    lanes: super::burst::LaneKeys,
}

impl Transform {
    fn new(config: &SaConfig<'_>) -> Result<Self, ConfigError> {
        if config.mode == Mode::Tunnel {
            if config.source.is_unspecified() {
                return Err(ConfigError::TunnelEndpoint { which: "source" });
            }
            if config.destination.is_unspecified() {
                return Err(ConfigError::TunnelEndpoint {
                    which: "destination",
                });
            }
        }
        Ok(Self {
            spi: config.spi,
            mode: config.mode,
            source: config.source,
            destination: config.destination,
            suite: Suite::new(
                config.encryption,
                config.encryption_key,
                config.integrity,
                config.integrity_key,
            )?,
            // After the suite accepted the keys.
            lanes: super::burst::LaneKeys::new(
                config.encryption,
                config.encryption_key,
                config.integrity,
                config.integrity_key,
            ),
        })
    }
}

/// What to do with an encapsulated packet: send `out` (a complete IPv6 packet, next header
/// chain ending in ESP) to `destination`. It carries every outer-header field a sender needs,
/// so nobody has to parse `out` again: a raw `IPPROTO_ESP` socket sends `out[esp_offset..]`
/// with these addresses, hop limit and traffic class, and the kernel writes the IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encapsulated {
    /// The sequence number the packet carries.
    pub seq: u32,
    /// Where the packet goes: the tunnel endpoint, or the packet's own destination in
    /// transport mode.
    pub destination: Ipv6Addr,
    /// The outer source: the tunnel's, or the packet's own in transport mode.
    pub source: Ipv6Addr,
    /// The outer header's traffic class (copied from the packet, RFC 4301 §5.1.2.1).
    pub traffic_class: u8,
    /// The outer header's hop limit (64 in tunnel mode, the packet's own in transport mode).
    pub hop_limit: u8,
    /// Where the ESP header (the SPI) starts in `out`: after the IPv6 header and the extension
    /// headers transport mode keeps in clear.
    pub esp_offset: usize,
}

/// The fields of an outer IPv6 header that a raw socket strips and reports beside the ESP
/// payload (`msg_name`, `IPV6_PKTINFO`, `IPV6_HOPLIMIT`, `IPV6_TCLASS`), for
/// [`InboundSa::decapsulate_esp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterHeader {
    pub source: Ipv6Addr,
    pub destination: Ipv6Addr,
    pub traffic_class: u8,
    /// 20 bits; 0 when the receive path does not report it.
    pub flow_label: u32,
    pub hop_limit: u8,
}

impl OuterHeader {
    /// The fields of an IPv6 header.
    #[must_use]
    pub fn of(header: &[u8; IPV6_HEADER_LEN]) -> Self {
        // A whole fixed header: every field the view reads is there.
        Self::of_packet(&Ipv6Packet::new_unchecked(&header[..]))
    }

    /// The fields of the fixed header of `packet`.
    pub fn of_packet<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Self {
        Self {
            source: packet.src_addr(),
            destination: packet.dst_addr(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
            hop_limit: packet.hop_limit(),
        }
    }

    /// The IPv6 header these fields describe, next header ESP, payload length 0 (the caller
    /// sets it).
    fn header(&self) -> [u8; IPV6_HEADER_LEN] {
        Ipv6Repr {
            src_addr: self.source,
            dst_addr: self.destination,
            next_header: proto::ESP,
            payload_len: 0,
            hop_limit: self.hop_limit,
            traffic_class: self.traffic_class,
            flow_label: self.flow_label,
        }
        .to_bytes()
    }
}

/// What stands in front of the ESP header of an inbound packet: the clear headers of a whole
/// packet, or only the fields of an outer header a raw socket stripped.
enum Front<'a> {
    /// `header` is everything before ESP; `next_header_field` is the byte in it that says 50.
    Packet {
        header: &'a [u8],
        next_header_field: usize,
    },
    Outer(&'a OuterHeader),
}

/// What a decapsulated packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decapsulated {
    /// `out` holds the protected IPv6 packet (transport: the original packet with its next
    /// header restored; tunnel: the inner packet). Deliver it locally once it matched an
    /// inbound policy naming this SA (RFC 4301 §5.2).
    Deliver {
        seq: u32,
        /// The protocol that followed ESP: the upper layer in transport mode, 41 in tunnel.
        next_header: u8,
    },
    /// A dummy packet (Next Header 59, RFC 4303 §2.6): authentic, but discard it silently.
    /// `out` is empty.
    Dummy { seq: u32 },
}

/// `spi()` and `mode()` of one direction of an SA, read from its [`Transform`].
macro_rules! transform_accessors {
    () => {
        /// The keyed algorithms, for sealing or opening several packets together (a burst).
        #[allow(dead_code, reason = "the burst path seals and opens through the suite")]
        pub(crate) fn suite(&self) -> &Suite {
            &self.transform.suite
        }

        #[must_use]
        pub fn spi(&self) -> u32 {
            self.transform.spi
        }

        #[must_use]
        pub fn mode(&self) -> Mode {
            self.transform.mode
        }
    };
}

/// The sending side of an SA: sequence counter and IV generator.
pub struct OutboundSa {
    transform: Transform,
    /// The next sequence number to send; beyond `u32::MAX` the SA is exhausted.
    next_seq: u64,
    /// IVs must be unpredictable for CBC (RFC 3602 §3, RFC 2451 §3): a `ChaCha12` CSPRNG seeded
    /// from the OS through the thread RNG, held here so the SA stays `Send`.
    rng: StdRng,
    /// GCM's IV is `iv_epoch` || sequence number (RFC 4106 §3.1 asks only for uniqueness under
    /// the key; a counter guarantees it where random 64-bit IVs only make it likely).
    iv_epoch: u32,
}

impl OutboundSa {
    /// Keys the SA; the first packet will carry sequence number 1.
    ///
    /// # Errors
    /// A [`ConfigError`] for a key of the wrong length (or a degenerate 3DES key), or a tunnel
    /// endpoint left as `::`.
    pub fn new(config: &SaConfig<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            transform: Transform::new(config)?,
            next_seq: 1,
            rng: StdRng::from_rng(&mut rand::rng()),
            iv_epoch: 0,
        })
    }

    /// Makes this SA's counter IVs (AES-GCM) `epoch` || sequence number. Each SA keyed with a
    /// GCM key must get an epoch no other SA with that key ever had, on this host, across
    /// restarts (the engine reserves one per install in its persistent IV store); then an IV
    /// never repeats under the key (RFC 4106 §8). Epoch 0 (the default) is for tests and
    /// benchmarks. Ignored by suites with random IVs.
    pub fn use_iv_epoch(&mut self, epoch: u32) {
        self.iv_epoch = epoch;
    }

    /// The epoch of this SA's counter IVs (see [`Self::use_iv_epoch`]).
    #[must_use]
    pub fn iv_epoch(&self) -> u32 {
        self.iv_epoch
    }

    /// Whether the suite's IV is a counter that must be unique under the key (AES-GCM).
    #[must_use]
    pub fn counter_iv(&self) -> bool {
        self.transform.suite.counter_iv()
    }

    transform_accessors!();

    /// The last sequence number sent (0 before the first packet).
    #[must_use]
    pub fn last_sequence(&self) -> u32 {
        u32::try_from(self.next_seq - 1).unwrap_or(u32::MAX)
    }

    /// True once 2^32-1 packets have been sent; every later encapsulation fails.
    #[must_use]
    pub fn is_exhausted(&self) -> bool {
        self.next_seq > u64::from(u32::MAX)
    }

    /// Continues after `last_sent` (e.g. restored from saved state), so the peer's replay
    /// window does not drop the next packets. Never moves the counter backwards.
    pub fn resume_after(&mut self, last_sent: u32) {
        self.next_seq = self.next_seq.max(u64::from(last_sent) + 1);
    }

    /// The most bytes encapsulation adds to a packet (headers, IV, worst-case padding, ICV),
    /// for MTU arithmetic.
    #[must_use]
    pub fn max_overhead(&self) -> usize {
        let t = &self.transform;
        let outer = if t.mode == Mode::Tunnel {
            IPV6_HEADER_LEN
        } else {
            0
        };
        outer + ESP_HEADER_LEN + t.suite.iv_len() + t.suite.block_size() + 1 + t.suite.icv_len()
    }

    /// Encapsulates the IPv6 packet `packet` into `out` (cleared first): [`Self::frame`], then
    /// [`Self::seal`]. On error `out` holds nothing meaningful and no sequence number is used.
    ///
    /// # Errors
    /// [`EspError::SequenceExhausted`] once 2^32-1 packets have been sent; `Truncated` or
    /// `Malformed` when `packet` is not a whole IPv6 packet; [`EspError::Fragment`] for a
    /// fragment in transport mode; [`EspError::TooBig`] past 65535 bytes of payload.
    pub fn encapsulate(
        &mut self,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Encapsulated, EspError> {
        out.clear();
        let seq = u32::try_from(self.next_seq).map_err(|_| EspError::SequenceExhausted)?;
        let framed = self.frame_at(seq, packet, out)?;
        self.seal(&framed, out)?;
        self.next_seq += 1;
        Ok(framed.encapsulated)
    }

    /// Frames the next packet into `out` (cleared first) and takes its sequence number: outer or
    /// kept headers, ESP header, IV, payload, padding and trailer in clear, with room for the ICV
    /// at the end (zeros). [`Self::seal`] then encrypts and authenticates it in place; a burst
    /// frames several packets and seals them together. On error nothing is used.
    ///
    /// # Errors
    /// As [`Self::encapsulate`].
    #[allow(
        dead_code,
        reason = "the burst path frames packets ahead of sealing them together"
    )]
    pub(crate) fn frame(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<Framed, EspError> {
        out.clear();
        let seq = u32::try_from(self.next_seq).map_err(|_| EspError::SequenceExhausted)?;
        let framed = self.frame_at(seq, packet, out)?;
        self.next_seq += 1;
        Ok(framed)
    }

    /// [`Self::frame`] with sequence number `seq`, leaving the counter alone.
    fn frame_at(&mut self, seq: u32, packet: &[u8], out: &mut Vec<u8>) -> Result<Framed, EspError> {
        out.clear();
        let packet = wire::ipv6_packet(packet)?;
        let t = &self.transform;

        // What stays in clear in front of ESP, and what goes inside.
        let (kept, destination) = match t.mode {
            Mode::Transport => (
                Some(wire::transport_split(packet)?),
                wire::destination(packet),
            ),
            Mode::Tunnel => (None, t.destination),
        };
        let (clear_len, next_header) = match &kept {
            Some(split) => (split.offset, split.next_header),
            None => (0, proto::IPV6),
        };
        let payload = &packet[clear_len..];

        // RFC 4303 §2.4: pad so that payload + padding + 2 fills whole cipher blocks (and at
        // least 4-byte words).
        let block = t.suite.block_size();
        let iv_len = t.suite.iv_len();
        let icv_len = t.suite.icv_len();
        let pad_len = (block - (payload.len() + 2) % block) % block;
        let ciphertext_len = payload.len() + pad_len + 2;
        // Only a cipher with blocks over 256 bytes could miss here; none exists.
        let padding = PADDING.get(..pad_len).ok_or(CipherLengthError {
            len: payload.len(),
            iv_len,
            block_size: block,
        })?;
        // Transport: ESP follows the headers kept in clear; tunnel: the new outer header.
        let esp_offset = if kept.is_some() {
            clear_len
        } else {
            IPV6_HEADER_LEN
        };
        let total = esp_offset + ESP_HEADER_LEN + iv_len + ciphertext_len + icv_len;
        let payload_len =
            u16::try_from(total - IPV6_HEADER_LEN).map_err(|_| EspError::TooBig { len: total })?;
        out.reserve(total);

        match &kept {
            Some(split) => {
                out.extend_from_slice(&packet[..clear_len]);
                out[split.next_header_field] = proto::ESP;
            }
            None => out.extend_from_slice(&tunnel_header(packet, t.source, t.destination)),
        }
        wire::set_payload_len(out, payload_len);

        out.extend_from_slice(&esp_header(t.spi, seq));
        let iv_offset = out.len();
        out.resize(iv_offset + iv_len, 0);
        if t.suite.counter_iv() {
            // RFC 4106 §3.1: unique under the key. The epoch is this SA's alone (see
            // `Self::use_iv_epoch`) and the sequence number never repeats within the SA.
            let iv = (u64::from(self.iv_epoch) << 32) | u64::from(seq);
            out[iv_offset..].copy_from_slice(&iv.to_be_bytes());
        } else {
            self.rng.fill_bytes(&mut out[iv_offset..]);
        }
        out.extend_from_slice(payload);
        out.extend_from_slice(padding);
        // The last pad byte equals the pad length (0 when there is no padding).
        out.push(padding.last().copied().unwrap_or(0));
        out.push(next_header);
        let icv_offset = out.len();
        out.resize(total, 0);

        // `out` starts with the whole fixed header written above.
        let outer = Ipv6Packet::new_unchecked(&out[..]);
        Ok(Framed {
            iv_offset,
            icv_offset,
            encapsulated: Encapsulated {
                seq,
                destination,
                source: outer.src_addr(),
                traffic_class: outer.traffic_class(),
                hop_limit: outer.hop_limit(),
                esp_offset,
            },
        })
    }

    /// Encrypts and authenticates the packet [`Self::frame`] left in `out`: the ciphertext in
    /// place, then the ICV over ESP header, IV and ciphertext (RFC 4303 §3.3.2, §2.8) into the
    /// room left for it. Needs only the keys, so packets can be sealed in any order.
    ///
    /// # Errors
    /// [`EspError::Cipher`] when `framed` does not describe `out` (a bug, never a panic).
    pub(crate) fn seal(&self, framed: &Framed, out: &mut [u8]) -> Result<(), EspError> {
        let t = &self.transform;
        let esp_offset = framed.encapsulated.esp_offset;
        let bad_layout = CipherLengthError {
            len: out.len(),
            iv_len: t.suite.iv_len(),
            block_size: t.suite.block_size(),
        };
        if esp_offset > framed.iv_offset || framed.iv_offset > framed.icv_offset {
            return Err(bad_layout.into());
        }
        let esp = out.get_mut(esp_offset..).ok_or(bad_layout)?;
        let text_offset = framed.iv_offset - esp_offset + t.suite.iv_len();
        t.suite
            .seal(esp, text_offset, framed.icv_offset - esp_offset)?;
        Ok(())
    }
}

/// Where the parts of a packet [`OutboundSa::frame`] built lie in its buffer, and what to do with
/// it once sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framed {
    /// Where the IV starts (right after the ESP header); the payload follows it.
    pub(crate) iv_offset: usize,
    /// Where the ICV goes: the end of the trailer; the ICV runs to the end of the buffer.
    pub(crate) icv_offset: usize,
    /// What [`OutboundSa::encapsulate`] returns for this packet (`esp_offset`: the SPI).
    pub(crate) encapsulated: Encapsulated,
}

/// The outer header of tunnel mode (RFC 4303 §3.1.2, RFC 4301 §5.1.2.1): traffic class
/// copied from the inner header (DSCP copied, ECN copied as RFC 6040's normal mode does), the
/// inner flow label reused so the flow stays recognisable, hop limit 64, next header ESP.
/// Payload Length is filled in by the caller. `inner` is a checked IPv6 packet.
fn tunnel_header(inner: &[u8], source: Ipv6Addr, destination: Ipv6Addr) -> [u8; IPV6_HEADER_LEN] {
    let inner = Ipv6Packet::new_unchecked(inner);
    Ipv6Repr {
        src_addr: source,
        dst_addr: destination,
        next_header: proto::ESP,
        payload_len: 0,
        hop_limit: TUNNEL_HOP_LIMIT,
        traffic_class: inner.traffic_class(),
        flow_label: inner.flow_label(),
    }
    .to_bytes()
}

/// The receiving side of an SA: anti-replay window.
pub struct InboundSa {
    transform: Transform,
    replay: ReplayWindow,
}

impl InboundSa {
    /// Keys the SA with the default replay window of 64 packets (RFC 4303 §3.4.3).
    ///
    /// # Errors
    /// A [`ConfigError`] for a key of the wrong length (or a degenerate 3DES key), or a tunnel
    /// endpoint left as `::`.
    pub fn new(config: &SaConfig<'_>) -> Result<Self, ConfigError> {
        Self::with_replay_window(config, DEFAULT_REPLAY_WINDOW)
    }

    /// Keys the SA with a replay window of `window` packets.
    ///
    /// # Errors
    /// A [`ConfigError`] for a key of the wrong length (or a degenerate 3DES key), or a tunnel
    /// endpoint left as `::`.
    /// Also [`ConfigError::ReplayWindow`] for a window outside 1..=[`super::MAX_REPLAY_WINDOW`].
    pub fn with_replay_window(config: &SaConfig<'_>, window: usize) -> Result<Self, ConfigError> {
        Ok(Self {
            transform: Transform::new(config)?,
            replay: ReplayWindow::new(window)?,
        })
    }

    transform_accessors!();

    /// The anti-replay state (highest sequence number seen, window size).
    #[must_use]
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }

    /// Refuses every sequence number up to `ceiling` (a persisted replay ceiling, after a
    /// restart); see [`ReplayWindow::start_above`].
    pub fn start_above(&mut self, ceiling: u32) {
        self.replay.start_above(ceiling);
    }

    /// Empties the replay window (an explicit operator reset; see [`ReplayWindow::reset`]).
    pub fn reset_replay(&mut self) {
        self.replay.reset();
    }

    /// Verifies and decrypts the ESP packet `packet` into `out` (cleared first). On error `out`
    /// holds nothing meaningful; only an authentic packet changes the replay window.
    ///
    /// # Errors
    /// One [`EspError`] per reason to drop, in the order checked: `Truncated` / `Malformed` /
    /// `NotEsp` / `Fragment` (parsing), `SpiMismatch`, `Replay`, `AuthFailed`, then, for an
    /// authentic packet, `BadPadding` and `UnknownNextHeader`.
    pub fn decapsulate(
        &mut self,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Decapsulated, EspError> {
        self.decapsulate_gated(packet, out, |_| true)
    }

    /// [`Self::decapsulate`], asking `admit(seq)` after the ICV verified and before the replay
    /// window accepts `seq`: `false` refuses the packet with [`EspError::NotPersisted`] and
    /// leaves the window as it was (the engine persists its replay ceiling there).
    ///
    /// # Errors
    /// As [`Self::decapsulate`], plus `NotPersisted`.
    pub fn decapsulate_gated(
        &mut self,
        packet: &[u8],
        out: &mut Vec<u8>,
        admit: impl FnOnce(u32) -> bool,
    ) -> Result<Decapsulated, EspError> {
        out.clear();
        let packet = wire::ipv6_packet(packet)?;
        let location = wire::find_esp(packet)?;
        let front = Front::Packet {
            header: &packet[..location.offset],
            next_header_field: location.next_header_field,
        };
        self.open(&front, &packet[location.offset..], out, admit)
    }

    /// [`Self::decapsulate_gated`] for ESP whose IPv6 header is already gone (a raw
    /// `IPPROTO_ESP` socket delivers the packet from the ESP header on and reports the outer
    /// header's fields beside it): `esp` is the ESP header, payload and ICV, `outer` the
    /// fields of the header it came in. In transport mode the delivered packet's header is built
    /// from `outer` (next header from the trailer, payload length fixed); nothing is parsed
    /// twice.
    ///
    /// # Errors
    /// As [`Self::decapsulate_gated`] (there are no headers to parse, so no `NotEsp`).
    pub fn decapsulate_esp(
        &mut self,
        outer: &OuterHeader,
        esp: &[u8],
        out: &mut Vec<u8>,
        admit: impl FnOnce(u32) -> bool,
    ) -> Result<Decapsulated, EspError> {
        out.clear();
        if IPV6_HEADER_LEN + esp.len() > IPV6_HEADER_LEN + usize::from(u16::MAX) {
            return Err(EspError::TooBig {
                len: IPV6_HEADER_LEN + esp.len(),
            });
        }
        self.open(&Front::Outer(outer), esp, out, admit)
    }

    /// The inbound steps of RFC 4303 §3.4 over `esp` (ESP header to ICV), with `front` what
    /// stood in front of it; `out` is empty. [`Self::check`], [`Self::unfront`],
    /// [`Self::open_sealed`], then `admit`, the window update and [`Self::unframe`].
    fn open(
        &mut self,
        front: &Front<'_>,
        esp: &[u8],
        out: &mut Vec<u8>,
        admit: impl FnOnce(u32) -> bool,
    ) -> Result<Decapsulated, EspError> {
        let sealed = self.check(esp)?;
        // The packet goes after what `out` holds (a caller's prefix, see `open_behind`).
        let keep = out.len();
        let next_header_field = keep + self.unfront(front, out);
        self.open_sealed(&sealed, esp, out)?;
        if !admit(sealed.seq) {
            return Err(EspError::NotPersisted { seq: sealed.seq });
        }
        // Only an authentic packet may move the window (§3.4.3).
        self.replay.accept(sealed.seq);
        self.unframe(&sealed, next_header_field, keep, out)
    }

    /// [`Self::decapsulate_esp`] (`verified: None`) or [`Self::finish_esp`] (`Some`: the ICV
    /// verdict of a burst), with the packet written into `out` behind `prefix` rather than
    /// into an empty `out`: the engine's TUN frame is its fake Ethernet header and the packet,
    /// and decrypting straight behind it saves copying every packet once more. The same
    /// checks, in the same order, and the same window afterwards; on [`Decapsulated::Deliver`]
    /// `out` is `prefix` followed by exactly the packet the other two would deliver.
    ///
    /// # Errors
    /// As [`Self::decapsulate_esp`] and [`Self::finish_esp`].
    pub(crate) fn open_behind(
        &mut self,
        outer: &OuterHeader,
        esp: &[u8],
        verified: Option<bool>,
        prefix: &[u8],
        out: &mut Vec<u8>,
        admit: impl FnOnce(u32) -> bool,
    ) -> Result<Decapsulated, EspError> {
        out.clear();
        out.extend_from_slice(prefix);
        if let Some(verified) = verified {
            return self.finish(&Front::Outer(outer), esp, verified, out, admit);
        }
        if IPV6_HEADER_LEN + esp.len() > IPV6_HEADER_LEN + usize::from(u16::MAX) {
            return Err(EspError::TooBig {
                len: IPV6_HEADER_LEN + esp.len(),
            });
        }
        self.open(&Front::Outer(outer), esp, out, admit)
    }

    /// The checks before any cryptography (RFC 4303 §3.4.2, §3.4.3): the lengths, the SPI and
    /// the replay window (read only). Returns where the parts of `esp` lie.
    ///
    /// # Errors
    /// `Truncated`, `Malformed`, `SpiMismatch` or `Replay`.
    pub(crate) fn check(&self, esp: &[u8]) -> Result<Sealed, EspError> {
        let t = &self.transform;
        let iv_size = t.suite.iv_len();
        let icv_len = t.suite.icv_len();
        let block = t.suite.block_size();
        // The smallest ciphertext is one block (it holds at least Pad Length and Next Header).
        if esp.len() < ESP_HEADER_LEN + iv_size + block + icv_len {
            return Err(EspError::Truncated { what: "esp packet" });
        }
        let header = EspPacket::new_checked(esp)?;
        let spi = header.spi();
        if spi != t.spi {
            return Err(EspError::SpiMismatch {
                expected: t.spi,
                got: spi,
            });
        }
        let seq = header.sequence_number();
        // RFC 4303 §3.4.3: the cheap replay check comes first, before spending an HMAC.
        if !self.replay.check(seq) {
            return Err(EspError::Replay { seq });
        }
        let text_offset = ESP_HEADER_LEN + iv_size;
        let icv_offset = esp.len() - icv_len;
        if !(icv_offset - text_offset).is_multiple_of(block) {
            return Err(EspError::Malformed {
                what: "esp ciphertext is not a whole number of blocks",
            });
        }
        Ok(Sealed {
            seq,
            text_offset,
            icv_offset,
        })
    }

    /// Writes what transport mode restores in front of the payload into `out`; returns where the
    /// Next Header field to patch lies in it (0 in tunnel mode, where nothing is kept).
    fn unfront(&self, front: &Front<'_>, out: &mut Vec<u8>) -> usize {
        match (self.transform.mode, front) {
            (Mode::Tunnel, _) => 0,
            (
                Mode::Transport,
                Front::Packet {
                    header,
                    next_header_field,
                },
            ) => {
                out.extend_from_slice(header);
                *next_header_field
            }
            (Mode::Transport, Front::Outer(outer)) => {
                out.extend_from_slice(&outer.header());
                wire::NEXT_HEADER_OFFSET
            }
        }
    }

    /// Authenticates `esp` (laid out as `sealed` says) and appends its decrypted payload and
    /// trailer to `out`. The ICV is verified in constant time before anything is decrypted
    /// (RFC 4303 §3.4.4.1); a forgery leaves `out` as it was.
    ///
    /// # Errors
    /// [`EspError::AuthFailed`], or [`EspError::Cipher`] for a layout that does not fit (a bug).
    pub(crate) fn open_sealed(
        &self,
        sealed: &Sealed,
        esp: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EspError> {
        self.transform
            .suite
            .open(esp, sealed.text_offset, sealed.icv_offset, out)
    }

    /// Checks and strips the trailer of the authentic payload at the end of `out` (RFC 4303
    /// §2.4 to §2.6) and finishes the packet for its mode: transport restores the Next Header
    /// at `next_header_field` and the payload length, tunnel checks the inner packet and drops
    /// TFC padding (§2.7).
    ///
    /// # Errors
    /// `BadPadding`, `UnknownNextHeader`, or a malformed inner packet in tunnel mode.
    pub(crate) fn unframe(
        &self,
        sealed: &Sealed,
        next_header_field: usize,
        keep: usize,
        out: &mut Vec<u8>,
    ) -> Result<Decapsulated, EspError> {
        let seq = sealed.seq;
        let ciphertext_len = sealed.icv_offset - sealed.text_offset;
        // Trailer: ... padding | Pad Length | Next Header (RFC 4303 §2.4 to §2.6).
        let end = out.len();
        let next_header = out[end - 1];
        let pad_len = usize::from(out[end - 2]);
        if pad_len + 2 > ciphertext_len {
            return Err(EspError::BadPadding);
        }
        let pad_start = end - 2 - pad_len;
        let padding_ok = out[pad_start..end - 2]
            .iter()
            .zip(1..=u8::MAX)
            .all(|(byte, expected)| *byte == expected);
        if !padding_ok {
            return Err(EspError::BadPadding);
        }
        out.truncate(pad_start);

        if next_header == proto::NO_NEXT_HEADER {
            out.truncate(keep);
            return Ok(Decapsulated::Dummy { seq });
        }
        let packet_len = out.len() - keep;
        match self.transform.mode {
            Mode::Transport => {
                // Hop-by-hop may only follow the fixed header (RFC 8200 §4.3), never ESP.
                if next_header == proto::HOP_BY_HOP {
                    return Err(EspError::UnknownNextHeader { next_header });
                }
                out[next_header_field] = next_header;
                // Shorter than the packet that arrived, so it fits.
                let payload_len = u16::try_from(packet_len - IPV6_HEADER_LEN)
                    .map_err(|_| EspError::TooBig { len: packet_len })?;
                wire::set_payload_len(&mut out[keep..], payload_len);
            }
            Mode::Tunnel => {
                if next_header != proto::IPV6 {
                    return Err(EspError::UnknownNextHeader { next_header });
                }
                // Check the inner header and drop any TFC padding after it (RFC 4303 §2.7).
                let inner_len = wire::ipv6_packet(&out[keep..])?.len();
                out.truncate(keep + inner_len);
            }
        }
        Ok(Decapsulated::Deliver { seq, next_header })
    }
}

/// Where the parts of an inbound ESP packet lie (offsets from the SPI), as [`InboundSa::check`]
/// found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sealed {
    /// The packet's sequence number (not yet accepted by the window).
    pub(crate) seq: u32,
    /// Where the ciphertext starts (after ESP header and IV).
    pub(crate) text_offset: usize,
    /// Where the ICV starts; it runs to the end of the packet.
    pub(crate) icv_offset: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::wire::set_payload_len;
    // Short names for the SA tables below.
    use EncryptionAlgorithm as E;
    use IntegrityAlgorithm as I;

    const ENCRYPTIONS: [EncryptionAlgorithm; 6] = [
        EncryptionAlgorithm::TripleDesCbc,
        EncryptionAlgorithm::Aes128Cbc,
        EncryptionAlgorithm::Aes256Cbc,
        EncryptionAlgorithm::Aes128Gcm,
        EncryptionAlgorithm::Aes256Gcm,
        EncryptionAlgorithm::Null,
    ];
    /// With [`ENCRYPTIONS`], every suite an SA can have: skip the pairs [`pairs`] refuses.
    const INTEGRITIES: [IntegrityAlgorithm; 3] = [
        IntegrityAlgorithm::HmacSha1,
        IntegrityAlgorithm::HmacSha256,
        IntegrityAlgorithm::None,
    ];
    const MODES: [Mode; 2] = [Mode::Transport, Mode::Tunnel];

    /// Whether `encryption` and `integrity` make an SA: a combined-mode cipher with `none`,
    /// any other with an HMAC.
    fn pairs(encryption: EncryptionAlgorithm, integrity: IntegrityAlgorithm) -> bool {
        encryption.is_combined() == (integrity == IntegrityAlgorithm::None)
    }

    /// The spec's example keys (`ipv6readylogo3descbcout2`, `ipv6readylogsha1out2`) and
    /// fixed keys of the right length for the other algorithms.
    fn encryption_key(algorithm: EncryptionAlgorithm) -> &'static [u8] {
        match algorithm {
            EncryptionAlgorithm::TripleDesCbc => b"ipv6readylogo3descbcout2",
            EncryptionAlgorithm::Aes128Cbc => b"0123456789abcdef",
            EncryptionAlgorithm::Aes256Cbc => b"0123456789abcdef0123456789abcdef",
            EncryptionAlgorithm::Aes128Gcm => b"0123456789abcdefSALT",
            EncryptionAlgorithm::Aes256Gcm => b"0123456789abcdef0123456789abcdefSALT",
            EncryptionAlgorithm::Null => b"",
        }
    }

    fn integrity_key(algorithm: IntegrityAlgorithm) -> &'static [u8] {
        match algorithm {
            IntegrityAlgorithm::HmacSha1 => b"ipv6readylogsha1out2",
            IntegrityAlgorithm::HmacSha256 => b"0123456789abcdef0123456789abcdef",
            IntegrityAlgorithm::None => b"",
        }
    }

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().expect("parsing a test address")
    }

    /// An SA with these algorithms; a combined-mode cipher gets integrity `none` whatever
    /// `integrity` says.
    fn config(
        encryption: EncryptionAlgorithm,
        integrity: IntegrityAlgorithm,
        mode: Mode,
    ) -> SaConfig<'static> {
        let integrity = if encryption.is_combined() {
            IntegrityAlgorithm::None
        } else {
            integrity
        };
        SaConfig {
            spi: 0x1000,
            mode,
            source: addr("3ffe:501:ffff::a"),
            destination: addr("3ffe:501:ffff:1::1"),
            encryption,
            encryption_key: encryption_key(encryption),
            integrity,
            integrity_key: integrity_key(integrity),
        }
    }

    fn pair(config: &SaConfig<'_>) -> (OutboundSa, InboundSa) {
        (
            OutboundSa::new(config).expect("building the outbound sa"),
            InboundSa::new(config).expect("building the inbound sa"),
        )
    }

    /// An IPv6 packet: fixed header (traffic class 0xb8, flow label 0x12345), the given
    /// extension-header bytes, then a UDP header and `payload_len` payload bytes.
    fn ipv6_udp(first_next_header: u8, ext: &[u8], payload_len: usize) -> Vec<u8> {
        let mut p = vec![0x6b, 0x81, 0x23, 0x45, 0, 0, first_next_header, 17];
        p.extend_from_slice(&addr("2001:db8:1::1").octets());
        p.extend_from_slice(&addr("2001:db8:2::2").octets());
        p.extend_from_slice(ext);
        let udp_len = u16::try_from(8 + payload_len).expect("test payload fits");
        p.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        p.extend_from_slice(&udp_len.to_be_bytes());
        p.extend_from_slice(&[0xab, 0xcd]);
        p.extend((0..payload_len).map(|i| u8::try_from((i * 7 + 3) % 256).expect("a byte")));
        let len = u16::try_from(p.len() - 40).expect("test packet fits");
        set_payload_len(&mut p, len);
        p
    }

    fn udp(payload_len: usize) -> Vec<u8> {
        ipv6_udp(17, &[], payload_len)
    }

    /// Builds an authentic ESP packet by hand from a plaintext that already carries its
    /// trailer, so tests can send what a correct sender never would.
    fn seal(config: &SaConfig<'_>, seq: u32, plaintext_with_trailer: &[u8]) -> Vec<u8> {
        let suite = suite_of(config);
        let mut p = vec![0x60, 0, 0, 0, 0, 0, proto::ESP, 64];
        p.extend_from_slice(&config.source.octets());
        p.extend_from_slice(&config.destination.octets());
        p.extend_from_slice(&config.spi.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend((0..suite.iv_len()).map(|i| u8::try_from(i).expect("a short iv")));
        let text_offset = p.len() - 40;
        p.extend_from_slice(plaintext_with_trailer);
        let icv_offset = p.len() - 40;
        p.resize(p.len() + suite.icv_len(), 0);
        suite
            .seal(&mut p[40..], text_offset, icv_offset)
            .expect("sealing the test packet");
        let len = u16::try_from(p.len() - 40).expect("fits");
        set_payload_len(&mut p, len);
        p
    }

    fn suite_of(config: &SaConfig<'_>) -> Suite {
        Suite::new(
            config.encryption,
            config.encryption_key,
            config.integrity,
            config.integrity_key,
        )
        .expect("keying the suite")
    }

    /// The inner packet plus a correct trailer for `config`'s block size.
    fn with_trailer(config: &SaConfig<'_>, inner: &[u8], next_header: u8) -> Vec<u8> {
        let block = suite_of(config).block_size();
        let pad = (block - (inner.len() + 2) % block) % block;
        let mut v = inner.to_vec();
        let pad = u8::try_from(pad).expect("padding is shorter than 256 bytes");
        v.extend(1..=pad);
        v.push(pad);
        v.push(next_header);
        v
    }

    #[test]
    fn round_trip_every_suite_across_block_boundaries() {
        for encryption in ENCRYPTIONS {
            for integrity in INTEGRITIES {
                if !pairs(encryption, integrity) {
                    continue;
                }
                for mode in MODES {
                    let config = config(encryption, integrity, mode);
                    let (mut tx, mut rx) = pair(&config);
                    let block = tx.transform.suite.block_size();
                    let iv_len = tx.transform.suite.iv_len();
                    let icv_len = tx.transform.suite.icv_len();
                    let (mut wire, mut back) = (Vec::new(), Vec::new());
                    for payload_len in 0..=64 {
                        let what = format!("{encryption:?}/{integrity:?}/{mode:?}/{payload_len}");
                        let packet = udp(payload_len);
                        let sent = tx.encapsulate(&packet, &mut wire).expect(&what);
                        assert_eq!(sent.seq as usize, payload_len + 1, "{what}");
                        assert_eq!(wire[6], proto::ESP, "{what}");
                        let (inner_len, esp_offset) = match mode {
                            Mode::Transport => (packet.len() - 40, 40),
                            Mode::Tunnel => (packet.len(), 40),
                        };
                        // Minimal padding: the ciphertext is the next multiple of the block.
                        let ciphertext = (inner_len + 2).div_ceil(block) * block;
                        assert_eq!(
                            wire.len(),
                            esp_offset + 8 + iv_len + ciphertext + icv_len,
                            "{what}"
                        );
                        assert_eq!(
                            usize::from(u16::from_be_bytes([wire[4], wire[5]])) + 40,
                            wire.len()
                        );
                        assert_eq!(&wire[40..44], &0x1000u32.to_be_bytes());
                        assert_eq!(&wire[44..48], &sent.seq.to_be_bytes());
                        if encryption == EncryptionAlgorithm::Null {
                            // NULL leaves the payload readable after the header.
                            assert_eq!(
                                &wire[48..48 + inner_len],
                                &packet[packet.len() - inner_len..]
                            );
                        }
                        let got = rx.decapsulate(&wire, &mut back).expect(&what);
                        let next_header = if mode == Mode::Tunnel { 41 } else { 17 };
                        assert_eq!(
                            got,
                            Decapsulated::Deliver {
                                seq: sent.seq,
                                next_header
                            }
                        );
                        assert_eq!(back, packet, "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn encapsulated_names_the_outer_header_and_esp_without_the_stripped_header_opens_alike() {
        for mode in MODES {
            let config = config(
                EncryptionAlgorithm::Aes128Cbc,
                IntegrityAlgorithm::HmacSha256,
                mode,
            );
            let (mut tx, mut rx) = pair(&config);
            let (mut wire, mut whole, mut stripped) = (Vec::new(), Vec::new(), Vec::new());
            let packet = udp(33);
            let sent = tx.encapsulate(&packet, &mut wire).expect("encapsulating");
            // Every field equals what the header in `wire` says: no caller parses it again.
            let header: &[u8; 40] = wire[..40].try_into().expect("a header");
            let outer = OuterHeader::of(header);
            assert_eq!(sent.source, outer.source, "{mode:?}");
            assert_eq!(sent.destination, outer.destination);
            assert_eq!(sent.hop_limit, wire[7]);
            assert_eq!(sent.traffic_class, 0xb8, "copied from the packet");
            assert_eq!(sent.esp_offset, 40);
            assert_eq!(
                &wire[sent.esp_offset..sent.esp_offset + 4],
                &0x1000u32.to_be_bytes()
            );
            // The raw socket's view: ESP and the outer fields, the header gone.
            let mut twin = InboundSa::new(&config).expect("inbound sa");
            let via_packet = rx.decapsulate(&wire, &mut whole).expect("decapsulating");
            let via_esp = twin
                .decapsulate_esp(&outer, &wire[sent.esp_offset..], &mut stripped, |_| true)
                .expect("decapsulating esp");
            assert_eq!(via_packet, via_esp);
            assert_eq!(whole, stripped, "{mode:?}: the same packet either way");
            assert_eq!(stripped, packet);
            // The same checks apply: a replay, a forgery, another SPI.
            assert_eq!(
                twin.decapsulate_esp(&outer, &wire[40..], &mut stripped, |_| true),
                Err(EspError::Replay { seq: 1 })
            );
            tx.encapsulate(&packet, &mut wire).expect("encapsulating");
            let mut forged = wire[40..].to_vec();
            forged[20] ^= 4;
            assert_eq!(
                twin.decapsulate_esp(&outer, &forged, &mut stripped, |_| panic!("gate asked")),
                Err(EspError::AuthFailed)
            );
            assert_eq!(
                twin.decapsulate_esp(&outer, &wire[40..], &mut stripped, |_| false),
                Err(EspError::NotPersisted { seq: 2 })
            );
            assert!(
                twin.decapsulate_esp(&outer, &wire[40..47], &mut stripped, |_| true)
                    .is_err(),
                "cut inside the esp header"
            );
        }
    }

    /// `open_behind` leaves exactly the prefix and the packet `decapsulate_esp` delivers, in
    /// both modes, with a burst verdict and without; a forged verdict, a replay and a refused
    /// gate are refused as there, and a dummy packet leaves the prefix alone.
    #[test]
    fn open_behind_delivers_the_prefix_and_the_same_packet() {
        const PREFIX: [u8; 14] = [0xee; 14];
        for mode in MODES {
            let config = config(E::Aes128Cbc, I::HmacSha256, mode);
            let (mut tx, mut rx) = pair(&config);
            let mut twin = InboundSa::new(&config).expect("inbound sa");
            let (mut wire, mut plain, mut behind) = (Vec::new(), Vec::new(), vec![1, 2, 3]);
            for (i, verified) in [None, Some(true)].into_iter().enumerate() {
                let packet = udp(40 + i);
                let sent = tx.encapsulate(&packet, &mut wire).expect("encapsulating");
                let outer = OuterHeader::of(wire[..40].try_into().expect("a header"));
                let esp = &wire[sent.esp_offset..];
                let expected = rx
                    .decapsulate_esp(&outer, esp, &mut plain, |_| true)
                    .expect("decapsulating");
                let got = twin
                    .open_behind(&outer, esp, verified, &PREFIX, &mut behind, |_| true)
                    .expect("opening behind the prefix");
                assert_eq!(got, expected, "{mode:?} {verified:?}");
                assert_eq!(&behind[..14], &PREFIX);
                assert_eq!(&behind[14..], &plain[..], "{mode:?} {verified:?}");
                assert_eq!(
                    twin.open_behind(&outer, esp, verified, &PREFIX, &mut behind, |_| true),
                    Err(EspError::Replay { seq: sent.seq })
                );
            }
            let sent = tx.encapsulate(&udp(9), &mut wire).expect("encapsulating");
            let outer = OuterHeader::of(wire[..40].try_into().expect("a header"));
            let esp = &wire[sent.esp_offset..];
            assert_eq!(
                twin.open_behind(&outer, esp, Some(false), &PREFIX, &mut behind, |_| true),
                Err(EspError::AuthFailed),
                "a failed burst verdict"
            );
            assert_eq!(
                twin.open_behind(&outer, esp, None, &PREFIX, &mut behind, |_| false),
                Err(EspError::NotPersisted { seq: sent.seq })
            );
            let dummy = seal(&config, 10, &with_trailer(&config, &[0xde, 0xad], 59));
            let outer = OuterHeader::of(dummy[..40].try_into().expect("a header"));
            assert_eq!(
                twin.open_behind(&outer, &dummy[40..], None, &PREFIX, &mut behind, |_| true),
                Ok(Decapsulated::Dummy { seq: 10 })
            );
            assert_eq!(behind, PREFIX, "a dummy leaves only the prefix");
        }
    }

    #[test]
    fn sas_can_move_between_threads() {
        // The daemon hands SAs to worker tasks; both directions must be `Send`.
        fn assert_send<T: Send>() {}
        assert_send::<OutboundSa>();
        assert_send::<InboundSa>();
    }

    #[test]
    fn spec_example_sa_and_destinations() {
        let config = config(E::TripleDesCbc, I::HmacSha1, Mode::Transport);
        let (mut tx, _) = pair(&config);
        assert_eq!(tx.spi(), 0x1000);
        let mut wire = Vec::new();
        let sent = tx.encapsulate(&udp(10), &mut wire).expect("encapsulating");
        assert_eq!(
            sent.destination,
            addr("2001:db8:2::2"),
            "transport: the packet's own"
        );
        assert_eq!(tx.last_sequence(), 1);

        let tunnel = SaConfig {
            mode: Mode::Tunnel,
            ..config
        };
        let (mut tx, _) = pair(&tunnel);
        let sent = tx.encapsulate(&udp(10), &mut wire).expect("encapsulating");
        assert_eq!(sent.destination, addr("3ffe:501:ffff:1::1"));
        // Outer header: version 6, traffic class and flow label copied, next header ESP, hop
        // limit 64, the SA's endpoints.
        assert_eq!(&wire[..4], &[0x6b, 0x81, 0x23, 0x45]);
        assert_eq!(wire[6], 50);
        assert_eq!(wire[7], 64);
        assert_eq!(&wire[8..24], &addr("3ffe:501:ffff::a").octets());
        assert_eq!(&wire[24..40], &addr("3ffe:501:ffff:1::1").octets());
        assert!(tx.max_overhead() >= wire.len() - udp(10).len());
    }

    #[test]
    fn transport_keeps_hbh_and_routing_in_front_and_hides_destination_options() {
        // HBH (8 bytes) -> routing (24 bytes) -> destination options (8 bytes) -> UDP.
        let mut ext = vec![43, 0, 5, 2, 0, 0, 1, 0]; // HBH with a router alert option
        ext.extend_from_slice(&[60, 2, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&addr("2001:db8:9::9").octets());
        ext.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        let packet = ipv6_udp(0, &ext, 33);
        for encryption in ENCRYPTIONS {
            let config = config(encryption, IntegrityAlgorithm::HmacSha256, Mode::Transport);
            let (mut tx, mut rx) = pair(&config);
            let (mut wire, mut back) = (Vec::new(), Vec::new());
            tx.encapsulate(&packet, &mut wire).expect("encapsulating");
            assert_eq!(&wire[..4], &packet[..4]);
            assert_eq!(wire[6], 0, "hop-by-hop still first");
            assert_eq!(&wire[40..48], &packet[40..48], "hop-by-hop unchanged");
            // The routing header is unchanged except that its next header now says ESP.
            let mut expected_routing = packet[48..72].to_vec();
            expected_routing[0] = 50;
            assert_eq!(&wire[48..72], &expected_routing[..]);
            assert_eq!(&wire[72..76], &0x1000u32.to_be_bytes(), "esp after routing");
            let got = rx.decapsulate(&wire, &mut back).expect("decapsulating");
            assert_eq!(
                got,
                Decapsulated::Deliver {
                    seq: 1,
                    next_header: 60
                }
            );
            assert_eq!(back, packet);
        }
    }

    #[test]
    fn destination_options_in_front_of_esp_are_accepted() {
        // Another sender (Linux, scapy) may keep destination options outside ESP.
        let config = config(E::Aes128Cbc, I::HmacSha1, Mode::Transport);
        let (mut tx, mut rx) = pair(&config);
        let packet = udp(20);
        let mut wire = Vec::new();
        tx.encapsulate(&packet, &mut wire).expect("encapsulating");
        // `p` with a destination options header between its fixed header and the rest.
        let with_dest_opts = |p: &[u8]| {
            let mut out = p[..40].to_vec();
            out[6] = proto::DEST_OPTS;
            out.extend_from_slice(&[p[6], 0, 1, 4, 0, 0, 0, 0]);
            out.extend_from_slice(&p[40..]);
            let len = u16::try_from(out.len() - 40).expect("fits");
            set_payload_len(&mut out, len);
            out
        };
        let mut back = Vec::new();
        rx.decapsulate(&with_dest_opts(&wire), &mut back)
            .expect("decapsulating");
        assert_eq!(back, with_dest_opts(&packet));
    }

    #[test]
    fn iv_is_fresh_per_packet() {
        let config = config(E::Aes128Cbc, I::HmacSha256, Mode::Tunnel);
        let (mut tx, _) = pair(&config);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        tx.encapsulate(&udp(40), &mut a).expect("encapsulating");
        tx.encapsulate(&udp(40), &mut b).expect("encapsulating");
        assert_ne!(&a[48..64], &b[48..64], "two IVs");
        assert_ne!(&a[64..], &b[64..], "so two ciphertexts");
    }

    #[test]
    fn no_allocation_once_warm() {
        let config = config(E::Aes128Cbc, I::HmacSha256, Mode::Tunnel);
        let (mut tx, mut rx) = pair(&config);
        let (mut wire, mut back) = (Vec::with_capacity(2048), Vec::with_capacity(2048));
        let (wire_ptr, back_ptr) = (wire.as_ptr(), back.as_ptr());
        for len in [0, 1400, 17, 1000] {
            tx.encapsulate(&udp(len), &mut wire).expect("encapsulating");
            rx.decapsulate(&wire, &mut back).expect("decapsulating");
        }
        assert_eq!((wire.as_ptr(), wire.capacity()), (wire_ptr, 2048));
        assert_eq!((back.as_ptr(), back.capacity()), (back_ptr, 2048));
    }

    #[test]
    fn bad_padding_is_rejected_after_authentication() {
        for encryption in ENCRYPTIONS {
            let config = config(encryption, IntegrityAlgorithm::HmacSha1, Mode::Tunnel);
            let inner = udp(9); // 57 bytes
            let good = with_trailer(&config, &inner, 41);
            let pad = usize::from(good[good.len() - 2]);
            let mut rx = InboundSa::new(&config).expect("inbound sa");
            let mut out = Vec::new();
            assert!(rx.decapsulate(&seal(&config, 1, &good), &mut out).is_ok());
            assert!(pad > 0, "the case must have padding to corrupt");
            // A pad byte that is not 1, 2, 3, ...
            let mut bad = good.clone();
            let last_pad = bad.len() - 3;
            bad[last_pad] ^= 0x40;
            assert_eq!(
                rx.decapsulate(&seal(&config, 2, &bad), &mut out),
                Err(EspError::BadPadding)
            );
            // A pad length longer than the ciphertext.
            let mut bad = good.clone();
            let pad_len_at = bad.len() - 2;
            bad[pad_len_at] = 250;
            assert_eq!(
                rx.decapsulate(&seal(&config, 3, &bad), &mut out),
                Err(EspError::BadPadding)
            );
            // A pad length that eats into the payload: the bytes it covers are not 1, 2, 3.
            let mut bad = good.clone();
            bad[pad_len_at] = u8::try_from(pad + 4).expect("small");
            assert_eq!(
                rx.decapsulate(&seal(&config, 4, &bad), &mut out),
                Err(EspError::BadPadding)
            );
        }
    }

    #[test]
    fn bit_flips_anywhere_in_esp_fail_authentication() {
        for encryption in ENCRYPTIONS {
            for integrity in INTEGRITIES {
                if !pairs(encryption, integrity) {
                    continue;
                }
                let config = config(encryption, integrity, Mode::Transport);
                let (mut tx, mut rx) = pair(&config);
                let (mut wire, mut out) = (Vec::new(), Vec::new());
                tx.encapsulate(&udp(21), &mut wire).expect("encapsulating");
                // Everything after the SPI: sequence number, IV, ciphertext, ICV.
                for byte in 44..wire.len() {
                    for bit in [0x01, 0x80] {
                        let mut bad = wire.clone();
                        bad[byte] ^= bit;
                        // Turning sequence number 1 into 0 is caught even earlier.
                        let expected = if bad[44..48] == [0; 4] {
                            EspError::Replay { seq: 0 }
                        } else {
                            EspError::AuthFailed
                        };
                        assert_eq!(
                            rx.decapsulate(&bad, &mut out),
                            Err(expected),
                            "{encryption:?}/{integrity:?} byte {byte} bit {bit:#x}"
                        );
                    }
                }
                // A flipped SPI names another SA.
                let mut bad = wire.clone();
                bad[43] ^= 1;
                assert!(matches!(
                    rx.decapsulate(&bad, &mut out),
                    Err(EspError::SpiMismatch {
                        expected: 0x1000,
                        got: 0x1001
                    })
                ));
                // None of that moved the window: the genuine packet still goes through.
                assert_eq!(rx.replay_window().highest(), 0);
                rx.decapsulate(&wire, &mut out).expect("the genuine packet");
            }
        }
    }

    #[test]
    fn replay_edges_through_the_sa() {
        let config = config(E::Aes128Cbc, I::HmacSha256, Mode::Tunnel);
        let (mut tx, mut rx) = pair(&config);
        let mut sent = Vec::new();
        for _ in 0..100 {
            let mut wire = Vec::new();
            tx.encapsulate(&udp(5), &mut wire).expect("encapsulating");
            sent.push(wire);
        }
        let mut out = Vec::new();
        // (sequence number, accepted): the first packet, then a duplicate; a jump to 100,
        // where 37 is the oldest still inside a 64-packet window (once); out of order inside.
        let steps = [
            (1, true),
            (1, false),
            (100, true),
            (36, false),
            (37, true),
            (37, false),
            (61, true),
        ];
        for (seq, accepted) in steps {
            let got = rx.decapsulate(&sent[seq as usize - 1], &mut out);
            if accepted {
                assert!(got.is_ok(), "seq {seq}: {got:?}");
            } else {
                assert_eq!(got, Err(EspError::Replay { seq }));
            }
        }
        // A forged packet with a fresh sequence number is checked, fails, and moves nothing.
        let mut forged = sent[50].clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(rx.decapsulate(&forged, &mut out), Err(EspError::AuthFailed));
        assert!(rx.decapsulate(&sent[50], &mut out).is_ok());

        // Sequence number 0 is never valid, even authentic.
        let inner = with_trailer(&config, &udp(3), 41);
        let mut fresh = InboundSa::new(&config).expect("inbound sa");
        assert_eq!(
            fresh.decapsulate(&seal(&config, 0, &inner), &mut out),
            Err(EspError::Replay { seq: 0 })
        );
        // The last sequence number is accepted once.
        assert!(
            fresh
                .decapsulate(&seal(&config, u32::MAX, &inner), &mut out)
                .is_ok()
        );
        assert_eq!(
            fresh.decapsulate(&seal(&config, u32::MAX, &inner), &mut out),
            Err(EspError::Replay { seq: u32::MAX })
        );
    }

    #[test]
    fn a_refusing_gate_leaves_the_window_and_forgeries_never_reach_it() {
        let config = config(E::Aes128Cbc, I::HmacSha256, Mode::Transport);
        let (mut tx, mut rx) = pair(&config);
        let (mut esp, mut out) = (Vec::new(), Vec::new());
        tx.encapsulate(&udp(10), &mut esp).expect("encapsulating");
        let refused = rx.decapsulate_gated(&esp, &mut out, |seq| {
            assert_eq!(seq, 1);
            false
        });
        assert_eq!(refused, Err(EspError::NotPersisted { seq: 1 }));
        assert_eq!(rx.replay_window().highest(), 0, "the window did not move");
        let mut forged = esp.clone();
        *forged.last_mut().expect("non-empty") ^= 1;
        assert_eq!(
            rx.decapsulate_gated(&forged, &mut out, |_| panic!("asked for a forgery")),
            Err(EspError::AuthFailed)
        );
        assert!(rx.decapsulate_gated(&esp, &mut out, |_| true).is_ok());
        rx.start_above(100);
        tx.encapsulate(&udp(10), &mut esp).expect("encapsulating");
        assert_eq!(
            rx.decapsulate(&esp, &mut out),
            Err(EspError::Replay { seq: 2 }),
            "at or below the ceiling"
        );
        rx.reset_replay();
        assert!(rx.decapsulate(&esp, &mut out).is_ok(), "after a reset");
    }

    /// AES-GCM's IV is the SA's epoch then its sequence number (RFC 4106 §3.1: unique under
    /// the key), so two SAs with one key and different epochs never share an IV; CBC's IV is
    /// random.
    #[test]
    fn gcm_ivs_are_epoch_and_sequence_numbers() {
        for encryption in [E::Aes128Gcm, E::Aes256Gcm] {
            let config = config(encryption, I::None, Mode::Tunnel);
            let (mut tx, mut rx) = pair(&config);
            assert!(tx.counter_iv());
            tx.use_iv_epoch(7);
            let (mut wire, mut plain) = (Vec::new(), Vec::new());
            for seq in 1..=3u32 {
                tx.encapsulate(&udp(10), &mut wire).expect("encapsulating");
                let iv = &wire[40 + ESP_HEADER_LEN..40 + ESP_HEADER_LEN + 8];
                assert_eq!(
                    iv,
                    ((7u64 << 32) | u64::from(seq)).to_be_bytes(),
                    "iv of {seq}"
                );
                rx.decapsulate(&wire, &mut plain).expect("opening");
            }
            tx.resume_after(u32::MAX - 1);
            tx.encapsulate(&udp(10), &mut wire)
                .expect("encapsulating the last");
            let iv = &wire[48..56];
            assert_eq!(iv, ((7u64 << 32) | u64::from(u32::MAX)).to_be_bytes());
        }
        let (tx, _) = pair(&config(E::Aes128Cbc, I::HmacSha256, Mode::Tunnel));
        assert!(!tx.counter_iv());
    }

    /// Framing and sealing are separate steps: packets framed one after another and sealed in
    /// another order (as a burst does) are the packets `encapsulate` would have sent.
    #[test]
    fn framed_packets_seal_in_any_order() {
        for mode in MODES {
            let config = config(E::Aes128Cbc, I::HmacSha256, mode);
            let (mut tx, mut rx) = pair(&config);
            let packets: Vec<Vec<u8>> = (0..3).map(|i| udp(100 + i * 17)).collect();
            let mut bufs = vec![Vec::new(); packets.len()];
            let framed: Vec<Framed> = packets
                .iter()
                .zip(&mut bufs)
                .map(|(p, buf)| tx.frame(p, buf).expect("framing"))
                .collect();
            for (f, buf) in framed.iter().zip(&mut bufs).rev() {
                tx.seal(f, buf).expect("sealing");
            }
            let mut plain = Vec::new();
            for ((f, buf), packet) in framed.iter().zip(&bufs).zip(&packets) {
                let got = rx
                    .decapsulate(buf, &mut plain)
                    .expect("opening a sealed frame");
                assert!(
                    matches!(got, Decapsulated::Deliver { seq, .. } if seq == f.encapsulated.seq)
                );
                assert_eq!(&plain, packet, "{mode:?}: the packet comes back as it was");
            }
            assert_eq!(tx.last_sequence(), 3);
        }
    }

    #[test]
    fn sequence_numbers_never_wrap() {
        let config = config(E::Null, I::HmacSha1, Mode::Transport);
        let (mut tx, mut rx) = pair(&config);
        let mut wire = Vec::new();
        assert_eq!(tx.last_sequence(), 0);
        assert_eq!(tx.encapsulate(&udp(1), &mut wire).expect("first").seq, 1);
        tx.resume_after(u32::MAX - 2);
        tx.resume_after(5); // never backwards
        assert_eq!(
            tx.encapsulate(&udp(1), &mut wire).expect("2^32-2").seq,
            u32::MAX - 1
        );
        assert!(!tx.is_exhausted());
        assert_eq!(
            tx.encapsulate(&udp(1), &mut wire).expect("2^32-1").seq,
            u32::MAX
        );
        let mut out = Vec::new();
        assert!(rx.decapsulate(&wire, &mut out).is_ok());
        assert!(tx.is_exhausted());
        assert_eq!(tx.last_sequence(), u32::MAX);
        for _ in 0..3 {
            assert_eq!(
                tx.encapsulate(&udp(1), &mut wire),
                Err(EspError::SequenceExhausted)
            );
            assert!(wire.is_empty(), "nothing to send");
        }
    }

    #[test]
    fn trailer_next_header_rules() {
        let tunnel = config(E::TripleDesCbc, I::HmacSha1, Mode::Tunnel);
        let mut rx = InboundSa::new(&tunnel).expect("inbound sa");
        let mut out = Vec::new();
        // Dummy packet (RFC 4303 §2.6): authentic, nothing to deliver.
        let dummy = with_trailer(&tunnel, &[0xde, 0xad], 59);
        assert_eq!(
            rx.decapsulate(&seal(&tunnel, 1, &dummy), &mut out),
            Ok(Decapsulated::Dummy { seq: 1 })
        );
        assert!(out.is_empty());
        // IPv4 inside (4) is not something this IPv6-only datapath delivers.
        let v4 = with_trailer(&tunnel, &[0x45; 20], 4);
        assert_eq!(
            rx.decapsulate(&seal(&tunnel, 2, &v4), &mut out),
            Err(EspError::UnknownNextHeader { next_header: 4 })
        );
        // Next header 41 with something that is not an IPv6 packet.
        let junk = with_trailer(&tunnel, &[0x45; 20], 41);
        assert!(matches!(
            rx.decapsulate(&seal(&tunnel, 3, &junk), &mut out),
            Err(EspError::Truncated { .. } | EspError::Malformed { .. })
        ));
        // TFC padding after the inner packet (RFC 4303 §2.7) is dropped.
        let mut padded = udp(3);
        padded.extend_from_slice(&[0; 13]);
        let tfc = with_trailer(&tunnel, &padded, 41);
        assert!(rx.decapsulate(&seal(&tunnel, 4, &tfc), &mut out).is_ok());
        assert_eq!(out, udp(3));

        let transport = SaConfig {
            mode: Mode::Transport,
            ..tunnel
        };
        let mut rx = InboundSa::new(&transport).expect("inbound sa");
        let hbh = with_trailer(&transport, &[0; 8], 0);
        assert_eq!(
            rx.decapsulate(&seal(&transport, 1, &hbh), &mut out),
            Err(EspError::UnknownNextHeader { next_header: 0 })
        );
    }

    #[test]
    fn fragments_are_refused_both_ways() {
        let config = config(E::Aes128Cbc, I::HmacSha1, Mode::Transport);
        let (mut tx, mut rx) = pair(&config);
        let mut out = Vec::new();
        let first_fragment = ipv6_udp(44, &[17, 0, 0, 1, 0, 0, 0, 7], 30);
        assert_eq!(
            tx.encapsulate(&first_fragment, &mut out),
            Err(EspError::Fragment)
        );
        assert_eq!(tx.last_sequence(), 0, "no sequence number used");
        // An atomic fragment is a whole datagram and round-trips.
        let atomic = ipv6_udp(44, &[17, 0, 0, 0, 0, 0, 0, 7], 30);
        let mut back = Vec::new();
        tx.encapsulate(&atomic, &mut out).expect("encapsulating");
        assert_eq!(out[40], 50, "fragment header now announces ESP");
        rx.decapsulate(&out, &mut back).expect("decapsulating");
        assert_eq!(back, atomic);
        // An ESP packet that arrives fragmented must be reassembled first.
        let mut fragmented = out[..40].to_vec();
        fragmented.extend_from_slice(&[50, 0, 0, 1, 0, 0, 0, 9]);
        fragmented.extend_from_slice(&out[48..]);
        assert_eq!(
            rx.decapsulate(&fragmented, &mut back),
            Err(EspError::Fragment)
        );
    }

    #[test]
    fn configuration_errors() {
        let good = config(E::Aes128Cbc, I::HmacSha256, Mode::Tunnel);
        let any = SaConfig {
            source: Ipv6Addr::UNSPECIFIED,
            ..good
        };
        assert!(matches!(
            OutboundSa::new(&any),
            Err(ConfigError::TunnelEndpoint { which: "source" })
        ));
        // `any` is fine in transport mode.
        assert!(
            OutboundSa::new(&SaConfig {
                mode: Mode::Transport,
                ..any
            })
            .is_ok()
        );
        let short = SaConfig {
            integrity_key: b"short",
            ..good
        };
        assert!(matches!(
            InboundSa::new(&short),
            Err(ConfigError::Length { .. })
        ));
        let null_with_key = SaConfig {
            encryption: EncryptionAlgorithm::Null,
            ..good
        };
        assert!(matches!(
            InboundSa::new(&null_with_key),
            Err(ConfigError::Length { expected: 0, .. })
        ));
        assert!(InboundSa::with_replay_window(&good, 0).is_err());
        assert_eq!(
            InboundSa::with_replay_window(&good, 1024)
                .expect("sa")
                .replay_window()
                .size(),
            1024
        );
    }

    #[test]
    fn encapsulate_refuses_what_is_not_a_whole_ipv6_packet() {
        let config = config(E::Aes128Cbc, I::HmacSha256, Mode::Tunnel);
        let mut tx = OutboundSa::new(&config).expect("outbound sa");
        let mut out = Vec::new();
        let packet = udp(30);
        assert!(matches!(
            tx.encapsulate(&packet[..60], &mut out),
            Err(EspError::Truncated { .. })
        ));
        let mut v4 = packet.clone();
        v4[0] = 0x45;
        assert!(matches!(
            tx.encapsulate(&v4, &mut out),
            Err(EspError::Malformed { .. })
        ));
        // The biggest IPv6 packet cannot grow further.
        let mut huge = vec![0u8; 40 + 65535];
        huge[0] = 0x60;
        huge[4] = 0xff;
        huge[5] = 0xff;
        huge[6] = 59;
        assert!(matches!(
            tx.encapsulate(&huge, &mut out),
            Err(EspError::TooBig { .. })
        ));
        assert_eq!(tx.last_sequence(), 0);
    }

    /// Garbage, truncations and corruptions of valid packets must come back as errors, never
    /// as panics, for every suite and mode.
    #[test]
    fn untrusted_bytes_never_panic() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let mut out = Vec::new();
        for encryption in ENCRYPTIONS {
            for integrity in INTEGRITIES {
                if !pairs(encryption, integrity) {
                    continue;
                }
                for mode in MODES {
                    let config = config(encryption, integrity, mode);
                    let (mut tx, mut rx) = pair(&config);
                    // Random garbage, some of it dressed as IPv6 + ESP for this SPI.
                    for _ in 0..300 {
                        let len = (rng.next_u32() % 200) as usize;
                        let mut junk = vec![0; len];
                        rng.fill_bytes(&mut junk);
                        let _ = rx.decapsulate(&junk, &mut out);
                        let _ = tx.encapsulate(&junk, &mut out);
                        if len >= 48 {
                            junk[0] = 0x60;
                            junk[6] = if rng.next_u32() % 2 == 0 { 50 } else { 0 };
                            junk[40..44].copy_from_slice(&0x1000u32.to_be_bytes());
                            set_payload_len(&mut junk, u16::try_from(len - 40).expect("small"));
                            assert!(rx.decapsulate(&junk, &mut out).is_err());
                            let _ = tx.encapsulate(&junk, &mut out);
                        }
                    }
                    // Every truncation of a valid packet, with the length field both left
                    // alone and fixed up to match.
                    let mut wire = Vec::new();
                    tx.encapsulate(&ipv6_udp(60, &[17, 0, 1, 4, 0, 0, 0, 0], 37), &mut wire)
                        .expect("encapsulating");
                    for cut in 0..wire.len() {
                        let mut short = wire[..cut].to_vec();
                        assert!(rx.decapsulate(&short, &mut out).is_err(), "cut {cut}");
                        if cut >= 40 {
                            set_payload_len(&mut short, u16::try_from(cut - 40).expect("small"));
                            assert!(rx.decapsulate(&short, &mut out).is_err(), "cut {cut}");
                        }
                    }
                    // Random corruption of header bytes that are not authenticated.
                    for _ in 0..200 {
                        let mut bad = wire.clone();
                        let at = (rng.next_u32() as usize) % 48;
                        bad[at] = rng.next_u32().to_le_bytes()[0];
                        let _ = rx.decapsulate(&bad, &mut out);
                    }
                }
            }
        }
    }
}
