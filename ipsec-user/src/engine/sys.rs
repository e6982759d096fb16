//! The engine's system calls: the TUN device, the raw ESP socket, the shutdown eventfd, `poll`,
//! and batched `sendmmsg`/`recvmmsg` with their control messages.
//!
//! Contract: every function here is a thin, checked wrapper around one or a few syscalls, and every
//! failure is an [`EngineError::Syscall`] (or `Sysctl`/`OpenTun`) naming the call. Nothing here
//! knows about ESP, SAs or policies. All `unsafe` in the engine's I/O lives in this file and in
//! `xsk.rs`.
//!
//! The calls go through well-kept crates: `rustix` for sockets, socket options, `eventfd`,
//! `poll`, `readv`/`writev` and netlink I/O; `nix` for `sendmmsg`/`recvmmsg` with their IPv6
//! control messages (`IPV6_PKTINFO`, `IPV6_HOPLIMIT`, `IPV6_TCLASS`, which rustix does not
//! encode), `SO_MARK`, the `IPV6_RECV*` options and `if_nametoindex`. Only the TUN and interface
//! ioctls (`TUNSETIFF`, `TUNSETOFFLOAD`, `SIOCSIFMTU`, `SIOCGIFFLAGS`/`SIOCSIFFLAGS`), which
//! neither crate wraps, are made by hand.

use std::cell::RefCell;
use std::ffi::c_int;
use std::fs::OpenOptions;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn6, recvmmsg, setsockopt, sockopt,
};
use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::net::sockopt as rsockopt;
use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto};

use super::EngineError;
use super::core::PendingSeal;
use crate::wire::IPV6_HEADER_LEN;

/// Packets per `sendmmsg`/`recvmmsg` batch.
/// Room for a whole 64 KiB TSO packet even at a small MSS.
pub(super) const BATCH: usize = 128;

/// The largest IPv6 packet without jumbograms (RFC 8200 §3: 40 + 65535), and so the largest
/// reassembled ESP payload a raw socket can hand us.
pub(super) const MAX_PACKET: usize = IPV6_HEADER_LEN + u16::MAX as usize;

fn syscall(call: &'static str) -> impl FnOnce(rustix::io::Errno) -> EngineError {
    move |errno| EngineError::Syscall {
        call,
        source: errno.into(),
    }
}

fn nix_syscall(call: &'static str) -> impl FnOnce(nix::errno::Errno) -> EngineError {
    move |errno| EngineError::Syscall {
        call,
        source: errno.into(),
    }
}

/// How long a send on the ESP socket, or a netlink answer, may block: never so long that a
/// worker misses the shutdown eventfd.
const IO_TIMEOUT: Duration = Duration::from_millis(200);

/// A close-on-exec socket.
fn socket(
    family: AddressFamily,
    kind: SocketType,
    protocol: Option<rustix::net::Protocol>,
) -> rustix::io::Result<OwnedFd> {
    rustix::net::socket_with(family, kind, SocketFlags::CLOEXEC, protocol)
}

/// Borrows a descriptor the engine passes as a `RawFd`.
///
/// The engine's workers hold every descriptor they pass here as an `OwnedFd` (the ESP socket,
/// the TUN device and the eventfd in the engine's shared state, the AF_XDP sockets in their
/// `XskReceiver`) that outlives each call; they pass `as_raw_fd()` because the hot-path call
/// sites predate I/O-safe types. This is the one place that relies on that.
fn borrow<'fd>(fd: RawFd) -> io::Result<BorrowedFd<'fd>> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `fd` is not -1 (checked above) and, per the contract above, open for the whole
    // borrow: its owner outlives every call of this module.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// The interface ioctls made by hand (neither rustix nor nix wraps them). Each reads and/or
/// writes exactly one `ifreq` and nothing else, which is what makes [`ifreq_ioctl`] sound.
#[derive(Clone, Copy)]
enum IfreqIoctl {
    /// `TUNSETIFF` on a /dev/net/tun descriptor: create or attach the named device.
    TunSetIff,
    /// `SIOCSIFMTU`: set the MTU.
    SetMtu,
    /// `SIOCGIFFLAGS`: read the flags.
    GetFlags,
    /// `SIOCSIFFLAGS`: write the flags.
    SetFlags,
}

impl IfreqIoctl {
    fn request(self) -> (libc::Ioctl, &'static str) {
        match self {
            Self::TunSetIff => (libc::TUNSETIFF, "ioctl(TUNSETIFF)"),
            Self::SetMtu => (libc::SIOCSIFMTU, "ioctl(SIOCSIFMTU)"),
            Self::GetFlags => (libc::SIOCGIFFLAGS, "ioctl(SIOCGIFFLAGS)"),
            Self::SetFlags => (libc::SIOCSIFFLAGS, "ioctl(SIOCSIFFLAGS)"),
        }
    }
}

fn ifreq_ioctl(
    fd: BorrowedFd<'_>,
    op: IfreqIoctl,
    ifr: &mut libc::ifreq,
) -> Result<(), EngineError> {
    let (request, call) = op.request();
    // SAFETY: every `IfreqIoctl` request reads and writes one `ifreq` (see its docs), and `ifr`
    // is one, exclusively borrowed for the call; `fd` is open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, std::ptr::from_mut(ifr)) };
    if ret < 0 {
        return Err(EngineError::Syscall {
            call,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// An `ifreq` naming `name` (already checked to fit `IFNAMSIZ - 1` bytes by the caller).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers, addresses and a
    // pointer); all-zero is a valid value of each.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    ifr
}

/// The TUN device: its fd (non-blocking) plus what the kernel named it and its ifindex.
pub(super) struct Tun {
    pub fd: OwnedFd,
    pub name: String,
    pub ifindex: u32,
}

/// Creates the non-persistent TUN device `name` (`IFF_TUN | IFF_NO_PI`), disables IPv6 address
/// generation on it before it comes up, sets `mtu` and brings it up.
pub(super) fn create_tun(name: &str, mtu: u32) -> Result<Tun, EngineError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(EngineError::TunName {
            name: name.to_owned(),
        });
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|source| EngineError::OpenTun { source })?;
    let fd = OwnedFd::from(file);
    let mut ifr = ifreq(name);
    // IFF_VNET_HDR: every packet carries a virtio-net header, so the inbound worker can hand the
    // stack coalesced TCP segments (see `gro`). The flags fit a c_short by definition
    // (linux/if_tun.h), so the conversion never fails.
    ifr.ifr_ifru.ifru_flags =
        libc::c_short::try_from(libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR)
            .unwrap_or_default();
    ifreq_ioctl(fd.as_fd(), IfreqIoctl::TunSetIff, &mut ifr)?;
    // TSO: the stack hands us a TCP flow's segments as one large packet per read (see
    // `gro::segment`), one read where there would be dozens. Checksum offload comes with it.
    // SAFETY: TUNSETOFFLOAD takes an unsigned long by value (no pointer); `fd` is the TUN
    // descriptor.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO6) };
    if ret < 0 {
        return Err(EngineError::Syscall {
            call: "ioctl(TUNSETOFFLOAD)",
            source: io::Error::last_os_error(),
        });
    }
    // The kernel writes back the name it chose (the same one, as we give no `%d` pattern).
    let name: String = ifr
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| char::from(c.to_ne_bytes()[0]))
        .collect();

    // RFC 4862 link-local generation and the router solicitations, MLD reports and DAD that
    // follow would all be "outbound packets" on our TUN: turn generation off before going up.
    let sysctl = PathBuf::from(format!("/proc/sys/net/ipv6/conf/{name}/addr_gen_mode"));
    std::fs::write(&sysctl, "1").map_err(|source| EngineError::Sysctl {
        path: sysctl.clone(),
        source,
    })?;

    // Any inet socket will do for the interface ioctls; it lives in the caller's netns.
    let ctl = socket(AddressFamily::INET6, SocketType::DGRAM, None)
        .map_err(syscall("socket(AF_INET6, SOCK_DGRAM)"))?;

    let mut ifr = ifreq(&name);
    ifr.ifr_ifru.ifru_mtu = c_int::try_from(mtu).unwrap_or(c_int::MAX);
    ifreq_ioctl(ctl.as_fd(), IfreqIoctl::SetMtu, &mut ifr)?;

    let mut ifr = ifreq(&name);
    ifreq_ioctl(ctl.as_fd(), IfreqIoctl::GetFlags, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS just wrote the `ifru_flags` member.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | libc::c_short::try_from(libc::IFF_UP).unwrap_or_default();
    ifreq_ioctl(ctl.as_fd(), IfreqIoctl::SetFlags, &mut ifr)?;

    let ifindex = rustix::net::netdevice::name_to_index(&ctl, &name)
        .map_err(syscall("ioctl(SIOCGIFINDEX)"))?;
    Ok(Tun { fd, name, ifindex })
}

/// `TUNSETOFFLOAD` (`_IOW('T', 208, unsigned int)`) and its flags, from linux/if_tun.h.
const TUNSETOFFLOAD: libc::Ioctl = 0x4004_54d0;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO6: libc::c_ulong = 0x04;

/// Opens the raw `IPPROTO_ESP` socket used in both directions: it receives every ESP packet
/// addressed to this host (from the ESP header on, reassembled) and sends ESP with the kernel
/// building the outer IPv6 header (no `IPV6_HDRINCL`). One socket only: every raw ESP socket
/// gets its own copy of each inbound packet, so a second, send-only socket would fill up with
/// copies nobody reads.
pub(super) fn open_esp_socket(mark: u32, buffer_bytes: c_int) -> Result<OwnedFd, EngineError> {
    let fd = socket(AddressFamily::INET6, SocketType::RAW, Some(ipproto::ESP))
        .map_err(syscall("socket(AF_INET6, SOCK_RAW, IPPROTO_ESP)"))?;
    setsockopt(&fd, sockopt::Mark, &mark).map_err(nix_syscall("setsockopt(SO_MARK)"))?;
    // ESP above the interface MTU (a large UDP datagram) is fragmented, never refused: OMIT
    // fragments at the interface MTU whatever path MTU the route has learnt, so one ICMPv6
    // Packet Too Big cannot make the engine drop what it would otherwise deliver.
    rsockopt::set_ipv6_mtu_discover(&fd, rsockopt::Ipv6PathMtuDiscovery::OMIT)
        .map_err(syscall("setsockopt(IPV6_MTU_DISCOVER)"))?;
    setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)
        .map_err(nix_syscall("setsockopt(IPV6_RECVPKTINFO)"))?;
    setsockopt(&fd, sockopt::Ipv6RecvHopLimit, &true)
        .map_err(nix_syscall("setsockopt(IPV6_RECVHOPLIMIT)"))?;
    rsockopt::set_ipv6_recvtclass(&fd, true).map_err(syscall("setsockopt(IPV6_RECVTCLASS)"))?;
    // Large buffers absorb bursts (a 10 MB TCP transfer arrives as fragments reassembled into
    // full-size ESP). The FORCE variants pass rmem_max/wmem_max as root; fall back otherwise.
    let bytes = usize::try_from(buffer_bytes).unwrap_or(0);
    if rsockopt::set_socket_recv_buffer_size_force(&fd, bytes).is_err() {
        rsockopt::set_socket_recv_buffer_size(&fd, bytes)
            .map_err(syscall("setsockopt(SO_RCVBUF)"))?;
    }
    if rsockopt::set_socket_send_buffer_size_force(&fd, bytes).is_err() {
        rsockopt::set_socket_send_buffer_size(&fd, bytes)
            .map_err(syscall("setsockopt(SO_SNDBUF)"))?;
    }
    // Sends block while the send buffer is full (back-pressure), but never for long: a stuck
    // send must not keep the thread from seeing the shutdown eventfd.
    rsockopt::set_socket_timeout(&fd, rsockopt::Timeout::Send, Some(IO_TIMEOUT))
        .map_err(syscall("setsockopt(SO_SNDTIMEO)"))?;
    Ok(fd)
}

/// A non-blocking eventfd that tells the workers to stop.
pub(super) fn eventfd() -> Result<OwnedFd, EngineError> {
    rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        .map_err(syscall("eventfd"))
}

/// Makes `fd` readable for every poller (an eventfd counter only ever grows here).
pub(super) fn signal(fd: &OwnedFd) -> io::Result<()> {
    match rustix::io::write(fd, &1u64.to_ne_bytes())? {
        8 => Ok(()),
        _ => Err(io::Error::from(io::ErrorKind::WriteZero)),
    }
}

/// What `wait` saw.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ready {
    /// `data` is readable.
    Data,
    /// The shutdown eventfd fired.
    Shutdown,
    /// Nothing within the timeout ([`Poller::peek`]).
    Idle,
}

/// `poll` on a fixed set of descriptors: the shutdown eventfd first, then the data fds.
pub(super) struct Poller {
    fds: Vec<RawFd>,
}

impl Poller {
    pub(super) fn new(shutdown: RawFd, data: &[RawFd]) -> Self {
        Self {
            fds: std::iter::once(shutdown)
                .chain(data.iter().copied())
                .collect(),
        }
    }

    /// Blocks until a data fd is readable or shutdown fires; `EINTR` is retried.
    pub(super) fn wait(&mut self) -> Result<Ready, EngineError> {
        self.poll(None)
    }

    /// Looks without blocking: [`Ready::Idle`] when no data fd is readable.
    pub(super) fn peek(&mut self) -> Result<Ready, EngineError> {
        self.poll(Some(&rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }))
    }

    fn poll(&mut self, timeout: Option<&rustix::event::Timespec>) -> Result<Ready, EngineError> {
        let borrowed = self
            .fds
            .iter()
            .map(|&fd| borrow(fd))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|source| EngineError::Syscall {
                call: "poll",
                source,
            })?;
        let mut fds: Vec<PollFd<'_>> = borrowed
            .iter()
            .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
            .collect();
        loop {
            match rustix::event::poll(&mut fds, timeout) {
                Ok(0) if timeout.is_some() => return Ok(Ready::Idle),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(syscall("poll")(e)),
            }
            if !fds[0].revents().is_empty() {
                return Ok(Ready::Shutdown);
            }
            if fds[1..].iter().any(|fd| !fd.revents().is_empty()) {
                return Ok(Ready::Data);
            }
        }
    }
}

/// The socket cookie of `fd` (`SO_COOKIE`): what `bpf_get_socket_cookie` returns for packets
/// this socket sends, so TC egress can recognise the engine's own ESP. 0 if the kernel refuses.
pub(super) fn socket_cookie(fd: RawFd) -> u64 {
    borrow(fd)
        .and_then(|fd| Ok(rsockopt::socket_cookie(fd)?))
        .unwrap_or(0)
}

/// A `NETLINK_ROUTE` socket in the calling thread's network namespace (a socket keeps its
/// namespace), for [`link_drops`]: sysfs may show another namespace's devices.
pub(super) fn open_rtnetlink() -> Result<OwnedFd, EngineError> {
    // Protocol 0 of AF_NETLINK is NETLINK_ROUTE.
    let fd = socket(AddressFamily::NETLINK, SocketType::RAW, None)
        .map_err(syscall("socket(AF_NETLINK, NETLINK_ROUTE)"))?;
    rsockopt::set_socket_timeout(&fd, rsockopt::Timeout::Recv, Some(IO_TIMEOUT))
        .map_err(syscall("setsockopt(SO_RCVTIMEO)"))?;
    Ok(fd)
}

/// `IFLA_STATS64` and the offsets of `rx_dropped`/`tx_dropped` in `rtnl_link_stats64`.
const IFLA_STATS64: u16 = 23;
const RX_DROPPED_AT: usize = 6 * 8;
const TX_DROPPED_AT: usize = 7 * 8;

/// Packets the kernel dropped at device `ifindex` (for the TUN: its queue to us full, or a write
/// it refused), `rx_dropped + tx_dropped` from an `RTM_GETLINK` on `nl`. 0 if the kernel does not
/// answer.
pub(super) fn link_drops(nl: &OwnedFd, ifindex: u32) -> u64 {
    // nlmsghdr (16 bytes) + ifinfomsg (16 bytes).
    let mut request = [0u8; 32];
    request[0..4].copy_from_slice(&32u32.to_ne_bytes());
    request[4..6].copy_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    #[allow(clippy::cast_possible_truncation)] // NLM_F_REQUEST is 1
    request[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    request[16] = u8::try_from(libc::AF_UNSPEC).unwrap_or(0);
    request[20..24].copy_from_slice(&ifindex.to_ne_bytes());
    if rustix::net::send(nl, &request, rustix::net::SendFlags::empty()).is_err() {
        return 0;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let Ok((got, _)) = rustix::net::recv(nl, &mut buf[..], rustix::net::RecvFlags::empty()) else {
        return 0;
    };
    parse_link_drops(&buf[..got.min(buf.len())]).unwrap_or(0)
}

/// `rx_dropped + tx_dropped` of the first `RTM_NEWLINK` message in `reply`.
fn parse_link_drops(reply: &[u8]) -> Option<u64> {
    let len = usize::try_from(u32::from_ne_bytes(reply.get(0..4)?.try_into().ok()?)).ok()?;
    if u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?) != libc::RTM_NEWLINK {
        return None;
    }
    let message = reply.get(..len)?;
    let mut at = 32;
    while at + 4 <= message.len() {
        let attr_len = usize::from(u16::from_ne_bytes(message[at..at + 2].try_into().ok()?));
        let kind = u16::from_ne_bytes(message[at + 2..at + 4].try_into().ok()?) & 0x3fff;
        if attr_len < 4 {
            return None;
        }
        if kind == IFLA_STATS64 {
            let stats = message.get(at + 4..at + attr_len)?;
            let field = |offset: usize| {
                stats
                    .get(offset..offset + 8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_ne_bytes)
            };
            return Some(field(RX_DROPPED_AT)? + field(TX_DROPPED_AT)?);
        }
        at += attr_len.div_ceil(4) * 4;
    }
    None
}

/// Frames an AF_XDP socket dropped: no room in its receive ring, no free frame on its fill ring,
/// or otherwise (`XDP_STATISTICS`). 0 if the kernel does not say.
pub(super) fn xsk_drops(fd: RawFd) -> u64 {
    let Ok(st) = borrow(fd).and_then(|fd| Ok(rsockopt::xdp_statistics(fd)?)) else {
        return 0;
    };
    // A frame with no free fill-ring entry counts in both `rx_dropped` and
    // `rx_fill_ring_empty_descs`: add only the first.
    st.rx_dropped + st.rx_ring_full.unwrap_or(0)
}

/// The ifindex of interface `name`, if it exists.
pub(super) fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// `readv(2)` of one packet and its virtio-net header; the packet's length, or `Ok(None)` when
/// there is nothing to read (`EAGAIN`).
pub(super) fn read_packet(
    fd: RawFd,
    hdr: &mut [u8; super::gro::VNET_HDR_LEN],
    buf: &mut [u8],
) -> io::Result<Option<usize>> {
    let fd = borrow(fd)?;
    let header_len = hdr.len();
    let mut iov = [IoSliceMut::new(hdr), IoSliceMut::new(buf)];
    loop {
        match rustix::io::readv(fd, &mut iov) {
            Ok(n) => return Ok(Some(n.saturating_sub(header_len))),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// `writev(2)` of one packet with its virtio-net header to the TUN device: the kernel receives
/// it as arriving on the TUN.
pub(super) fn write_packet(
    fd: RawFd,
    hdr: &[u8; super::gro::VNET_HDR_LEN],
    packet: &[u8],
) -> io::Result<()> {
    let fd = borrow(fd)?;
    let iov = [IoSlice::new(hdr), IoSlice::new(packet)];
    loop {
        match rustix::io::writev(fd, &iov) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// One ESP packet ready to send: the ESP part of `buf` goes to `destination` from `source`.
pub(super) struct Outgoing {
    /// A whole IPv6 packet as `OutboundSa::encapsulate` built it.
    pub buf: Vec<u8>,
    /// Where ESP starts in `buf`; only `buf[esp_offset..]` is sent.
    pub esp_offset: usize,
    pub source: Ipv6Addr,
    pub destination: Ipv6Addr,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// Framed and not sealed yet (`Outbound::protect_deferred`): sealed with its batch before
    /// it is sent.
    pub pending: Option<PendingSeal>,
}

impl Outgoing {
    pub(super) fn new() -> Self {
        Self {
            buf: Vec::with_capacity(2048),
            esp_offset: 0,
            source: Ipv6Addr::UNSPECIFIED,
            destination: Ipv6Addr::UNSPECIFIED,
            hop_limit: 64,
            traffic_class: 0,
            pending: None,
        }
    }

    /// What goes on the wire: the ESP part of `buf`.
    pub(super) fn esp(&self) -> &[u8] {
        &self.buf[self.esp_offset.min(self.buf.len())..]
    }
}

fn sockaddr(addr: Ipv6Addr) -> SockaddrIn6 {
    SockaddrIn6::from(SocketAddrV6::new(addr, 0, 0, 0))
}

/// Control-message space of one received packet: `IPV6_PKTINFO` + `IPV6_HOPLIMIT` +
/// `IPV6_TCLASS`, each padded (88 bytes).
fn control_space() -> Vec<u8> {
    nix::cmsg_space!(libc::in6_pktinfo, c_int, c_int)
}

thread_local! {
    /// Each inbound worker's `mmsghdr` array and control buffers, allocated once. The kernel
    /// shrinks each header's `msg_controllen` to what it wrote, which is the whole buffer when
    /// all three messages arrive; a batch in which one did not drops the headers, so the next
    /// call starts from full-size buffers again.
    static RECV_HEADERS: RefCell<Option<MultiHeaders<SockaddrIn6>>> = const { RefCell::new(None) };
}

/// The control messages of one outgoing packet, 8-byte aligned: `IPV6_PKTINFO` (16 + 24),
/// `IPV6_HOPLIMIT` (16 + 8) and `IPV6_TCLASS` (16 + 8) = 88 bytes, rounded up to 16 words.
const CMSG_WORDS: usize = 16;

/// `struct cmsghdr` (`cmsg_len` as a `size_t`, `cmsg_level`, `cmsg_type`) is 16 bytes, 8-byte
/// aligned, on 64-bit Linux, and its data follows at `CMSG_ALIGN(16)` = 16: what lets
/// [`put_cmsg`] encode control messages with plain byte copies instead of the `CMSG_*` pointer
/// macros. The build fails on an ABI where this does not hold.
const CMSG_HDR: usize = 16;
const _: () = assert!(
    mem::size_of::<libc::cmsghdr>() == CMSG_HDR
        && mem::align_of::<libc::cmsghdr>() == 8
        && mem::size_of::<usize>() == 8
        && mem::size_of::<libc::in6_pktinfo>() == 20
);

/// `CMSG_SPACE(len)`: a message with `len` bytes of data, padded to 8 bytes.
const fn cmsg_space(len: usize) -> usize {
    CMSG_HDR + len.next_multiple_of(8)
}

/// Writes one control message (header, `data`, padding) into `buf` at `at`; returns where the
/// next one starts. `buf` must have `cmsg_space(data.len())` bytes from `at` (it panics
/// otherwise, never writes past it).
fn put_cmsg(buf: &mut [u8], at: usize, level: c_int, kind: c_int, data: &[u8]) -> usize {
    let len = CMSG_HDR + data.len();
    let end = at + cmsg_space(data.len());
    buf[at..at + 8].copy_from_slice(&len.to_ne_bytes());
    buf[at + 8..at + 12].copy_from_slice(&level.to_ne_bytes());
    buf[at + 12..at + 16].copy_from_slice(&kind.to_ne_bytes());
    buf[at + CMSG_HDR..at + len].copy_from_slice(data);
    buf[at + len..end].fill(0);
    end
}

/// Encodes the control messages of `out` into `buf`: `IPV6_PKTINFO` (source address, any
/// interface), `IPV6_HOPLIMIT`, `IPV6_TCLASS`. Returns their length.
fn encode_control(out: &Outgoing, buf: &mut [u8]) -> usize {
    // in6_pktinfo: the address, then the ifindex (0: let the route choose).
    let mut pktinfo = [0u8; 20];
    pktinfo[..16].copy_from_slice(&out.source.octets());
    let at = put_cmsg(buf, 0, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &pktinfo);
    let hop_limit = c_int::from(out.hop_limit).to_ne_bytes();
    let at = put_cmsg(buf, at, libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, &hop_limit);
    let traffic_class = c_int::from(out.traffic_class).to_ne_bytes();
    put_cmsg(
        buf,
        at,
        libc::IPPROTO_IPV6,
        libc::IPV6_TCLASS,
        &traffic_class,
    )
}

fn raw_sockaddr(addr: Ipv6Addr) -> libc::sockaddr_in6 {
    *sockaddr(addr).as_ref()
}

/// Sends `batch` with one `sendmmsg` per run of successes; returns how many failed and the
/// first error seen. Each message carries `IPV6_PKTINFO` (source address), `IPV6_HOPLIMIT` and
/// `IPV6_TCLASS`; the destination is `msg_name`. The kernel adds the IPv6 header and fragments.
///
/// The one call made by hand because neither crate covers it: rustix's `SendAncillaryBuffer`
/// cannot carry IPv6 control messages, and nix's `sendmmsg` attaches one set of control
/// messages to every message of a call (the source address differs per SA) and reports how many
/// were sent only through an iterator that reads the address slots a send never fills.
pub(super) fn send_batch(fd: RawFd, batch: &[Outgoing]) -> (usize, Option<io::Error>) {
    let n = batch.len().min(BATCH);
    let mut names = [raw_sockaddr(Ipv6Addr::UNSPECIFIED); BATCH];
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH];
    let mut controls = [[0u64; CMSG_WORDS]; BATCH];
    // SAFETY: `mmsghdr` is plain old data (pointers, lengths, flags); all-zero is valid.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    for i in 0..n {
        let out = &batch[i];
        let esp = out.esp();
        names[i] = raw_sockaddr(out.destination);
        iovs[i] = libc::iovec {
            iov_base: esp.as_ptr().cast_mut().cast(),
            iov_len: esp.len(),
        };
        let control_len = encode_control(out, bytemuck::cast_slice_mut(&mut controls[i]));
        let hdr = &mut msgs[i].msg_hdr;
        hdr.msg_name = (&raw mut names[i]).cast();
        hdr.msg_namelen =
            libc::socklen_t::try_from(mem::size_of::<libc::sockaddr_in6>()).unwrap_or_default();
        hdr.msg_iov = &raw mut iovs[i];
        hdr.msg_iovlen = 1;
        hdr.msg_control = controls[i].as_mut_ptr().cast();
        hdr.msg_controllen = control_len;
    }
    let mut failed = 0;
    let mut first_error = None;
    let mut start = 0;
    while start < n {
        // SAFETY: `msgs[start..n]` are initialised headers whose pointers refer to `names`,
        // `iovs`, `controls` and `batch`, all alive and unmoved for the duration of the call.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                msgs[start..].as_mut_ptr(),
                libc::c_uint::try_from(n - start).unwrap_or(0),
                0,
            )
        };
        match usize::try_from(sent) {
            Ok(sent) if sent > 0 => start += sent,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The message at `start` failed: count it and go on with the rest.
                failed += 1;
                first_error.get_or_insert(e);
                start += 1;
            }
        }
    }
    (failed, first_error)
}

/// One received ESP packet: `buf[..len]` holds it from the ESP header on (the raw socket
/// stripped the IPv6 header and reported its fields beside it).
pub(super) struct Incoming {
    pub buf: Box<[u8]>,
    pub len: usize,
    pub source: Ipv6Addr,
    /// `None` if the kernel sent no `IPV6_PKTINFO` (it always does once enabled).
    pub destination: Option<Ipv6Addr>,
    pub hop_limit: u8,
    pub traffic_class: u8,
}

impl Incoming {
    /// The ESP packet: header, payload, ICV.
    pub(super) fn esp(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    pub(super) fn new() -> Self {
        Self {
            buf: vec![0; MAX_PACKET].into_boxed_slice(),
            len: 0,
            source: Ipv6Addr::UNSPECIFIED,
            destination: None,
            hop_limit: 64,
            traffic_class: 0,
        }
    }
}

/// What `recvmmsg` said about one packet, copied out before the batch buffers are touched again.
struct Received {
    len: usize,
    source: Ipv6Addr,
    destination: Option<Ipv6Addr>,
    hop_limit: u8,
    traffic_class: u8,
    /// All three control messages arrived (the header's control buffer is still full size).
    complete: bool,
}

/// Receives up to `batch.len()` packets without blocking; returns how many arrived (0 when
/// none is waiting).
pub(super) fn recv_batch(fd: RawFd, batch: &mut [Incoming]) -> Result<usize, EngineError> {
    let n = batch.len().min(BATCH);
    let received = RECV_HEADERS.with_borrow_mut(|cached| {
        let headers =
            cached.get_or_insert_with(|| MultiHeaders::preallocate(BATCH, Some(control_space())));
        let received: Vec<Received> = loop {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = batch[..n]
                .iter_mut()
                .map(|slot| [IoSliceMut::new(&mut slot.buf)])
                .collect();
            match recvmmsg(fd, headers, &mut iovs, MsgFlags::MSG_DONTWAIT, None) {
                Ok(messages) => break messages.map(|m| parse_received(&m)).collect(),
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return Ok(Vec::new()),
                Err(e) => return Err(nix_syscall("recvmmsg")(e)),
            }
        };
        if received.iter().any(|r| !r.complete) {
            *cached = None;
        }
        Ok(received)
    })?;
    for (slot, r) in batch.iter_mut().zip(&received) {
        slot.len = r.len;
        slot.source = r.source;
        slot.destination = r.destination;
        slot.hop_limit = r.hop_limit;
        slot.traffic_class = r.traffic_class;
    }
    Ok(received.len())
}

fn parse_received(m: &nix::sys::socket::RecvMsg<'_, '_, SockaddrIn6>) -> Received {
    let mut r = Received {
        len: m.bytes,
        source: m.address.map_or(Ipv6Addr::UNSPECIFIED, |a| a.ip()),
        destination: None,
        hop_limit: 64,
        traffic_class: 0,
        complete: false,
    };
    let mut seen = 0;
    if let Ok(cmsgs) = m.cmsgs() {
        for cmsg in cmsgs {
            match cmsg {
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    r.destination = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                }
                ControlMessageOwned::Ipv6HopLimit(v) => r.hop_limit = u8::try_from(v).unwrap_or(64),
                ControlMessageOwned::Ipv6TClass(v) => {
                    r.traffic_class = u8::try_from(v).unwrap_or(0);
                }
                _ => continue,
            }
            seen += 1;
        }
    }
    r.complete = seen == 3 && !m.flags.contains(MsgFlags::MSG_CTRUNC);
    r
}

/// `setsockopt` of one `int` option the crates do not name (`UDP_GRO`, `PACKET_VNET_HDR`,
/// `XDP_MAX_TX_SKB_BUDGET`, ...).
pub(super) fn set_int_option(fd: RawFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: a pointer to one `c_int` and its size.
    let done = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            libc::socklen_t::try_from(mem::size_of::<c_int>()).unwrap_or(4),
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Attaches the classic BPF `program` with `option` at `SOL_SOCKET` (`SO_ATTACH_FILTER`,
/// `SO_ATTACH_REUSEPORT_CBPF`).
pub(super) fn attach_cbpf(
    fd: RawFd,
    option: c_int,
    program: &mut [libc::sock_filter],
) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).unwrap_or(0),
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `program`, which outlives the call (the kernel copies it); the
    // length passed is the struct's.
    let attached = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&raw const fprog).cast(),
            libc::socklen_t::try_from(mem::size_of::<libc::sock_fprog>()).unwrap_or(0),
        )
    };
    if attached == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte encoding of the control messages equals what the C library's `CMSG_*` macros
    /// build, message for message.
    #[test]
    fn control_messages_encode_as_the_cmsg_macros_do() {
        let mut out = Outgoing::new();
        out.source = "2001:db8::1".parse().expect("parsing an address");
        out.hop_limit = 17;
        out.traffic_class = 0xb8;
        let mut ours = [0u64; CMSG_WORDS];
        let len = encode_control(&out, bytemuck::cast_slice_mut(&mut ours));
        assert_eq!(len, cmsg_space(20) + 2 * cmsg_space(4));

        let mut theirs = [0u64; CMSG_WORDS];
        // SAFETY: test-only reference encoding: a zeroed `msghdr` whose control buffer is
        // `theirs` (128 bytes, u64-aligned); the three messages need 88, and CMSG_FIRSTHDR /
        // CMSG_NXTHDR stay within `msg_controllen`.
        unsafe {
            let mut hdr: libc::msghdr = mem::zeroed();
            hdr.msg_control = theirs.as_mut_ptr().cast();
            hdr.msg_controllen = mem::size_of_val(&theirs);
            let pktinfo = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: out.source.octets(),
                },
                ipi6_ifindex: 0,
            };
            let values: [(c_int, &[u8]); 3] = [
                (
                    libc::IPV6_PKTINFO,
                    std::slice::from_raw_parts((&raw const pktinfo).cast(), 20),
                ),
                (libc::IPV6_HOPLIMIT, &17i32.to_ne_bytes()),
                (libc::IPV6_TCLASS, &0xb8i32.to_ne_bytes()),
            ];
            let mut c = libc::CMSG_FIRSTHDR(&raw const hdr);
            for (kind, data) in values {
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = kind;
                (*c).cmsg_len = libc::CMSG_LEN(u32::try_from(data.len()).expect("small")) as usize;
                std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(c), data.len());
                c = libc::CMSG_NXTHDR(&raw const hdr, c);
            }
        }
        assert_eq!(ours, theirs);
    }
}
