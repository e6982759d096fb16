//! The policy set and the flows of `cargo xtask bench filter`, and what each flow's verdict must
//! be. Written once here; the xipsec state file and the nftables ruleset are both made from
//! [`PolicySet::policies`], and the test of `bench_nft` checks this module's [`PolicySet::verdict`]
//! against xipsec's reference classifier.
//!
//! Policies (inbound UDP from `2001:db8:1::/64` to `2001:db8:2::/64`), in two priority bands
//! whose members never overlap within a band, so nftables can hold each band in one verdict map
//! with intervals (a concatenated interval set refuses overlapping elements) and evaluate the
//! bands in priority order, which is xipsec's precedence:
//!
//! - band 1 (priority [`BAND1_PRIORITY`]): `n - 8` policies, policy `j` for source block
//!   `2001:db8:1::(16 j)/124`, destination port [`BAND1_DPORT`], any source port; discard for
//!   even `j`, none for odd `j`;
//! - band 2 (priority [`BAND2_PRIORITY`]): 8 policies for the whole `/64`, source port
//!   `1000 + k`, any destination port; discard for even `k`, none for odd `k`. Band 2 overlaps
//!   band 1 (a band-1 flow with source port 1000-1007 matches both), so a filter that got the
//!   precedence wrong gives other verdicts.
//!
//! Flows: two tables of [`PolicySet::flows`] distinct flows each (distinct destinations), one
//! whose every verdict is discard (half band-1 hits, half band-2 hits) and one whose every
//! verdict is pass (a third band-1 hits, a third band-2 hits, a third matching no policy).
//! Band-1 hits carry source ports 1000-1007, so each of them also matches a band-2 policy of the
//! opposite verdict.

use std::{fmt::Write as _, net::Ipv6Addr};

use ipsec_common::abi::bench::GenFlow;

pub(crate) const BAND1_PRIORITY: u16 = 10;
pub(crate) const BAND2_PRIORITY: u16 = 20;
pub(crate) const BAND1_DPORT: u16 = 4000;
/// The destination port of flows that must miss band 1.
pub(crate) const OTHER_DPORT: u16 = 5000;
pub(crate) const BAND2_SPORT: u16 = 1000;
pub(crate) const BAND2_POLICIES: usize = 8;
/// Source ports of flows that match no policy start here.
pub(crate) const MISS_SPORT: u16 = 2000;
pub(crate) const UDP: u8 = 17;
const SRC_NET: u128 = 0x2001_0db8_0001_0000 << 64;
const DST_NET: u128 = 0x2001_0db8_0002_0000 << 64;
/// Band-1 source blocks are /124: 16 addresses.
const BLOCK_BITS: u32 = 4;
pub(crate) const BLOCK_LEN: u8 = 124;

/// Where a flow's verdict comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Outcome {
    Band1Drop,
    Band1Pass,
    Band2Drop,
    Band2Pass,
    /// No policy: xipsec and nftables both pass it.
    Miss,
}

impl Outcome {
    pub(crate) const ALL: [Outcome; 5] = [
        Outcome::Band1Drop,
        Outcome::Band1Pass,
        Outcome::Band2Drop,
        Outcome::Band2Pass,
        Outcome::Miss,
    ];

    /// The name of its nftables counter and of its JSON field.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Band1Drop => "band1_drop",
            Outcome::Band1Pass => "band1_pass",
            Outcome::Band2Drop => "band2_drop",
            Outcome::Band2Pass => "band2_pass",
            Outcome::Miss => "miss",
        }
    }

    pub(crate) fn drops(self) -> bool {
        matches!(self, Outcome::Band1Drop | Outcome::Band2Drop)
    }
}

/// One policy, as both xipsec and nftables are given it.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub name: String,
    pub priority: u16,
    pub src: (Ipv6Addr, u8),
    pub dst: (Ipv6Addr, u8),
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub discard: bool,
    pub outcome: Outcome,
}

/// One flow of a generator table (UDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flow {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub sport: u16,
    pub dport: u16,
}

impl Flow {
    pub(crate) fn gen_flow(self) -> GenFlow {
        GenFlow {
            src: self.src.octets(),
            dst: self.dst.octets(),
            sport: self.sport,
            dport: self.dport,
            _pad: 0,
        }
    }
}

/// `n` policies and the flows sent against them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PolicySet {
    pub policies: usize,
    pub flows: usize,
}

/// Small integers (indices below 2^32) into the arithmetic of addresses and ports.
fn wide(i: usize) -> u128 {
    u128::try_from(i).expect("an index fits 128 bits")
}

fn port(base: u16, i: usize) -> u16 {
    base + u16::try_from(i).expect("a port offset fits 16 bits")
}

impl PolicySet {
    pub(crate) fn new(policies: usize, flows: usize) -> anyhow::Result<Self> {
        if policies < BAND2_POLICIES + 2 {
            anyhow::bail!(
                "bench filter needs at least {} policies",
                BAND2_POLICIES + 2
            );
        }
        Ok(Self { policies, flows })
    }

    fn band1(self) -> usize {
        self.policies - BAND2_POLICIES
    }

    fn block(j: usize) -> u128 {
        SRC_NET + (wide(j) << BLOCK_BITS)
    }

    /// Every policy, band 1 first.
    pub(crate) fn policies(self) -> Vec<Policy> {
        let mut all: Vec<Policy> = (0..self.band1())
            .map(|j| {
                let discard = j % 2 == 0;
                Policy {
                    name: format!("b1-{j}"),
                    priority: BAND1_PRIORITY,
                    src: (Ipv6Addr::from(Self::block(j)), BLOCK_LEN),
                    dst: (Ipv6Addr::from(DST_NET), 64),
                    sport: None,
                    dport: Some(BAND1_DPORT),
                    discard,
                    outcome: if discard {
                        Outcome::Band1Drop
                    } else {
                        Outcome::Band1Pass
                    },
                }
            })
            .collect();
        all.extend((0..BAND2_POLICIES).map(|k| {
            let discard = k % 2 == 0;
            Policy {
                name: format!("b2-{k}"),
                priority: BAND2_PRIORITY,
                src: (Ipv6Addr::from(SRC_NET), 64),
                dst: (Ipv6Addr::from(DST_NET), 64),
                sport: Some(port(BAND2_SPORT, k)),
                dport: None,
                discard,
                outcome: if discard {
                    Outcome::Band2Drop
                } else {
                    Outcome::Band2Pass
                },
            }
        }));
        all
    }

    /// Flow `i` of the table whose verdicts are all discard (`drop`) or all pass.
    pub(crate) fn flow(self, drop: bool, i: usize) -> Flow {
        let half = self.band1() / 2;
        let dst = Ipv6Addr::from(DST_NET + wide(i));
        // Any source of the band-1 blocks, spread over them.
        let anywhere = Ipv6Addr::from(SRC_NET + wide(i % (self.band1() << BLOCK_BITS)));
        let in_block = |parity: usize, n: usize| {
            let j = 2 * (n % half) + parity;
            Ipv6Addr::from(Self::block(j) + wide((n / half) % (1 << BLOCK_BITS)))
        };
        let (src, sport, dport) = match (drop, if drop { i % 2 } else { i % 3 }) {
            (true, 0) => (
                in_block(0, i / 2),
                port(BAND2_SPORT, (i / 2) % 8),
                BAND1_DPORT,
            ),
            (true, _) => (anywhere, port(BAND2_SPORT, 2 * ((i / 2) % 4)), OTHER_DPORT),
            (false, 0) => (
                in_block(1, i / 3),
                port(BAND2_SPORT, (i / 3) % 8),
                BAND1_DPORT,
            ),
            (false, 1) => (
                anywhere,
                port(BAND2_SPORT, 2 * ((i / 3) % 4) + 1),
                OTHER_DPORT,
            ),
            (false, _) => (anywhere, port(MISS_SPORT, (i / 3) % 1000), OTHER_DPORT),
        };
        Flow {
            src,
            dst,
            sport,
            dport,
        }
    }

    /// What the policies make of `flow` (UDP), by the structure of the set: the first band that
    /// matches, in priority order.
    pub(crate) fn verdict(self, flow: &Flow) -> Outcome {
        let (src, dst) = (u128::from(flow.src), u128::from(flow.dst));
        let in_64 = |addr: u128, net: u128| addr >> 64 == net >> 64;
        if !in_64(src, SRC_NET) || !in_64(dst, DST_NET) {
            return Outcome::Miss;
        }
        let j = usize::try_from((src - SRC_NET) >> BLOCK_BITS).unwrap_or(usize::MAX);
        if flow.dport == BAND1_DPORT && j < self.band1() {
            return if j % 2 == 0 {
                Outcome::Band1Drop
            } else {
                Outcome::Band1Pass
            };
        }
        match flow.sport.checked_sub(BAND2_SPORT).map(usize::from) {
            Some(k) if k < BAND2_POLICIES && k % 2 == 0 => Outcome::Band2Drop,
            Some(k) if k < BAND2_POLICIES => Outcome::Band2Pass,
            _ => Outcome::Miss,
        }
    }

    /// The outcome of each flow of a table, by index.
    pub(crate) fn outcomes(self, drop: bool) -> Vec<Outcome> {
        (0..self.flows)
            .map(|i| self.verdict(&self.flow(drop, i)))
            .collect()
    }

    /// xipsec's `state.json` holding exactly these policies (the daemon loads and validates it
    /// at start: loading 100,000 policies one CLI call at a time would take minutes).
    pub(crate) fn xipsec_state(self) -> String {
        let mut sps = String::new();
        for (id, p) in self.policies().iter().enumerate() {
            let port = |p: Option<u16>| p.map_or("null".to_string(), |p| p.to_string());
            let _ = write!(
                sps,
                "{}{{\"id\":{id},\"seq\":{id},\"name\":\"{}\",\"source\":\"{}/{}\",\
                 \"destination\":\"{}/{}\",\"source_port\":{},\"destination_port\":{},\
                 \"protocol\":\"udp\",\"direction\":\"in\",\"action\":\"{}\",\
                 \"mode\":\"transport\",\"sa_name\":null,\"priority\":{}}}",
                if id == 0 { "" } else { "," },
                p.name,
                p.src.0,
                p.src.1,
                p.dst.0,
                p.dst.1,
                port(p.sport),
                port(p.dport),
                if p.discard { "discard" } else { "none" },
                p.priority,
            );
        }
        format!(
            "{{\"version\":1,\"spd\":{{\"sas\":[],\"sps\":[{sps}],\"next_seq\":{}}}}}",
            self.policies
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn tables_are_distinct_flows_of_one_verdict_kind() {
        let set = PolicySet::new(10_000, 131_072).expect("a valid set");
        for drop in [true, false] {
            let flows: HashSet<_> = (0..set.flows)
                .map(|i| {
                    let f = set.flow(drop, i);
                    (f.src, f.dst, f.sport, f.dport)
                })
                .collect();
            assert_eq!(flows.len(), set.flows, "distinct flows");
            let outcomes = set.outcomes(drop);
            assert!(outcomes.iter().all(|o| o.drops() == drop));
            for o in Outcome::ALL.into_iter().filter(|o| o.drops() == drop) {
                let share = outcomes.iter().filter(|x| **x == o).count();
                assert!(share * 4 > set.flows, "{o:?} has {share} flows");
            }
        }
    }
}
