//! Traffic selectors (RFC 7296 §3.13.1): address ranges of one family, a protocol and a port
//! range; their wire form and the narrowing of §2.9.
//!
//! Contract: [`parse`] never panics; a selector's start must not exceed its end, its length
//! must be its type's (16 octets for IPv4, 40 for IPv6), and the Number of TSs must match
//! what the payload holds. [`narrow`] returns the intersection of what a peer proposed with
//! what the local policy allows, one selector per overlapping pair, in the peer's order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::message::MessageError;
use super::payload::{malformed, take};

/// TS Type (§3.13.1).
const TS_IPV4_ADDR_RANGE: u8 = 7;
const TS_IPV6_ADDR_RANGE: u8 = 8;

/// One traffic selector: `start..=end` addresses (both of one family), IP protocol (0: any),
/// `start_port..=end_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    pub protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start: IpAddr,
    pub end: IpAddr,
}

impl TrafficSelector {
    /// Every IPv6 address, protocol and port.
    pub fn any_v6() -> Self {
        Self::range(
            Ipv6Addr::UNSPECIFIED.into(),
            Ipv6Addr::from(u128::MAX).into(),
        )
    }

    /// Every IPv4 address, protocol and port.
    pub fn any_v4() -> Self {
        Self::range(Ipv4Addr::UNSPECIFIED.into(), Ipv4Addr::BROADCAST.into())
    }

    /// One IPv6 host, any protocol and port.
    pub fn ipv6_host(addr: Ipv6Addr) -> Self {
        Self::range(addr.into(), addr.into())
    }

    /// An address range, any protocol and port.
    pub fn range(start: IpAddr, end: IpAddr) -> Self {
        Self {
            protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start,
            end,
        }
    }

    /// A prefix (`fd00::/64`) as a range, any protocol and port.
    pub fn prefix(net: ipnet::IpNet) -> Self {
        Self::range(net.network(), net.broadcast())
    }

    /// The overlap of two selectors, if any (§2.9): the narrower protocol (0 is any), the
    /// intersection of the port and address ranges.
    pub fn intersect(&self, other: &Self) -> Option<Self> {
        let protocol = match (self.protocol, other.protocol) {
            (0, p) | (p, 0) => p,
            (a, b) if a == b => a,
            _ => return None,
        };
        let start_port = self.start_port.max(other.start_port);
        let end_port = self.end_port.min(other.end_port);
        let start = max_addr(self.start, other.start)?;
        let end = min_addr(self.end, other.end)?;
        (start_port <= end_port && start <= end).then_some(Self {
            protocol,
            start_port,
            end_port,
            start,
            end,
        })
    }
}

fn max_addr(a: IpAddr, b: IpAddr) -> Option<IpAddr> {
    (a.is_ipv4() == b.is_ipv4()).then(|| a.max(b))
}

fn min_addr(a: IpAddr, b: IpAddr) -> Option<IpAddr> {
    (a.is_ipv4() == b.is_ipv4()).then(|| a.min(b))
}

/// §2.9 narrowing as the responder: every overlap of a proposed selector with an allowed one,
/// in the proposal's order, without duplicates. Empty when nothing overlaps
/// (`TS_UNACCEPTABLE`).
pub fn narrow(proposed: &[TrafficSelector], allowed: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for p in proposed {
        for a in allowed {
            if let Some(ts) = p.intersect(a)
                && !out.contains(&ts)
            {
                out.push(ts);
            }
        }
    }
    out
}

/// True when every selector of `inner` lies inside one of `outer` (an initiator checks that the
/// responder narrowed and did not widen).
pub fn within(inner: &[TrafficSelector], outer: &[TrafficSelector]) -> bool {
    inner
        .iter()
        .all(|i| outer.iter().any(|o| o.intersect(i) == Some(*i)))
}

/// Parses a TS payload body.
///
/// # Errors
/// [`MessageError`] for a count, type, length or range that does not hold.
pub fn parse(body: &[u8]) -> Result<Vec<TrafficSelector>, MessageError> {
    let (head, mut rest) = take(body, 4, "traffic selector payload")?;
    let count = usize::from(head[0]);
    let mut selectors = Vec::new();
    while !rest.is_empty() {
        let (fixed, _) = take(rest, 8, "traffic selector")?;
        let len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        let addr_len = match (fixed[0], len) {
            (TS_IPV4_ADDR_RANGE, 16) => 4,
            (TS_IPV6_ADDR_RANGE, 40) => 16,
            _ => {
                return Err(malformed(
                    "traffic selector",
                    "unknown type or wrong length",
                ));
            }
        };
        let (ts, tail) = take(rest, len, "traffic selector")?;
        let addr = |at: usize| -> IpAddr {
            let bytes = &ts[at..at + addr_len];
            if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
                Ipv4Addr::from(v4).into()
            } else {
                let mut v6 = [0; 16];
                v6.copy_from_slice(bytes);
                Ipv6Addr::from(v6).into()
            }
        };
        let selector = TrafficSelector {
            protocol: ts[1],
            start_port: u16::from_be_bytes([ts[4], ts[5]]),
            end_port: u16::from_be_bytes([ts[6], ts[7]]),
            start: addr(8),
            end: addr(8 + addr_len),
        };
        if selector.start > selector.end || selector.start_port > selector.end_port {
            return Err(malformed("traffic selector", "start after end"));
        }
        selectors.push(selector);
        rest = tail;
    }
    if selectors.len() != count || count == 0 {
        return Err(malformed(
            "traffic selector payload",
            "number of selectors disagrees with the payload",
        ));
    }
    Ok(selectors)
}

/// Appends a TS payload body.
pub fn emit(selectors: &[TrafficSelector], out: &mut Vec<u8>) {
    out.extend_from_slice(&[u8::try_from(selectors.len()).unwrap_or(u8::MAX), 0, 0, 0]);
    for ts in selectors {
        let (kind, len) = if ts.start.is_ipv4() {
            (TS_IPV4_ADDR_RANGE, 16u16)
        } else {
            (TS_IPV6_ADDR_RANGE, 40)
        };
        out.extend_from_slice(&[kind, ts.protocol]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&ts.start_port.to_be_bytes());
        out.extend_from_slice(&ts.end_port.to_be_bytes());
        for addr in [ts.start, ts.end] {
            match addr {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn ipv4_fixture_deconstructs_and_round_trips() {
        let bytes = [
            1, 0, 0, 0, // one selector
            7, 6, 0, 16, 0, 80, 0, 80, 192, 0, 2, 0, 192, 0, 2, 255, // TCP port 80 192.0.2/24
        ];
        let ts = parse(&bytes).expect("parsing");
        assert_eq!(
            ts,
            vec![TrafficSelector {
                protocol: 6,
                start_port: 80,
                end_port: 80,
                start: Ipv4Addr::new(192, 0, 2, 0).into(),
                end: Ipv4Addr::new(192, 0, 2, 255).into(),
            }]
        );
        let mut out = Vec::new();
        emit(&ts, &mut out);
        assert_eq!(out, bytes);
        let mut bad = bytes;
        bad[0] = 2;
        assert!(parse(&bad).is_err(), "count of 2 with one selector");
        bad = bytes;
        bad[18] = 0;
        assert!(parse(&bad).is_err(), "end before start");
    }

    #[test]
    fn ipv6_round_trip_and_cuts() {
        let ts = vec![
            TrafficSelector::prefix("fd00:1::/64".parse().expect("a prefix")),
            TrafficSelector::any_v4(),
        ];
        let mut out = Vec::new();
        emit(&ts, &mut out);
        assert_eq!(out.len(), 4 + 40 + 16);
        assert_eq!(parse(&out).expect("parsing"), ts);
        for cut in 0..out.len() {
            assert!(parse(&out[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn narrowing_keeps_the_overlap_only() {
        let proposed = [TrafficSelector::any_v6(), TrafficSelector::any_v4()];
        let allowed = [TrafficSelector::prefix(
            "fd00:2::/64".parse().expect("a prefix"),
        )];
        let narrowed = narrow(&proposed, &allowed);
        assert_eq!(narrowed, allowed.to_vec());
        assert!(within(&narrowed, &proposed));
        assert!(!within(&proposed, &narrowed));

        let tcp = TrafficSelector {
            protocol: 6,
            start_port: 1000,
            end_port: 2000,
            ..TrafficSelector::ipv6_host(Ipv6Addr::LOCALHOST)
        };
        let ports = TrafficSelector {
            start_port: 1500,
            end_port: 9000,
            ..TrafficSelector::any_v6()
        };
        let both = tcp.intersect(&ports).expect("an overlap");
        assert_eq!(
            (both.protocol, both.start_port, both.end_port),
            (6, 1500, 2000)
        );
        assert_eq!((both.start, both.end), (v6("::1"), v6("::1")));
        let udp = TrafficSelector {
            protocol: 17,
            ..tcp
        };
        assert_eq!(tcp.intersect(&udp), None);
        assert!(narrow(&[TrafficSelector::any_v4()], &allowed).is_empty());
    }
}
