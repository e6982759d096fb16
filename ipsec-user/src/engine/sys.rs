//! The engine's system calls: the TUN device, the raw ESP socket, the shutdown eventfd, `poll`,
//! and batched `sendmmsg`/`recvmmsg` with their control messages.
//!
//! Contract: every function here is a thin, checked wrapper around one or a few syscalls, and every
//! failure is an [`EngineError::Syscall`] (or `Sysctl`/`OpenTun`) naming the call. Nothing here
//! knows about ESP, SAs or policies. All `unsafe` in the engine lives in this file.

use std::ffi::c_int;
use std::fs::OpenOptions;
use std::io;
use std::mem;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::EngineError;

/// Packets per `sendmmsg`/`recvmmsg` batch.
/// Room for a whole 64 KiB TSO packet even at a small MSS.
pub(super) const BATCH: usize = 128;

/// The largest IPv6 packet without jumbograms (RFC 8200 §3: 40 + 65535), and so the largest
/// reassembled ESP payload a raw socket can hand us.
pub(super) const MAX_PACKET: usize = 40 + 65_535;

/// Control-message space: `IPV6_PKTINFO` (16 + 24) + `IPV6_HOPLIMIT` (16 + 8) + `IPV6_TCLASS`
/// (16 + 8) = 88 bytes, rounded up. `u64` elements give `cmsghdr` its alignment.
const CMSG_WORDS: usize = 16;

fn syscall_error(call: &'static str) -> EngineError {
    EngineError::Syscall {
        call,
        source: io::Error::last_os_error(),
    }
}

/// `ret` as a result: -1 means `errno` tells why.
fn check(call: &'static str, ret: c_int) -> Result<c_int, EngineError> {
    if ret < 0 {
        Err(syscall_error(call))
    } else {
        Ok(ret)
    }
}

/// An `ifreq` naming `name` (already checked to fit `IFNAMSIZ - 1` bytes by the caller).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers, addresses and a
    // pointer); all-zero is a valid value of each.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
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
    // The flags fit a c_short by definition (linux/if_tun.h).
    #[allow(clippy::cast_possible_truncation)]
    // IFF_VNET_HDR: every packet carries a virtio-net header, so the inbound worker can hand the
    // stack coalesced TCP segments (see `gro`).
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    ifr.ifr_ifru.ifru_flags = flags;
    // SAFETY: TUNSETIFF reads and writes one `ifreq`, which `ifr` is, and `fd` is an open
    // /dev/net/tun descriptor.
    check("ioctl(TUNSETIFF)", unsafe {
        libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &raw mut ifr)
    })?;
    // TSO: the stack hands us a TCP flow's segments as one large packet per read (see
    // `gro::segment`), one read where there would be dozens. Checksum offload comes with it.
    // SAFETY: TUNSETOFFLOAD takes an unsigned long by value; `fd` is the TUN descriptor.
    check("ioctl(TUNSETOFFLOAD)", unsafe {
        libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO6)
    })?;
    // The kernel writes back the name it chose (the same one, as we give no `%d` pattern).
    let name: String = ifr
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8 as char)
        .collect();

    // RFC 4862 link-local generation and the router solicitations, MLD reports and DAD that
    // follow would all be "outbound packets" on our TUN: turn generation off before going up.
    let sysctl = PathBuf::from(format!("/proc/sys/net/ipv6/conf/{name}/addr_gen_mode"));
    std::fs::write(&sysctl, "1").map_err(|source| EngineError::Sysctl {
        path: sysctl.clone(),
        source,
    })?;

    // Any inet socket will do for the interface ioctls; it lives in the caller's netns.
    // SAFETY: plain socket(2) call; the result is checked before use.
    let ctl = check("socket(AF_INET6, SOCK_DGRAM)", unsafe {
        libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })?;
    // SAFETY: `ctl` is a fresh descriptor that nothing else owns.
    let ctl = unsafe { OwnedFd::from_raw_fd(ctl) };

    let mut ifr = ifreq(&name);
    ifr.ifr_ifru.ifru_mtu = c_int::try_from(mtu).unwrap_or(c_int::MAX);
    // SAFETY: SIOCSIFMTU reads one `ifreq`; `ctl` is an open socket.
    check("ioctl(SIOCSIFMTU)", unsafe {
        libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFMTU, &raw mut ifr)
    })?;

    let mut ifr = ifreq(&name);
    // SAFETY: SIOCGIFFLAGS fills the flags of one `ifreq`.
    check("ioctl(SIOCGIFFLAGS)", unsafe {
        libc::ioctl(ctl.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut ifr)
    })?;
    // SAFETY: SIOCGIFFLAGS just wrote the `ifru_flags` member.
    let up = unsafe { ifr.ifr_ifru.ifru_flags } | libc::IFF_UP as libc::c_short;
    ifr.ifr_ifru.ifru_flags = up;
    // SAFETY: SIOCSIFFLAGS reads one `ifreq`.
    check("ioctl(SIOCSIFFLAGS)", unsafe {
        libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFFLAGS, &raw mut ifr)
    })?;

    let mut ifr = ifreq(&name);
    // SAFETY: SIOCGIFINDEX fills the ifindex of one `ifreq`.
    check("ioctl(SIOCGIFINDEX)", unsafe {
        libc::ioctl(ctl.as_raw_fd(), libc::SIOCGIFINDEX, &raw mut ifr)
    })?;
    // SAFETY: SIOCGIFINDEX just wrote the `ifru_ifindex` member.
    let ifindex = unsafe { ifr.ifr_ifru.ifru_ifindex };
    Ok(Tun {
        fd,
        name,
        ifindex: u32::try_from(ifindex).unwrap_or(0),
    })
}

/// `TUNSETOFFLOAD` (`_IOW('T', 208, unsigned int)`) and its flags, from linux/if_tun.h.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO6: libc::c_ulong = 0x04;

/// `IPV6_PMTUDISC_OMIT` from linux/in6.h (not in the libc crate): ignore the path MTU and
/// fragment at the interface MTU.
const IPV6_PMTUDISC_OMIT: c_int = 5;

fn setsockopt_int(
    fd: &OwnedFd,
    call: &'static str,
    level: c_int,
    name: c_int,
    value: c_int,
) -> Result<(), EngineError> {
    // SAFETY: the option value is one `c_int` and its size is passed alongside.
    check(call, unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Opens the raw `IPPROTO_ESP` socket used in both directions: it receives every ESP packet
/// addressed to this host (from the ESP header on, reassembled) and sends ESP with the kernel
/// building the outer IPv6 header (no `IPV6_HDRINCL`). One socket only: every raw ESP socket
/// gets its own copy of each inbound packet, so a second, send-only socket would fill up with
/// copies nobody reads.
pub(super) fn open_esp_socket(mark: u32, buffer_bytes: c_int) -> Result<OwnedFd, EngineError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = check("socket(AF_INET6, SOCK_RAW, IPPROTO_ESP)", unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ESP,
        )
    })?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The mark is a bit pattern; SO_MARK takes it as an int.
    #[allow(clippy::cast_possible_wrap)]
    let mark = mark as c_int;
    setsockopt_int(
        &fd,
        "setsockopt(SO_MARK)",
        libc::SOL_SOCKET,
        libc::SO_MARK,
        mark,
    )?;
    // ESP above the interface MTU (a large UDP datagram) is fragmented, never refused: OMIT
    // fragments at the interface MTU whatever path MTU the route has learnt, so one ICMPv6
    // Packet Too Big cannot make the engine drop what it would otherwise deliver.
    setsockopt_int(
        &fd,
        "setsockopt(IPV6_MTU_DISCOVER)",
        libc::IPPROTO_IPV6,
        libc::IPV6_MTU_DISCOVER,
        IPV6_PMTUDISC_OMIT,
    )?;
    for (call, name) in [
        ("setsockopt(IPV6_RECVPKTINFO)", libc::IPV6_RECVPKTINFO),
        ("setsockopt(IPV6_RECVHOPLIMIT)", libc::IPV6_RECVHOPLIMIT),
        ("setsockopt(IPV6_RECVTCLASS)", libc::IPV6_RECVTCLASS),
    ] {
        setsockopt_int(&fd, call, libc::IPPROTO_IPV6, name, 1)?;
    }
    // Large buffers absorb bursts (a 10 MB TCP transfer arrives as fragments reassembled into
    // full-size ESP). The FORCE variants pass rmem_max/wmem_max as root; fall back otherwise.
    if setsockopt_int(
        &fd,
        "setsockopt(SO_RCVBUFFORCE)",
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        buffer_bytes,
    )
    .is_err()
    {
        setsockopt_int(
            &fd,
            "setsockopt(SO_RCVBUF)",
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            buffer_bytes,
        )?;
    }
    if setsockopt_int(
        &fd,
        "setsockopt(SO_SNDBUFFORCE)",
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        buffer_bytes,
    )
    .is_err()
    {
        setsockopt_int(
            &fd,
            "setsockopt(SO_SNDBUF)",
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            buffer_bytes,
        )?;
    }
    // Sends block while the send buffer is full (back-pressure), but never for long: a stuck
    // send must not keep the thread from seeing the shutdown eventfd.
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: the option value is one `timeval` and its size is passed alongside.
    check("setsockopt(SO_SNDTIMEO)", unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const timeout).cast(),
            mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// A non-blocking eventfd that tells the workers to stop.
pub(super) fn eventfd() -> Result<OwnedFd, EngineError> {
    // SAFETY: plain eventfd(2) call; the result is checked before use.
    let fd = check("eventfd", unsafe {
        libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)
    })?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `fd` readable for every poller (an eventfd counter only ever grows here).
pub(super) fn signal(fd: &OwnedFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: an eventfd write takes exactly 8 bytes, which `one` is.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) };
    if n == 8 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What `wait` saw.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ready {
    /// `data` is readable.
    Data,
    /// The shutdown eventfd fired.
    Shutdown,
}

/// `poll` on a fixed set of descriptors: the shutdown eventfd first, then the data fds.
pub(super) struct Poller {
    fds: Vec<libc::pollfd>,
}

impl Poller {
    pub(super) fn new(shutdown: RawFd, data: &[RawFd]) -> Self {
        let watch = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        Self {
            fds: std::iter::once(shutdown)
                .chain(data.iter().copied())
                .map(watch)
                .collect(),
        }
    }

    /// Blocks until a data fd is readable or shutdown fires; `EINTR` is retried.
    pub(super) fn wait(&mut self) -> Result<Ready, EngineError> {
        loop {
            // SAFETY: `fds` is a vector of valid `pollfd`, and its length is passed.
            let n =
                unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(syscall_error("poll"));
            }
            if self.fds[0].revents != 0 {
                return Ok(Ready::Shutdown);
            }
            if self.fds[1..].iter().any(|fd| fd.revents != 0) {
                return Ok(Ready::Data);
            }
        }
    }
}

/// Frames an AF_XDP socket dropped: no room in its receive ring, no free frame on its fill ring,
/// or otherwise (`XDP_STATISTICS`). 0 if the kernel does not say.
/// The socket cookie of `fd` (`SO_COOKIE`): what `bpf_get_socket_cookie` returns for packets
/// this socket sends, so TC egress can recognise the engine's own ESP. 0 if the kernel refuses.
pub(super) fn socket_cookie(fd: RawFd) -> u64 {
    let mut cookie: u64 = 0;
    let mut len = mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of `len` bytes; a stale fd only fails.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if ret == 0 { cookie } else { 0 }
}

/// A `NETLINK_ROUTE` socket in the calling thread's network namespace (a socket keeps its
/// namespace), for [`link_drops`]: sysfs may show another namespace's devices.
pub(super) fn open_rtnetlink() -> Result<OwnedFd, EngineError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = check("socket(AF_NETLINK, NETLINK_ROUTE)", unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: `timeout` is a valid timeval of the size given, on an open socket.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    check("setsockopt(SO_RCVTIMEO)", ret)?;
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
    request[16] = libc::AF_UNSPEC as u8;
    request[20..24].copy_from_slice(&ifindex.to_ne_bytes());
    // SAFETY: `request` is valid for reads of its length.
    let sent = unsafe { libc::send(nl.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return 0;
    }
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: `buf` is valid for writes of its length.
    let got = unsafe { libc::recv(nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let Ok(got) = usize::try_from(got) else {
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

pub(super) fn xsk_drops(fd: RawFd) -> u64 {
    // SAFETY: `xdp_statistics` is plain old data; all-zero is valid.
    let mut st: libc::xdp_statistics = unsafe { mem::zeroed() };
    let mut len = mem::size_of_val(&st) as libc::socklen_t;
    // SAFETY: `st` and `len` are valid for writes of `len` bytes; a stale fd only fails.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            (&raw mut st).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return 0;
    }
    // A frame with no free fill-ring entry counts in both `rx_dropped` and
    // `rx_fill_ring_empty_descs`: add only the first.
    st.rx_dropped + st.rx_ring_full
}

/// The ifindex of interface `name`, if it exists.
pub(super) fn ifindex(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// `readv(2)` of one packet and its virtio-net header; the packet's length, or `Ok(None)` when
/// there is nothing to read (`EAGAIN`).
pub(super) fn read_packet(
    fd: RawFd,
    hdr: &mut [u8; super::gro::VNET_HDR_LEN],
    buf: &mut [u8],
) -> io::Result<Option<usize>> {
    let iov = [
        libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
    ];
    loop {
        // SAFETY: both iovecs describe buffers valid for writes of their lengths.
        let n = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(Some(n.saturating_sub(hdr.len())));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
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
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr().cast_mut().cast(),
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: packet.as_ptr().cast_mut().cast(),
            iov_len: packet.len(),
        },
    ];
    loop {
        // SAFETY: both iovecs describe buffers valid for reads of their lengths; writev does
        // not write through them.
        let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn sockaddr(addr: Ipv6Addr) -> libc::sockaddr_in6 {
    // SAFETY: `sockaddr_in6` is plain old data; all-zero is valid (port 0, scope 0).
    let mut sa: libc::sockaddr_in6 = unsafe { mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_addr.s6_addr = addr.octets();
    sa
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
        }
    }
}

/// Writes one control message at `cmsg` carrying `value`.
///
/// # Safety
/// `cmsg` must point into a control buffer with `CMSG_SPACE(size_of::<T>())` writable bytes, and
/// be aligned for `cmsghdr`.
unsafe fn put_cmsg<T>(cmsg: *mut libc::cmsghdr, level: c_int, kind: c_int, value: T) {
    // SAFETY: the caller guarantees the space and alignment; CMSG_DATA points just past the
    // header, where `T` may be unaligned, hence write_unaligned.
    unsafe {
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<T>() as u32) as _;
        libc::CMSG_DATA(cmsg).cast::<T>().write_unaligned(value);
    }
}

/// Sends `batch` with one `sendmmsg` per run of successes; returns how many failed and the
/// first error seen. Each message carries `IPV6_PKTINFO` (source address), `IPV6_HOPLIMIT` and
/// `IPV6_TCLASS`; the destination is `msg_name`. The kernel adds the IPv6 header and fragments.
pub(super) fn send_batch(fd: RawFd, batch: &[Outgoing]) -> (usize, Option<io::Error>) {
    let n = batch.len().min(BATCH);
    let mut names = [sockaddr(Ipv6Addr::UNSPECIFIED); BATCH];
    // SAFETY: `iovec`, `mmsghdr` are plain old data (pointers and lengths); all-zero is valid.
    let mut iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    let mut controls = [[0u64; CMSG_WORDS]; BATCH];
    // SAFETY: pure arithmetic on constants.
    let space = unsafe {
        libc::CMSG_SPACE(mem::size_of::<libc::in6_pktinfo>() as u32)
            + 2 * libc::CMSG_SPACE(mem::size_of::<c_int>() as u32)
    } as usize;
    for i in 0..n {
        let out = &batch[i];
        let esp = &out.buf[out.esp_offset.min(out.buf.len())..];
        names[i] = sockaddr(out.destination);
        iovs[i] = libc::iovec {
            iov_base: esp.as_ptr().cast_mut().cast(),
            iov_len: esp.len(),
        };
        let hdr = &mut msgs[i].msg_hdr;
        hdr.msg_name = (&raw mut names[i]).cast();
        hdr.msg_namelen = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        hdr.msg_iov = &raw mut iovs[i];
        hdr.msg_iovlen = 1;
        hdr.msg_control = controls[i].as_mut_ptr().cast();
        hdr.msg_controllen = mem::size_of_val(&controls[i]) as _;
        let pktinfo = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: out.source.octets(),
            },
            ipi6_ifindex: 0,
        };
        // SAFETY: the control buffer is `CMSG_WORDS * 8` = 128 bytes, u64-aligned, and the three
        // messages need `space` = 88 bytes; CMSG_FIRSTHDR/NXTHDR stay within `msg_controllen`,
        // which is the whole buffer while writing and is trimmed to `space` afterwards.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(hdr);
            put_cmsg(c, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, pktinfo);
            let c = libc::CMSG_NXTHDR(hdr, c);
            put_cmsg(
                c,
                libc::IPPROTO_IPV6,
                libc::IPV6_HOPLIMIT,
                c_int::from(out.hop_limit),
            );
            let c = libc::CMSG_NXTHDR(hdr, c);
            put_cmsg(
                c,
                libc::IPPROTO_IPV6,
                libc::IPV6_TCLASS,
                c_int::from(out.traffic_class),
            );
        }
        hdr.msg_controllen = space as _;
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
                (n - start) as libc::c_uint,
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

/// One received ESP packet: `buf[40..40 + len]` holds it from the ESP header on, `buf[..40]` is
/// free for the rebuilt IPv6 header.
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

/// Receives up to `batch.len()` packets without blocking; returns how many arrived (0 when
/// none is waiting).
pub(super) fn recv_batch(fd: RawFd, batch: &mut [Incoming]) -> Result<usize, EngineError> {
    let n = batch.len().min(BATCH);
    let mut names = [sockaddr(Ipv6Addr::UNSPECIFIED); BATCH];
    // SAFETY: `iovec`, `mmsghdr` are plain old data; all-zero is valid.
    let mut iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    let mut controls = [[0u64; CMSG_WORDS]; BATCH];
    for i in 0..n {
        let payload = &mut batch[i].buf[40..];
        iovs[i] = libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: payload.len(),
        };
        let hdr = &mut msgs[i].msg_hdr;
        hdr.msg_name = (&raw mut names[i]).cast();
        hdr.msg_namelen = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        hdr.msg_iov = &raw mut iovs[i];
        hdr.msg_iovlen = 1;
        hdr.msg_control = controls[i].as_mut_ptr().cast();
        hdr.msg_controllen = mem::size_of_val(&controls[i]) as _;
    }
    let got = loop {
        // SAFETY: `msgs[..n]` point into `names`, `iovs`, `controls` and the batch buffers, all
        // alive and unmoved for the duration of the call; a null timeout is allowed.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if let Ok(got) = usize::try_from(got) {
            break got;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => {
                return Err(EngineError::Syscall {
                    call: "recvmmsg",
                    source: e,
                });
            }
        }
    };
    for i in 0..got {
        let slot = &mut batch[i];
        let hdr = &msgs[i].msg_hdr;
        slot.len = msgs[i].msg_len as usize;
        slot.source = Ipv6Addr::from(names[i].sin6_addr.s6_addr);
        slot.destination = None;
        slot.hop_limit = 64;
        slot.traffic_class = 0;
        // SAFETY: the kernel filled `msg_controllen` bytes of the control buffer with well-formed
        // cmsgs; CMSG_FIRSTHDR/NXTHDR never step past that length, and the payloads are read
        // unaligned with the size the option defines.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            while !c.is_null() {
                let data = libc::CMSG_DATA(c);
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                        let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                        slot.destination = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                        let v = data.cast::<c_int>().read_unaligned();
                        slot.hop_limit = u8::try_from(v).unwrap_or(64);
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                        let v = data.cast::<c_int>().read_unaligned();
                        slot.traffic_class = u8::try_from(v).unwrap_or(0);
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(hdr, c);
            }
        }
    }
    Ok(got)
}
