//! The userspace ESP engine: plaintext IPv6 in on a TUN device, ESP out on a raw socket, and
//! back. The kernel has no ESP of ours (no xfrm): every ESP packet xipsec sends or accepts goes
//! through here.
//!
//! Layout: `core` decides (outbound and inbound state machines, no I/O, no locks: bytes and a
//! clock in, actions out); this module is the I/O around it (TUN, raw ESP socket, AF_XDP
//! through `xsk` and `sys`, the poll loops, the state files `seq` and `replay_store`), and
//! `gro`, `mss`, `reassembly` are the offloads and packet helpers. The workers call exactly the
//! core's functions and perform what they return: send, deliver, write a reservation or a
//! ceiling, all writes with no table lock held.
//!
//! Contract of [`EspEngine`]:
//! - **Outbound.** Whatever the kernel hands the TUN device (`IFF_TUN | IFF_NO_PI |
//!   IFF_VNET_HDR`: IPv6 packets behind a virtio-net header, TCP as TSO packets of up to 64 KiB
//!   that `gro::segment` splits) is a packet to protect: the TC egress program `bpf_redirect`s
//!   packets whose SP action is `ipsec` to [`EspEngine::tun_ifindex`]. TCP SYNs get their MSS
//!   clamped (`mss`) so every segment fits the link after ESP. The outbound worker classifies each
//!   packet's flow against the outbound SPD (`core::classify`, cached per flow in a bounded
//!   LRU cache that every [`EspEngine::update`] invalidates by generation), frames it with the
//!   SP's SA, seals the batch's packets together (multi-buffer crypto, `crypto::burst`: AES-CBC
//!   over 8 packets, HMAC-SHA-256 over 4, where the CPU has AES-NI and SHA-NI; logged at start
//!   as `crypto`) and sends the ESP part with
//!   `sendmmsg` on a raw `IPPROTO_ESP` socket: destination in `msg_name`, source in an
//!   `IPV6_PKTINFO` cmsg (plus `IPV6_HOPLIMIT` and `IPV6_TCLASS` from the header `encapsulate`
//!   built). The kernel writes the outer IPv6 header and fragments the result when it exceeds
//!   the interface MTU (`IPV6_PMTUDISC_OMIT`), so a large UDP datagram still arrives. A packet whose flow no
//!   longer maps to an `ipsec` SP with an SA is dropped (`esp_no_sa`): fail closed, never clear.
//! - **Outbound fragments.** TC egress redirects every fragment of a protected datagram (first
//!   and non-first) to the TUN; the worker reassembles them (`reassembly`: bounded, 30 s
//!   timeout, overlapping fragments drop the whole datagram per RFC 5722) and protects the whole
//!   datagram once (ESP before fragmentation, RFC 4303 §3.3.4); the kernel fragments the ESP
//!   packet if it exceeds the MTU. A fragment never leaves by itself. Counters `esp_frag_*`.
//! - **Inbound.** ESP with a known SPI in the common shape (untagged Ethernet, ESP right after
//!   the IPv6 header, not a fragment, at most `XSK_MAX_FRAME` bytes) arrives on an AF_XDP socket
//!   per (interface, RX queue) of [`EngineConfig::xsk_interfaces`] (`xsk`): XDP redirects it
//!   there, skipping the kernel's IPv6 input. Everything else addressed to this host (outer
//!   fragments, after reassembly; extension headers before ESP; queues or interfaces without a
//!   socket) reaches the same raw socket, from the ESP header on; source from `msg_name`,
//!   destination, hop limit and traffic class from `IPV6_PKTINFO`/`IPV6_HOPLIMIT`/`IPV6_TCLASS`
//!   cmsgs, handed to the core with the ESP bytes (`OuterHeader`; nothing is rebuilt or parsed
//!   twice). Either way the inbound worker then finds
//!   the SA by SPI, verifies and decrypts
//!   it, the ICVs of a receive round verified together (multi-buffer) and every other step per
//!   packet in arrival order (`AuthFailed` -> `auth_failures`, `Replay` -> `replay_drops`, other -> `errors`), checks
//!   the result against the inbound SPD (RFC 4301 §5.2: it must match an `ipsec` SP naming this
//!   SA, else `esp_policy_mismatch`), and writes the inner packet (tunnel) or the restored packet
//!   (transport) to the TUN: the kernel receives it as arriving on the TUN and delivers it
//!   locally. Consecutive segments of one TCP flow are written as one GSO packet of up to
//!   64 KiB (`gro`; a whole TSO packet of the peer), across receive batches and through the
//!   receive pause while a stream flows, so the stack processes and acknowledges one packet
//!   instead of dozens; what is pending is written before the worker blocks, so the tail of a
//!   burst never waits for more traffic. Only SAs an
//!   inbound `ipsec` SP names are candidates for an SPI. Dummy packets (next header 59) are
//!   dropped silently (`esp_dummy`).
//! - **Inbound SA binding.** ESP whose outer source or destination is not its SA's (unless the
//!   SA says `any`) is dropped before any cryptography (`esp_address_mismatch`): ESP reflected
//!   back to its sender, or sent from elsewhere under a known SPI, never reaches the window. A
//!   decrypted packet whose upper layer is IPv4/IPv6-in-IP, ESP or AH, or (transport mode) that
//!   holds a fragment header, is dropped (`esp_inner_protocol_refused`): no policy can check
//!   what it carries.
//! - **Replay across restarts.** Each manual inbound SA's replay ceiling (an `ike` SA's replay
//!   state stays in memory: its keys die with the process) is written ahead to
//!   `{state_dir}/esp-replay.json` (`replay_store`), keyed by SPI and a hash of the keys; no
//!   sequence number above the ceiling is accepted before the next ceiling is on disk, and a
//!   fresh engine (or a re-added SA) refuses everything up to it. A housekeeping thread lowers
//!   ceilings that run further ahead than the SA's recent rate needs, so a `kill -9` refuses at
//!   most about 4 s of a peer's traffic at its rate just before the crash (nothing of an idle
//!   SA). A failed write refuses new ESP and backs off (`esp_replay_persist_errors`). [`EspEngine::reset_replay`] is the operator's
//!   explicit reset (`xipsec sa reset-replay`).
//! - **3DES volume.** A 3DES SA stops protecting and accepting after
//!   [`EngineConfig::tdes_block_limit`] blocks per direction (Sweet32; `esp_volume_limit`).
//! - **Supervision.** A worker that panics is caught, counted (`esp_worker_deaths`), logged and
//!   recorded for [`death`]; the daemon exits non-zero on it. Its fds stay open until the
//!   engine drops, so the TUN queue fills and drops: fail closed. `esp_tun_queue_drops` reports
//!   what the kernel dropped at the TUN device. `XIPSEC_TEST_PANIC_ENGINE` injects the fault.
//! - **Own packets.** The raw socket carries `SO_MARK = XIPSEC_MARK`, so TC egress never
//!   classifies our ESP again; [`EspEngine::send_socket_cookies`] gives its `SO_COOKIE` for a
//!   bypass only the engine's own socket can use.
//! - **Sequence numbers** are never reused across restarts: see `seq`. A packet leaves only
//!   with a number at or below a reservation already on disk: the core asks for the next
//!   reservation when half of the current one is used (and for a new SA at install), the
//!   outbound worker writes it (fsync + rename) after its batch, without the table lock, and
//!   confirms it; a packet that finds no reserved number is dropped (`esp_seq_persist_errors`).
//!   A fresh engine resumes every SA after its reservation, so a peer's replay window keeps
//!   accepting us after `kill -9`. An exhausted SA (2^32-1 sent) stops sending, logs once and
//!   counts `esp_sequence_exhausted`.
//! - **The TUN device** is not persistent: it disappears with the engine's fd, so when the
//!   daemon dies the TC redirect target vanishes and protected traffic drops (fail closed).
//!   IPv6 address generation is off on it (`addr_gen_mode = 1`, set before it comes up: no
//!   link-local address, so no RS, MLD or DAD packets of its own). Its MTU is 1500
//!   ([`TUN_MTU`]): it only bounds what the local stack routes into the TUN (test setups); with
//!   TC redirection the packet's size was settled by the real egress device.
//! - **Threads.** Outbound: one thread (TUN -> segment -> encapsulate -> send, batches of up to
//!   128); inbound: one thread (AF_XDP rings and
//!   `recvmmsg` -> decapsulate -> check -> coalesce -> TUN write); replay-ceiling housekeeping:
//!   one thread waking every 500 ms (never on the packet path).
//!   Buffers are allocated once; the steady state allocates nothing per packet. Dropping the
//!   engine signals an eventfd all threads poll on, joins them and closes the fds (removing
//!   the TUN device).
//!
//! Limitations, by design:
//! - Transport mode: extension headers in front of ESP (hop-by-hop, routing, destination
//!   options) are not sent: the raw socket sends from the ESP header on and the kernel builds a
//!   plain IPv6 header.
//! - Inbound, a decrypted fragment is not reassembled by the engine: in transport mode it is
//!   refused (`esp_inner_protocol_refused`); in tunnel mode it is checked as the policy sees a
//!   fragment (ports only when present) and the kernel reassembles it.
//! - The 3DES block counts start at 0 when the engine restarts (the sequence number bounds the
//!   packets an SA can carry, not their size); rekey 3DES SAs regularly, or better, not use 3DES.
//! - Outbound tunnel mode needs the SA's source to be a local address (the kernel refuses a
//!   foreign `IPV6_PKTINFO` source: `esp_send_errors`).
//! - The engine makes no routing assumptions. Test setups that route the peer into the TUN
//!   instead of using TC redirection must keep the engine's own ESP (marked `XIPSEC_MARK`) off
//!   that route: `tests/esp_engine.rs` puts the TUN route in its own table and adds
//!   `ip -6 rule add fwmark XIPSEC_MARK lookup main` in front of it.

pub mod core;
pub mod gro;
pub mod mss;
mod neighbour;
pub mod reassembly;
mod replay_store;
mod seq;
mod state_file;
mod sys;
mod transmit;
mod udp_gso;
mod xsk;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::classifier::compile::CompileError;
use crate::crypto::{ConfigError, OuterHeader};
use crate::model::SaCount;
use crate::model::Spd;

pub use self::core::{DEFAULT_TDES_BLOCK_LIMIT, FLOW_CACHE_LIMIT, Stat};
pub use replay_store::FILE_NAME as REPLAY_FILE_NAME;
pub use seq::{FILE_NAME as SEQ_FILE_NAME, RESERVATION_STEP};
pub use xsk::{XskBinding, XskReceiver};

use self::core::{
    EngineStats, FAKE_ETHERNET, InAction, InPacket, Inbound, KeyId, OutAction, Outbound, Persisted,
    Prepared, SaCells, SeqReservation,
};
use neighbour::Resolver;
use replay_store::ReplayStore;
use seq::SeqStore;
use smallvec::SmallVec;
use sys::{BATCH, Incoming, Outgoing, Ready};
use transmit::Transmit;
use xsk::XskSender;

/// Default TUN device name.
pub const DEFAULT_TUN_NAME: &str = "xipsec0";

/// MTU of the TUN device (see the module docs).
pub const TUN_MTU: u32 = 1500;

/// Receive and send buffer of the raw ESP socket.
const SOCKET_BUFFER_BYTES: i32 = 8 << 20;

/// What the engine needs to start.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Name of the TUN device to create (default [`DEFAULT_TUN_NAME`]).
    pub tun_name: String,
    /// Directory of the sequence reservations ([`SEQ_FILE_NAME`]).
    pub state_dir: PathBuf,
    /// Interfaces to receive ESP from by AF_XDP (see `xsk`); the raw socket serves the rest.
    pub xsk_interfaces: Vec<String>,
    /// Receive coalescing: after a round of at least [`RX_COALESCE_MIN_FRAMES`] ESP packets the
    /// inbound worker waits this long before looking again, so the next round is larger (fewer
    /// wake-ups, larger GSO writes, fewer TCP ACKs). What NICs call `rx-usecs`; zero disables.
    pub rx_coalesce: Duration,
    /// 3DES SAs stop protecting and accepting after this many 64-bit blocks per direction
    /// (Sweet32; default [`DEFAULT_TDES_BLOCK_LIMIT`], 2^30).
    pub tdes_block_limit: u64,
    /// Send ESP through the AF_XDP sockets of [`Self::xsk_interfaces`] where possible
    /// (`transmit`); false: always through the raw socket. Default true, unless the environment
    /// says `XIPSEC_ESP_TX=raw` ([`TX_ENV`]).
    pub xsk_tx: bool,
    /// ESP in UDP crosses the link in GSO frames of up to 64 KiB and is received in GRO
    /// super-packets (`udp_gso`): sent when the next hop is known, received on a UDP socket per
    /// local address and port of the inbound encapsulated SAs. Default true, unless the
    /// environment says `XIPSEC_ESP_GSO=off` ([`GSO_ENV`]).
    pub udp_gso: bool,
}

/// `XIPSEC_ESP_GSO=off` turns the UDP GSO/GRO path off by default (A/B measurements).
pub const GSO_ENV: &str = "XIPSEC_ESP_GSO";

/// `XIPSEC_ESP_TX=raw` turns AF_XDP transmission off by default (A/B measurements).
pub const TX_ENV: &str = "XIPSEC_ESP_TX";

/// Default of [`EngineConfig::rx_coalesce`]: +4% TCP goodput in `bench e2e` here (A/B of four
/// invocations each), a bulk flow's packets wait at most this much longer.
pub const DEFAULT_RX_COALESCE: Duration = Duration::from_micros(150);

/// Rounds smaller than this (pings, ACKs, light traffic) never wait.
pub const RX_COALESCE_MIN_FRAMES: u32 = 8;

impl EngineConfig {
    /// The default TUN name with reservations in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            tun_name: DEFAULT_TUN_NAME.to_owned(),
            state_dir: state_dir.into(),
            xsk_interfaces: Vec::new(),
            rx_coalesce: DEFAULT_RX_COALESCE,
            tdes_block_limit: DEFAULT_TDES_BLOCK_LIMIT,
            xsk_tx: std::env::var(TX_ENV).as_deref() != Ok("raw"),
            udp_gso: std::env::var(GSO_ENV).as_deref() != Ok("off"),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self::new(crate::paths::DEFAULT_STATE_DIR)
    }
}

/// Why the engine could not start or apply an update.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A system call failed; `call` names it.
    #[error("{call} failed")]
    Syscall {
        call: &'static str,
        #[source]
        source: io::Error,
    },
    /// `/dev/net/tun` could not be opened (no tun module, or not root).
    #[error("cannot open /dev/net/tun")]
    OpenTun {
        #[source]
        source: io::Error,
    },
    /// The TUN name is empty, too long (15 bytes at most) or contains `/`, space or NUL.
    #[error("invalid tun device name {name:?}: 1 to 15 bytes, no '/', space or NUL")]
    TunName { name: String },
    /// A sysctl of the TUN device could not be written.
    #[error("cannot write {}", path.display())]
    Sysctl {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The reservation file or its directory could not be read or created.
    #[error("cannot {op} {}", path.display())]
    SeqFile {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The reservation file is not one; it is left untouched.
    #[error("corrupt sequence reservation file {}: {reason}", path.display())]
    SeqFileCorrupt { path: PathBuf, reason: String },
    /// The replay ceiling file or its directory could not be read, created or written.
    #[error("cannot {op} {}", path.display())]
    ReplayFile {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The replay ceiling file is not one; it is left untouched.
    #[error("corrupt replay ceiling file {}: {reason}", path.display())]
    ReplayFileCorrupt { path: PathBuf, reason: String },
    /// The SPD cannot be compiled into the engine's classifier (the kernel sync refuses it
    /// with the same error).
    #[error("cannot compile the policies for the esp engine")]
    Classifier {
        #[source]
        source: CompileError,
    },
    /// An SA could not be keyed.
    #[error("cannot key sa {name}")]
    SaConfig {
        name: String,
        #[source]
        source: ConfigError,
    },
    /// A worker thread could not be spawned.
    #[error("cannot spawn the {name} thread")]
    Thread {
        name: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The first engine thread death of this process, for [`death`].
static DEATH: Mutex<Option<String>> = Mutex::new(None);

/// Why an ESP engine thread of this process died, once one has (a panic). The daemon polls it,
/// reports it in `status` and exits non-zero so a supervisor restarts it; meanwhile the TUN
/// queue fills and drops and nothing is decrypted: protected flows fail closed.
pub fn death() -> Option<String> {
    lock(&DEATH).clone()
}

/// Test-only fault injection: `XIPSEC_TEST_PANIC_ENGINE=outbound|inbound` makes that worker
/// panic as it starts, to prove a dead worker is reported and fails closed.
pub const PANIC_ENV: &str = "XIPSEC_TEST_PANIC_ENGINE";

#[allow(clippy::manual_assert, reason = "a deliberate fault, not an invariant")]
fn inject_fault(worker: &str) {
    if std::env::var(PANIC_ENV).as_deref() == Ok(worker) {
        panic!("fault injected by {PANIC_ENV}={worker}");
    }
}

/// State shared by the engine handle and both workers. Lock order everywhere: `updating`,
/// outbound table, inbound table, sequence store, replay store, registry; no file is written
/// while a table is held.
struct Shared {
    out: Mutex<Outbound>,
    inb: Mutex<Inbound>,
    store: Mutex<SeqStore>,
    replay: Mutex<ReplayStore>,
    stats: Arc<EngineStats>,
    registry: Mutex<BTreeMap<u32, Arc<SaCells>>>,
    /// Held by `update` from start to end, so rebuilds and their writes never interleave.
    updating: Mutex<()>,
    tun: OwnedFd,
    socket: OwnedFd,
    shutdown: OwnedFd,
    /// Reads the TUN device's drop counters (`esp_tun_queue_drops`).
    rtnetlink: Mutex<OwnedFd>,
    /// How ESP leaves (`transmit`); the sender and, for small batches, the encrypting thread
    /// send, one at a time.
    tx: Mutex<Transmit>,
    /// The UDP GRO receive sockets (`udp_gso`), kept equal to the inbound SAs' endpoints by
    /// `update`; the inbound worker reloads them when the generation moves, woken by `gro_wake`.
    gro: Mutex<GroSet>,
    gro_generation: AtomicU64,
    gro_wake: OwnedFd,
}

/// The UDP GRO receive sockets by local endpoint; `enabled` is [`EngineConfig::udp_gso`].
struct GroSet {
    enabled: bool,
    sockets: BTreeMap<(std::net::Ipv6Addr, u16), Arc<udp_gso::GroSocket>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running engine; see the module docs. Dropping it stops it.
pub struct EspEngine {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    tun_name: String,
    tun_ifindex: u32,
    xsk: Vec<XskBinding>,
}

impl EspEngine {
    /// Creates the TUN device and the raw ESP socket in the calling thread's network namespace,
    /// loads the sequence reservations and starts both workers, with no SA: every packet on the
    /// TUN is dropped (`esp_no_sa`) and every ESP is `esp_unknown_spi` until [`Self::update`].
    ///
    /// # Errors
    /// An [`EngineError`] naming what failed; nothing is left behind.
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        let EngineConfig {
            tun_name,
            state_dir,
            xsk_interfaces,
            rx_coalesce,
            tdes_block_limit,
            xsk_tx,
            udp_gso,
        } = config;
        let store = SeqStore::open(&state_dir)?;
        let replay = ReplayStore::open(&state_dir)?;
        let seq_file = store.path().display().to_string();
        let tun = sys::create_tun(&tun_name, TUN_MTU)?;
        let socket = sys::open_esp_socket(ipsec_common::abi::XIPSEC_MARK, SOCKET_BUFFER_BYTES)?;
        let shutdown = sys::eventfd()?;
        let rtnetlink = Mutex::new(sys::open_rtnetlink()?);
        let stats = Arc::new(EngineStats::default());
        let (out, inb) = self::core::tables(tdes_block_limit, &stats);
        let (receivers, senders): (Vec<_>, Vec<_>) = open_xsk(&xsk_interfaces).into_iter().unzip();
        let senders = if xsk_tx { senders } else { Vec::new() };
        let gso = udp_gso
            .then(|| {
                udp_gso::GsoSender::open()
                    .map_err(|error| warn!(%error, "no udp gso sender: esp in udp leaves packet by packet"))
                    .ok()
            })
            .flatten();
        let resolver = if !senders.is_empty() || gso.is_some() {
            Some(Resolver::new(
                sys::open_rtnetlink()?,
                ipsec_common::abi::XIPSEC_MARK,
            ))
        } else {
            None
        };
        let tx = Mutex::new(Transmit::new(socket.as_raw_fd(), resolver, senders, gso));
        let shared = Arc::new(Shared {
            out: Mutex::new(out),
            inb: Mutex::new(inb),
            store: Mutex::new(store),
            replay: Mutex::new(replay),
            stats,
            registry: Mutex::new(BTreeMap::new()),
            updating: Mutex::new(()),
            tun: tun.fd,
            socket,
            shutdown,
            rtnetlink,
            tx,
            gro: Mutex::new(GroSet {
                enabled: udp_gso,
                sockets: BTreeMap::new(),
            }),
            gro_generation: AtomicU64::new(0),
            gro_wake: sys::eventfd()?,
        });
        let mut engine = Self {
            shared,
            threads: Vec::new(),
            tun_name: tun.name,
            tun_ifindex: tun.ifindex,
            xsk: receivers.iter().map(XskReceiver::binding).collect(),
        };
        // On error `engine` drops here, which stops the thread already started.
        engine.spawn("xipsec-esp-out", outbound)?;
        engine.spawn("xipsec-esp-in", move |shared| {
            inbound(shared, receivers, rx_coalesce);
        })?;
        engine.spawn("xipsec-esp-replay", tighten_ceilings)?;
        info!(
            tun = %engine.tun_name, ifindex = engine.tun_ifindex, %seq_file,
            crypto = crate::crypto::burst::Backend::active().name(),
            esp_tx = if xsk_tx && !engine.xsk.is_empty() { "af_xdp" } else { "raw socket" },
            udp_gso = lock(&engine.shared.tx).gso_active(),
            "esp engine started"
        );
        Ok(engine)
    }

    fn spawn(
        &mut self,
        name: &'static str,
        run: impl FnOnce(&Shared) + Send + 'static,
    ) -> Result<(), EngineError> {
        let shared = Arc::clone(&self.shared);
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // A panic must not end a worker silently: record it (see `death`). The fds stay
                // open until the engine drops, so the TUN queue fills and drops (fail closed).
                let ran = std::panic::catch_unwind(AssertUnwindSafe(|| run(&shared)));
                if let Err(payload) = ran {
                    shared.stats.bump(Stat::WorkerDeaths);
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_owned());
                    let death = format!("esp engine thread {name} died: {message}");
                    error!(
                        thread = name, %message,
                        "esp engine thread died: protected flows fail closed (nothing is encrypted or delivered)"
                    );
                    lock(&DEATH).get_or_insert(death);
                }
            })
            .map_err(|source| EngineError::Thread { name, source })?;
        self.threads.push(handle);
        Ok(())
    }

    /// The TUN device's ifindex, for the TC program's redirect.
    pub fn tun_ifindex(&self) -> u32 {
        self.tun_ifindex
    }

    /// The AF_XDP sockets receiving ESP, for the XDP program's `XIPSEC_XSKS` and
    /// `XIPSEC_XSK_SLOTS` maps. Each stays open until the engine drops.
    pub fn xsk_bindings(&self) -> &[XskBinding] {
        &self.xsk
    }

    /// Socket cookies (`SO_COOKIE`) of the raw socket(s) the engine sends its ESP from, for TC
    /// egress to recognise the engine's own packets (`bpf_get_socket_cookie`). One today.
    pub fn send_socket_cookies(&self) -> Vec<u64> {
        let mut cookies = vec![sys::socket_cookie(self.shared.socket.as_raw_fd())];
        // ESP in UDP leaves the raw path by its own socket (`transmit`).
        cookies.extend(lock(&self.shared.tx).udp_socket_cookie());
        // So does a run of it in one GSO frame (`udp_gso`).
        cookies.extend(lock(&self.shared.tx).gso_socket_cookie());
        cookies
    }

    /// The TUN device's name.
    pub fn tun_name(&self) -> &str {
        &self.tun_name
    }

    /// Makes the engine's SAs and policies equal `spd`: SAs whose configuration (SPI, mode,
    /// endpoints, algorithms, keys) is unchanged keep their sequence numbers, replay windows and
    /// counters; new SAs start after their persisted reservation, which is moved ahead on disk
    /// before this returns; removed SAs are dropped (their replay ceilings settled). The flow
    /// caches are invalidated. Call it after every accepted change (and once at start-up).
    ///
    /// # Errors
    /// [`EngineError::Classifier`] if the SPD cannot be compiled, [`EngineError::SaConfig`] if
    /// an SA cannot be keyed; the engine is then unchanged.
    pub fn update(&self, spd: &Spd) -> Result<(), EngineError> {
        let classifier = self::core::classify::build(spd)
            .map_err(|source| EngineError::Classifier { source })?;
        let _one_at_a_time = lock(&self.shared.updating);
        let rebuilt = {
            let mut out = lock(&self.shared.out);
            let mut inb = lock(&self.shared.inb);
            let seq = lock(&self.shared.store);
            let replay = lock(&self.shared.replay);
            let stores = Stores {
                seq: &seq,
                replay: &replay,
            };
            self::core::rebuild(spd, classifier, &mut out, &mut inb, &stores).map_err(|e| {
                EngineError::SaConfig {
                    name: e.name,
                    source: e.source,
                }
            })?
        };
        *lock(&self.shared.registry) = rebuilt.registry;
        let endpoints = lock(&self.shared.inb).udp_endpoints();
        self.reconcile_gro(&endpoints);
        // Written without the tables: the packet path runs meanwhile.
        lock(&self.shared.store).prune_if_over(&rebuilt.live_sas);
        write_reservations(&self.shared, &rebuilt.reservations, Instant::now());
        let mut replay = lock(&self.shared.replay);
        if let Err(error) = replay.settle(rebuilt.settle) {
            warn!(%error, "cannot settle the replay ceilings of removed sas");
        }
        replay.prune_if_over(&rebuilt.live_ceilings);
        Ok(())
    }

    /// Makes the UDP GRO sockets those of `endpoints` (see `udp_gso`): opens the missing ones
    /// (a failure is logged; that endpoint's super-packets then find no socket and are
    /// dropped by the kernel), closes the others, and wakes the inbound worker to reload them.
    fn reconcile_gro(&self, endpoints: &[(std::net::Ipv6Addr, u16)]) {
        let mut set = lock(&self.shared.gro);
        if !set.enabled {
            return;
        }
        let before = set.sockets.len();
        set.sockets.retain(|key, _| endpoints.contains(key));
        let mut changed = before != set.sockets.len();
        for &(address, port) in endpoints {
            if set.sockets.contains_key(&(address, port)) {
                continue;
            }
            let local = std::net::SocketAddrV6::new(address, port, 0, 0);
            match udp_gso::GroSocket::open(local) {
                Ok(socket) => {
                    info!(%local, "esp in udp: receiving gro super-packets");
                    set.sockets.insert((address, port), Arc::new(socket));
                    changed = true;
                }
                Err(error) => warn!(
                    %local, %error,
                    "no udp gro socket: esp-in-udp super-packets to this address are dropped"
                ),
            }
        }
        // Under the set's lock, as the worker's reload: a wake-up it has not drained always
        // comes with a generation it has not seen, so it never spins on a stale one.
        if changed {
            self.shared.gro_generation.fetch_add(1, Ordering::Release);
            if let Err(error) = sys::signal(&self.shared.gro_wake) {
                warn!(%error, "cannot wake the inbound worker");
            }
        }
    }

    /// Empties the replay window of the inbound SA with `spi` and forgets its persisted
    /// ceiling: for a peer that keeps no state and restarted at sequence number 1. The cost:
    /// every packet of this SA captured before becomes acceptable again. Returns whether the
    /// engine holds such an SA.
    ///
    /// # Errors
    /// [`EngineError::ReplayFile`] when the ceiling file cannot be written; nothing changed.
    pub fn reset_replay(&self, spi: u32) -> Result<bool, EngineError> {
        let Some(key_id) = lock(&self.shared.inb).replay_key(spi) else {
            return Ok(false);
        };
        // The file first (without the table): on a write error nothing changed.
        {
            let mut store = lock(&self.shared.replay);
            store
                .reset(spi, &key_id)
                .map_err(|source| EngineError::ReplayFile {
                    path: store.path().to_path_buf(),
                    op: "write",
                    source,
                })?;
        }
        Ok(lock(&self.shared.inb).reset_replay(spi, &key_id))
    }

    /// Per-SA counters keyed by `Sa::id`: packets and bytes (plaintext IPv6 packet lengths,
    /// both directions), ICV failures, replay drops and other errors.
    pub fn sa_counters(&self) -> BTreeMap<u32, SaCount> {
        lock(&self.shared.registry)
            .iter()
            .map(|(id, cells)| (*id, cells.snapshot()))
            .collect()
    }

    /// Packets and bytes of decrypted traffic delivered per inbound SP, by `Sp::id`.
    pub fn sp_counters(&self) -> BTreeMap<u32, (u64, u64)> {
        lock(&self.shared.inb)
            .sp_hits()
            .map(|(id, packets, bytes)| (id, (packets, bytes)))
            .collect()
    }

    /// Engine-level counters, by stable name (see [`Stat`]), always all of them, in a fixed
    /// order.
    pub fn stats(&self) -> Vec<(String, u64)> {
        let mut stats = self.shared.stats.snapshot();
        // The kernel counts what AF_XDP dropped; read it from the sockets.
        // `snapshot` lists the counters in `Stat` order.
        stats[Stat::XskDrops as usize].1 = self.xsk.iter().map(|b| sys::xsk_drops(b.fd)).sum();
        stats[Stat::TunQueueDrops as usize].1 =
            sys::link_drops(&lock(&self.shared.rtnetlink), self.tun_ifindex);
        stats
    }
}

impl Drop for EspEngine {
    fn drop(&mut self) {
        if let Err(e) = sys::signal(&self.shared.shutdown) {
            warn!(error = %e, "cannot signal the esp workers to stop");
        }
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                warn!("an esp worker panicked");
            }
        }
        // Nothing accepts ESP any more: the ceilings can come down to what was accepted, so the
        // next start refuses none of the peers' new packets (a crash skips this: still safe).
        let settled = lock(&self.shared.inb).settled();
        if let Err(error) = lock(&self.shared.replay).settle(settled) {
            warn!(%error, "cannot settle the replay ceilings; the next start refuses a little more");
        }
        // The fds close when the last `Arc<Shared>` (this one) drops, removing the TUN device.
    }
}

/// AF_XDP sockets on every RX queue of `interfaces`; an interface whose sockets cannot be
/// created is logged and left to the raw socket.
fn open_xsk(interfaces: &[String]) -> Vec<(XskReceiver, XskSender)> {
    let mut receivers = Vec::new();
    for name in interfaces {
        let Some(ifindex) = sys::ifindex(name) else {
            // Attaching fails on it too, with the error the daemon reports.
            continue;
        };
        match xsk::open_interface(ifindex, name) {
            Ok(opened) => {
                info!(interface = %name, queues = opened.len(), "esp receive by AF_XDP");
                receivers.extend(opened);
            }
            Err(error) => warn!(
                interface = %name, %error,
                "no AF_XDP socket: inbound esp takes the kernel's raw-socket path"
            ),
        }
    }
    receivers
}

/// Logs a worker's I/O failure once per thread, and keeps it from spinning on it.
/// Waits until `poller` has data (`true`) or the engine shuts down (`false`); a failed poll is
/// logged once (`what`) and waited on again.
fn wait(poller: &mut sys::Poller, logged: &AtomicBool, what: &'static str) -> bool {
    loop {
        match poller.wait() {
            Ok(Ready::Shutdown) => return false,
            Ok(Ready::Data) => return true,
            // `wait` blocks: it never returns `Idle`.
            Ok(Ready::Idle) => {}
            Err(e) => worker_error(logged, what, &e),
        }
    }
}

fn worker_error(logged: &AtomicBool, what: &'static str, error: &dyn std::fmt::Display) {
    if !logged.swap(true, Ordering::Relaxed) {
        warn!(%error, "esp {what} failed (logged once)");
    }
    std::thread::sleep(Duration::from_millis(10));
}

/// The outbound worker: TUN -> classify -> encapsulate -> send, all on one thread.
fn outbound(shared: &Shared) {
    inject_fault("outbound");
    // One thread reads, encrypts and sends, in the order the sequence numbers were given; while
    // it sends, the TUN queue holds what arrives (and drops when full: fail closed). Sessions 5
    // to 8 sent from a second thread fed through a bounded channel, when each ESP packet cost
    // an skb and, on a veth, the peer's receive path; since runs of ESP in UDP leave as one GSO
    // frame, the hand-offs and wake-ups cost more than the overlap saved (three alternating
    // pairs of `bench e2e`: -4 to -11% CPU per Gbit in tunnel mode over ESP in UDP, -2 to -14%
    // in transport mode, plain-ESP tunnel unchanged).
    encrypt_stage(shared);
}

fn send(shared: &Shared, packets: &mut [Outgoing], logged: &AtomicBool) {
    let sent = lock(&shared.tx).send(packets, Instant::now());
    shared.stats.add(Stat::XskSent, sent.xsk as u64);
    shared.stats.add(Stat::UdpGsoFrames, sent.gso_frames as u64);
    shared
        .stats
        .add(Stat::UdpGsoSegments, sent.gso_segments as u64);
    shared.stats.add(Stat::SendErrors, sent.failed as u64);
    if let Some(e) = sent.error
        && !logged.swap(true, Ordering::Relaxed)
    {
        warn!(error = %e, "sending esp failed (logged once)");
    }
}

/// The outbound reader: TUN -> `Outbound::push_fragment` / `Outbound::protect`, a batch at a
/// time, until shutdown; after each batch, the reservations the core asked for are written
/// without the table (`write_reservations`).
fn encrypt_stage(shared: &Shared) {
    let tun = shared.tun.as_raw_fd();
    let mut frame = vec![0u8; FAKE_ETHERNET.len() + sys::MAX_PACKET];
    frame[..FAKE_ETHERNET.len()].copy_from_slice(&FAKE_ETHERNET);
    let mut vnet = [0u8; gro::VNET_HDR_LEN];
    let mut seg_frame = Vec::with_capacity(2048);
    seg_frame.extend_from_slice(&FAKE_ETHERNET);
    let poll_logged = AtomicBool::new(false);
    let mut reservations = Vec::new();
    let mut poller = sys::Poller::new(shared.shutdown.as_raw_fd(), &[tun]);
    // Allocated once; every batch after reuses it.
    let mut batch: Vec<Outgoing> = (0..BATCH).map(|_| Outgoing::new()).collect();
    let send_logged = AtomicBool::new(false);
    loop {
        if !wait(&mut poller, &poll_logged, "outbound poll") {
            return;
        }
        let now = Instant::now();
        let mut n = 0;
        {
            let mut table = lock(&shared.out);
            while n < BATCH {
                match sys::read_packet(tun, &mut vnet, &mut frame[FAKE_ETHERNET.len()..]) {
                    Ok(Some(len)) => {
                        let packet = &mut frame[FAKE_ETHERNET.len()..FAKE_ETHERNET.len() + len];
                        if gro::gso_type(&vnet) != 0 {
                            // A TSO packet: encrypt each of its segments, in a batch with room
                            // for all of them.
                            let count = gro::segment_count(&vnet, packet).unwrap_or(BATCH + 1);
                            if count > BATCH {
                                shared.stats.bump(Stat::Malformed);
                                continue;
                            }
                            if n + count > BATCH {
                                n = seal(&table, &mut batch, n);
                                send(shared, &mut batch[..n], &send_logged);
                                n = 0;
                            }
                            let prefix = FAKE_ETHERNET.len();
                            let split =
                                gro::segment(&vnet, packet, &mut seg_frame, prefix, |seg| {
                                    if n < BATCH {
                                        let slot = &mut batch[n];
                                        let action = table.protect_deferred(
                                            seg,
                                            now,
                                            &mut slot.buf,
                                            &mut slot.pending,
                                        );
                                        n += usize::from(to_send(action, slot));
                                    }
                                });
                            if !split {
                                shared.stats.bump(Stat::Malformed);
                            }
                            continue;
                        }
                        // A fragment (the kernel redirects every fragment of a protected
                        // datagram here) waits for the rest; the whole datagram is then
                        // protected once, and a fragment never leaves on its own.
                        let end = FAKE_ETHERNET.len() + len;
                        let slot = &mut batch[n];
                        if let Some(action) = table.push_fragment(&frame[..end], now, &mut slot.buf)
                        {
                            n += usize::from(to_send(action, slot));
                            continue;
                        }
                        let packet = &mut frame[FAKE_ETHERNET.len()..end];
                        // Checksums of plain packets may be left to us (checksum offload);
                        // finish one rather than encrypt it broken.
                        if !gro::complete_checksum(&vnet, packet) {
                            shared.stats.bump(Stat::Malformed);
                            continue;
                        }
                        // Our SYNs announce an MSS whose segments fit after ESP (see `mss`).
                        mss::clamp(packet, table.mss());
                        let action = table.protect_deferred(
                            &frame[..end],
                            now,
                            &mut slot.buf,
                            &mut slot.pending,
                        );
                        n += usize::from(to_send(action, slot));
                    }
                    Ok(None) => break,
                    Err(_) => {
                        shared.stats.bump(Stat::TunReadErrors);
                        break;
                    }
                }
            }
            // The batch's cryptography, all together, before anything leaves.
            n = seal(&table, &mut batch, n);
            table.take_reservations(&mut reservations);
        }
        write_reservations(shared, &reservations, now);
        reservations.clear();
        if n > 0 {
            send(shared, &mut batch[..n], &send_logged);
        }
    }
}

/// Seals the first `n` packets of `batch` together (`Outbound::seal`: multi-buffer crypto) and
/// returns how many are left to send: a packet that could not be sealed (a bug, counted) is
/// taken out, the others keep their order.
fn seal(table: &Outbound, batch: &mut [Outgoing], n: usize) -> usize {
    let mut failed = [false; BATCH];
    table.seal(
        batch[..n]
            .iter_mut()
            .map(|slot| (&mut slot.pending, &mut slot.buf[..])),
        |i| failed[i] = true,
    );
    let mut kept = 0;
    for (i, failed) in failed.iter().enumerate().take(n) {
        if !failed {
            batch.swap(kept, i);
            kept += 1;
        }
    }
    kept
}

/// Fills `slot` from a [`OutAction::Send`]; returns whether there is a packet to send.
fn to_send(action: OutAction, slot: &mut Outgoing) -> bool {
    let OutAction::Send(esp) = action else {
        return false;
    };
    slot.esp_offset = esp.esp_offset;
    slot.source = esp.source;
    slot.destination = esp.destination;
    slot.hop_limit = esp.hop_limit;
    slot.traffic_class = esp.traffic_class;
    true
}

/// Writes the sequence reservations the outbound core asked for, holding only the sequence
/// store (never a table), then tells the core. A failed write is logged; the SA's packets are
/// dropped (`esp_seq_persist_errors`) once its current reservation is used up, until a retry
/// (backed off) succeeds.
fn write_reservations(shared: &Shared, reservations: &[SeqReservation], now: Instant) {
    if reservations.is_empty() {
        return;
    }
    let written = lock(&shared.store).reserve_all(
        reservations
            .iter()
            .map(|r| (r.sa_name.as_str(), r.spi, r.up_to)),
    );
    let mut out = lock(&shared.out);
    let mut retry = None;
    for reservation in reservations {
        retry = retry.or(out.reservation_written(reservation, written.is_ok(), now));
    }
    drop(out);
    if let Err(error) = written {
        warn!(
            %error, retry_in = ?retry,
            "cannot persist the esp sequence reservation; its sas drop packets once their reservation is used up, until a retry succeeds"
        );
    }
}

/// The inbound worker: ESP from the raw socket (`recvmmsg`) and the AF_XDP sockets ->
/// `Inbound::receive` / `Inbound::receive_frame` -> TUN write.
fn inbound(shared: &Shared, mut receivers: Vec<XskReceiver>, rx_coalesce: Duration) {
    inject_fault("inbound");
    let socket = shared.socket.as_raw_fd();
    let mut gro = Gro::new(shared);
    let fixed: Vec<_> = [socket, shared.gro_wake.as_raw_fd()]
        .into_iter()
        .chain(receivers.iter().map(|r| r.binding().fd))
        .collect();
    let fds = |gro: &Gro| -> Vec<_> {
        fixed
            .iter()
            .copied()
            .chain(gro.sockets.iter().map(|s| s.fd.as_raw_fd()))
            .collect()
    };
    let mut poller = sys::Poller::new(shared.shutdown.as_raw_fd(), &fds(&gro));
    let mut batch: Vec<Incoming> = (0..BATCH).map(|_| Incoming::new()).collect();
    let batch_len = u32::try_from(BATCH).unwrap_or(u32::MAX);
    let mut out = Delivery::new(shared);
    // The ICV verdicts of the burst in hand (`Inbound::prepare_burst`).
    let mut prepared = vec![Prepared::default(); BATCH.max(XSK_BURST)];
    let (poll_logged, recv_logged) = (AtomicBool::new(false), AtomicBool::new(false));
    loop {
        if out.holds() {
            // A super-packet waited through the pause below: it grows if more came meanwhile,
            // and is written before blocking if nothing did.
            match poller.peek() {
                Ok(Ready::Shutdown) => return,
                Ok(Ready::Data) => {}
                Ok(Ready::Idle) | Err(_) => {
                    out.flush();
                    continue;
                }
            }
        } else if !wait(&mut poller, &poll_logged, "inbound poll") {
            return;
        }
        if gro.reload(shared) {
            poller = sys::Poller::new(shared.shutdown.as_raw_fd(), &fds(&gro));
        }
        // Drain every source; `round` counts what that brought.
        let mut round: u32 = 0;
        loop {
            let now = Instant::now();
            let (got, mut busy) = gro.receive(shared, &mut prepared, now, &mut out);
            round += got;
            match sys::recv_batch(socket, &mut batch) {
                Ok(got) => {
                    let mut table = Some(lock(&shared.inb));
                    let mut packets: SmallVec<[InPacket<'_>; BATCH]> = SmallVec::new();
                    for slot in &batch[..got] {
                        let Some(destination) = slot.destination else {
                            shared.stats.bump(Stat::Malformed);
                            continue;
                        };
                        // The raw socket stripped the IPv6 header and reported its fields.
                        packets.push(InPacket {
                            outer: OuterHeader {
                                source: slot.source,
                                destination,
                                traffic_class: slot.traffic_class,
                                flow_label: 0,
                                hop_limit: slot.hop_limit,
                            },
                            esp: slot.esp(),
                            encap: None,
                        });
                    }
                    open_burst(shared, &mut table, &packets, &mut prepared, now, &mut out);
                    drop(table);
                    busy |= got == BATCH;
                    round += u32::try_from(got).unwrap_or(u32::MAX);
                }
                Err(e) => {
                    shared.stats.bump(Stat::RecvErrors);
                    worker_error(&recv_logged, "recvmmsg", &e);
                }
            }
            for receiver in &mut receivers {
                let mut table = Some(lock(&shared.inb));
                let got = receiver.receive(batch_len, |frames| {
                    shared.stats.add(Stat::XskReceived, frames.len() as u64);
                    let mut packets: SmallVec<[InPacket<'_>; XSK_BURST]> = SmallVec::new();
                    for ethernet in frames {
                        match Inbound::parse_frame(ethernet) {
                            Some(packet) => packets.push(packet),
                            None => shared.stats.bump(Stat::Malformed),
                        }
                    }
                    open_burst(shared, &mut table, &packets, &mut prepared, now, &mut out);
                });
                drop(table);
                busy |= got == batch_len;
                round += got;
            }
            if !busy {
                break;
            }
        }
        // A stream is flowing: let the next round gather more (see `EngineConfig::rx_coalesce`),
        // the pending super-packet with it. Otherwise deliver now.
        if round >= RX_COALESCE_MIN_FRAMES && !rx_coalesce.is_zero() {
            std::thread::sleep(rx_coalesce);
        } else {
            out.flush();
        }
    }
}

/// Frames one AF_XDP socket hands over at most per round (`xsk`'s receive limit).
const XSK_BURST: usize = 256;

/// Datagrams (super-packets) taken from one GRO socket per round.
const GRO_ROUND: usize = 8;

/// The inbound worker's view of the UDP GRO sockets (`udp_gso`) and its receive buffer.
struct Gro {
    sockets: Vec<Arc<udp_gso::GroSocket>>,
    generation: u64,
    buf: Vec<u8>,
}

impl Gro {
    fn new(shared: &Shared) -> Self {
        let mut gro = Self {
            sockets: Vec::new(),
            generation: u64::MAX,
            buf: vec![0; 1 << 16],
        };
        gro.reload(shared);
        gro
    }

    /// Takes the current sockets if `update` changed them; returns whether it did.
    fn reload(&mut self, shared: &Shared) -> bool {
        let generation = shared.gro_generation.load(Ordering::Acquire);
        if generation == self.generation {
            return false;
        }
        let set = lock(&shared.gro);
        // Clear the wake-up (see `reconcile_gro`): its count says nothing more than the
        // generation.
        let mut drained = [0u8; 8];
        let _ = rustix::io::read(&shared.gro_wake, &mut drained);
        self.generation = shared.gro_generation.load(Ordering::Acquire);
        self.sockets = set.sockets.values().cloned().collect();
        true
    }

    /// Receives what the GRO sockets hold (up to [`GRO_ROUND`] datagrams each), cuts each into
    /// its ESP packets and runs them through the inbound core like AF_XDP frames. Returns the
    /// packets handled and whether a socket may hold more.
    fn receive(
        &mut self,
        shared: &Shared,
        prepared: &mut [Prepared],
        now: Instant,
        out: &mut Delivery<'_>,
    ) -> (u32, bool) {
        let (mut handled, mut busy) = (0u32, false);
        for socket in &self.sockets {
            let mut taken = 0;
            while taken < GRO_ROUND {
                let received = match socket.receive(&mut self.buf) {
                    Ok(Some(received)) => received,
                    Ok(None) => break,
                    Err(_) => {
                        shared.stats.bump(Stat::RecvErrors);
                        break;
                    }
                };
                taken += 1;
                shared.stats.bump(Stat::UdpGroReceived);
                let Some(destination) = received.destination.filter(|_| !received.truncated) else {
                    shared.stats.bump(Stat::Malformed);
                    continue;
                };
                let outer = OuterHeader {
                    source: received.source,
                    destination,
                    traffic_class: received.traffic_class,
                    flow_label: 0,
                    hop_limit: received.hop_limit,
                };
                let encap = crate::model::UdpEncap {
                    source_port: received.source_port,
                    destination_port: socket.local.port(),
                };
                let payload = &self.buf[..received.len.min(self.buf.len())];
                let mut segments = udp_gso::segments(payload, received.segment).peekable();
                let mut table = Some(lock(&shared.inb));
                while segments.peek().is_some() {
                    let packets: SmallVec<[InPacket<'_>; udp_gso::MAX_SEGMENTS]> = segments
                        .by_ref()
                        .take(udp_gso::MAX_SEGMENTS)
                        .map(|esp| InPacket {
                            outer,
                            esp,
                            encap: Some(encap),
                        })
                        .collect();
                    let n = packets.len();
                    shared.stats.add(Stat::UdpGroSegments, n as u64);
                    handled += u32::try_from(n).unwrap_or(u32::MAX);
                    open_burst(shared, &mut table, &packets, prepared, now, out);
                }
            }
            busy |= taken == GRO_ROUND;
        }
        (handled, busy)
    }
}

/// Runs a burst of ESP packets through the inbound core: their ICVs verified together
/// (`Inbound::prepare_burst`), then each packet in order through `open` (which may release the
/// table to write a replay ceiling) and, when authentic and allowed, into `out`.
fn open_burst<'a>(
    shared: &'a Shared,
    table: &mut Option<std::sync::MutexGuard<'a, Inbound>>,
    packets: &[InPacket<'_>],
    prepared: &mut [Prepared],
    now: Instant,
    out: &mut Delivery<'_>,
) {
    let prepared = &mut prepared[..packets.len()];
    table
        .get_or_insert_with(|| lock(&shared.inb))
        .prepare_burst(packets, prepared);
    for (packet, prepared) in packets.iter().zip(prepared.iter()) {
        let frame = &mut out.frame;
        if open(shared, table, now, |t| {
            t.receive_prepared(packet, prepared, now, frame)
        }) {
            out.deliver();
        }
    }
}

/// Runs one ESP packet through the inbound core (`step`, under `table`, taken if released).
/// When the core asks for a higher replay ceiling first, releases the table, writes the
/// ceiling, takes the table again, confirms and runs the packet once more: the packet waits for
/// the write, and is never accepted before it. Returns whether `step` left a packet to deliver.
fn open<'a>(
    shared: &'a Shared,
    table: &mut Option<std::sync::MutexGuard<'a, Inbound>>,
    now: Instant,
    mut step: impl FnMut(&mut Inbound) -> InAction,
) -> bool {
    // A second raise can only come from an update that replaced the SA meanwhile.
    for _ in 0..3 {
        let action = step(table.get_or_insert_with(|| lock(&shared.inb)));
        let raise = match action {
            InAction::Deliver => return true,
            InAction::Drop(_) => return false,
            InAction::Raise(raise) => raise,
        };
        *table = None;
        let written = lock(&shared.replay).raise(raise.spi, &raise.key_id, raise.up_to);
        if let Err(error) = &written {
            // Logged once per attempt; the core backs off between attempts (1 s to 60 s).
            warn!(
                spi = format_args!("{:#x}", raise.spi), %error,
                "cannot persist the replay ceiling; refusing new esp on this sa (retrying with back-off)"
            );
        }
        table
            .get_or_insert_with(|| lock(&shared.inb))
            .ceiling_written(&raise, written.is_ok(), now);
    }
    shared.stats.bump(Stat::ReplayPersistErrors);
    false
}

/// The replay-ceiling housekeeping thread: every `TIGHTEN_EVERY`, lowers the ceilings that are
/// further ahead than their SA's recent rate needs, so a crash refuses at most a few seconds of
/// a peer's traffic (see `replay_store`). The inbound table is held only to compute the new
/// values and lower the store's entries in memory (no I/O); the file is written after
/// releasing it, so the packet path keeps running.
fn tighten_ceilings(shared: &Shared) {
    let mut failing = false;
    while !shutdown_within(shared.shutdown.as_raw_fd(), self::core::TIGHTEN_EVERY) {
        let lowered = {
            let mut inb = lock(&shared.inb);
            let lowered = inb.tighten_ceilings(Instant::now());
            if !lowered.is_empty() {
                // Under the inbound table: the gate came down first, the store follows before
                // the packet path can raise it again.
                let mut store = lock(&shared.replay);
                for (spi, key_id, value) in &lowered {
                    store.lower(*spi, key_id, *value);
                }
            }
            lowered.len()
        };
        if lowered == 0 && !failing {
            continue;
        }
        match lock(&shared.replay).flush() {
            Ok(_) => failing = false,
            Err(error) => {
                // Still safe: the file keeps the higher ceilings. Logged once per failing spell.
                if !failing {
                    warn!(%error, "cannot write the lowered replay ceilings; retrying");
                }
                failing = true;
            }
        }
    }
}

/// What `rebuild` reads of the stores (memory only).
struct Stores<'a> {
    seq: &'a SeqStore,
    replay: &'a ReplayStore,
}

impl Persisted for Stores<'_> {
    fn reservation(&self, name: &str, spi: u32) -> Option<u32> {
        self.seq.reservation(name, spi)
    }

    fn ceiling(&self, spi: u32, key_id: &KeyId) -> Option<u32> {
        self.replay.ceiling(spi, key_id)
    }
}

/// Waits up to `timeout` for the shutdown eventfd; true once it fired (a signal only shortens
/// the wait).
fn shutdown_within(fd: std::os::fd::RawFd, timeout: Duration) -> bool {
    let mut watch = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid `pollfd`, and the count 1 passed with it.
    let ready = unsafe { libc::poll(&raw mut watch, 1, millis) };
    ready > 0 && watch.revents != 0
}

/// Decrypted packets on their way to the TUN: consecutive TCP segments of one flow leave as one
/// GSO write (`gro`).
struct Delivery<'a> {
    shared: &'a Shared,
    /// The packet to deliver ([`FAKE_ETHERNET`] + IPv6), as `InTable` leaves it.
    frame: Vec<u8>,
    coalescer: gro::Coalescer,
}

impl<'a> Delivery<'a> {
    fn new(shared: &'a Shared) -> Self {
        Self {
            shared,
            frame: Vec::with_capacity(FAKE_ETHERNET.len() + sys::MAX_PACKET),
            coalescer: gro::Coalescer::default(),
        }
    }

    fn write(shared: &Shared, hdr: &[u8; gro::VNET_HDR_LEN], packet: &[u8]) {
        if sys::write_packet(shared.tun.as_raw_fd(), hdr, packet).is_err() {
            shared.stats.bump(Stat::TunWriteErrors);
        }
    }

    /// Queues `self.frame`'s packet: merged into the pending GSO packet, or written.
    fn deliver(&mut self) {
        let packet = &self.frame[FAKE_ETHERNET.len()..];
        if self.coalescer.append(packet) {
            return;
        }
        if let Some((hdr, merged)) = self.coalescer.take() {
            Self::write(self.shared, &hdr, merged);
        }
        if !self.coalescer.start(packet) {
            Self::write(self.shared, &gro::PLAIN, packet);
        }
    }

    /// Whether a super-packet is pending.
    fn holds(&self) -> bool {
        !self.coalescer.is_empty()
    }

    /// Writes what is pending (before the worker blocks).
    fn flush(&mut self) {
        if let Some((hdr, merged)) = self.coalescer.take() {
            Self::write(self.shared, &hdr, merged);
        }
    }
}
