//! `xipsec explain`: build one packet from the options, ask the kernel's classifier about it
//! (the explain programs, `datapath::explain`, through the [`Datapath`] port) and the reference
//! model (`model::packet` + `Spd::matching`), and put the two answers side by side.
//!
//! Contract: nothing changes (the explain programs count and cache nothing; the reference is
//! pure). Both answers go through [`verdict`], so they are equal exactly when the kernel found
//! the same policy with the same rank, action and SA as the model (or, for inbound ESP, the same
//! SPI verdict); anything else is reported as a disagreement, which is a bug.

use std::net::Ipv6Addr;

use ipsec_common::abi::{ACTION_DISCARD, ACTION_IPSEC, ACTION_NONE, NO_SP};
use ipsec_common::explain::{
    ExplainResult, OUTCOME_CLASSIFIED, OUTCOME_ESP, OUTCOME_ESP_FRAGMENT, OUTCOME_EXT_LIMIT,
    OUTCOME_FRAGMENT, OUTCOME_MALFORMED, OUTCOME_NOT_IPV6, OUTCOME_OUT_OF_STEPS,
    OUTCOME_VLAN_DEPTH,
};

use super::port::{Datapath, PortError};
use super::protocol::{ExplainArgs, ExplainReport, ExplainVerdict};
use crate::model::packet::{Parsed, parse_frame};
use crate::model::{Action, Chain, Direction, Flow, Sp, Spd};

/// What is wrong with `xipsec explain`'s options.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExplainError {
    #[error("--{option}: required; {allowed}")]
    Missing {
        option: &'static str,
        allowed: &'static str,
    },
    #[error("--{option}: '{value}' is not valid; {allowed}")]
    Invalid {
        option: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error(
        "--source-port: must be omitted with --protocol icmp6; the icmpv6 type goes in --destination-port"
    )]
    SourcePortWithIcmp6,
    #[error("--{option}: a port needs --protocol tcp, udp or icmp6")]
    PortNeedsProtocol { option: &'static str },
}

const DIRECTION: &str = "use in or out";
const ADDRESS: &str = "give an ipv6 address";
const PROTOCOL: &str = "use tcp, udp, icmp6 or a protocol number 0 to 255";
const PORT: &str = "use 0 to 65535 (0 to 255 for an icmpv6 type)";

/// The packet `xipsec explain` builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub direction: Direction,
    pub source: Ipv6Addr,
    pub destination: Ipv6Addr,
    /// IPv6 next header.
    pub protocol: u8,
    pub source_port: u16,
    /// The destination port, or the ICMPv6 type.
    pub destination_port: u16,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;

impl Probe {
    /// Parses the raw options. The protocol defaults to tcp, ports to 0, the ICMPv6 type to 128
    /// (echo request).
    pub fn parse(args: &ExplainArgs) -> Result<Self, ExplainError> {
        let required = |value: &Option<String>, option, allowed| {
            value
                .clone()
                .ok_or(ExplainError::Missing { option, allowed })
        };
        let invalid = |option, value: &str, allowed| ExplainError::Invalid {
            option,
            value: value.to_owned(),
            allowed,
        };
        let direction = required(&args.direction, "direction", DIRECTION)?;
        let direction = match direction.to_ascii_lowercase().as_str() {
            "in" => Direction::In,
            "out" => Direction::Out,
            _ => return Err(invalid("direction", &direction, DIRECTION)),
        };
        let address = |value: &Option<String>, option| {
            let text = required(value, option, ADDRESS)?;
            text.parse::<Ipv6Addr>()
                .map_err(|_| invalid(option, &text, ADDRESS))
        };
        let source = address(&args.source, "source")?;
        let destination = address(&args.destination, "destination")?;
        let protocol = match args.protocol.as_deref().map(str::to_ascii_lowercase) {
            None => TCP,
            Some(p) => match p.as_str() {
                "tcp" => TCP,
                "udp" => UDP,
                "icmp6" | "ipv6-icmp" => ICMPV6,
                number => number
                    .parse::<u8>()
                    .map_err(|_| invalid("protocol", &p, PROTOCOL))?,
            },
        };
        let port = |value: &Option<String>, option, max: u16| {
            value
                .as_deref()
                .map(|text| {
                    text.parse::<u16>()
                        .ok()
                        .filter(|p| *p <= max)
                        .ok_or_else(|| invalid(option, text, PORT))
                })
                .transpose()
        };
        let has_ports = matches!(protocol, TCP | UDP);
        let (source_port, destination_port) = if protocol == ICMPV6 {
            if args.source_port.is_some() {
                return Err(ExplainError::SourcePortWithIcmp6);
            }
            (
                0,
                port(&args.destination_port, "destination-port", 255)?.unwrap_or(128),
            )
        } else {
            for (option, value) in [
                ("source-port", &args.source_port),
                ("destination-port", &args.destination_port),
            ] {
                if value.is_some() && !has_ports {
                    return Err(ExplainError::PortNeedsProtocol { option });
                }
            }
            (
                port(&args.source_port, "source-port", u16::MAX)?.unwrap_or(0),
                port(&args.destination_port, "destination-port", u16::MAX)?.unwrap_or(0),
            )
        };
        Ok(Self {
            direction,
            source,
            destination,
            protocol,
            source_port,
            destination_port,
        })
    }

    /// The packet as an Ethernet frame: IPv6, then a TCP SYN, a UDP header, an ICMPv6 header
    /// (`destination_port` is the type) or 8 zero bytes of any other protocol.
    pub fn frame(&self) -> Vec<u8> {
        let [sp0, sp1] = self.source_port.to_be_bytes();
        let [dp0, dp1] = self.destination_port.to_be_bytes();
        let upper: Vec<u8> = match self.protocol {
            TCP => vec![
                sp0, sp1, dp0, dp1, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
            ],
            UDP => vec![sp0, sp1, dp0, dp1, 0, 8, 0, 0],
            ICMPV6 => vec![dp1, 0, 0, 0, 0, 0, 0, 0],
            _ => vec![0; 8],
        };
        let mut frame = Vec::with_capacity(14 + 40 + upper.len());
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0x86, 0xdd]);
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&u16::try_from(upper.len()).unwrap_or(0).to_be_bytes());
        frame.extend_from_slice(&[self.protocol, 64]);
        frame.extend_from_slice(&self.source.octets());
        frame.extend_from_slice(&self.destination.octets());
        frame.extend_from_slice(&upper);
        frame
    }

    /// The packet in words.
    pub fn describe(&self) -> String {
        let (s, d) = (self.source, self.destination);
        match self.protocol {
            TCP | UDP => format!(
                "{} [{s}]:{} -> [{d}]:{}",
                if self.protocol == TCP { "tcp" } else { "udp" },
                self.source_port,
                self.destination_port
            ),
            ICMPV6 => format!("icmp6 type {} {s} -> {d}", self.destination_port),
            other => format!("protocol {other} {s} -> {d}"),
        }
    }
}

/// What the datapath does with a packet, as both sides report it.
enum Found<'a> {
    /// Not classified: the parser stopped (`because`), with the datapath's verdict.
    Parser(&'static str, &'static str),
    /// Classified: the winning policy (none: pass).
    Policy(Option<&'a Sp>, Option<u64>),
    /// Inbound ESP: the SA its SPI is known under, if it is.
    Esp(Option<String>),
    /// A value the reading side does not know (kernel only): always a disagreement.
    Unknown(String),
}

/// One side's verdict, worded the same way for both.
fn verdict(
    spd: &Spd,
    direction: Direction,
    flow: Option<&Flow>,
    found: Found<'_>,
) -> ExplainVerdict {
    let said = |verdict: &str, because: &str| ExplainVerdict {
        verdict: verdict.to_owned(),
        because: because.to_owned(),
        sp: None,
        sp_id: None,
        action: None,
        rank: None,
        rank_reason: None,
        sa: None,
    };
    match found {
        Found::Parser(verdict, because) => said(verdict, because),
        Found::Unknown(what) => said("unknown", &what),
        Found::Esp(Some(sa)) => ExplainVerdict {
            sa: Some(sa),
            ..said("esp-to-engine", "known spi")
        },
        Found::Esp(None) => said("drop", "unknown spi"),
        Found::Policy(None, _) => {
            let nd = flow.and_then(Flow::neighbour_discovery_type).is_some();
            let because = if nd {
                "neighbour discovery, no policy names it"
            } else {
                "no policy"
            };
            said("pass", because)
        }
        Found::Policy(Some(sp), rank) => {
            let (verdict, because) = match (sp.action, direction) {
                (Action::None, _) => ("pass", "policy action none"),
                (Action::Discard, _) => ("drop", "policy action discard"),
                (Action::Ipsec, Direction::Out) => {
                    ("protect", "policy action ipsec: to the esp engine")
                }
                (Action::Ipsec, Direction::In) => ("drop", "clear traffic for an ipsec policy"),
            };
            // Why it won: against the next policy, in rank order, that the packet also matches.
            let rank_reason = flow.map(|flow| {
                let matching = spd.matching(direction, flow);
                let next = matching
                    .iter()
                    .skip_while(|other| other.id != sp.id)
                    .nth(1)
                    .copied();
                sp.rank_reason(next).to_string()
            });
            ExplainVerdict {
                sp: Some(sp.name.clone()),
                sp_id: Some(sp.id),
                action: Some(sp.action),
                rank,
                rank_reason,
                sa: sp.sa_name.clone(),
                ..said(verdict, because)
            }
        }
    }
}

/// The parser outcomes both sides stop at, worded as the datapath's verdict.
fn parser_stop(parsed: &Parsed) -> Option<(&'static str, &'static str)> {
    Some(match parsed {
        Parsed::NotIpv6 => ("pass", "not ipv6"),
        Parsed::Malformed => ("drop", "malformed"),
        Parsed::ExtLimit => ("drop", "extension header limit"),
        Parsed::VlanDepth => ("drop", "too many vlan tags"),
        Parsed::EspFragment => ("pass", "esp fragment, left to reassembly"),
        Parsed::Esp { .. } | Parsed::Flow(_) => return None,
    })
}

/// The kernel's answer, read through the model's records.
fn kernel_verdict(
    spd: &Spd,
    direction: Direction,
    flow: Option<&Flow>,
    found: &ExplainResult,
) -> ExplainVerdict {
    let found = match found.outcome {
        OUTCOME_CLASSIFIED if found.sp_id == NO_SP => Found::Policy(None, None),
        OUTCOME_CLASSIFIED => match spd.sps().iter().find(|sp| sp.id == found.sp_id) {
            Some(sp) => {
                let action = match sp.action {
                    Action::None => ACTION_NONE,
                    Action::Discard => ACTION_DISCARD,
                    Action::Ipsec => ACTION_IPSEC,
                };
                let sa = spd.sas().iter().find(|sa| sa.id == found.sa_id);
                let sa_agrees =
                    sp.sa_name.is_none() || sa.map(|sa| &sa.name) == sp.sa_name.as_ref();
                if action != found.action || !sa_agrees {
                    Found::Unknown(format!(
                        "sp id {} with action {} and sa id {}, not what sp '{}' holds",
                        found.sp_id, found.action, found.sa_id, sp.name
                    ))
                } else {
                    Found::Policy(Some(sp), Some(found.rank))
                }
            }
            None => Found::Unknown(format!("sp id {} that no policy has", found.sp_id)),
        },
        OUTCOME_ESP if found.spi_known == 1 => Found::Esp(Some(
            spd.sas()
                .iter()
                .find(|sa| sa.id == found.sa_id)
                .map_or_else(|| format!("sa id {}", found.sa_id), |sa| sa.name.clone()),
        )),
        OUTCOME_ESP => Found::Esp(None),
        OUTCOME_NOT_IPV6 => Found::Parser("pass", "not ipv6"),
        OUTCOME_MALFORMED => Found::Parser("drop", "malformed"),
        OUTCOME_EXT_LIMIT => Found::Parser("drop", "extension header limit"),
        OUTCOME_VLAN_DEPTH => Found::Parser("drop", "too many vlan tags"),
        OUTCOME_ESP_FRAGMENT => Found::Parser("pass", "esp fragment, left to reassembly"),
        OUTCOME_FRAGMENT => Found::Unknown("a fragment (explain builds whole packets)".into()),
        OUTCOME_OUT_OF_STEPS => Found::Unknown("the search ran out of steps".into()),
        other => Found::Unknown(format!("outcome {other}")),
    };
    verdict(spd, direction, flow, found)
}

/// The reference model's answer for `frame`.
fn reference_verdict(spd: &Spd, direction: Direction, parsed: &Parsed) -> ExplainVerdict {
    let found = match parsed {
        Parsed::Flow(flow) => {
            let sp = spd.classify(direction, flow);
            Found::Policy(sp, sp.map(Sp::rank))
        }
        Parsed::Esp { spi, .. } => Found::Esp(
            spd.sa_by_spi(*spi)
                .filter(|sa| spd.is_inbound_sa(&sa.name))
                .map(|sa| sa.name.clone()),
        ),
        other => {
            let (verdict, because) = parser_stop(other).unwrap_or(("unknown", "unparsed"));
            Found::Parser(verdict, because)
        }
    };
    let flow = match parsed {
        Parsed::Flow(flow) => Some(flow),
        _ => None,
    };
    verdict(spd, direction, flow, found)
}

/// Answers `xipsec explain` against the committed `spd` at `generation`; an error is one line
/// for the CLI.
pub fn explain(
    spd: &Spd,
    generation: u64,
    datapath: &dyn Datapath,
    args: &ExplainArgs,
) -> Result<ExplainReport, String> {
    let probe = Probe::parse(args).map_err(|e| e.to_string())?;
    let frame = probe.frame();
    let parsed = parse_frame(&frame, probe.direction == Direction::In);
    let flow = match &parsed {
        Parsed::Flow(flow) => Some(flow),
        _ => None,
    };
    let reference = reference_verdict(spd, probe.direction, &parsed);
    let kernel = datapath
        .explain(probe.direction, &frame)
        .map_err(|e: PortError| format!("explain: {}", Chain(&e)))?
        .map(|found| kernel_verdict(spd, probe.direction, flow, &found));
    Ok(ExplainReport {
        direction: probe.direction,
        packet: probe.describe(),
        generation,
        agree: kernel.as_ref().is_none_or(|k| *k == reference),
        kernel,
        reference,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::port::NoDatapath;

    fn args(
        direction: &str,
        protocol: Option<&str>,
        ports: (Option<&str>, Option<&str>),
    ) -> ExplainArgs {
        let own = |s: Option<&str>| s.map(str::to_owned);
        ExplainArgs {
            direction: Some(direction.into()),
            source: Some("2001:db8::1".into()),
            destination: Some("2001:db8::2".into()),
            protocol: own(protocol),
            source_port: own(ports.0),
            destination_port: own(ports.1),
        }
    }

    #[test]
    fn probes_parse_and_build_what_the_reference_parser_reads() {
        for (protocol, ports, next_header) in [
            (Some("tcp"), (Some("1234"), Some("22")), TCP),
            (Some("UDP"), (None, Some("53")), UDP),
            (Some("icmp6"), (None, Some("135")), ICMPV6),
            (None, (None, None), TCP),
            (Some("47"), (None, None), 47),
        ] {
            let probe = Probe::parse(&args("out", protocol, ports)).expect("a valid probe");
            let Parsed::Flow(flow) = parse_frame(&probe.frame(), false) else {
                panic!("the reference parser reads {probe:?} as a flow");
            };
            assert_eq!(flow.next_header, next_header);
            assert_eq!((flow.src, flow.dst), (probe.source, probe.destination));
        }
        let refused = |a: ExplainArgs| Probe::parse(&a).expect_err("refused").to_string();
        assert_eq!(
            refused(args("sideways", None, (None, None))),
            "--direction: 'sideways' is not valid; use in or out"
        );
        assert_eq!(
            refused(args("in", Some("icmp6"), (Some("1"), None))),
            "--source-port: must be omitted with --protocol icmp6; the icmpv6 type goes in --destination-port"
        );
        assert_eq!(
            refused(args("in", Some("47"), (None, Some("1")))),
            "--destination-port: a port needs --protocol tcp, udp or icmp6"
        );
        assert_eq!(
            refused(args("in", Some("icmp6"), (None, Some("256")))),
            "--destination-port: '256' is not valid; use 0 to 65535 (0 to 255 for an icmpv6 type)"
        );
        assert_eq!(
            refused(ExplainArgs {
                source: None,
                ..args("in", None, (None, None))
            }),
            "--source: required; give an ipv6 address"
        );
    }

    #[test]
    fn without_a_kernel_the_reference_answers_alone() {
        let spd = Spd::new();
        let report = explain(&spd, 7, &NoDatapath, &args("in", None, (None, None)))
            .expect("explaining against an empty spd");
        assert!(report.agree && report.kernel.is_none());
        assert_eq!(report.generation, 7);
        assert_eq!(
            (
                report.reference.verdict.as_str(),
                report.reference.because.as_str()
            ),
            ("pass", "no policy")
        );
    }
}
