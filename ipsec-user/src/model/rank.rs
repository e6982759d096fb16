//! `Sp::rank`: the total precedence order of policies as one `u64`, lower first.
//!
//! The datapath sorts (or keys) policies by this number, and the reference classifier scans in
//! this order, so the spec's precedence rules are written exactly once, here:
//!
//! | bits    | value                                                        |
//! |---------|--------------------------------------------------------------|
//! | 63      | 0 if `--priority` was given, else 1                          |
//! | 47..=62 | the priority N (0 without one)                               |
//! | 39..=46 | 128 - destination prefix length (no priority only)           |
//! | 31..=38 | 128 - source prefix length (no priority only)                |
//! | 30      | protocol is any (no priority only)                           |
//! | 29      | destination port (ICMPv6 type) is any (no priority only)     |
//! | 28      | source port is any (no priority only)                        |
//! | 0..=27  | `seq`: the older policy wins every remaining tie             |
//!
//! Policies with a priority therefore rank as `N << 47 | seq`: before all others, lower N first,
//! equal N by age. Specificity is deliberately not consulted between prioritised policies: the
//! user chose their order.

use super::sp::Sp;
use super::spd::SEQ_BITS;
use super::types::UpperLayerProtocol;

const NO_PRIORITY_SHIFT: u32 = 63;
const PRIORITY_SHIFT: u32 = 47;
const DESTINATION_LEN_SHIFT: u32 = 39;
const SOURCE_LEN_SHIFT: u32 = 31;
const PROTOCOL_ANY_SHIFT: u32 = 30;
const DESTINATION_PORT_ANY_SHIFT: u32 = 29;
const SOURCE_PORT_ANY_SHIFT: u32 = 28;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

// The seq field must end exactly where the specificity fields begin.
const _: () = assert!(SEQ_BITS == SOURCE_PORT_ANY_SHIFT);

impl Sp {
    /// The policy's place in the precedence order: lower ranks are tried first. Unique among
    /// policies of an SPD because `seq` is.
    pub fn rank(&self) -> u64 {
        let seq = u64::from(self.seq) & SEQ_MASK;
        let Some(priority) = self.priority else {
            let flag = |any: bool| u64::from(any);
            return 1 << NO_PRIORITY_SHIFT
                | u64::from(128 - self.destination.prefix_len()) << DESTINATION_LEN_SHIFT
                | u64::from(128 - self.source.prefix_len()) << SOURCE_LEN_SHIFT
                | flag(self.protocol == UpperLayerProtocol::Any) << PROTOCOL_ANY_SHIFT
                | flag(self.destination_port.is_none()) << DESTINATION_PORT_ANY_SHIFT
                | flag(self.source_port.is_none()) << SOURCE_PORT_ANY_SHIFT
                | seq;
        };
        u64::from(priority) << PRIORITY_SHIFT | seq
    }
}

/// Why a policy ranks before another one: the first rule of the precedence order (see the
/// module docs) that tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum RankReason {
    /// No other policy of that direction matches.
    OnlyMatch,
    /// It has a priority and the other has none.
    Priority { priority: u16 },
    /// Both have priorities; this one is lower.
    LowerPriority { priority: u16, other: u16 },
    /// Without priorities: a longer destination prefix.
    DestinationPrefix { len: u8, other: u8 },
    /// Then a longer source prefix.
    SourcePrefix { len: u8, other: u8 },
    /// Then a named protocol over any.
    Protocol,
    /// Then a named destination port (ICMPv6 type) over any.
    DestinationPort,
    /// Then a named source port over any.
    SourcePort,
    /// Everything else equal (or equal priorities): the older policy.
    Older,
}

impl std::fmt::Display for RankReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OnlyMatch => f.write_str("the only matching policy"),
            Self::Priority { priority } => {
                write!(
                    f,
                    "priority {priority} (a policy with a priority comes first)"
                )
            }
            Self::LowerPriority { priority, other } => {
                write!(f, "priority {priority} is lower than {other}")
            }
            Self::DestinationPrefix { len, other } => {
                write!(f, "longer destination prefix (/{len} over /{other})")
            }
            Self::SourcePrefix { len, other } => {
                write!(f, "longer source prefix (/{len} over /{other})")
            }
            Self::Protocol => f.write_str("names the protocol (the other has any)"),
            Self::DestinationPort => f.write_str("names the destination port (the other has any)"),
            Self::SourcePort => f.write_str("names the source port (the other has any)"),
            Self::Older => f.write_str("older (everything else equal)"),
        }
    }
}

impl Sp {
    /// Why this policy ranks before `next`, the next matching policy in rank order (`None`: no
    /// other matches). Follows the bit layout of `rank` field by field.
    pub fn rank_reason(&self, next: Option<&Sp>) -> RankReason {
        let Some(next) = next else {
            return RankReason::OnlyMatch;
        };
        match (self.priority, next.priority) {
            (Some(priority), None) => return RankReason::Priority { priority },
            (Some(priority), Some(other)) if priority != other => {
                return RankReason::LowerPriority { priority, other };
            }
            (Some(_), Some(_)) => return RankReason::Older,
            (None, _) => {}
        }
        let (len, other) = (self.destination.prefix_len(), next.destination.prefix_len());
        if len != other {
            return RankReason::DestinationPrefix { len, other };
        }
        let (len, other) = (self.source.prefix_len(), next.source.prefix_len());
        if len != other {
            return RankReason::SourcePrefix { len, other };
        }
        if self.protocol != next.protocol {
            return RankReason::Protocol;
        }
        if self.destination_port.is_some() != next.destination_port.is_some() {
            return RankReason::DestinationPort;
        }
        if self.source_port.is_some() != next.source_port.is_some() {
            return RankReason::SourcePort;
        }
        RankReason::Older
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;
    use std::net::Ipv6Addr;

    use ipnet::Ipv6Net;

    use super::*;
    use crate::model::types::{Action, Direction, Mode};

    /// The spec's precedence rules written as a plain comparator, independent of the bit layout.
    fn precedes(a: &Sp, b: &Sp) -> Ordering {
        let named = |p: UpperLayerProtocol| p != UpperLayerProtocol::Any;
        match (a.priority, b.priority) {
            (Some(x), Some(y)) => x.cmp(&y).then(a.seq.cmp(&b.seq)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => b
                .destination
                .prefix_len()
                .cmp(&a.destination.prefix_len())
                .then(b.source.prefix_len().cmp(&a.source.prefix_len()))
                .then(named(b.protocol).cmp(&named(a.protocol)))
                .then(
                    b.destination_port
                        .is_some()
                        .cmp(&a.destination_port.is_some()),
                )
                .then(b.source_port.is_some().cmp(&a.source_port.is_some()))
                .then(a.seq.cmp(&b.seq)),
        }
    }

    /// xorshift64*: deterministic, no dependency, good enough to scatter test policies.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn sp(seq: u32) -> Sp {
        Sp {
            id: seq,
            seq,
            name: format!("sp{seq}"),
            source: Ipv6Net::default(),
            destination: Ipv6Net::default(),
            source_port: None,
            destination_port: None,
            protocol: UpperLayerProtocol::Any,
            direction: Direction::Out,
            action: Action::Discard,
            mode: Mode::Transport,
            sa_name: None,
            priority: None,
            ike_peer: None,
        }
    }

    fn random_sp(rng: &mut Rng, seq: u32) -> Sp {
        let mut sp = sp(seq);
        // Few distinct values, so that ties on every field (and then seq) actually happen.
        let len = |rng: &mut Rng| [0u8, 48, 64, 128][usize::try_from(rng.below(4)).expect("small")];
        sp.source = Ipv6Net::new(Ipv6Addr::UNSPECIFIED, len(rng)).expect("valid length");
        sp.destination = Ipv6Net::new(Ipv6Addr::UNSPECIFIED, len(rng)).expect("valid length");
        sp.protocol = UpperLayerProtocol::ALL[usize::try_from(rng.below(4)).expect("small")].0;
        if sp.protocol != UpperLayerProtocol::Any && rng.below(2) == 0 {
            sp.destination_port = Some(80);
        }
        if matches!(
            sp.protocol,
            UpperLayerProtocol::Tcp | UpperLayerProtocol::Udp
        ) && rng.below(2) == 0
        {
            sp.source_port = Some(1024);
        }
        if rng.below(3) == 0 {
            sp.priority =
                Some([0u16, 1, 7, u16::MAX][usize::try_from(rng.below(4)).expect("small")]);
        }
        sp
    }

    #[test]
    fn rank_order_equals_the_direct_comparator() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seq_max = (1u32 << SEQ_BITS) - 1;
        let sps: Vec<Sp> = (0..300u32)
            .map(|i| {
                // Spread seqs over the whole field, including its top, while keeping them unique.
                let seq = if i % 2 == 0 { i } else { seq_max - i };
                random_sp(&mut rng, seq)
            })
            .collect();
        for a in &sps {
            for b in &sps {
                assert_eq!(
                    a.rank().cmp(&b.rank()),
                    precedes(a, b),
                    "rank disagrees with the comparator for {a:?} and {b:?}"
                );
            }
        }
    }

    #[test]
    fn rank_reason_names_the_rule_that_decided() {
        let net = |s: &str| s.parse::<Ipv6Net>().expect("a prefix");
        let (mut a, mut b) = (sp(1), sp(2));
        assert_eq!(a.rank_reason(None), RankReason::OnlyMatch);
        assert_eq!(a.rank_reason(Some(&b)), RankReason::Older);
        b.source_port = Some(1);
        b.protocol = UpperLayerProtocol::Tcp;
        assert_eq!(b.rank_reason(Some(&a)), RankReason::Protocol);
        a.protocol = UpperLayerProtocol::Tcp;
        assert_eq!(b.rank_reason(Some(&a)), RankReason::SourcePort);
        a.destination_port = Some(22);
        assert_eq!(a.rank_reason(Some(&b)), RankReason::DestinationPort);
        b.source = net("2001:db8::/48");
        assert_eq!(
            b.rank_reason(Some(&a)),
            RankReason::SourcePrefix { len: 48, other: 0 }
        );
        a.destination = net("2001:db8::/64");
        assert_eq!(
            a.rank_reason(Some(&b)),
            RankReason::DestinationPrefix { len: 64, other: 0 }
        );
        b.priority = Some(7);
        assert_eq!(
            b.rank_reason(Some(&a)),
            RankReason::Priority { priority: 7 }
        );
        a.priority = Some(3);
        assert_eq!(
            a.rank_reason(Some(&b)),
            RankReason::LowerPriority {
                priority: 3,
                other: 7
            }
        );
        b.priority = Some(3);
        assert_eq!(a.rank_reason(Some(&b)), RankReason::Older);
        assert_eq!(
            a.rank_reason(Some(&b)).to_string(),
            "older (everything else equal)"
        );

        // Over random pairs, the reason is the first field where the winner's rank bits are
        // lower: it never names a field on which the two are equal.
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for seq in 0..2_000u32 {
            let (x, y) = (random_sp(&mut rng, seq), random_sp(&mut rng, seq + 5_000));
            let (win, lose) = if x.rank() < y.rank() {
                (&x, &y)
            } else {
                (&y, &x)
            };
            let decided = match win.rank_reason(Some(lose)) {
                RankReason::Priority { .. } => win.priority.is_some() && lose.priority.is_none(),
                RankReason::LowerPriority { priority, other } => priority < other,
                RankReason::DestinationPrefix { len, other } => len > other,
                RankReason::SourcePrefix { len, other } => {
                    len > other && win.destination.prefix_len() == lose.destination.prefix_len()
                }
                RankReason::Protocol => win.protocol != UpperLayerProtocol::Any,
                RankReason::DestinationPort => win.destination_port.is_some(),
                RankReason::SourcePort => win.source_port.is_some(),
                RankReason::Older => win.seq < lose.seq,
                RankReason::OnlyMatch => false,
            };
            assert!(decided, "{win:?} over {lose:?}");
        }
    }

    #[test]
    fn priority_comes_first_lower_first() {
        let mut specific = sp(0);
        specific.source = "2001:db8::1/128".parse().expect("net");
        specific.destination = "2001:db8::2/128".parse().expect("net");
        let mut low = sp(5);
        low.priority = Some(65535);
        let mut high = sp(6);
        high.priority = Some(0);
        assert!(
            low.rank() < specific.rank(),
            "any priority beats any specificity"
        );
        assert!(high.rank() < low.rank(), "lower n first");
        let mut same = sp(1);
        same.priority = Some(0);
        assert!(same.rank() < high.rank(), "equal n: older first");
    }

    #[test]
    fn specificity_order() {
        let base = sp(10);
        let mut dst = sp(11);
        dst.destination = "2001:db8::/33".parse().expect("net");
        let mut src = sp(12);
        src.source = "2001:db8::/128".parse().expect("net");
        src.protocol = UpperLayerProtocol::Tcp;
        src.destination_port = Some(1);
        src.source_port = Some(1);
        assert!(
            dst.rank() < src.rank(),
            "destination length before source length"
        );
        assert!(src.rank() < base.rank());

        let mut proto = sp(13);
        proto.protocol = UpperLayerProtocol::Udp;
        let mut dport = sp(14);
        dport.protocol = UpperLayerProtocol::Any;
        dport.destination_port = Some(53);
        dport.source_port = Some(53);
        assert!(proto.rank() < dport.rank(), "protocol before ports");

        let mut both = sp(15);
        both.protocol = UpperLayerProtocol::Udp;
        both.destination_port = Some(53);
        let mut sport = sp(16);
        sport.protocol = UpperLayerProtocol::Udp;
        sport.source_port = Some(53);
        assert!(
            both.rank() < sport.rank(),
            "destination port before source port"
        );
        assert!(sport.rank() < proto.rank(), "a source port beats none");

        let older = sp(1);
        assert!(older.rank() < base.rank(), "older wins ties");
    }

    #[test]
    fn bit_layout() {
        let mut p = sp(3);
        p.priority = Some(2);
        assert_eq!(p.rank(), 2 << 47 | 3);
        let q = sp(3);
        assert_eq!(q.rank(), 1 << 63 | 128 << 39 | 128 << 31 | 0b111 << 28 | 3);
    }
}
