//! ESP decapsulation of authentic packets: the harness builds the plaintext (payload, padding,
//! Pad Length, Next Header) from the input, encrypts it and computes a valid ICV under the fixed
//! SA, so every run gets past the ICV check into the padding, next-header and inner-packet
//! handling.
//!
//! Input layout (missing bytes read as 0): flags, next header, pad blocks, corruption index,
//! corruption mask, sequence number (4, big-endian), tamper position (2), IV (16), payload.
//! Flags: bit 0 tunnel mode; bit 1 a hop-by-hop header in front of ESP; bit 2 a well-formed
//! trailer built by the harness (else the last two payload bytes are the trailer, verbatim);
//! bit 3 corrupt one padding byte; bit 4 also round-trip the payload through the crate's own
//! `encapsulate`.
//!
//! Checks, against an oracle written here from RFC 4303 §2.4-§2.6:
//! - the result is the oracle's: delivered bytes are exactly the packet the sender protected,
//!   bad padding and a next header the mode cannot deliver are refused;
//! - an authentic packet is never delivered twice (anti-replay, §3.4.3);
//! - one flipped bit anywhere in the ESP part is refused;
//! - encapsulate then decapsulate gives back the original packet.
#![no_main]

use ipsec_fuzz::{BLOCK, SPI, inbound, ipv6, ipv6_between, outbound, sa_config};
use ipsec_fuzz::{GATEWAY_A, GATEWAY_B};
use ipsec_user::crypto::{Decapsulated, EspError, new_cipher, new_integrity};
use ipsec_user::model::Mode;
use libfuzzer_sys::fuzz_target;

const ESP: u8 = 50;
const HOP_BY_HOP: u8 = 0;
const IPV6_IN_IP: u8 = 41;
const NO_NEXT_HEADER: u8 = 59;

/// Reads fixed fields off the front of the input, zero once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        first
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.byte())
    }
}

/// What the oracle expects of one authentic packet.
#[derive(Debug)]
enum Expected {
    Deliver {
        next_header: u8,
        packet: Vec<u8>,
    },
    Dummy,
    /// Refused for a reason after the ICV check (padding, next header, inner header).
    Refused(&'static str),
    Replay,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let flags = input.byte();
    let mode = if flags & 1 == 0 {
        Mode::Transport
    } else {
        Mode::Tunnel
    };
    let next_header = input.byte();
    let pad_blocks = usize::from(input.byte() % 16);
    let corrupt_index = usize::from(input.byte());
    let corrupt_mask = input.byte() | 1;
    let seq = u32::from_be_bytes(input.array());
    let tamper = usize::from(u16::from_be_bytes(input.array()));
    let iv: [u8; BLOCK] = input.array();
    let payload = input.0;

    // The plaintext: payload | padding | Pad Length | Next Header.
    let mut plaintext = payload.to_vec();
    if flags & 4 != 0 {
        let pad_len = (BLOCK - (payload.len() + 2) % BLOCK) % BLOCK + BLOCK * pad_blocks;
        let mut padding: Vec<u8> = (1..=u8::try_from(pad_len).expect("at most 255")).collect();
        if flags & 8 != 0 && pad_len > 0 {
            padding[corrupt_index % pad_len] ^= corrupt_mask;
        }
        plaintext.extend_from_slice(&padding);
        plaintext.push(u8::try_from(pad_len).expect("at most 255"));
        plaintext.push(next_header);
    } else {
        // Whole blocks only (the cipher needs them), at least one.
        plaintext.truncate(plaintext.len() / BLOCK * BLOCK);
        if plaintext.is_empty() {
            plaintext.resize(BLOCK, 0);
        }
    }

    // ESP: SPI | seq | IV | ciphertext | ICV, the ICV over everything before it.
    let config = sa_config(mode);
    let cipher = new_cipher(config.encryption, config.encryption_key).expect("keying aes");
    let integrity =
        new_integrity(config.integrity, config.integrity_key).expect("keying hmac-sha256");
    let mut esp = Vec::with_capacity(8 + BLOCK + plaintext.len() + 16);
    esp.extend_from_slice(&SPI.to_be_bytes());
    esp.extend_from_slice(&seq.to_be_bytes());
    esp.extend_from_slice(&iv);
    let ciphertext_at = esp.len();
    esp.extend_from_slice(&plaintext);
    cipher
        .encrypt(&iv, &mut esp[ciphertext_at..])
        .expect("whole blocks");
    let icv = integrity.compute(&esp);
    esp.extend_from_slice(icv.as_ref());

    // The IPv6 packet: optional hop-by-hop header (a 6-byte PadN option), then ESP.
    let (src, dst) = match mode {
        Mode::Transport => (ipsec_fuzz::HOST_A, ipsec_fuzz::HOST_B),
        Mode::Tunnel => (GATEWAY_A, GATEWAY_B),
    };
    let mut body = Vec::new();
    let (first_next_header, next_header_field) = if flags & 2 != 0 {
        body.extend_from_slice(&[ESP, 0, 1, 4, 0, 0, 0, 0]);
        (HOP_BY_HOP, 40)
    } else {
        (ESP, 6)
    };
    let esp_at = 40 + body.len();
    body.extend_from_slice(&esp);
    if body.len() > usize::from(u16::MAX) {
        return;
    }
    let packet = ipv6_between(src, dst, first_next_header, &body);

    let expected = expect(mode, seq, &packet, esp_at, next_header_field, &plaintext);
    let mut sa = inbound(mode);
    let mut out = Vec::new();
    let result = sa.decapsulate(&packet, &mut out);
    match (&expected, &result) {
        (
            Expected::Deliver {
                next_header,
                packet: want,
            },
            Ok(Decapsulated::Deliver {
                seq: got_seq,
                next_header: got_next_header,
            }),
        ) => {
            assert_eq!((*got_seq, *got_next_header), (seq, *next_header));
            assert_eq!(&out, want, "delivered bytes differ from what was protected");
        }
        // A stricter policy may refuse next headers it cannot check (issue 8 item 5): failing
        // closed is allowed, delivering something else is not.
        (Expected::Deliver { .. }, Err(EspError::UnknownNextHeader { .. })) => {}
        (Expected::Dummy, Ok(Decapsulated::Dummy { seq: got_seq })) => {
            assert_eq!(*got_seq, seq);
            assert!(out.is_empty(), "a dummy packet left bytes to deliver");
        }
        (Expected::Refused(why), Err(e)) => assert!(
            !matches!(
                e,
                EspError::AuthFailed | EspError::Replay { .. } | EspError::SpiMismatch { .. }
            ),
            "authentic packet refused before the icv check: {e:?} (expected a refusal: {why})"
        ),
        (Expected::Replay, Err(EspError::Replay { .. })) => {}
        _ => panic!("expected {expected:?}, got {result:?}"),
    }

    // Anti-replay: the same authentic packet is never delivered twice.
    let again = sa.decapsulate(&packet, &mut out);
    assert!(again.is_err(), "replayed packet accepted: {again:?}");
    if result.is_ok() {
        assert!(matches!(again, Err(EspError::Replay { .. })), "{again:?}");
    }

    // One flipped bit in the ESP part (which the ICV covers, with SPI and sequence number).
    let mut tampered = packet.clone();
    let bit = tamper % ((packet.len() - esp_at) * 8);
    tampered[esp_at + bit / 8] ^= 1 << (bit % 8);
    let result = inbound(mode).decapsulate(&tampered, &mut out);
    assert!(result.is_err(), "tampered packet accepted: {result:?}");

    if flags & 16 != 0 {
        round_trip(mode, next_header, payload);
    }
});

/// The oracle: what RFC 4303 says of this authentic packet.
fn expect(
    mode: Mode,
    seq: u32,
    packet: &[u8],
    esp_at: usize,
    next_header_field: usize,
    plaintext: &[u8],
) -> Expected {
    // §3.4.3: sequence number 0 is never valid (the sender starts at 1).
    if seq == 0 {
        return Expected::Replay;
    }
    let end = plaintext.len();
    let next_header = plaintext[end - 1];
    let pad_len = usize::from(plaintext[end - 2]);
    if pad_len + 2 > end {
        return Expected::Refused("padding longer than the plaintext");
    }
    let payload = &plaintext[..end - 2 - pad_len];
    let padding = &plaintext[end - 2 - pad_len..end - 2];
    // §2.4: the default padding is 1, 2, 3, ... and the receiver checks it.
    if padding
        .iter()
        .enumerate()
        .any(|(i, b)| usize::from(*b) != i + 1)
    {
        return Expected::Refused("bad padding");
    }
    // §2.6: next header 59 is a dummy packet.
    if next_header == NO_NEXT_HEADER {
        return Expected::Dummy;
    }
    match mode {
        Mode::Transport => {
            // Hop-by-hop may only follow the fixed IPv6 header (RFC 8200 §4.3).
            if next_header == HOP_BY_HOP {
                return Expected::Refused("hop-by-hop after esp");
            }
            let mut restored = packet[..esp_at].to_vec();
            restored[next_header_field] = next_header;
            restored.extend_from_slice(payload);
            let len = u16::try_from(restored.len() - 40).expect("shorter than the esp packet");
            restored[4..6].copy_from_slice(&len.to_be_bytes());
            Expected::Deliver {
                next_header,
                packet: restored,
            }
        }
        Mode::Tunnel => {
            if next_header != IPV6_IN_IP {
                return Expected::Refused("tunnel mode carries ipv6 only");
            }
            if payload.len() < 40 || payload[0] >> 4 != 6 {
                return Expected::Refused("inner packet is not ipv6");
            }
            let inner_len = 40 + usize::from(u16::from_be_bytes([payload[4], payload[5]]));
            if inner_len > payload.len() {
                return Expected::Refused("inner packet shorter than its payload length");
            }
            // §2.7: TFC padding after the inner packet is dropped.
            Expected::Deliver {
                next_header,
                packet: payload[..inner_len].to_vec(),
            }
        }
    }
}

/// The crate's own encapsulation, then decapsulation, gives back the packet.
fn round_trip(mode: Mode, next_header: u8, payload: &[u8]) {
    let original = ipv6(next_header, payload);
    let mut sender = outbound(mode);
    let mut esp = Vec::new();
    let Ok(sent) = sender.encapsulate(&original, &mut esp) else {
        // Refusing to protect (malformed headers, a fragment) is fail closed: nothing leaves.
        return;
    };
    assert_eq!(sent.seq, 1);
    let mut out = Vec::new();
    let received = inbound(mode).decapsulate(&esp, &mut out);
    match received {
        Ok(Decapsulated::Deliver { seq, .. }) => {
            assert_eq!(seq, 1);
            assert_eq!(out, original, "round trip changed the packet");
        }
        // Encapsulation moved a next header the receiver refuses (hop-by-hop after ESP) or a
        // dummy marker into the trailer: refused or dropped, never delivered differently.
        Ok(Decapsulated::Dummy { .. }) | Err(EspError::UnknownNextHeader { .. }) => {}
        Err(e) => panic!("our own esp packet refused: {e:?}"),
    }
}
