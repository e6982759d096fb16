//! MSS clamping (`mss::clamp`) of the ESP engine on arbitrary packets.
//!
//! Input: the MSS limit (2, big-endian), a flag byte, then the packet. With flag bit 0 the
//! harness first writes a correct TCP checksum into the packet (when it is long enough to be
//! IPv6 + TCP), so the check below has something to keep.
//!
//! Checks: it never panics; the length never changes; a clamp changes only the 2 MSS bytes of an
//! MSS option (kind 2, length 4) inside the TCP header and the checksum, lowers the MSS to the
//! limit, and only of a SYN; the checksum stays exactly as valid as it was (RFC 1624).
#![no_main]

use ipsec_fuzz::{tcp_checksum, tcp_checksum_ok};
use ipsec_user::fuzzing::mss;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [m0, m1, flags, packet @ ..] = data else {
        return;
    };
    let max = u16::from_be_bytes([*m0, *m1]);
    let mut packet = packet.to_vec();
    let is_tcp = packet.len() >= 60 && packet[6] == 6;
    if flags & 1 != 0 && is_tcp {
        let sum = tcp_checksum(&packet);
        packet[56..58].copy_from_slice(&sum.to_be_bytes());
    }
    let before = packet.clone();
    let valid_before = is_tcp && tcp_checksum_ok(&before);

    let changed = mss::clamp(&mut packet, max);

    assert_eq!(packet.len(), before.len());
    if !changed {
        assert_eq!(packet, before, "clamp changed a packet and said it did not");
        return;
    }
    assert!(
        is_tcp && before[0] >> 4 == 6,
        "clamped something that is not IPv6 TCP"
    );
    assert_ne!(before[53] & 0x02, 0, "clamped a packet that is not a SYN");
    let header_len = usize::from(before[52] >> 4) * 4;
    let diffs: Vec<usize> = (0..packet.len())
        .filter(|&i| packet[i] != before[i] && !(56..58).contains(&i))
        .collect();
    assert!(!diffs.is_empty() && diffs.len() <= 2, "changed {diffs:?}");
    let option = (40 + 20..40 + header_len - 3)
        .find(|&i| {
            before[i] == 2 && before[i + 1] == 4 && diffs.iter().all(|&d| d == i + 2 || d == i + 3)
        })
        .expect("the changed bytes are the value of an mss option in the tcp header");
    let old = u16::from_be_bytes([before[option + 2], before[option + 3]]);
    let new = u16::from_be_bytes([packet[option + 2], packet[option + 3]]);
    assert!(
        old > max && new == max,
        "mss {old} -> {new} with limit {max}"
    );
    let valid_after = tcp_checksum_ok(&packet);
    assert_eq!(
        valid_after,
        valid_before,
        "the incremental checksum update broke the checksum (mss option at tcp offset {})",
        option - 40
    );
});
