//! AF_XDP sockets: XDP hands ESP with a known SPI straight to the engine, skipping the
//! kernel's IPv6 input, raw-socket delivery and `recvmmsg` (about a fifth of the CPU a protected
//! TCP stream costs on a veth pair); and the engine sends its ESP through AF_XDP transmit
//! rings on the same queues, skipping the kernel's route lookup, IPv6 output, qdisc and TC
//! egress.
//!
//! One socket pair per (interface, RX queue) (see below), each pair with its own UMEM of
//! [`FRAMES`] + [`TX_FRAMES`] 4 KiB frames (the first [`FRAMES`] for receiving, the rest for
//! sending), bound in copy mode
//! (`XDP_COPY`: works with generic and native XDP alike). The XDP program looks the socket up by
//! (ifindex, queue) in `XIPSEC_XSK_SLOTS` and redirects into `XIPSEC_XSKS`; frames it does not
//! redirect (VLAN-tagged, extension headers before ESP, fragments, larger than `XSK_MAX_FRAME`,
//! or no socket) still reach the raw socket. A socket that cannot be created is logged and
//! skipped: the raw socket serves that queue. Closing the socket empties its XSKMAP slot (the
//! kernel does it), so a dead daemon's slots fall back to the kernel path, where nothing listens
//! for ESP any more: fail closed.
//!
//! Each (interface, queue) has two sockets over one UMEM and one buffer pool (the second bound
//! with `XDP_SHARED_UMEM`): an [`XskReceiver`] (receive ring, fill ring: the inbound worker;
//! the socket in `XIPSEC_XSKS`) and an [`XskSender`] (a socket with only a transmit ring, and
//! the pool's completion ring: the outbound sender); each ring has one user. Two sockets, not
//! one with both rings: in copy mode `poll` on a socket with a transmit ring also transmits
//! that ring (`xsk_poll` drives Tx), under the socket's Tx mutex, so the inbound worker's
//! every poll contended with the sender's `sendto`, which holds that mutex while the veth runs
//! the peer's receive path for the whole batch: `perf` showed half of the inbound worker's CPU
//! spinning there (`mutex_spin_on_owner`). The sender writes whole Ethernet frames (built by
//! the caller) into its own frames, and kicks the kernel with `sendto`, which in copy mode
//! transmits them synchronously (`__dev_direct_xmit`: no qdisc, no TC egress, no packet taps
//! on the sending side, so a capture on the sending interface does not show them; one on the
//! receiving side does).

use smallvec::SmallVec;
use std::cell::UnsafeCell;
use std::io;
use std::mem;
use std::num::NonZeroU32;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::Arc;

use xdpilone::xdp::XdpDesc;
use xdpilone::{
    CompletionQueue, FillQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig,
};

/// Receive frames per socket (and entries of its fill and receive rings).
const FRAMES: u32 = 1024;
/// Transmit frames per socket (and entries of its transmit and completion rings).
const TX_FRAMES: u32 = 512;
/// Frame size: a page, the largest the kernel's aligned UMEM mode allows.
pub(crate) const FRAME_SIZE: u32 = 4096;
/// RX queues of one interface that get a socket; any further queue uses the raw socket.
const MAX_QUEUES_PER_INTERFACE: u32 = 16;

/// Frames one `receive` call takes at most.
const RECEIVE_MAX: u32 = 256;

/// Where a socket is bound, for the XDP maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskBinding {
    pub ifindex: u32,
    pub queue: u32,
    pub fd: RawFd,
}

/// One UMEM frame: a page, page aligned. `UnsafeCell` because the kernel writes into it behind
/// Rust's back (through the UMEM registration), never through a reference of ours.
#[repr(C, align(4096))]
struct Frame(UnsafeCell<[u8; FRAME_SIZE as usize]>);

/// The page-aligned memory the kernel copies frames into: [`FRAMES`] + [`TX_FRAMES`] frames,
/// contiguous.
struct Area {
    frames: Box<[Frame]>,
}

impl Area {
    fn new() -> Self {
        // Zeroed by the allocator (fresh pages for a block this size), so memory is committed
        // only as the kernel fills frames, as with the C library's calloc.
        let frames = Box::<[Frame]>::new_zeroed_slice((FRAMES + TX_FRAMES) as usize);
        // SAFETY: a `Frame` is bytes in an `UnsafeCell`; all-zero is a valid value.
        let frames = unsafe { frames.assume_init() };
        Self { frames }
    }

    fn len(&self) -> usize {
        mem::size_of_val(&*self.frames)
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        // `UnsafeCell` makes writes through this pointer (the kernel's) legal although we only
        // hold `&self`.
        let start = NonNull::from(&*self.frames).cast::<u8>();
        NonNull::slice_from_raw_parts(start, self.len())
    }
}

/// The UMEM of one socket, shared by its receiver and its sender.
struct Memory {
    _umem: Umem,
    // Last: the kernel may write into it until the socket is closed (fields drop in
    // declaration order, and both halves drop their rings before their `Arc<Memory>`).
    area: Area,
}

// SAFETY: `Memory` is only read through `Area::as_slice_ptr` by the two halves, each touching
// only the frames it owns at the time (the receiver its received frames, the sender its free
// transmit frames); ownership of a frame passes between user and kernel through the rings'
// atomics. `Umem` holds the registration's descriptor and pointers to this memory, nothing
// thread-bound.
unsafe impl Send for Memory {}
// SAFETY: see `Send` above: no two threads touch the same frame at the same time.
unsafe impl Sync for Memory {}

/// The receiving half of one bound AF_XDP socket.
pub struct XskReceiver {
    binding: XskBinding,
    rx: RingRx,
    fill: FillQueue,
    /// Frames read but not yet back on the fill ring.
    spare: Vec<u64>,
    // Last (see `Memory`).
    memory: Arc<Memory>,
}

// SAFETY: the receiver is used by one thread at a time (it moves into the inbound worker); the
// raw pointers inside (`RingRx`, `FillQueue`) name ring memory shared only with the kernel,
// which synchronises through the rings' atomics.
unsafe impl Send for XskReceiver {}

/// The sending half of one bound AF_XDP socket: its transmit ring, completion ring and the
/// transmit frames not in the kernel's hands.
pub(crate) struct XskSender {
    ifindex: u32,
    tx: RingTx,
    completion: CompletionQueue,
    /// Transmit frames owned by us (free to write).
    free: Vec<u64>,
    /// Written frames not yet on the transmit ring.
    staged: Vec<XdpDesc>,
    /// Frames given up, and the first error, since `take_failures`.
    failed: usize,
    error: Option<io::Error>,
    // Last (see `Memory`).
    memory: Arc<Memory>,
}

// SAFETY: as for `XskReceiver`: one thread at a time (the sender holds it under a mutex).
unsafe impl Send for XskSender {}

fn errno(call: &'static str, e: &xdpilone::Errno) -> io::Error {
    io::Error::other(format!("{call}: {e}"))
}

impl XskReceiver {
    /// Creates and binds a socket on `ifindex`, RX queue `queue`, with every receive frame on
    /// the fill ring; its receiving half only.
    pub fn open(ifindex: u32, queue: u32) -> io::Result<Self> {
        Self::open_pair(ifindex, queue).map(|(receiver, _)| receiver)
    }

    /// Like [`Self::open`], with the sending half too.
    pub(crate) fn open_pair(ifindex: u32, queue: u32) -> io::Result<(Self, XskSender)> {
        let area = Area::new();
        let config = UmemConfig {
            fill_size: FRAMES,
            complete_size: TX_FRAMES,
            frame_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `area` is page aligned, FRAMES * FRAME_SIZE long and outlives the UMEM (both
        // live in the returned value, the area dropped last).
        let umem = unsafe { Umem::new(config, area.as_slice_ptr()) }
            .map_err(|e| errno("XDP_UMEM_REG", &e))?;
        let mut info = IfInfo::invalid();
        info.from_ifindex(ifindex)
            .map_err(|e| errno("if_indextoname", &e))?;
        info.set_queue(queue);
        let socket = Socket::with_shared(&info, &umem).map_err(|e| errno("socket", &e))?;
        let (mut fill, completion) = umem
            .fq_cq(&socket)
            .map_err(|e| errno("fill ring", &e))?
            .into_parts();
        let user = umem
            .rx_tx(
                &socket,
                &SocketConfig {
                    rx_size: NonZeroU32::new(FRAMES),
                    tx_size: None,
                    bind_flags: SocketConfig::XDP_BIND_COPY,
                },
            )
            .map_err(|e| errno("rx ring", &e))?;
        let rx = user.map_rx().map_err(|e| errno("mmap rx ring", &e))?;
        umem.bind(&user).map_err(|e| errno("bind", &e))?;
        // The sending socket: same queue, same pool (its completions arrive on the completion
        // ring above); a shared socket inherits copy mode and may set no mode flag itself.
        let sending = Socket::new(&info).map_err(|e| errno("tx socket", &e))?;
        let user = umem
            .rx_tx(
                &sending,
                &SocketConfig {
                    rx_size: None,
                    tx_size: NonZeroU32::new(TX_FRAMES),
                    bind_flags: 0,
                },
            )
            .map_err(|e| errno("tx ring", &e))?;
        let tx = user.map_tx().map_err(|e| errno("mmap tx ring", &e))?;
        umem.bind(&user).map_err(|e| errno("bind tx socket", &e))?;
        raise_tx_budget(tx.as_raw_fd());
        let mut writer = fill.fill(FRAMES);
        let filled = writer.insert((0..FRAMES).map(|i| u64::from(i) * u64::from(FRAME_SIZE)));
        writer.commit();
        drop(writer);
        if filled != FRAMES {
            return Err(io::Error::other(format!(
                "fill ring took {filled} of {FRAMES} frames"
            )));
        }
        let fd = rx.as_raw_fd();
        let memory = Arc::new(Memory { _umem: umem, area });
        let sender = XskSender {
            ifindex,
            tx,
            completion,
            free: (FRAMES..FRAMES + TX_FRAMES)
                .map(|i| u64::from(i) * u64::from(FRAME_SIZE))
                .collect(),
            staged: Vec::with_capacity(TX_FRAMES as usize),
            failed: 0,
            error: None,
            memory: Arc::clone(&memory),
        };
        let receiver = Self {
            binding: XskBinding { ifindex, queue, fd },
            rx,
            fill,
            spare: Vec::with_capacity(FRAMES as usize),
            memory,
        };
        Ok((receiver, sender))
    }

    pub fn binding(&self) -> XskBinding {
        self.binding
    }

    /// Hands the received frames (Ethernet on), up to `max` of them, to `f` at once (so their
    /// cryptography can run as one burst), then gives their buffers back to the kernel.
    /// Returns how many there were.
    pub fn receive(&mut self, max: u32, f: impl FnOnce(&[&[u8]])) -> u32 {
        let mut reader = self.rx.receive(max.min(RECEIVE_MAX));
        let mut frames: SmallVec<[&[u8]; RECEIVE_MAX as usize]> = SmallVec::new();
        let mut n = 0;
        while n < RECEIVE_MAX {
            let Some(desc) = reader.read() else { break };
            // An address beyond usize cannot lie inside the area: the check below skips it.
            let start = usize::try_from(desc.addr).unwrap_or(usize::MAX);
            let len = desc.len as usize;
            let area = &self.memory.area;
            if start.checked_add(len).is_some_and(|end| end <= area.len()) {
                // SAFETY: the range lies inside the area, and the kernel wrote it before
                // publishing the descriptor (the ring's acquire load orders our read after that
                // write); it does not touch the frame again until we return it below, after
                // `f` returned and `frames` is gone.
                let frame = unsafe {
                    std::slice::from_raw_parts(
                        area.as_slice_ptr().cast::<u8>().as_ptr().add(start),
                        len,
                    )
                };
                frames.push(frame);
            }
            self.spare
                .push(desc.addr - desc.addr % u64::from(FRAME_SIZE));
            n += 1;
        }
        f(&frames);
        drop(frames);
        reader.release();
        drop(reader);
        if self.spare.is_empty() {
            return n;
        }
        // Back to the fill ring. The kernel may not have published its fill-ring consumer yet:
        // frames the ring has no room for wait in `spare` for the next call.
        let mut writer = self
            .fill
            .fill(u32::try_from(self.spare.len()).unwrap_or(FRAMES));
        let given = writer.insert(self.spare.iter().copied()) as usize;
        writer.commit();
        drop(writer);
        self.spare.drain(..given);
        n
    }
}

/// Opens a socket on every RX queue of `ifindex` (up to [`MAX_QUEUES_PER_INTERFACE`]).
pub(crate) fn open_interface(
    ifindex: u32,
    name: &str,
) -> io::Result<Vec<(XskReceiver, XskSender)>> {
    let queues = rx_queue_count(name).min(MAX_QUEUES_PER_INTERFACE);
    (0..queues.max(1))
        .map(|queue| XskReceiver::open_pair(ifindex, queue))
        .collect()
}

/// `XDP_MAX_TX_SKB_BUDGET` (linux/if_xdp.h, Linux 6.17): how many frames one `sendto` transmits
/// in copy mode (32 by default, so a burst needs several kicks).
const XDP_MAX_TX_SKB_BUDGET: i32 = 9;

/// Lets one kick transmit a whole ring where the kernel allows it; older kernels refuse the
/// option and the sender kicks more often.
fn raise_tx_budget(fd: RawFd) {
    let budget = libc::c_int::try_from(TX_FRAMES).unwrap_or(libc::c_int::MAX);
    let _ = super::sys::set_int_option(fd, libc::SOL_XDP, XDP_MAX_TX_SKB_BUDGET, budget);
}

/// Kicks that may pass without the transmit ring draining before [`XskSender::flush`] gives up
/// (the device is stopped; what is left goes out with the next kick).
const MAX_KICKS: u32 = 64;

impl XskSender {
    /// The interface this sender transmits on.
    pub(crate) fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Takes back the frames the kernel has transmitted.
    fn reclaim(&mut self) {
        let mut reader = self.completion.complete(TX_FRAMES);
        while let Some(addr) = reader.read() {
            self.free.push(addr);
        }
        reader.release();
    }

    /// Writes one frame of `len` bytes through `write` (which gets exactly `len` bytes) into a
    /// free transmit frame and stages it; false, with nothing written, when `len` exceeds a frame
    /// or no frame is free even after a [`Self::flush`].
    pub(crate) fn stage(&mut self, len: usize, write: impl FnOnce(&mut [u8])) -> bool {
        if len > FRAME_SIZE as usize {
            return false;
        }
        if self.free.is_empty() {
            self.reclaim();
        }
        if self.free.is_empty() {
            // Whatever is staged goes out, then its frames come back.
            self.flush();
        }
        let Some(addr) = self.free.pop() else {
            return false;
        };
        let area = &self.memory.area;
        let start = usize::try_from(addr).unwrap_or(usize::MAX);
        if start.checked_add(len).is_none_or(|end| end > area.len()) {
            return false;
        }
        // SAFETY: `addr` came from `free`: a transmit frame inside the area (checked above) that
        // neither the kernel (not on the transmit ring) nor the receiver (it owns only receive
        // frames) touches until we put it on the ring; `len` fits in it.
        let frame = unsafe {
            std::slice::from_raw_parts_mut(
                area.as_slice_ptr().cast::<u8>().as_ptr().add(start),
                len,
            )
        };
        write(frame);
        self.staged.push(XdpDesc {
            addr,
            len: u32::try_from(len).unwrap_or(FRAME_SIZE),
            options: 0,
        });
        true
    }

    /// Puts the staged frames on the transmit ring and kicks the kernel until it has taken
    /// them all (copy mode transmits during the kick). Frames that cannot be put on the ring
    /// (it stays full: the device does not transmit) or whose kick failed are given up: counted
    /// in [`Self::take_failures`], never sent later out of order.
    pub(crate) fn flush(&mut self) {
        while !self.staged.is_empty() {
            let mut writer = self
                .tx
                .transmit(u32::try_from(self.staged.len()).unwrap_or(TX_FRAMES));
            let n = writer.insert(self.staged.iter().copied()) as usize;
            writer.commit();
            drop(writer);
            self.staged.drain(..n);
            let kicked = self.kick();
            self.reclaim();
            if let Err(e) = kicked {
                self.error.get_or_insert(e);
            } else if n > 0 {
                continue;
            }
            self.failed += self.staged.len();
            self.free.extend(self.staged.drain(..).map(|d| d.addr));
            self.error
                .get_or_insert_with(|| io::Error::other("af_xdp transmit ring full"));
        }
    }

    /// Frames given up since the last call, and the first error seen.
    pub(crate) fn take_failures(&mut self) -> (usize, Option<io::Error>) {
        (mem::take(&mut self.failed), self.error.take())
    }

    /// `sendto` on the socket until the kernel has consumed the transmit ring.
    fn kick(&mut self) -> io::Result<()> {
        for _ in 0..MAX_KICKS {
            if self.tx.pending() == 0 {
                return Ok(());
            }
            // SAFETY: a zero-length `sendto` on the bound AF_XDP socket with no buffer and no
            // address: the kernel only reads the transmit ring.
            let sent = unsafe {
                libc::sendto(
                    self.tx.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if sent < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => {
                        self.reclaim();
                    }
                    _ => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// RX queues the interface has (`/sys/class/net/<name>/queues/rx-*`); 1 if unknown.
fn rx_queue_count(name: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues")).map_or(1, |dir| {
        let queues = dir
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count();
        u32::try_from(queues).unwrap_or(u32::MAX)
    })
}
