//! AF_XDP receive sockets: XDP hands ESP with a known SPI straight to the engine, skipping the
//! kernel's IPv6 input, raw-socket delivery and `recvmmsg` (about a fifth of the CPU a protected
//! TCP stream costs on a veth pair).
//!
//! One socket per (interface, RX queue), each with its own UMEM of [`FRAMES`] 4 KiB frames and
//! receive rings only, bound in copy mode (`XDP_COPY`: works with generic and native XDP alike).
//! The XDP program looks the socket up by (ifindex, queue) in `XIPSEC_XSK_SLOTS` and redirects
//! into `XIPSEC_XSKS`; frames it does not redirect (VLAN-tagged, extension headers before ESP,
//! fragments, larger than `XSK_MAX_FRAME`, or no socket) still reach the raw socket. A socket
//! that cannot be created is logged and skipped: the raw socket serves that queue. Closing the
//! socket empties its XSKMAP slot (the kernel does it), so a dead daemon's slots fall back to
//! the kernel path, where nothing listens for ESP any more: fail closed.

use smallvec::SmallVec;
use std::cell::UnsafeCell;
use std::io;
use std::mem;
use std::num::NonZeroU32;
use std::os::fd::RawFd;
use std::ptr::NonNull;

use xdpilone::{DeviceQueue, IfInfo, RingRx, Socket, SocketConfig, Umem, UmemConfig};

/// Frames per socket (and entries of its fill and receive rings).
const FRAMES: u32 = 1024;
/// Frame size: a page, the largest the kernel's aligned UMEM mode allows.
const FRAME_SIZE: u32 = 4096;
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

/// The page-aligned memory the kernel copies frames into: [`FRAMES`] frames, contiguous.
struct Area {
    frames: Box<[Frame]>,
}

impl Area {
    fn new() -> Self {
        // Zeroed by the allocator (fresh pages for a block this size), so memory is committed
        // only as the kernel fills frames, as with the C library's calloc.
        let frames = Box::<[Frame]>::new_zeroed_slice(FRAMES as usize);
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

/// One bound AF_XDP socket and its rings.
pub struct XskReceiver {
    binding: XskBinding,
    rx: RingRx,
    fill: DeviceQueue,
    /// Frames read but not yet back on the fill ring.
    spare: Vec<u64>,
    _umem: Umem,
    // Last: the kernel may write into it until the socket above is closed (fields drop in
    // declaration order).
    area: Area,
}

// SAFETY: the receiver is used by one thread at a time (it moves into the inbound worker); the
// raw pointers inside (`Umem`, `Area`) name memory owned by this value and shared only with the
// kernel, which synchronises through the rings' atomics.
unsafe impl Send for XskReceiver {}

fn errno(call: &'static str, e: &xdpilone::Errno) -> io::Error {
    io::Error::other(format!("{call}: {e}"))
}

impl XskReceiver {
    /// Creates and binds a socket on `ifindex`, RX queue `queue`, with every frame on the fill
    /// ring.
    pub fn open(ifindex: u32, queue: u32) -> io::Result<Self> {
        let area = Area::new();
        let config = UmemConfig {
            fill_size: FRAMES,
            complete_size: FRAMES,
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
        let mut fill = umem.fq_cq(&socket).map_err(|e| errno("fill ring", &e))?;
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
        Ok(Self {
            binding: XskBinding { ifindex, queue, fd },
            rx,
            fill,
            spare: Vec::with_capacity(FRAMES as usize),
            _umem: umem,
            area,
        })
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
            if start
                .checked_add(len)
                .is_some_and(|end| end <= self.area.len())
            {
                // SAFETY: the range lies inside the area, and the kernel wrote it before
                // publishing the descriptor (the ring's acquire load orders our read after that
                // write); it does not touch the frame again until we return it below, after
                // `f` returned and `frames` is gone.
                let frame = unsafe {
                    std::slice::from_raw_parts(
                        self.area.as_slice_ptr().cast::<u8>().as_ptr().add(start),
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

/// Opens a receiver on every RX queue of `ifindex` (up to [`MAX_QUEUES_PER_INTERFACE`]).
pub(crate) fn open_interface(ifindex: u32, name: &str) -> io::Result<Vec<XskReceiver>> {
    let queues = rx_queue_count(name).min(MAX_QUEUES_PER_INTERFACE);
    (0..queues.max(1))
        .map(|queue| XskReceiver::open(ifindex, queue))
        .collect()
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
