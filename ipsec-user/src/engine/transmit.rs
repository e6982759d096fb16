//! How sealed ESP leaves: through an AF_XDP socket's transmit ring when it can, through the raw
//! ESP socket otherwise.
//!
//! Contract of [`Transmit::send`]: every packet of a batch is ESP that `Outbound::seal` has
//! sealed (the caller never hands over anything else), and each leaves exactly once, in batch
//! order, by one of two paths:
//! - **AF_XDP** (`xsk`), when the engine has a sender on the interface the kernel's route to the
//!   packet's destination (from its source, with the engine's mark) goes out of, the kernel
//!   knows the next hop's MAC address (`neighbour`), and the IPv6 packet fits the interface MTU
//!   and the Ethernet frame a UMEM frame. The engine writes the Ethernet header (the
//!   interface's MAC, the next hop's, EtherType IPv6) and the outer IPv6 header itself (RFC 8200
//!   §3: version 6, the traffic class and hop limit `encapsulate` chose, flow label 0, next
//!   header 50, the SA's addresses; no extension headers), then the ESP bytes. No route lookup,
//!   IPv6 output, netfilter, qdisc or TC egress runs for it (ESP, which TC egress lets through
//!   anyway), and packet taps on the sending interface do not see it.
//! - **The raw socket** (`sys::send_batch`) for everything else: no AF_XDP sender on that
//!   interface, neighbour unknown (the kernel's output path resolves it), ESP larger than the
//!   MTU (the kernel fragments it: outer fragments always take this path) or than a frame,
//!   AF_XDP transmission off ([`EngineConfig::xsk_tx`](super::EngineConfig)).
//!
//! ESP in UDP (RFC 3948; the core shapes it, `core::udp::is_udp` tells it apart) takes the same
//! two paths: on AF_XDP with next header 17 in the header the engine writes, on the raw path
//! through a raw `IPPROTO_UDP` socket of its own (the raw ESP socket can only send ESP), which
//! sends the UDP header and checksum the core wrote, carries the same mark, reports its socket
//! cookie for TC egress ([`Transmit::udp_socket_cookie`]), and receives nothing (a socket
//! filter refuses every copy of inbound UDP the kernel would queue on a raw UDP socket).
//!
//! A third path for ESP in UDP, when the engine has a GSO sender (`udp_gso`, `--esp-gso on`, the
//! default): a run of packets of one SA that `udp_gso::run_len` allows leaves as one GSO frame
//! when the next hop is known and each packet fits the MTU.
//!
//! Runs of consecutive packets taking the same path are sent together, each run after the one
//! before has left, so sequence numbers leave in order. A packet that cannot be sent is dropped
//! and counted (`esp_send_errors`), never retried on the other path after a failure, and never
//! sent in clear.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use std::os::fd::{AsRawFd, OwnedFd};

use super::core::udp::{complete_checksum, is_udp};
use super::neighbour::{NextHop, Resolver};
use super::sys::{self, Outgoing};
use super::udp_gso::{self, GsoSender};
use super::xsk::XskSender;
use crate::wire::IPV6_HEADER_LEN;
use crate::wire::Ipv6Repr;

/// Ethernet II header: destination, source, EtherType.
const ETHERNET_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
/// IPv6 next header of ESP (RFC 4303 §2).
const NEXT_HEADER_ESP: u8 = 50;
/// IPv6 next header of UDP: ESP in UDP (RFC 3948).
const NEXT_HEADER_UDP: u8 = 17;

/// What one [`Transmit::send`] did.
#[derive(Debug, Default)]
pub(super) struct Sent {
    /// Packets handed to an AF_XDP transmit ring.
    pub xsk: usize,
    /// GSO frames sent (`udp_gso`) and the packets they carried.
    pub gso_frames: usize,
    pub gso_segments: usize,
    /// Packets that could not be sent (either path).
    pub failed: usize,
    /// The first error seen.
    pub error: Option<io::Error>,
}

impl Sent {
    fn fail(&mut self, failed: usize, error: Option<io::Error>) {
        self.failed += failed;
        if let Some(e) = error {
            self.error.get_or_insert(e);
        }
    }
}

/// The outbound sending state: the AF_XDP senders and the next-hop cache (see the module docs).
pub(super) struct Transmit {
    raw: RawFd,
    /// The raw UDP socket for ESP in UDP on the raw path; `None` if it could not be opened
    /// (logged; such packets then count as send errors).
    udp: Option<OwnedFd>,
    /// `None` when AF_XDP transmission is off or no sender exists.
    resolver: Option<Resolver>,
    senders: Vec<XskSender>,
    /// ESP-in-UDP runs as GSO frames (`udp_gso`); `None` when off or not available.
    gso: Option<GsoSender>,
}

impl Transmit {
    /// Sends through `senders` where possible (resolving next hops with `resolver`), else
    /// through the raw ESP socket `raw` (owned by the engine, open as long as this value).
    pub(super) fn new(
        raw: RawFd,
        resolver: Option<Resolver>,
        senders: Vec<XskSender>,
        gso: Option<GsoSender>,
    ) -> Self {
        let resolver = resolver.filter(|_| !senders.is_empty() || gso.is_some());
        let udp = open_udp_socket()
            .map_err(|error| {
                tracing::warn!(%error, "cannot open the raw udp socket: esp in udp can leave only through AF_XDP");
            })
            .ok();
        Self {
            raw,
            udp,
            resolver,
            senders,
            gso,
        }
    }

    /// The socket cookie of the GSO sender, for TC egress.
    pub(super) fn gso_socket_cookie(&self) -> Option<u64> {
        self.gso.as_ref().map(GsoSender::cookie)
    }

    /// Whether ESP in UDP leaves in GSO frames.
    pub(super) fn gso_active(&self) -> bool {
        self.gso.is_some() && self.resolver.is_some()
    }

    /// The length of the GSO run starting `packets` and its next hop, if it can leave as one.
    fn gso_run(&mut self, packets: &[Outgoing], now: Instant) -> Option<(usize, NextHop)> {
        self.gso.as_ref()?;
        let len = udp_gso::run_len(packets);
        if len < 2 {
            return None;
        }
        let first = &packets[0];
        let hop = self
            .resolver
            .as_mut()?
            .next_hop(first.source, first.destination, now)?;
        // Each segment must fit the link as the packet it becomes.
        (IPV6_HEADER_LEN + first.esp().len() <= usize::try_from(hop.mtu).unwrap_or(0))
            .then_some((len, hop))
    }

    /// The socket cookie of the raw UDP socket, for TC egress (see the module docs).
    pub(super) fn udp_socket_cookie(&self) -> Option<u64> {
        self.udp
            .as_ref()
            .map(|fd| sys::socket_cookie(fd.as_raw_fd()))
    }

    /// Sends `packets` in order (see the module docs). ESP in UDP sent alone gets its UDP
    /// checksum here (`core::udp::complete_checksum`); a GSO frame's is the device's.
    pub(super) fn send(&mut self, packets: &mut [Outgoing], now: Instant) -> Sent {
        let mut sent = Sent::default();
        // Start of the run of packets waiting for the raw socket.
        let mut raw_run = None;
        let mut i = 0;
        while i < packets.len() {
            if let Some((len, hop)) = self.gso_run(&packets[i..], now) {
                // Everything before the run leaves first.
                if let Some(start) = raw_run.take() {
                    self.send_raw(&packets[start..i], &mut sent);
                }
                self.flush(&mut sent);
                let run = &packets[i..i + len];
                match self.gso.as_ref().map(|gso| gso.send(&hop, run)) {
                    Some(Ok(())) => {
                        sent.gso_frames += 1;
                        sent.gso_segments += len;
                    }
                    Some(Err(e)) => sent.fail(len, Some(e)),
                    None => sent.fail(len, None),
                }
                i += len;
                continue;
            }
            let packet = &mut packets[i];
            if udp_packet(packet) {
                complete_checksum(&mut packet.buf, packet.source, packet.destination);
            }
            let packet = &packets[i];
            if self.stage(packet, now) {
                // The raw run before this packet leaves first (staged frames leave on flush).
                if let Some(start) = raw_run.take() {
                    self.send_raw(&packets[start..i], &mut sent);
                }
                sent.xsk += 1;
            } else if raw_run.is_none() {
                // What was staged before this packet leaves before it.
                self.flush(&mut sent);
                raw_run = Some(i);
            }
            i += 1;
        }
        if let Some(start) = raw_run {
            self.send_raw(&packets[start..], &mut sent);
        }
        self.flush(&mut sent);
        sent
    }

    /// Sends `packets` through the raw sockets, in order: plain ESP on the ESP socket, ESP in
    /// UDP on the UDP socket, each run of one kind together.
    fn send_raw(&self, packets: &[Outgoing], sent: &mut Sent) {
        for run in packets.chunk_by(|a, b| udp_packet(a) == udp_packet(b)) {
            let fd = if udp_packet(&run[0]) {
                let Some(udp) = &self.udp else {
                    sent.fail(run.len(), Some(io::Error::other("no raw udp socket")));
                    continue;
                };
                udp.as_raw_fd()
            } else {
                self.raw
            };
            let (failed, error) = sys::send_batch(fd, run);
            sent.fail(failed, error);
        }
    }

    fn flush(&mut self, sent: &mut Sent) {
        for sender in &mut self.senders {
            sender.flush();
            let (failed, error) = sender.take_failures();
            sent.fail(failed, error);
            sent.xsk -= failed.min(sent.xsk);
        }
    }

    /// Writes `packet` into an AF_XDP transmit frame if it can leave that way.
    fn stage(&mut self, packet: &Outgoing, now: Instant) -> bool {
        let Some(resolver) = &mut self.resolver else {
            return false;
        };
        let esp = packet.esp();
        let Some(hop) = resolver.next_hop(packet.source, packet.destination, now) else {
            return false;
        };
        let Ok(payload_len) = u16::try_from(esp.len()) else {
            return false;
        };
        // Larger than the link: the kernel fragments it (raw socket).
        if IPV6_HEADER_LEN + esp.len() > usize::try_from(hop.mtu).unwrap_or(0) {
            return false;
        }
        let Some(sender) = self.senders.iter_mut().find(|s| s.ifindex() == hop.ifindex) else {
            return false;
        };
        let header = Ipv6Repr {
            src_addr: packet.source,
            dst_addr: packet.destination,
            next_header: if udp_packet(packet) {
                NEXT_HEADER_UDP
            } else {
                NEXT_HEADER_ESP
            },
            payload_len,
            hop_limit: packet.hop_limit,
            traffic_class: packet.traffic_class,
            flow_label: 0,
        };
        let len = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + esp.len();
        sender.stage(len, |frame| write_frame(frame, &hop, &header, esp))
    }
}

/// Whether `packet` is ESP in UDP (what it sends starts with the UDP header).
pub(super) fn udp_packet(packet: &Outgoing) -> bool {
    is_udp(&packet.buf, packet.esp_offset)
}

/// Opens the raw `IPPROTO_UDP` socket ESP in UDP leaves by on the raw path: the engine's mark,
/// fragmentation at the interface MTU as on the ESP socket (`IPV6_PMTUDISC_OMIT`), bounded
/// send blocking, and a socket filter that accepts nothing, so the copies of inbound UDP the
/// kernel hands every raw UDP socket are dropped before they queue.
fn open_udp_socket() -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto, sockopt};
    let fd = rustix::net::socket_with(
        AddressFamily::INET6,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(ipproto::UDP),
    )?;
    // `BPF_RET | BPF_K` 0: keep no byte of any packet.
    let mut refuse_all = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    sys::attach_cbpf(fd.as_raw_fd(), libc::SO_ATTACH_FILTER, &mut refuse_all)?;
    nix::sys::socket::setsockopt(
        &fd,
        nix::sys::socket::sockopt::Mark,
        &ipsec_common::abi::XIPSEC_MARK,
    )?;
    sockopt::set_ipv6_mtu_discover(&fd, sockopt::Ipv6PathMtuDiscovery::OMIT)?;
    if sockopt::set_socket_send_buffer_size_force(&fd, UDP_SEND_BUFFER).is_err() {
        sockopt::set_socket_send_buffer_size(&fd, UDP_SEND_BUFFER)?;
    }
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, Some(UDP_SEND_TIMEOUT))?;
    Ok(fd)
}

/// The raw UDP socket's send buffer (as the ESP socket's) and send timeout (never long enough
/// to keep a worker from seeing the shutdown).
const UDP_SEND_BUFFER: usize = 8 << 20;
const UDP_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(200);

/// Writes Ethernet header, IPv6 header and `esp` into `frame` (exactly their length).
fn write_frame(frame: &mut [u8], hop: &NextHop, header: &Ipv6Repr, esp: &[u8]) {
    let (ethernet, rest) = frame.split_at_mut(ETHERNET_HEADER_LEN);
    ethernet[..6].copy_from_slice(&hop.destination_mac);
    ethernet[6..12].copy_from_slice(&hop.source_mac);
    ethernet[12..].copy_from_slice(&ETHERTYPE_IPV6);
    let (ip, payload) = rest.split_at_mut(IPV6_HEADER_LEN);
    ip.copy_from_slice(&header.to_bytes());
    payload.copy_from_slice(esp);
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    /// The frame `write_frame` builds, for tests.
    fn frame_for(hop: &NextHop, source: Ipv6Addr, destination: Ipv6Addr, esp: &[u8]) -> Vec<u8> {
        let header = Ipv6Repr {
            src_addr: source,
            dst_addr: destination,
            next_header: NEXT_HEADER_ESP,
            payload_len: u16::try_from(esp.len()).expect("small"),
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0,
        };
        let mut frame = vec![0; ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + esp.len()];
        write_frame(&mut frame, hop, &header, esp);
        frame
    }

    /// The frame is Ethernet (next hop's MAC, ours, 0x86dd), a plain IPv6 header whose payload
    /// length is the ESP's and whose next header is 50, then the ESP bytes unchanged.
    #[test]
    fn frames_are_ethernet_ipv6_esp() {
        let hop = NextHop {
            ifindex: 3,
            mtu: 1500,
            source_mac: [2, 0, 0, 0, 0, 1],
            destination_mac: [2, 0, 0, 0, 0, 2],
        };
        let esp = [0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 0xaa, 0xbb];
        let frame = frame_for(
            &hop,
            "2001:db8::1".parse().expect("address"),
            "2001:db8::2".parse().expect("address"),
            &esp,
        );
        let expected: Vec<u8> = [
            &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd][..],
            &[0x6b, 0x80, 0, 0, 0, 10, 50, 64],
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            &esp,
        ]
        .concat();
        assert_eq!(frame, expected);
    }
}
