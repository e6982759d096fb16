//! TCP segmentation (`gro::segment`, the TSO packets the TUN hands the engine) and coalescing
//! (`gro::Coalescer`, the GSO packets the engine writes back) of the ESP engine.
//!
//! Input: a mode byte, then per mode:
//! - 0, round trip: MSS (2, big-endian), TCP flags, option words (0-10), options, payload. The
//!   harness builds a well-formed TSO packet, segments it, checks every segment (length field,
//!   sequence number, checksum, flags, payload), coalesces the segments again and checks that
//!   the merged packet segments back into exactly the same segments.
//! - 1, coalescer on arbitrary packets (2-byte length prefixed): every merge re-segments into as
//!   many segments as were merged, carrying the same payload bytes in order.
//! - 2, `segment` on an arbitrary virtio-net header, prefix length and packet: never panics.
//! - 3, `complete_checksum` on an arbitrary header and packet: never panics.
#![no_main]

use ipsec_fuzz::tcp_checksum;
use ipsec_user::fuzzing::gro::{self, Coalescer, PLAIN, VNET_HDR_LEN};
use ipsec_user::fuzzing::wire::{
    tcp_flags::{ACK, FIN, PSH},
    vnet_flags::NEEDS_CSUM,
    vnet_gso::TCPV6 as GSO_TCPV6,
};
use libfuzzer_sys::fuzz_target;

/// The coalescer's cap on a merged packet's IPv6 payload.
const MAX_MERGED_PAYLOAD: usize = u16::MAX as usize;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => round_trip(rest),
        1 => coalesce_arbitrary(rest),
        2 => {
            let Some((hdr, rest)) = split_hdr(rest) else {
                return;
            };
            let Some((&prefix, packet)) = rest.split_first() else {
                return;
            };
            let prefix = usize::from(prefix % 64);
            let mut scratch = vec![0xee; prefix];
            gro::segment(&hdr, packet, &mut scratch, prefix, |seg| {
                assert!(seg.len() >= prefix + 40, "segment shorter than its headers");
            });
        }
        _ => {
            let Some((hdr, packet)) = split_hdr(rest) else {
                return;
            };
            let mut packet = packet.to_vec();
            let len = packet.len();
            gro::complete_checksum(&hdr, &mut packet);
            assert_eq!(packet.len(), len);
        }
    }
});

fn split_hdr(data: &[u8]) -> Option<([u8; VNET_HDR_LEN], &[u8])> {
    let hdr = data.get(..VNET_HDR_LEN)?.try_into().ok()?;
    Some((hdr, &data[VNET_HDR_LEN..]))
}

/// The virtio-net header the kernel puts on a TSO packet of `header_len` header bytes.
fn tso_header(header_len: usize, mss: u16) -> [u8; VNET_HDR_LEN] {
    let mut hdr = [0; VNET_HDR_LEN];
    hdr[0] = NEEDS_CSUM;
    hdr[1] = GSO_TCPV6;
    hdr[2..4].copy_from_slice(&u16::try_from(header_len).expect("short").to_le_bytes());
    hdr[4..6].copy_from_slice(&mss.to_le_bytes());
    hdr[6..8].copy_from_slice(&40u16.to_le_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
    hdr
}

fn segments(hdr: &[u8; VNET_HDR_LEN], packet: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    gro::segment(hdr, packet, &mut scratch, 0, |seg| out.push(seg.to_vec())).then_some(out)
}

fn round_trip(data: &[u8]) {
    let [m0, m1, flags, words, rest @ ..] = data else {
        return;
    };
    let mss = u16::from_be_bytes([*m0, *m1]);
    let option_len = usize::from(words % 11) * 4;
    let Some(options) = rest.get(..option_len) else {
        return;
    };
    let payload = &rest[option_len..];
    let seq = 0xffff_f000; // close to wrapping, so sequence arithmetic must wrap
    let packet = ipsec_fuzz::tcp_packet(seq, *flags, options, payload);
    let header_len = 60 + option_len;
    let hdr = tso_header(header_len, mss);

    let Some(segs) = segments(&hdr, &packet) else {
        assert_eq!(mss, 0, "a well-formed tso packet was refused");
        return;
    };
    assert_ne!(mss, 0, "segmented with an mss of 0");
    assert_eq!(gro::segment_count(&hdr, &packet), Some(segs.len()));
    let mut joined = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        assert!(seg.len() > header_len && seg.len() - header_len <= usize::from(mss));
        assert!(
            last || seg.len() - header_len == usize::from(mss),
            "short middle segment"
        );
        assert_eq!(seg[..4], packet[..4]);
        assert_eq!(
            usize::from(u16::from_be_bytes([seg[4], seg[5]])),
            seg.len() - 40
        );
        assert_eq!(seg[6..44], packet[6..44], "addresses, ports changed");
        let want_seq = u32::try_from(joined.len())
            .expect("short")
            .wrapping_add(seq);
        assert_eq!(
            seg[44..48],
            want_seq.to_be_bytes(),
            "segment {i} sequence number"
        );
        assert_eq!(seg[48..53], packet[48..53]);
        if !last {
            assert_eq!(
                seg[53] & (FIN | PSH),
                0,
                "FIN or PSH before the last segment"
            );
        } else {
            assert_eq!(seg[53], packet[53] & if i > 0 { !0x80 } else { 0xff });
        }
        assert_eq!(seg[54..56], packet[54..56]);
        assert_eq!(
            seg[58..header_len],
            packet[58..header_len],
            "options changed"
        );
        assert_eq!(
            u16::from_be_bytes([seg[56], seg[57]]),
            tcp_checksum(seg),
            "segment {i} checksum"
        );
        joined.extend_from_slice(&seg[header_len..]);
    }
    assert_eq!(
        joined, payload,
        "segments do not carry the payload in order"
    );

    // Coalescing: what the kernel's GRO would merge, the coalescer merges back whole.
    if payload.is_empty() {
        assert!(segs.is_empty(), "segments of an empty payload");
        return;
    }
    // The first segment lost FIN and PSH when there are more, so it is judged on its own flags.
    let startable = segs[0][53] & !PSH == ACK;
    let mut coalescer = Coalescer::default();
    assert_eq!(
        coalescer.start(&segs[0]),
        startable,
        "start disagrees with the merge rules"
    );
    // A FIN, CWR or ECE on the original stays out of a merge (as in the kernel's GRO).
    if !startable
        || packet[53] & !PSH != ACK
        || header_len - 40 + payload.len() > MAX_MERGED_PAYLOAD
    {
        return;
    }
    for seg in &segs[1..] {
        assert!(coalescer.append(seg), "a contiguous segment was not merged");
    }
    let (merged_hdr, merged) = coalescer.take().expect("a merged packet");
    let mut merged = merged.to_vec();
    assert!(coalescer.take().is_none(), "take twice");
    if segs.len() == 1 {
        assert_eq!(merged_hdr, PLAIN);
        assert_eq!(merged, segs[0]);
        return;
    }
    assert_eq!(merged[header_len..], *payload);
    assert_eq!(merged[53], packet[53], "merged flags");
    assert_eq!(gro::segment_count(&merged_hdr, &merged), Some(segs.len()));
    assert_eq!(
        segments(&merged_hdr, &merged).as_ref(),
        Some(&segs),
        "the merged packet does not segment back into the same segments"
    );
    // The partial checksum completes to the full one (what the kernel does with NEEDS_CSUM).
    assert!(gro::complete_checksum(&merged_hdr, &mut merged));
    assert_eq!(
        u16::from_be_bytes([merged[56], merged[57]]),
        tcp_checksum(&merged)
    );
}

fn coalesce_arbitrary(mut data: &[u8]) {
    let mut coalescer = Coalescer::default();
    // Payload bytes of the segments merged so far.
    let mut merged_payloads: Vec<Vec<u8>> = Vec::new();
    let check = |coalescer: &mut Coalescer, payloads: &mut Vec<Vec<u8>>| {
        let Some((hdr, packet)) = coalescer.take() else {
            assert!(payloads.is_empty());
            return;
        };
        if payloads.len() > 1 {
            assert_eq!(gro::segment_count(&hdr, packet), Some(payloads.len()));
            let segs = segments(&hdr, packet).expect("a merged packet segments");
            assert_eq!(segs.len(), payloads.len());
            let header_len = 40 + usize::from(packet[52] >> 4) * 4;
            for (seg, payload) in segs.iter().zip(payloads.iter()) {
                assert_eq!(
                    seg[header_len..],
                    payload[..],
                    "merged payload out of order"
                );
            }
        } else {
            assert_eq!(hdr, PLAIN);
        }
        payloads.clear();
    };
    while let [l0, l1, rest @ ..] = data {
        let len = usize::from(u16::from_be_bytes([*l0, *l1])).min(rest.len());
        let (packet, tail) = rest.split_at(len);
        data = tail;
        let header_len = packet
            .get(52)
            .map_or(0, |b| 40 + usize::from(b >> 4) * 4)
            .min(packet.len());
        if coalescer.append(packet) {
            merged_payloads.push(packet[header_len..].to_vec());
            continue;
        }
        check(&mut coalescer, &mut merged_payloads);
        if coalescer.start(packet) {
            merged_payloads.push(packet[header_len..].to_vec());
        }
    }
    check(&mut coalescer, &mut merged_payloads);
}
