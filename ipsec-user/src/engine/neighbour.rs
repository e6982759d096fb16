//! Where an ESP packet sent by AF_XDP goes on the link: the output interface, its MAC address and
//! MTU, and the next hop's MAC address, from the kernel's routing and neighbour tables over
//! rtnetlink (`netlink-packet-route`), cached per (source, destination) and refreshed.
//!
//! Contract: [`Resolver::next_hop`] answers from its cache while an entry is younger than
//! [`REFRESH`]; otherwise it asks the kernel again, in the calling thread: `RTM_GETROUTE` for
//! the destination from the source with the engine's mark (what the raw socket's own route
//! lookup would find, policy rules included), then `RTM_GETNEIGH` for the gateway (or the
//! destination when on-link) on the output interface, then `RTM_GETLINK` for that interface.
//! It answers `None` (the caller then uses the raw socket, whose kernel path resolves the
//! neighbour) whenever the route is not a plain unicast route out of an Ethernet interface, or
//! the neighbour has no usable link-layer address (incomplete, failed, none), or the kernel does
//! not answer within the socket's timeout. A negative answer is cached as long as a positive
//! one. So a changed MAC address or route is followed within [`REFRESH`].

use std::net::Ipv6Addr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt as _};
use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// How long an answer is used before the kernel is asked again.
pub(super) const REFRESH: Duration = Duration::from_millis(500);
/// How long "no usable next hop" is believed: the raw socket's first packet makes the kernel
/// resolve the neighbour within milliseconds, so ask again soon.
const NEGATIVE_REFRESH: Duration = Duration::from_millis(50);

/// Destinations remembered at most; past it the cache starts over (every entry is cheap to
/// find again).
const CACHE_LIMIT: usize = 4096;

/// Where a packet leaves: the interface and both MAC addresses of its Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct NextHop {
    pub ifindex: u32,
    pub mtu: u32,
    pub source_mac: [u8; 6],
    pub destination_mac: [u8; 6],
}

/// The cache and the netlink socket it asks (see the module docs).
pub(super) struct Resolver {
    netlink: OwnedFd,
    mark: u32,
    sequence: u32,
    /// Looked up for every packet sent: a fast hash (foldhash, seeded per process); the keys
    /// are the SAs' own endpoints.
    cache: HashMap<(Ipv6Addr, Ipv6Addr), (Option<NextHop>, Instant)>,
    buf: Vec<u8>,
}

impl Resolver {
    /// A resolver asking over `netlink` (a `NETLINK_ROUTE` socket with a receive timeout) for
    /// routes as a socket marked `mark` would see them.
    pub(super) fn new(netlink: OwnedFd, mark: u32) -> Self {
        Self {
            netlink,
            mark,
            sequence: 0,
            cache: HashMap::new(),
            buf: vec![0; 16 * 1024],
        }
    }

    /// Where a packet from `source` to `destination` leaves, if it can leave by AF_XDP.
    pub(super) fn next_hop(
        &mut self,
        source: Ipv6Addr,
        destination: Ipv6Addr,
        now: Instant,
    ) -> Option<NextHop> {
        if let Some((hop, at)) = self.cache.get(&(source, destination))
            && now.saturating_duration_since(*at)
                < if hop.is_some() {
                    REFRESH
                } else {
                    NEGATIVE_REFRESH
                }
        {
            return *hop;
        }
        let hop = self.resolve(source, destination);
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert((source, destination), (hop, now));
        hop
    }

    fn resolve(&mut self, source: Ipv6Addr, destination: Ipv6Addr) -> Option<NextHop> {
        let (ifindex, gateway) = self.route(source, destination)?;
        let destination_mac = self.neighbour(ifindex, gateway.unwrap_or(destination))?;
        let (source_mac, mtu) = self.link(ifindex)?;
        Some(NextHop {
            ifindex,
            mtu,
            source_mac,
            destination_mac,
        })
    }

    /// The output interface and gateway of the route to `destination` from `source`.
    fn route(
        &mut self,
        source: Ipv6Addr,
        destination: Ipv6Addr,
    ) -> Option<(u32, Option<Ipv6Addr>)> {
        let mut request = RouteMessage::default();
        request.header.address_family = AddressFamily::Inet6;
        request.header.destination_prefix_length = 128;
        request.header.source_prefix_length = 128;
        request.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet6(destination)),
            RouteAttribute::Source(RouteAddress::Inet6(source)),
            RouteAttribute::Mark(self.mark),
        ];
        let RouteNetlinkMessage::NewRoute(reply) =
            self.ask(RouteNetlinkMessage::GetRoute(request))?
        else {
            return None;
        };
        if reply.header.kind != RouteType::Unicast {
            return None;
        }
        let (mut oif, mut gateway) = (None, None);
        for attribute in &reply.attributes {
            match attribute {
                RouteAttribute::Oif(index) => oif = Some(*index),
                RouteAttribute::Gateway(RouteAddress::Inet6(via)) => gateway = Some(*via),
                _ => {}
            }
        }
        Some((oif?, gateway))
    }

    /// The link-layer address of neighbour `address` on `ifindex`, when the kernel has a usable
    /// one.
    fn neighbour(&mut self, ifindex: u32, address: Ipv6Addr) -> Option<[u8; 6]> {
        let mut request = NeighbourMessage::default();
        request.header.family = AddressFamily::Inet6;
        request.header.ifindex = ifindex;
        request.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Inet6(
            address,
        ))];
        let RouteNetlinkMessage::NewNeighbour(reply) =
            self.ask(RouteNetlinkMessage::GetNeighbour(request))?
        else {
            return None;
        };
        let usable = matches!(
            reply.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
        );
        if !usable {
            return None;
        }
        reply.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(mac) => mac.as_slice().try_into().ok(),
            _ => None,
        })
    }

    /// The MAC address and MTU of interface `ifindex` (`None` unless it has a 6-byte address).
    fn link(&mut self, ifindex: u32) -> Option<([u8; 6], u32)> {
        let mut request = LinkMessage::default();
        request.header.index = ifindex;
        let RouteNetlinkMessage::NewLink(reply) =
            self.ask(RouteNetlinkMessage::GetLink(request))?
        else {
            return None;
        };
        let (mut mac, mut mtu) = (None, None);
        for attribute in &reply.attributes {
            match attribute {
                LinkAttribute::Address(address) => mac = address.as_slice().try_into().ok(),
                LinkAttribute::Mtu(value) => mtu = Some(*value),
                _ => {}
            }
        }
        Some((mac?, mtu?))
    }

    /// Sends one request and returns the kernel's answer to it (`None` on an error answer, a
    /// timeout or a reply that does not parse). Replies to earlier, timed-out requests are
    /// skipped by their sequence number.
    fn ask(&mut self, message: RouteNetlinkMessage) -> Option<RouteNetlinkMessage> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = self.sequence;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::from(message));
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        rustix::net::send(&self.netlink, &bytes, rustix::net::SendFlags::empty()).ok()?;
        loop {
            let (got, _) = rustix::net::recv(
                &self.netlink,
                &mut self.buf[..],
                rustix::net::RecvFlags::empty(),
            )
            .ok()?;
            let reply =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(self.buf.get(..got)?).ok()?;
            if reply.header.sequence_number != self.sequence {
                continue;
            }
            return match reply.payload {
                NetlinkPayload::InnerMessage(inner) => Some(inner),
                _ => None,
            };
        }
    }
}
