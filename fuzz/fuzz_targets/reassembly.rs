//! The ESP engine's fragment reassembly (`reassembly::Reassembler`), two ways.
//!
//! Input: a mode byte, then the rest.
//! - Mode even: the rest is a sequence of records `[len (2, big-endian), clock step (1), packet]`
//!   pushed one after another while a clock advances by the step in seconds. Checks: it never
//!   panics; every completed datagram is an IPv6 packet whose payload length matches its length
//!   and is at most 40 + 65,535 bytes long.
//! - Mode odd: the rest is `[cuts (1), order seed (1), payload]`: the harness builds one valid
//!   UDP datagram from the payload, cuts it into fragments at 8-byte boundaries chosen by the
//!   cut byte, sends them in an order chosen by the seed (a rotation, possibly reversed). Check:
//!   exactly the original datagram comes out, once, after the last fragment.
#![no_main]

use std::time::{Duration, Instant};

use ipsec_user::fuzzing::reassembly::{DEFAULT_LIMITS, Outcome, Reassembler, has_fragment_header};
use libfuzzer_sys::fuzz_target;

fn check_complete(out: &[u8]) {
    assert!(
        out.len() >= 40,
        "a completed datagram without an IPv6 header"
    );
    assert_eq!(out[0] >> 4, 6, "not IPv6");
    let payload = usize::from(u16::from_be_bytes([out[4], out[5]]));
    assert_eq!(payload + 40, out.len(), "payload length does not match");
    assert!(out.len() <= 40 + 65_535, "a jumbo datagram");
}

fn arbitrary(data: &[u8]) {
    let mut r = Reassembler::new(DEFAULT_LIMITS);
    let start = Instant::now();
    let mut now = start;
    let mut rest = data;
    let mut out = Vec::new();
    while let [hi, lo, step, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (packet, next) = tail.split_at(len);
        now += Duration::from_secs(u64::from(*step % 40));
        out.clear();
        if r.push(packet, now, &mut out) == Outcome::Complete {
            check_complete(&out);
        }
        rest = next;
    }
    let _ = r.take_counts();
}

fn valid(data: &[u8]) {
    let [cuts, seed, payload @ ..] = data else {
        return;
    };
    let payload = &payload[..payload.len().min(9_000)];
    let mut datagram = vec![0x60, 0, 0, 0];
    let upper = 8 + payload.len();
    datagram.extend_from_slice(&(upper as u16).to_be_bytes());
    datagram.extend_from_slice(&[17, 64]);
    datagram.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    datagram.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    datagram.extend_from_slice(&[0x9c, 0x40, 0x23, 0x28]);
    datagram.extend_from_slice(&(upper as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    let body = &datagram[40..];
    // Fragment sizes: multiples of 8 from the cut byte, at least 8.
    let size = 8 * (1 + usize::from(*cuts % 64));
    let mut fragments = Vec::new();
    let mut offset = 0;
    while offset < body.len() {
        let end = (offset + size).min(body.len());
        let more = end < body.len();
        let mut f = datagram[..40].to_vec();
        f[6] = 44;
        let len = (8 + end - offset) as u16;
        f[4..6].copy_from_slice(&len.to_be_bytes());
        let word = ((offset / 8) as u16) << 3 | u16::from(more);
        f.extend_from_slice(&[17, 0]);
        f.extend_from_slice(&word.to_be_bytes());
        f.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        f.extend_from_slice(&body[offset..end]);
        fragments.push(f);
        offset = end;
    }
    if fragments.len() > 128 {
        return;
    }
    let n = fragments.len();
    fragments.rotate_left(usize::from(*seed) % n);
    if seed & 0x80 != 0 {
        fragments.reverse();
    }
    let mut r = Reassembler::new(DEFAULT_LIMITS);
    let now = Instant::now();
    let mut completed = Vec::new();
    for (i, f) in fragments.iter().enumerate() {
        let mut out = Vec::new();
        let outcome = r.push(f, now, &mut out);
        if i + 1 < n {
            assert_eq!(outcome, Outcome::Pending, "fragment {i} of {n}");
        } else if n == 1 {
            // A single fragment with offset 0 and no more is an atomic fragment.
            assert_eq!(outcome, Outcome::Complete);
            completed = out;
        } else {
            assert_eq!(outcome, Outcome::Complete, "the last fragment completes");
            completed = out;
        }
    }
    assert!(
        !has_fragment_header(&completed),
        "the fragment header is gone"
    );
    assert_eq!(
        completed, datagram,
        "the reassembled datagram is the original"
    );
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    if mode % 2 == 0 {
        arbitrary(rest);
    } else {
        valid(rest);
    }
});
