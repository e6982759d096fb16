//! AES-GCM ESP in bursts against the sequential path: where the CPU has VAES and VPCLMULQDQ
//! the burst path seals and opens on the GCM lanes (`crypto::burst::gcm_lanes`), the sequential
//! path always on the `aes-gcm` crate, so this compares the two implementations on packets of
//! any length, both key sizes, both modes, with a tampered byte anywhere.
//!
//! Input layout (missing bytes read as 0): flags, tamper packet, tamper position (2, big-endian),
//! tamper mask, key (36 bytes; the first 20 for AES-128), then packets: a length byte `n`
//! followed by `4 * n` payload bytes (an IPv6 UDP packet is built around them), until the input
//! runs out (at most 16 packets). Flags: bit 0 AES-256, bit 1 tunnel mode.
//!
//! Checks:
//! - `encapsulate_burst` writes exactly the bytes `encapsulate` writes, with the same results;
//! - `decapsulate_burst` gives every packet (one possibly tampered) the result and the
//!   delivered bytes `decapsulate` gives, and a tampered packet is refused;
//! - every untampered packet is delivered as it was sent.
#![no_main]

use ipsec_fuzz::{GATEWAY_A, GATEWAY_B, SPI, ipv6};
use ipsec_user::crypto::{EspError, InboundSa, OutboundSa, SaConfig};
use ipsec_user::model::{EncryptionAlgorithm, IntegrityAlgorithm, Mode};
use libfuzzer_sys::fuzz_target;

const UDP: u8 = 17;
const MAX_PACKETS: usize = 16;

/// What a path made of each packet: its result and its output buffer.
type Outcomes<T> = (Vec<Result<T, EspError>>, Vec<Vec<u8>>);

/// `one` over each packet, one at a time.
fn each<T>(
    packets: &[Vec<u8>],
    mut one: impl FnMut(&[u8], &mut Vec<u8>) -> Result<T, EspError>,
) -> Outcomes<T> {
    let mut outs = vec![Vec::new(); packets.len()];
    let results = packets
        .iter()
        .zip(&mut outs)
        .map(|(packet, out)| one(packet, out))
        .collect();
    (results, outs)
}

/// `all` over the packets as one burst.
fn burst<T: Clone>(
    packets: &[Vec<u8>],
    all: impl FnOnce(&[Vec<u8>], &mut [Vec<u8>], &mut [Result<T, EspError>]),
) -> Outcomes<T> {
    let mut outs = vec![Vec::new(); packets.len()];
    let mut results = vec![Err(EspError::AuthFailed); packets.len()];
    all(packets, &mut outs, &mut results);
    (results, outs)
}

fuzz_target!(|data: &[u8]| {
    let mut input = data.iter().copied();
    let mut byte = || input.next().unwrap_or(0);
    let flags = byte();
    let tamper_packet = usize::from(byte());
    let tamper_at = usize::from(u16::from_be_bytes([byte(), byte()]));
    let tamper_mask = byte();
    let key: [u8; 36] = std::array::from_fn(|_| byte());
    let (encryption, key) = if flags & 1 == 0 {
        (EncryptionAlgorithm::Aes128Gcm, &key[..20])
    } else {
        (EncryptionAlgorithm::Aes256Gcm, &key[..])
    };
    let mode = if flags & 2 == 0 {
        Mode::Transport
    } else {
        Mode::Tunnel
    };
    let mut packets = Vec::new();
    while let Some(n) = input.next()
        && packets.len() < MAX_PACKETS
    {
        let len = 4 * usize::from(n);
        let mut udp = vec![0x13, 0x89, 0x23, 0x28];
        udp.extend_from_slice(&u16::try_from(8 + len).expect("short").to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend(input.by_ref().take(len));
        udp.resize(8 + len, 0);
        packets.push(ipv6(UDP, &udp));
    }
    let config = SaConfig {
        spi: SPI,
        mode,
        source: GATEWAY_A,
        destination: GATEWAY_B,
        encryption,
        encryption_key: key,
        integrity: IntegrityAlgorithm::None,
        integrity_key: &[],
    };
    let outbound = || OutboundSa::new(&config).expect("keying aes-gcm");
    let inbound = || InboundSa::new(&config).expect("keying aes-gcm");

    // Outbound: the burst seals what the sequential path seals.
    let mut sequential = outbound();
    let want = each(&packets, |p, out| sequential.encapsulate(p, out));
    let mut bursty = outbound();
    let got = burst(&packets, |p, outs, results| {
        bursty.encapsulate_burst(p, outs, results);
    });
    assert_eq!(got, want, "burst seal differs from the aes-gcm crate's");

    // Inbound: one packet possibly tampered, the rest as sent.
    let mut received = got.1;
    let tampered = (tamper_mask != 0 && !received.is_empty()).then(|| {
        let index = tamper_packet % received.len();
        let packet = &mut received[index];
        // Only the ESP part (after the 40-byte IPv6 header) is authenticated.
        let at = 40 + tamper_at % (packet.len() - 40);
        packet[at] ^= tamper_mask;
        index
    });
    let mut sequential = inbound();
    let want = each(&received, |p, out| sequential.decapsulate(p, out));
    let mut bursty = inbound();
    let got = burst(&received, |p, outs, results| {
        bursty.decapsulate_burst(p, outs, results);
    });
    assert_eq!(got.0, want.0, "burst open differs from the aes-gcm crate's");
    for (i, (result, out)) in got.0.iter().zip(&got.1).enumerate() {
        if Some(i) == tampered {
            assert!(result.is_err(), "tampered packet {i} accepted");
        } else if result.is_ok() {
            assert_eq!(out, &want.1[i]);
            assert_eq!(out, &packets[i], "packet {i} delivered as it was sent");
        }
    }
});
