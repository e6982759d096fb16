//! `Sp`: a validated security policy, and the rules for building one from `sp add`.
//!
//! `Sp::parse` checks everything about one policy given a way to look up SAs (existence, mode);
//! `Sp::check` re-checks the invariants that need no other record on a loaded state. Uniqueness,
//! limits, ids and `seq` are the SPD's business (`spd`); precedence is in `rank`, matching in
//! `reference`.

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use super::args::{SpAddArgs, opt};
use super::error::{ModelError, shown};
use super::parse::{self, allowed};
use super::sa::Sa;
use super::types::{Action, Direction, Mode, UpperLayerProtocol};

/// A security policy: which traffic, in which direction, gets which treatment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sp {
    /// Slot 0..MAX_SP, the lowest free one at creation; the counter index in the kernel.
    pub id: u32,
    /// Creation order, older = smaller; below 2^SEQ_BITS.
    pub seq: u32,
    pub name: String,
    /// Network address only: no host bits set.
    pub source: Ipv6Net,
    pub destination: Ipv6Net,
    /// `None` = any (0 normalises to `None`).
    pub source_port: Option<u16>,
    /// `None` = any; with `icmp6`, the ICMPv6 type (0-255).
    pub destination_port: Option<u16>,
    pub protocol: UpperLayerProtocol,
    pub direction: Direction,
    pub action: Action,
    pub mode: Mode,
    pub sa_name: Option<String>,
    pub priority: Option<u16>,
    /// `sp add --ike-peer`: the SAs are negotiated with this peer; `sa_name` is then the SA
    /// IKE installed last (`None` until a CHILD_SA exists: the flow fails closed). Never
    /// persisted with a binding (see `spd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_peer: Option<String>,
}

/// What two policies must not share: selector, direction and priority.
pub(crate) type SelectorKey = (
    Ipv6Net,
    Ipv6Net,
    Option<u16>,
    Option<u16>,
    UpperLayerProtocol,
    Direction,
    Option<u16>,
);

impl Sp {
    /// Builds an SP from `sp add` arguments, with `id` and `seq` 0 (the SPD assigns them).
    /// `find_sa` looks an SA up by name.
    pub(crate) fn parse<'a>(
        args: &SpAddArgs,
        find_sa: impl Fn(&str) -> Option<&'a Sa>,
    ) -> Result<Self, ModelError> {
        Self::parse_with(args, find_sa, None)
    }

    /// [`Self::parse`] for `sp add --ike-peer`: exactly one of `--sa-name` and `--ike-peer`,
    /// action `ipsec` only, and `peer_exists` must know the peer. The SP starts unbound.
    pub(crate) fn parse_ike<'a>(
        args: &SpAddArgs,
        ike_peer: &str,
        find_sa: impl Fn(&str) -> Option<&'a Sa>,
        peer_exists: impl Fn(&str) -> bool,
    ) -> Result<Self, ModelError> {
        if args.sa_name.is_some() {
            return Err(ModelError::RemoveConflict {
                option: opt::IKE_PEER,
                other: opt::SA_NAME,
            });
        }
        if let Some(action) = &args.action
            && !action.eq_ignore_ascii_case("ipsec")
        {
            return Err(ModelError::Peer {
                option: opt::IKE_PEER,
                reason: format!(
                    "only with --action ipsec, not '{}'; omit --ike-peer",
                    shown(action)
                ),
            });
        }
        if !peer_exists(ike_peer) {
            return Err(ModelError::UnknownPeer {
                name: shown(ike_peer),
            });
        }
        Self::parse_with(args, find_sa, Some(ike_peer))
    }

    fn parse_with<'a>(
        args: &SpAddArgs,
        find_sa: impl Fn(&str) -> Option<&'a Sa>,
        ike_peer: Option<&str>,
    ) -> Result<Self, ModelError> {
        let source = parse::prefix(
            opt::SP_SOURCE,
            parse::required(args.sp_source.as_ref(), opt::SP_SOURCE, allowed::PREFIX)?,
        )?;
        let destination = parse::prefix(
            opt::SP_DESTINATION,
            parse::required(
                args.sp_destination.as_ref(),
                opt::SP_DESTINATION,
                allowed::PREFIX,
            )?,
        )?;
        let source_port = parse::port(
            opt::SOURCE_PORT,
            parse::required(args.source_port.as_ref(), opt::SOURCE_PORT, allowed::PORT)?,
        )?;
        let destination_port = parse::port(
            opt::DESTINATION_PORT,
            parse::required(
                args.destination_port.as_ref(),
                opt::DESTINATION_PORT,
                allowed::PORT,
            )?,
        )?;
        let protocol = match &args.upper_layer_protocol {
            None => UpperLayerProtocol::Any,
            Some(value) => parse::keyword(
                opt::UPPER_LAYER_PROTOCOL,
                value,
                UpperLayerProtocol::ALL,
                allowed::PROTOCOL,
            )?,
        };
        let direction = parse::keyword(
            opt::FLOW_DIRECTION,
            parse::required(
                args.flow_direction.as_ref(),
                opt::FLOW_DIRECTION,
                allowed::DIRECTION,
            )?,
            Direction::ALL,
            allowed::DIRECTION,
        )?;
        let action = match &args.action {
            None => Action::Ipsec,
            Some(value) => parse::keyword(opt::ACTION, value, Action::ALL, allowed::ACTION)?,
        };
        let sp_mode = args
            .sp_mode
            .as_deref()
            .map(|value| parse::keyword(opt::SP_MODE, value, Mode::ALL, allowed::MODE))
            .transpose()?;
        let sa = match &args.sa_name {
            None if action == Action::Ipsec && ike_peer.is_none() => {
                return Err(ModelError::SaRequired);
            }
            None => None,
            Some(name) => {
                Some(find_sa(name).ok_or_else(|| ModelError::UnknownSa { name: shown(name) })?)
            }
        };
        let mode = match (sp_mode, sa) {
            (Some(sp_mode), Some(sa)) if sp_mode != sa.mode => {
                return Err(ModelError::ModeMismatch {
                    sp_mode,
                    sa: sa.name.clone(),
                    sa_mode: sa.mode,
                });
            }
            (Some(mode), _) => mode,
            (None, Some(sa)) => sa.mode,
            (None, None) => Mode::Transport,
        };
        let name = parse::name(
            opt::SP_NAME,
            parse::required(args.sp_name.as_ref(), opt::SP_NAME, allowed::NAME)?,
        )?;
        let priority = args.priority.as_deref().map(parse::priority).transpose()?;
        let sp = Self {
            id: 0,
            seq: 0,
            name,
            source,
            destination,
            source_port,
            destination_port,
            protocol,
            direction,
            action,
            mode,
            sa_name: sa.map(|sa| sa.name.clone()),
            priority,
            ike_peer: ike_peer.map(str::to_owned),
        };
        sp.check()?;
        Ok(sp)
    }

    /// Every invariant of one SP that needs no other record.
    pub(crate) fn check(&self) -> Result<(), ModelError> {
        if !parse::is_valid_name(&self.name) {
            return Err(ModelError::Invalid {
                option: opt::SP_NAME,
                value: shown(&self.name),
                allowed: allowed::NAME,
            });
        }
        for (option, net) in [
            (opt::SP_SOURCE, self.source),
            (opt::SP_DESTINATION, self.destination),
        ] {
            if net != net.trunc() {
                return Err(ModelError::HostBits {
                    option,
                    value: net.to_string(),
                    corrected: net.trunc(),
                });
            }
        }
        match self.protocol {
            UpperLayerProtocol::Any => {
                if self.source_port.is_some() {
                    return Err(ModelError::PortNeedsProtocol {
                        option: opt::SOURCE_PORT,
                    });
                }
                if self.destination_port.is_some() {
                    return Err(ModelError::PortNeedsProtocol {
                        option: opt::DESTINATION_PORT,
                    });
                }
            }
            UpperLayerProtocol::Icmp6 => {
                if self.source_port.is_some() {
                    return Err(ModelError::SourcePortWithIcmp6);
                }
                if let Some(value) = self.destination_port.filter(|t| *t > 255) {
                    return Err(ModelError::IcmpTypeRange { value });
                }
            }
            UpperLayerProtocol::Tcp | UpperLayerProtocol::Udp => {}
        }
        if self.action == Action::Ipsec && self.sa_name.is_none() && self.ike_peer.is_none() {
            return Err(ModelError::SaRequired);
        }
        if self.ike_peer.is_some() && self.action != Action::Ipsec {
            return Err(ModelError::Peer {
                option: opt::IKE_PEER,
                reason: "only with --action ipsec".to_owned(),
            });
        }
        Ok(())
    }

    /// The fields two policies may not both have: identical selector, direction and priority.
    pub(crate) fn selector_key(&self) -> SelectorKey {
        (
            self.source,
            self.destination,
            self.source_port,
            self.destination_port,
            self.protocol,
            self.direction,
            self.priority,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{example_sa_args, example_sp_args};

    fn example_sa() -> Sa {
        Sa::parse(&example_sa_args()).expect("parsing the spec's sa example")
    }

    fn parse_with_sa(args: &SpAddArgs) -> Result<Sp, ModelError> {
        let sa = example_sa();
        Sp::parse(args, |name| (name == sa.name).then_some(&sa))
    }

    fn rejected(args: &SpAddArgs) -> String {
        parse_with_sa(args)
            .expect_err("expecting sp add to fail")
            .to_string()
    }

    #[test]
    fn spec_example_is_accepted() {
        let sp = parse_with_sa(&example_sp_args()).expect("parsing the spec's sp add example");
        assert_eq!(sp.name, "sp1");
        assert_eq!(
            sp.source,
            "2001:db8:1::/64".parse::<Ipv6Net>().expect("net")
        );
        assert_eq!(
            sp.destination,
            "2002:db8:1::/64".parse::<Ipv6Net>().expect("net")
        );
        assert_eq!((sp.source_port, sp.destination_port), (Some(23), Some(25)));
        assert_eq!(sp.protocol, UpperLayerProtocol::Tcp);
        assert_eq!(sp.direction, Direction::Out);
        assert_eq!(sp.action, Action::Ipsec);
        assert_eq!(sp.mode, Mode::Transport);
        assert_eq!(sp.sa_name.as_deref(), Some("sa1"));
        assert_eq!(sp.priority, None);
    }

    #[test]
    fn defaults() {
        let mut args = example_sp_args();
        args.action = None;
        args.sp_mode = None;
        args.upper_layer_protocol = None;
        args.source_port = Some("0".into());
        args.destination_port = Some("any".into());
        let sp = parse_with_sa(&args).expect("defaults");
        assert_eq!(sp.action, Action::Ipsec, "action defaults to ipsec");
        assert_eq!(sp.mode, Mode::Transport, "mode defaults to the sa's");
        assert_eq!(
            sp.protocol,
            UpperLayerProtocol::Any,
            "protocol defaults to any"
        );
        assert_eq!((sp.source_port, sp.destination_port), (None, None));

        args.action = Some("discard".into());
        args.sa_name = None;
        let sp = parse_with_sa(&args).expect("discard without an sa");
        assert_eq!((sp.mode, sp.sa_name), (Mode::Transport, None));

        args.sp_mode = Some("tunnel".into());
        let sp = parse_with_sa(&args).expect("discard in tunnel mode without an sa");
        assert_eq!(sp.mode, Mode::Tunnel);

        args.action = Some("none".into());
        args.sp_mode = None;
        args.sa_name = Some("sa1".into());
        let sp = parse_with_sa(&args).expect("none naming an existing sa");
        assert_eq!(sp.sa_name.as_deref(), Some("sa1"));
    }

    #[test]
    fn icmp6_destination_port_is_the_type() {
        let mut args = example_sp_args();
        args.upper_layer_protocol = Some("icmp6".into());
        args.source_port = Some("any".into());
        args.destination_port = Some("128".into());
        let sp = parse_with_sa(&args).expect("icmp6 echo request");
        assert_eq!(sp.destination_port, Some(128));
        args.destination_port = Some("255".into());
        parse_with_sa(&args).expect("icmp6 type 255");
        args.destination_port = Some("256".into());
        assert_eq!(
            rejected(&args),
            "--destination-port: icmpv6 type 256 is out of range; use 0 to 255 or any with --upper-layer-protocol icmp6"
        );
        args.destination_port = Some("128".into());
        args.source_port = Some("1".into());
        assert_eq!(
            rejected(&args),
            "--source-port: must be any with --upper-layer-protocol icmp6; the icmpv6 type goes in --destination-port"
        );
    }

    #[test]
    fn ports_need_a_protocol() {
        let mut args = example_sp_args();
        args.upper_layer_protocol = Some("any".into());
        assert_eq!(
            rejected(&args),
            "--source-port: a port needs --upper-layer-protocol tcp, udp or icmp6; with protocol any use any"
        );
        args.source_port = Some("0".into());
        assert_eq!(
            rejected(&args),
            "--destination-port: a port needs --upper-layer-protocol tcp, udp or icmp6; with protocol any use any"
        );
    }

    #[test]
    fn sa_rules() {
        let mut args = example_sp_args();
        args.sp_mode = Some("tunnel".into());
        assert_eq!(
            rejected(&args),
            "--sp-mode: tunnel does not match sa 'sa1' (transport); omit --sp-mode or give transport"
        );
        args.sp_mode = None;
        args.sa_name = None;
        assert_eq!(
            rejected(&args),
            "--sa-name: required with --action ipsec; give an existing sa, or use --action none or discard"
        );
        args.sa_name = Some("nope".into());
        args.action = Some("discard".into());
        assert_eq!(
            rejected(&args),
            "--sa-name: no sa named 'nope'; add it first with sa add"
        );
    }

    #[test]
    fn records_are_rechecked() {
        let mut sp = parse_with_sa(&example_sp_args()).expect("parsing the example");
        sp.source = "2001:db8:1::1/64".parse().expect("net");
        assert_eq!(
            sp.check().expect_err("host bits in a record").to_string(),
            "--sp-source: '2001:db8:1::1/64' has host bits set beyond /64; did you mean 2001:db8:1::/64"
        );
        sp.source = sp.source.trunc();
        sp.sa_name = None;
        assert_eq!(sp.check(), Err(ModelError::SaRequired));
    }
}
