//! The expected datapath verdict of a frame: the model's reference parser and classifier (with
//! its stateful fragment rule, `FirstFragments`), with the datapath's action table (spec:
//! "Datapath behaviour") written out plainly.

use ipsec_common::abi::{Counter, XSK_MAX_FRAME};
use ipsec_user::model::{
    Action, Direction, FirstFragments, Spd,
    packet::{Parsed, parse_frame_fragment},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    pub pass: bool,
    pub sp_id: Option<u32>,
    /// The one verdict counter that moves.
    pub counter: Counter,
    /// The event counter that moves besides it, if any.
    pub event: Option<Counter>,
    /// Whether the verdict goes through the flow cache (whole packets and first fragments that
    /// reach classification): the second run of the same frame is then a cache hit.
    pub cached: bool,
}

/// The verdict the datapath must give `frame`, updating `fragments` as the datapath updates its
/// fragment state. `engine`: whether an ESP engine is attached (outbound `ipsec` traffic goes
/// to it; `pass` then means "handed on", not "sent in clear"); `xsk`: whether the engine has an
/// AF_XDP socket on the receiving queue (inbound ESP of the plain shape goes to it).
pub fn expected(
    spd: &Spd,
    fragments: &mut FirstFragments,
    (direction, frame): (Direction, &[u8]),
    known_spi: impl Fn(u32) -> bool,
    engine: bool,
    xsk: bool,
) -> Expected {
    let inbound = direction == Direction::In;
    let verdict = |pass, sp_id, counter| Expected {
        pass,
        sp_id,
        counter,
        event: None,
        cached: false,
    };
    let (parsed, fragment) = parse_frame_fragment(frame, inbound);
    match parsed {
        Parsed::NotIpv6 => verdict(true, None, Counter::PassNotIpv6),
        Parsed::Malformed => verdict(false, None, Counter::DropMalformed),
        Parsed::ExtLimit => verdict(false, None, Counter::DropExtHeaderLimit),
        Parsed::VlanDepth => verdict(false, None, Counter::DropVlanDepth),
        Parsed::Esp { spi, plain } if known_spi(spi) => {
            if xsk && plain && frame.len() <= XSK_MAX_FRAME {
                verdict(true, None, Counter::EspKnownSpiXsk)
            } else {
                verdict(true, None, Counter::EspKnownSpi)
            }
        }
        Parsed::Esp { .. } => verdict(false, None, Counter::DropUnknownSpi),
        Parsed::EspFragment => verdict(true, None, Counter::PassEspFragment),
        Parsed::Flow(flow) => {
            let decided = fragments.classify(spd, direction, &flow, fragment);
            let mut out = match decided.sp {
                None if flow.neighbour_discovery_type().is_some() => {
                    verdict(true, None, Counter::PassNeighbourDiscovery)
                }
                None => verdict(true, None, Counter::PassNoPolicy),
                Some(sp) => match sp.action {
                    Action::None => verdict(true, Some(sp.id), Counter::PassPolicyNone),
                    Action::Discard => verdict(false, Some(sp.id), Counter::DropDiscard),
                    Action::Ipsec if inbound => {
                        verdict(false, Some(sp.id), Counter::DropIpsecClear)
                    }
                    Action::Ipsec if engine => verdict(true, Some(sp.id), Counter::IpsecToEngine),
                    Action::Ipsec => verdict(false, Some(sp.id), Counter::DropIpsecUnavailable),
                },
            };
            out.event = decided
                .fragment_without_state
                .then_some(Counter::FragmentNoState);
            out.cached = !matches!(
                fragment,
                ipsec_user::model::packet::Fragment::NonFirst { .. }
            );
            out
        }
    }
}
