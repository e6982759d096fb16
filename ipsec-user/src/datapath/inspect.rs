//! What the kernel says is attached to an interface, for `xipsec status`: asked, never
//! remembered.
//!
//! Contract:
//! - The XDP mode in effect and the XDP program id come from the interface's `IFLA_XDP`
//!   attributes (`RTM_GETLINK` on a `NETLINK_ROUTE` socket in the calling thread's network
//!   namespace): what the kernel runs, not what `--xdp-mode` asked for.
//! - The TC attachment comes from the pinned TC link (`BPF_OBJ_GET`, then
//!   `BPF_OBJ_GET_INFO_BY_FD`): its type, id and program id. Neither call needs more than
//!   `CAP_BPF`/`CAP_NET_ADMIN` and read access to the pin directory.
//! - "Since" is the modification time of the XDP link's pin: the pin is created when the
//!   programs are first attached and kept across daemon restarts (a new daemon swaps its
//!   programs into the pinned links), so it dates the attachment the interface has now.
//! - Nothing here changes the kernel; a question the kernel does not answer becomes an error
//!   value for that interface, never a failure of the whole report.

use std::path::Path;
use std::time::SystemTime;

use aya::programs::links::{FdLink, LinkType, PinnedLink};
use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// The XDP attachment of one interface, as the kernel reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdpState {
    /// `native`, `generic`, `offload`, `multi` or `none`.
    pub mode: String,
    /// The attached program's id (0: none).
    pub program_id: u32,
}

/// A pinned link, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedLinkState {
    /// `tcx`, `xdp`, `netkit`, ... (the kernel's link type).
    pub kind: String,
    pub link_id: u32,
    pub program_id: u32,
    /// When the pin was made (see the module docs).
    pub since: Option<SystemTime>,
}

/// A question the kernel did not answer.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    #[error("netlink {op}")]
    Netlink {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink answered RTM_GETLINK for {interface} with error {code}")]
    NetlinkRefused { interface: String, code: i32 },
    #[error("cannot parse the netlink answer for {interface}: {detail}")]
    NetlinkParse { interface: String, detail: String },
    #[error("cannot open the pinned link {}", path.display())]
    Link {
        path: std::path::PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },
}

/// The XDP mode in effect on `interface` and its program, from `IFLA_XDP`.
pub fn xdp_state(interface: &str) -> Result<XdpState, InspectError> {
    let ifindex = nix::net::if_::if_nametoindex(interface)
        .map_err(|_| InspectError::NoSuchInterface(interface.to_owned()))?;
    let netlink = |op| move |source| InspectError::Netlink { op, source };
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(netlink("socket"))?;
    socket.bind_auto().map_err(netlink("bind"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(netlink("connect"))?;
    let mut message = LinkMessage::default();
    message.header.index = ifindex;
    let mut request = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(message)),
    );
    request.header.flags = NLM_F_REQUEST;
    request.header.sequence_number = 1;
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).map_err(netlink("send"))?;
    let (reply, _) = socket.recv_from_full().map_err(netlink("recv"))?;
    let parse = |detail: String| InspectError::NetlinkParse {
        interface: interface.to_owned(),
        detail,
    };
    let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| parse(e.to_string()))?;
    let link = match answer.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => link,
        NetlinkPayload::Error(e) => {
            return Err(InspectError::NetlinkRefused {
                interface: interface.to_owned(),
                code: e.code.map_or(0, std::num::NonZero::get),
            });
        }
        other => return Err(parse(format!("unexpected answer {other:?}"))),
    };
    Ok(xdp_from_attributes(&link.attributes))
}

/// The XDP state `IFLA_XDP` describes; no attribute means nothing attached.
fn xdp_from_attributes(attributes: &[LinkAttribute]) -> XdpState {
    let mut state = XdpState {
        mode: "none".to_owned(),
        program_id: 0,
    };
    for attribute in attributes {
        let LinkAttribute::Xdp(xdp) = attribute else {
            continue;
        };
        for nla in xdp {
            match nla {
                LinkXdp::Attached(attached) => {
                    state.mode = match attached {
                        XdpAttached::None => "none".to_owned(),
                        XdpAttached::Driver => "native".to_owned(),
                        XdpAttached::SocketBuffer => "generic".to_owned(),
                        XdpAttached::Hardware => "offload".to_owned(),
                        XdpAttached::Multiple => "multi".to_owned(),
                        XdpAttached::Other(n) => format!("unknown ({n})"),
                        _ => "unknown".to_owned(),
                    };
                }
                LinkXdp::ProgId(id) => state.program_id = *id,
                _ => {}
            }
        }
    }
    state
}

/// The link pinned at `path`, or `None` when nothing is pinned there.
pub fn pinned_link(path: &Path) -> Result<Option<PinnedLinkState>, InspectError> {
    let since = match std::fs::metadata(path) {
        Ok(meta) => meta.modified().ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => None,
    };
    let link_error = |source| InspectError::Link {
        path: path.to_path_buf(),
        source,
    };
    let link = FdLink::from(PinnedLink::from_pin(path).map_err(link_error)?);
    let info = link.info().map_err(link_error)?;
    let kind = match info.link_type() {
        Ok(LinkType::Tcx) => "tcx".to_owned(),
        Ok(LinkType::Xdp) => "xdp".to_owned(),
        Ok(other) => format!("{other:?}").to_lowercase(),
        Err(_) => "unknown".to_owned(),
    };
    Ok(Some(PinnedLinkState {
        kind,
        link_id: info.id(),
        program_id: info.program_id(),
        since,
    }))
}

/// The pin of `interface`'s XDP link under `pin_dir` (the name `KernelDatapath::attach` uses).
pub fn xdp_link_pin(pin_dir: &Path, interface: &str) -> std::path::PathBuf {
    pin_dir.join(format!("link_xdp_{interface}"))
}

/// The pin of `interface`'s TC egress link under `pin_dir`.
pub fn tc_link_pin(pin_dir: &Path, interface: &str) -> std::path::PathBuf {
    pin_dir.join(format!("link_tc_{interface}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_is_read_from_ifla_xdp() {
        let attached = |how| {
            xdp_from_attributes(&[LinkAttribute::Xdp(vec![
                LinkXdp::Attached(how),
                LinkXdp::ProgId(42),
            ])])
        };
        assert_eq!(
            attached(XdpAttached::SocketBuffer),
            XdpState {
                mode: "generic".into(),
                program_id: 42
            }
        );
        assert_eq!(attached(XdpAttached::Driver).mode, "native");
        assert_eq!(attached(XdpAttached::Hardware).mode, "offload");
        assert_eq!(
            xdp_from_attributes(&[]),
            XdpState {
                mode: "none".into(),
                program_id: 0
            }
        );
    }

    #[test]
    fn a_missing_interface_or_pin_is_named_not_fatal() {
        let e = xdp_state("xpkgnosuch0").expect_err("no such interface");
        assert_eq!(e.to_string(), "no such interface: xpkgnosuch0");
        let dir = tempfile::tempdir().expect("a directory");
        assert_eq!(
            pinned_link(&tc_link_pin(dir.path(), "eth0")).expect("nothing pinned"),
            None
        );
    }
}
