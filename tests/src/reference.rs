//! The expected datapath verdict of a frame: the model's reference parser and classifier, with
//! the datapath's action table (spec: "Datapath behaviour") written out plainly.

use ipsec_common::abi::{Counter, XSK_MAX_FRAME};
use ipsec_user::model::{
    Action, Direction, Spd,
    packet::{Parsed, parse_frame},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    pub pass: bool,
    pub sp_id: Option<u32>,
    pub counter: Counter,
}

/// The verdict the datapath must give `frame`. `engine`: whether an ESP engine is attached
/// (outbound `ipsec` traffic goes to it; `pass` then means "handed on", not "sent in clear");
/// `xsk`: whether the engine has an AF_XDP socket on the receiving queue (inbound ESP of the
/// plain shape goes to it).
pub fn expected(
    spd: &Spd,
    direction: Direction,
    frame: &[u8],
    known_spi: impl Fn(u32) -> bool,
    engine: bool,
    xsk: bool,
) -> Expected {
    let inbound = direction == Direction::In;
    let verdict = |pass, sp_id, counter| Expected {
        pass,
        sp_id,
        counter,
    };
    match parse_frame(frame, inbound) {
        Parsed::NotIpv6 => verdict(true, None, Counter::PassNotIpv6),
        Parsed::Malformed => verdict(false, None, Counter::DropMalformed),
        Parsed::ExtLimit => verdict(false, None, Counter::DropExtHeaderLimit),
        Parsed::Esp { spi, plain } if known_spi(spi) => {
            if xsk && plain && frame.len() <= XSK_MAX_FRAME {
                verdict(true, None, Counter::EspKnownSpiXsk)
            } else {
                verdict(true, None, Counter::EspKnownSpi)
            }
        }
        Parsed::Esp { .. } => verdict(false, None, Counter::DropUnknownSpi),
        Parsed::EspFragment => verdict(true, None, Counter::PassEspFragment),
        Parsed::Flow(flow) => match spd.classify(direction, &flow) {
            None if flow.neighbour_discovery_type().is_some() => {
                verdict(true, None, Counter::PassNeighbourDiscovery)
            }
            None => verdict(true, None, Counter::PassNoPolicy),
            Some(sp) => match sp.action {
                Action::None => verdict(true, Some(sp.id), Counter::PassPolicyNone),
                Action::Discard => verdict(false, Some(sp.id), Counter::DropDiscard),
                Action::Ipsec if inbound => verdict(false, Some(sp.id), Counter::DropIpsecClear),
                Action::Ipsec if engine => verdict(true, Some(sp.id), Counter::IpsecToEngine),
                Action::Ipsec => verdict(false, Some(sp.id), Counter::DropIpsecUnavailable),
            },
        },
    }
}
