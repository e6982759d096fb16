//! UDP GSO and GRO for ESP in UDP (RFC 3948): a run of ESP packets of one SA crosses the link as
//! one skb of up to 64 KiB instead of one skb per ESP packet (what wireguard-go does for its
//! UDP). A pure optimisation: every packet it carries was sealed by `Outbound::seal`, and every
//! packet it delivers goes through the same inbound checks as the AF_XDP path.
//!
//! Contract:
//! - **Transmit** ([`GsoSender`]): a run of at least two consecutive sealed ESP-in-UDP packets
//!   with the same addresses, ports, hop limit and traffic class, all of one length but the last
//!   (which is not longer), at most [`MAX_SEGMENTS`] and 65,535 bytes of UDP in all
//!   ([`run_len`]), leaves as one frame on an `AF_PACKET` socket with a virtio-net header
//!   (`PACKET_VNET_HDR`, `VIRTIO_NET_HDR_GSO_UDP_L4`, the segment size = one ESP packet): the
//!   engine writes the Ethernet header (next hop from `neighbour`), one IPv6 header and one UDP
//!   header for the whole run, the checksum left to the device (`NEEDS_CSUM`: the pseudo-header
//!   sum in the field). A device that segments UDP (veth, most NICs: `tx-udp-segmentation`)
//!   carries it whole, or the kernel's GSO cuts it into the very packets the raw path would have
//!   sent (each with its own UDP header, length and checksum). The socket carries the engine's
//!   mark and its cookie is registered with TC egress like the engine's other sockets (TC
//!   egress then sees UDP from an engine socket under one of our outbound SPIs: passed). No
//!   port is bound for sending, so nothing competes with IKE on port 4500.
//! - **Receive** ([`GroSocket`]): per (local address, local port) of the inbound SAs with
//!   `--udp-encapsulation`, a UDP socket with `UDP_GRO` receives what XDP leaves to the stack:
//!   ESP-in-UDP super-packets (longer than an AF_XDP frame holds, so XDP passes them after
//!   checking the first SPI) arrive whole, with their segment size (`UDP_GRO` control message),
//!   and are cut back into ESP packets ([`segments`]), each then checked by the inbound core
//!   exactly as one from AF_XDP (SA by SPI, addresses, encapsulation shape and port, replay
//!   window, ICV before anything is decrypted). A datagram that is not ESP (IKE's non-ESP
//!   marker, should one reach this socket; a keepalive) is dropped by the inbound core (no SA
//!   has SPI 0; too short for ESP). Without the daemon nothing is bound: the kernel drops the
//!   ciphertext (port unreachable), never delivers it. A socket that cannot be bound is logged
//!   and tried again at the next change of the SAs.
//! - **Sharing port 4500 with IKE.** The receive socket and the IKE task's socket on the same
//!   address join one `SO_REUSEPORT` group (both set it); a classic BPF program on the group
//!   ([`steer_program`]) sends datagrams whose first word is zero (IKE behind the non-ESP
//!   marker, RFC 3948 §2.2) to IKE's socket and the rest (ESP) to the engine's. The kernel
//!   indexes the group's sockets in the order they joined; the engine finds out whether it
//!   joined first by trying to bind the address without sharing first (`probe`).

use std::io;
use std::mem;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

use super::neighbour::NextHop;
use super::sys::{self, Outgoing};
use super::transmit::udp_packet;
use crate::wire::{IPV6_HEADER_LEN, Ipv6Repr, checksum, proto};

/// The UDP header (RFC 768).
const UDP_HEADER_LEN: usize = 8;
/// Ethernet II header.
const ETHERNET_HEADER_LEN: usize = 14;
/// `struct virtio_net_hdr` (without `num_buffers`).
const VNET_HDR_LEN: usize = 10;
/// Everything in front of the first ESP packet of a GSO frame.
const HEADERS_LEN: usize = VNET_HDR_LEN + ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + UDP_HEADER_LEN;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM` and `VIRTIO_NET_HDR_GSO_UDP_L4`.
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_GSO_UDP_L4: u8 = 5;
/// `PACKET_VNET_HDR` (linux/if_packet.h).
const PACKET_VNET_HDR: libc::c_int = 15;
/// `UDP_GRO` (linux/udp.h).
const UDP_GRO: libc::c_int = 104;
/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
/// Segments per GSO frame: the kernel's `UDP_MAX_SEGMENTS` (64 on older kernels, 128 now).
pub(super) const MAX_SEGMENTS: usize = 64;
/// Largest UDP datagram (header included) without an IPv6 jumbogram.
const MAX_UDP: usize = 65_535;
/// The send buffer of the [`GsoSender`] and the receive buffer of a [`GroSocket`].
const SOCKET_BUFFER: usize = 8 << 20;

/// How many packets from the start of `packets` may leave as one GSO frame (see the module
/// docs); 0 or 1 means none.
pub(super) fn run_len(packets: &[Outgoing]) -> usize {
    let Some(first) = packets.first().filter(|p| udp_packet(p)) else {
        return 0;
    };
    let first_udp = first.esp();
    let Some(ports) = first_udp.get(..4) else {
        return 0;
    };
    let size = first_udp.len() - UDP_HEADER_LEN;
    if size == 0 {
        return 0;
    }
    let mut total = UDP_HEADER_LEN;
    let mut n = 0;
    for packet in packets.iter().take(MAX_SEGMENTS) {
        let udp = packet.esp();
        let len = udp.len().saturating_sub(UDP_HEADER_LEN);
        let same = udp_packet(packet)
            && packet.source == first.source
            && packet.destination == first.destination
            && packet.hop_limit == first.hop_limit
            && packet.traffic_class == first.traffic_class
            && udp.get(..4) == Some(ports)
            && len > 0
            && len <= size
            && total + len <= MAX_UDP;
        if !same {
            break;
        }
        total += len;
        n += 1;
        // Only the last segment may be shorter.
        if len < size {
            break;
        }
    }
    n
}

/// The `AF_PACKET` socket GSO frames leave by (see the module docs).
pub(super) struct GsoSender {
    fd: OwnedFd,
}

impl GsoSender {
    /// A packet socket that receives nothing (protocol 0), takes a virtio-net header in front
    /// of each frame, and carries the engine's mark.
    pub(super) fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is the socket just created, owned by nothing else.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        sys::set_int_option(fd.as_raw_fd(), libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
        nix::sys::socket::setsockopt(
            &fd,
            nix::sys::socket::sockopt::Mark,
            &ipsec_common::abi::XIPSEC_MARK,
        )?;
        let buffer = libc::c_int::try_from(SOCKET_BUFFER).unwrap_or(libc::c_int::MAX);
        if sys::set_int_option(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            buffer,
        )
        .is_err()
        {
            sys::set_int_option(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, buffer)?;
        }
        Ok(Self { fd })
    }

    /// The socket's cookie, for TC egress.
    pub(super) fn cookie(&self) -> u64 {
        super::sys::socket_cookie(self.fd.as_raw_fd())
    }

    /// Sends `run` (what [`run_len`] allowed, at least two packets) to `hop` as one GSO frame.
    pub(super) fn send(&self, hop: &NextHop, run: &[Outgoing]) -> io::Result<()> {
        let first = &run[0];
        let segment = first.esp().len() - UDP_HEADER_LEN;
        let payload: usize = run.iter().map(|p| p.esp().len() - UDP_HEADER_LEN).sum();
        let udp_len = UDP_HEADER_LEN + payload;
        let udp_len16 = u16::try_from(udp_len).map_err(|_| io::Error::other("gso run too long"))?;
        let mut headers = [0u8; HEADERS_LEN];
        let (vnet, rest) = headers.split_at_mut(VNET_HDR_LEN);
        let l4 = u16::try_from(ETHERNET_HEADER_LEN + IPV6_HEADER_LEN).unwrap_or(0);
        let hdr_len = l4 + u16::try_from(UDP_HEADER_LEN).unwrap_or(0);
        vnet[0] = VNET_F_NEEDS_CSUM;
        vnet[1] = VNET_GSO_UDP_L4;
        // Little-endian: packet sockets use the host's order (`vio_le`) on little-endian hosts,
        // and virtio 1.0's everywhere else.
        vnet[2..4].copy_from_slice(&hdr_len.to_le_bytes());
        vnet[4..6].copy_from_slice(&u16::try_from(segment).unwrap_or(0).to_le_bytes());
        vnet[6..8].copy_from_slice(&l4.to_le_bytes());
        vnet[8..10].copy_from_slice(&6u16.to_le_bytes());
        let (ethernet, rest) = rest.split_at_mut(ETHERNET_HEADER_LEN);
        ethernet[..6].copy_from_slice(&hop.destination_mac);
        ethernet[6..12].copy_from_slice(&hop.source_mac);
        ethernet[12..].copy_from_slice(&[0x86, 0xdd]);
        let (ip, udp) = rest.split_at_mut(IPV6_HEADER_LEN);
        let header = Ipv6Repr {
            src_addr: first.source,
            dst_addr: first.destination,
            next_header: proto::UDP,
            payload_len: udp_len16,
            hop_limit: first.hop_limit,
            traffic_class: first.traffic_class,
            flow_label: 0,
        };
        ip.copy_from_slice(&header.to_bytes());
        // Ports as the core wrote them; the length of the whole run; the pseudo-header sum,
        // which the device (or GSO, per segment) completes over the UDP header and data.
        udp[..4].copy_from_slice(&first.esp()[..4]);
        udp[4..6].copy_from_slice(&udp_len16.to_be_bytes());
        let pseudo = checksum::fold(checksum::pseudo_header(
            &first.source.octets(),
            &first.destination.octets(),
            proto::UDP,
            udp_len,
        ));
        udp[6..8].copy_from_slice(&pseudo.to_be_bytes());
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_SEGMENTS + 1];
        iovs[0] = libc::iovec {
            iov_base: headers.as_mut_ptr().cast(),
            iov_len: HEADERS_LEN,
        };
        for (iov, packet) in iovs[1..].iter_mut().zip(run) {
            let esp = &packet.esp()[UDP_HEADER_LEN..];
            *iov = libc::iovec {
                iov_base: esp.as_ptr().cast_mut().cast(),
                iov_len: esp.len(),
            };
        }
        // SAFETY: `sockaddr_ll` is plain old data; all-zero is valid.
        let mut name: libc::sockaddr_ll = unsafe { mem::zeroed() };
        name.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(0);
        name.sll_protocol = 0x86ddu16.to_be();
        name.sll_ifindex = i32::try_from(hop.ifindex).unwrap_or(0);
        // SAFETY: `msghdr` is plain old data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&raw mut name).cast();
        msg.msg_namelen =
            libc::socklen_t::try_from(mem::size_of::<libc::sockaddr_ll>()).unwrap_or_default();
        msg.msg_iov = iovs.as_mut_ptr();
        msg.msg_iovlen = run.len().min(MAX_SEGMENTS) + 1;
        loop {
            // SAFETY: `msg` points at `name`, `iovs`, `headers` and the packets of `run`, all
            // alive and unmoved for the duration of the call.
            let sent = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &raw const msg, 0) };
            if sent >= 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

/// A receiving socket of ESP-in-UDP super-packets (see the module docs).
pub(super) struct GroSocket {
    pub fd: OwnedFd,
    pub local: SocketAddrV6,
}

/// The reuseport group's steering program: `ld [0]; jeq #0 ? ike : esp`. A payload shorter than
/// a word (a keepalive) aborts the load, which returns 0.
pub(super) fn steer_program(esp_index: u32) -> [libc::sock_filter; 4] {
    let ike_index = 1 - esp_index.min(1);
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    [
        // BPF_LD | BPF_W | BPF_ABS: the first payload word (the kernel pulled the UDP header).
        op(0x20, 0, 0, 0),
        // BPF_JMP | BPF_JEQ | BPF_K.
        op(0x15, 0, 1, 0),
        // BPF_RET | BPF_K.
        op(0x06, 0, 0, ike_index),
        op(0x06, 0, 0, esp_index),
    ]
}

/// Whether nothing is bound to `local`: a bind without `SO_REUSEADDR`/`SO_REUSEPORT` succeeds
/// (`IP_FREEBIND` as the real socket, so an address still tentative answers the same).
fn probe(local: SocketAddrV6) -> bool {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn6, bind, setsockopt, socket, sockopt,
    };
    let Ok(fd) = socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    setsockopt(&fd, sockopt::IpFreebind, &true).is_ok()
        && setsockopt(&fd, sockopt::Ipv6V6Only, &true).is_ok()
        && bind(fd.as_raw_fd(), &SockaddrIn6::from(local)).is_ok()
}

impl GroSocket {
    /// Binds `local` with `UDP_GRO`, the control messages the inbound core needs, and the
    /// steering program (see the module docs).
    pub(super) fn open(local: SocketAddrV6) -> io::Result<Self> {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrIn6, bind, setsockopt, socket, sockopt,
        };
        let alone = probe(local);
        let fd = socket(
            AddressFamily::Inet6,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        setsockopt(&fd, sockopt::ReusePort, &true)?;
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
        // An address still tentative (duplicate address detection) binds now, not never.
        setsockopt(&fd, sockopt::IpFreebind, &true)?;
        setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)?;
        let raw = fd.as_raw_fd();
        sys::set_int_option(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
        sys::set_int_option(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1)?;
        sys::set_int_option(raw, libc::IPPROTO_UDP, UDP_GRO, 1)?;
        let buffer = libc::c_int::try_from(SOCKET_BUFFER).unwrap_or(libc::c_int::MAX);
        if sys::set_int_option(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, buffer).is_err() {
            sys::set_int_option(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, buffer)?;
        }
        bind(raw, &SockaddrIn6::from(local))?;
        // Joined first: index 0; else behind IKE's socket, index 1.
        let mut program = steer_program(u32::from(!alone));
        sys::attach_cbpf(raw, SO_ATTACH_REUSEPORT_CBPF, &mut program)?;
        Ok(Self { fd, local })
    }

    /// One datagram or super-packet into `buf`, if one is queued.
    pub(super) fn receive(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        // SAFETY: `sockaddr_in6` is plain old data; all-zero is valid.
        let mut name: libc::sockaddr_in6 = unsafe { mem::zeroed() };
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: `msghdr` is plain old data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&raw mut name).cast();
        msg.msg_namelen =
            libc::socklen_t::try_from(mem::size_of::<libc::sockaddr_in6>()).unwrap_or_default();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control);
        // SAFETY: `msg` points at `name`, `iov` (over `buf`) and `control`, all alive for the
        // call; the kernel writes at most their lengths.
        let got = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
        let Ok(len) = usize::try_from(got) else {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(error),
            };
        };
        let mut received = Received {
            len,
            truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
            source: Ipv6Addr::from(name.sin6_addr.s6_addr),
            source_port: u16::from_be(name.sin6_port),
            destination: None,
            hop_limit: 64,
            traffic_class: 0,
            segment: 0,
        };
        let control: &[u8] = bytemuck::cast_slice(&control);
        let mut at = 0;
        let end = msg.msg_controllen.min(control.len());
        while at + 16 <= end {
            let len = usize::from_ne_bytes(control[at..at + 8].try_into().unwrap_or_default());
            let level = i32::from_ne_bytes(control[at + 8..at + 12].try_into().unwrap_or_default());
            let kind = i32::from_ne_bytes(control[at + 12..at + 16].try_into().unwrap_or_default());
            if len < 16 || at + len > end {
                break;
            }
            let data = &control[at + 16..at + len];
            let int = || {
                data.get(..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or_default()))
            };
            match (level, kind) {
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= 16 => {
                    let octets: [u8; 16] = data[..16].try_into().unwrap_or_default();
                    received.destination = Some(Ipv6Addr::from(octets));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    received.hop_limit = int().and_then(|v| u8::try_from(v).ok()).unwrap_or(64);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                    received.traffic_class = int().and_then(|v| u8::try_from(v).ok()).unwrap_or(0);
                }
                (libc::IPPROTO_UDP, UDP_GRO) => {
                    // A u16 in the kernel's `put_cmsg` (the first two bytes on this host).
                    received.segment = data
                        .get(..2)
                        .map_or(0, |b| usize::from(u16::from_ne_bytes([b[0], b[1]])));
                }
                _ => {}
            }
            at += len.next_multiple_of(8);
        }
        Ok(Some(received))
    }
}

/// What [`GroSocket::receive`] took.
#[derive(Debug)]
pub(super) struct Received {
    /// Bytes of UDP payload in the buffer.
    pub len: usize,
    /// The datagram did not fit the buffer (dropped whole).
    pub truncated: bool,
    pub source: Ipv6Addr,
    pub source_port: u16,
    /// From `IPV6_PKTINFO`; `None` if missing (dropped).
    pub destination: Option<Ipv6Addr>,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// The segment size of a super-packet (`UDP_GRO`), 0 for one datagram.
    pub segment: usize,
}

/// The datagrams of a received payload: `segment`-byte pieces, the last possibly shorter, or the
/// whole payload when `segment` is 0.
pub(super) fn segments(payload: &[u8], segment: usize) -> std::slice::Chunks<'_, u8> {
    payload.chunks(if segment == 0 {
        payload.len().max(1)
    } else {
        segment
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(len: usize, destination: &str) -> Outgoing {
        let mut out = Outgoing::new();
        let mut header = [0u8; IPV6_HEADER_LEN];
        header[0] = 0x60;
        header[6] = proto::UDP;
        out.buf.extend_from_slice(&header);
        out.buf
            .extend_from_slice(&[0x11, 0x94, 0x11, 0x94, 0, 0, 0, 0]);
        out.buf.extend(std::iter::repeat_n(0xab, len));
        // ESP's SPI is not zero.
        out.buf[IPV6_HEADER_LEN + UDP_HEADER_LEN] = 1;
        out.esp_offset = IPV6_HEADER_LEN;
        out.destination = destination.parse().expect("address");
        out
    }

    /// A run stops at another destination, after a shorter packet, and at the segment limit.
    #[test]
    fn runs_are_one_flow_of_equal_segments() {
        let same = |n| (0..n).map(|_| packet(1400, "fd00::2")).collect::<Vec<_>>();
        assert_eq!(run_len(&same(5)), 5);
        let mut mixed = same(3);
        mixed.push(packet(1400, "fd00::3"));
        assert_eq!(run_len(&mixed), 3);
        let mut short = same(2);
        short.push(packet(700, "fd00::2"));
        short.push(packet(1400, "fd00::2"));
        assert_eq!(run_len(&short), 3, "the shorter packet ends the run");
        let mut longer = same(1);
        longer.push(packet(1500, "fd00::2"));
        assert_eq!(run_len(&longer), 1, "a longer packet cannot follow");
        assert_eq!(
            run_len(&same(MAX_SEGMENTS + 3)),
            46,
            "65,535 bytes of UDP at most"
        );
        assert_eq!(
            run_len(&(0..80).map(|_| packet(100, "fd00::2")).collect::<Vec<_>>()),
            MAX_SEGMENTS
        );
    }

    /// Segments are cut at the segment size; 0 means one datagram.
    #[test]
    fn segments_split_at_the_gro_size() {
        let payload = [7u8; 10];
        let cut: Vec<usize> = segments(&payload, 4).map(<[u8]>::len).collect();
        assert_eq!(cut, [4, 4, 2]);
        assert_eq!(segments(&payload, 0).count(), 1);
    }

    /// The steering program sends a zero first word to IKE's index, anything else to ours.
    #[test]
    fn steering_puts_the_marker_on_the_other_index() {
        let program = steer_program(1);
        assert_eq!((program[2].k, program[3].k), (0, 1));
        let program = steer_program(0);
        assert_eq!((program[2].k, program[3].k), (1, 0));
    }
}
