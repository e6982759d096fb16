//! The Internet checksum (RFC 1071) as TCP, UDP and ICMPv6 use it over IPv6 (RFC 8200 §8.1),
//! and its incremental update (RFC 1624).

/// The ones'-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded
/// with zero), not folded: add sums, then [`fold`]. Reads 4 bytes at a time.
pub fn sum(data: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    for (i, b) in words.remainder().iter().enumerate() {
        sum += u64::from(*b) << if i % 2 == 0 { 8 } else { 0 };
    }
    sum
}

/// Folds a sum to 16 bits (end-around carry), not complemented.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    u16::try_from(sum).unwrap_or(u16::MAX)
}

/// The sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, upper-layer length and next
/// header, not folded.
pub fn pseudo_header(src: &[u8; 16], dst: &[u8; 16], next_header: u8, upper_len: usize) -> u64 {
    let len = u64::try_from(upper_len).unwrap_or(u64::MAX);
    sum(src) + sum(dst) + (len >> 16) + (len & 0xffff) + u64::from(next_header)
}

/// The checksum to put in an upper-layer header whose checksum field is zero: the complement of
/// the pseudo-header and `upper` (header and data).
pub fn upper_layer(src: &[u8; 16], dst: &[u8; 16], next_header: u8, upper: &[u8]) -> u16 {
    !fold(pseudo_header(src, dst, next_header, upper.len()) + sum(upper))
}

/// RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'): the checksum after a 16-bit word changes from `old`
/// to `new`. A value at an odd offset from the start of the summed data straddles two words and
/// counts byte-swapped (RFC 1071 §2(B)): pass it swapped.
pub fn adjust(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        // Any split into 4-byte words and a remainder gives the same sum as 2-byte words.
        for len in 0..data.len() {
            let pairs: u64 = data[..len]
                .chunks(2)
                .map(|p| u64::from(u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)])))
                .sum();
            assert_eq!(fold(sum(&data[..len])), fold(pairs), "{len} bytes");
        }
    }

    #[test]
    fn a_checksummed_buffer_sums_to_all_ones_and_adjust_keeps_it_so() {
        let src = [0xfd; 16];
        let dst = [0x20; 16];
        let mut upper = vec![0x12, 0x34, 0, 0, 0x56, 0x78, 0x9a];
        let checksum = upper_layer(&src, &dst, 6, &upper);
        upper[2..4].copy_from_slice(&checksum.to_be_bytes());
        let verify = |u: &[u8]| fold(pseudo_header(&src, &dst, 6, u.len()) + sum(u));
        assert_eq!(verify(&upper), 0xffff);
        let new = adjust(checksum, 0x5678, 0x0102);
        upper[4..6].copy_from_slice(&[0x01, 0x02]);
        upper[2..4].copy_from_slice(&new.to_be_bytes());
        assert_eq!(verify(&upper), 0xffff);
    }
}
