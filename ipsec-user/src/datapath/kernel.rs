//! Loading, attaching and pinning the eBPF programs; counters; `BPF_PROG_TEST_RUN` access.

use std::{
    collections::BTreeMap,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader, TestRun, TestRunOptions, TestRunResult,
    maps::{Array, HashMap, MapData, PerCpuArray, XskMap, lpm_trie::LpmTrie},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, SchedClassifierLink, SchedClassifierLinkId},
        xdp::{XdpLink, XdpLinkId},
    },
};
use ipsec_common::abi::IkePeerKey;
use ipsec_common::abi::{
    self, CacheSlot, CacheValue, Counter, FieldSet, FlowKey, FragKey, FragValue, LenSet, PrefixKey,
    RuleKey, RuleValue, SaInfo, SpStats,
};

use caps::{CapSet, Capability};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use nix::time::{ClockId, clock_gettime};

use super::XdpMode as XdpModeChoice;
use super::sync::SyncState;
use crate::model::Spd;

/// An AF_XDP socket bound to one (interface, queue): what `XIPSEC_XSKS` and
/// `XIPSEC_XSK_SLOTS` route inbound ESP to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskSocket {
    pub ifindex: u32,
    pub queue: u32,
    pub fd: std::os::fd::RawFd,
}

/// The eBPF object built by `build.rs` from `ipsec-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ipsec"));
/// The benchmark object: the same programs plus the baselines of `bench classify`
/// (`abi::bench`). Only [`LoadOptions::benchmark`] loads it; it is never pinned.
static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ipsec-bench"));

/// Errors of the datapath, each naming what was being done. A variant that carries a cause
/// chains it as its `source` and does not repeat it in its message: a chain printer (`{:#}` of
/// anyhow, [`crate::model::Chain`]) shows it once.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("the eBPF object was not built (AYA_BUILD_SKIP was set); rebuild without it")]
    NotBuilt,
    #[error(
        "xipsec's datapath needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN to mount bpffs); run it as root, or with --no-datapath to manage state only"
    )]
    NotPrivileged,
    #[error("loading eBPF programs needs root (CAP_BPF, CAP_NET_ADMIN)")]
    Permission {
        #[source]
        source: aya::EbpfError,
    },
    #[error("failed to load the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("failed to load program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    #[error(
        "{interface} is not an Ethernet interface (link type {link_type}); xipsec parses Ethernet frames only and would pass every packet of it unfiltered: attach it to the Ethernet device the traffic crosses"
    )]
    NotEthernet {
        interface: String,
        link_type: String,
    },
    #[error("failed to attach {program} to {interface}")]
    Attach {
        program: &'static str,
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The eBPF object lacks a map this build expects (object and daemon out of step).
    #[error("map {name} is not in the eBPF object")]
    MissingMap { name: &'static str },
    /// The eBPF object lacks a program this build expects.
    #[error("program {name} is not in the eBPF object")]
    MissingProgram { name: &'static str },
    /// A map exists but is not of the type (or key/value size) this build expects.
    #[error("map {name} is not of the expected type")]
    MapType {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// A program attached through netlink (not a bpf_link) has no link to pin.
    #[error("cannot pin the link at {}: not a bpf_link (attached through netlink)", path.display())]
    LinkNotPinnable {
        path: PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },
    /// Per-CPU values need the number of possible CPUs (`/sys/devices/system/cpu/possible`).
    #[error("cannot count the possible CPUs for the per-CPU counters")]
    PerCpu {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot access map {name}")]
    MapIo {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot prepare the pin directory {}", path.display())]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to pin {name} at {}", path.display())]
    Pin {
        name: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error(transparent)]
    Compile(#[from] super::compile::CompileError),
    #[error("BPF_PROG_TEST_RUN of {program}")]
    TestRun {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("{program} wrote no explain result")]
    ExplainResult { program: &'static str },
    #[error("{count} ike peer pairs, at most {limit} are supported")]
    TooManyIkePeers { count: usize, limit: u32 },
}

/// Load-time choices.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Pin programs and maps here (created, bpffs mounted if missing); `None` pins nothing.
    pub pin_dir: Option<PathBuf>,
    /// Benchmarks only: load the benchmark object (`abi::bench`) instead of the production one.
    pub benchmark: bool,
}

/// Where a program got attached, for `xipsec status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attached {
    pub interface: String,
    pub xdp_mode: String,
}

/// Declares the maps of the production object once: each `Maps` field with its type and its
/// name in the object. `MAP_NAMES` (what `load` pins and `remove_pins` removes) and `Maps::take`
/// (what `load` takes out of the object) come from the same list, so they cannot drift apart.
macro_rules! maps {
    ($($field:ident: $ty:ty = $name:expr,)*) => {
        pub(super) struct Maps {
            $(pub(super) $field: $ty,)*
            /// Only in the benchmark object (never pinned).
            pub(super) bench_flows: Option<HashMap<MapData, FlowKey, CacheValue>>,
        }

        const MAP_NAMES: &[&str] = &[$($name),*];

        impl Maps {
            /// Take every map out of `ebpf`, the benchmark object's own one with `benchmark`.
            fn take(ebpf: &mut Ebpf, benchmark: bool) -> Result<Self, DatapathError> {
                Ok(Self {
                    $($field: take(ebpf, $name)?,)*
                    bench_flows: if benchmark {
                        Some(take(ebpf, abi::bench::FLOWS)?)
                    } else {
                        None
                    },
                })
            }
        }
    };
}

maps! {
    rules: HashMap<MapData, RuleKey, RuleValue> = abi::RULES,
    prefixes: LpmTrie<MapData, PrefixKey, LenSet> = abi::PREFIXES,
    len_pairs: Array<MapData, LenSet> = abi::LEN_PAIRS,
    field_sets: Array<MapData, FieldSet> = abi::FIELD_SETS,
    config: Array<MapData, u64> = abi::CONFIG,
    flow_cache: Array<MapData, CacheSlot> = abi::FLOW_CACHE,
    sp_stats: PerCpuArray<MapData, SpStats> = abi::SP_STATS,
    counters: PerCpuArray<MapData, u64> = abi::COUNTERS,
    sa_by_spi: HashMap<MapData, u32, SaInfo> = abi::SA_BY_SPI,
    xsks: XskMap<MapData> = abi::XSKS,
    xsk_slots: HashMap<MapData, u64, u32> = abi::XSK_SLOTS,
    sa_out_by_spi: HashMap<MapData, u32, SaInfo> = abi::SA_OUT_BY_SPI,
    engine_sockets: HashMap<MapData, u64, u32> = abi::ENGINE_SOCKETS,
    frag_state: HashMap<MapData, FragKey, FragValue> = abi::FRAG_STATE,
    udp_encap_ports: Array<MapData, u32> = abi::UDP_ENCAP_PORTS,
    ike_peers: HashMap<MapData, IkePeerKey, u32> = abi::IKE_PEERS,
}

/// The loaded programs and their maps. Dropping it detaches everything it attached and removes
/// its pins.
pub struct KernelDatapath {
    ebpf: Ebpf,
    pub(super) maps: Maps,
    pub(super) sync: SyncState,
    pin_dir: Option<PathBuf>,
    attached: Vec<Attached>,
    /// Link pins this process created (not taken over), removed by `abandon_attachments`.
    created_links: Vec<PathBuf>,
    /// The ports marked in `XIPSEC_UDP_ENCAP_PORTS` (see `ike_bypass`).
    pub(super) encap_ports: std::collections::BTreeSet<u16>,
}

/// The error for a failed access to map `name`, for `map_err`.
pub(super) fn map_io(name: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError + Copy {
    move |source| DatapathError::MapIo { name, source }
}

/// The generation (0 or 1) that `epoch` makes active: the kernel programs read the epoch's low
/// bit, and `sync` writes the other generation before it increments the epoch.
pub(super) fn generation(epoch: u64) -> u8 {
    u8::from(epoch & 1 == 1)
}

/// A new random seed for the flow cache: where flows sit and what their slots' checks are
/// (`abi::CONFIG_FLOW_CACHE_SEED`). Every verdict cached before is forgotten.
fn new_flow_cache_seed(maps: &mut Maps) -> Result<(), DatapathError> {
    let seed: u64 = rand::random();
    maps.config
        .set(abi::CONFIG_FLOW_CACHE_SEED, seed, 0)
        .map_err(map_io(abi::CONFIG))
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DatapathError::MissingMap { name })?;
    T::try_from(map).map_err(|source| DatapathError::MapType { name, source })
}

const PROGRAM_NAMES: [&str; 2] = [abi::PROG_XDP_INGRESS, abi::PROG_TC_EGRESS];

impl KernelDatapath {
    /// Load (and verify) every program and create the maps. Attaches nothing.
    pub fn load(options: &LoadOptions) -> Result<Self, DatapathError> {
        let object = if options.benchmark {
            BENCH_OBJECT
        } else {
            OBJECT
        };
        if object.is_empty() {
            return Err(DatapathError::NotBuilt);
        }
        if !nix::unistd::geteuid().is_root() && !has_bpf_capabilities() {
            return Err(DatapathError::NotPrivileged);
        }
        if let Some(dir) = &options.pin_dir {
            super::bpffs::ensure_pin_dir(dir).map_err(|source| DatapathError::PinDir {
                path: dir.clone(),
                source,
            })?;
            remove_pins(dir);
        }
        let mut ebpf = EbpfLoader::new().load(object).map_err(|source| {
            if is_permission(&source) {
                DatapathError::Permission { source }
            } else {
                DatapathError::Load(source)
            }
        })?;
        let bench: &[&'static str] = if options.benchmark {
            &[abi::bench::PROG_PARSE, abi::bench::PROG_HASH]
        } else {
            &[]
        };
        for &name in [abi::PROG_XDP_INGRESS].iter().chain(bench) {
            let prog: &mut Xdp = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        if !options.benchmark {
            super::explain::load(&mut ebpf)?;
        }
        let tc_prog: &mut SchedClassifier = program(&mut ebpf, abi::PROG_TC_EGRESS)?;
        tc_prog.load().map_err(|source| DatapathError::Program {
            name: abi::PROG_TC_EGRESS,
            source,
        })?;
        if let Some(dir) = &options.pin_dir {
            for &name in MAP_NAMES {
                let path = dir.join(name);
                let map = ebpf.map(name).ok_or(DatapathError::MissingMap { name })?;
                map.pin(&path).map_err(|source| DatapathError::Pin {
                    name: name.into(),
                    path,
                    source,
                })?;
            }
            for name in PROGRAM_NAMES {
                let path = dir.join(name);
                let prog = ebpf
                    .program_mut(name)
                    .ok_or(DatapathError::MissingProgram { name })?;
                prog.pin(&path).map_err(|source| DatapathError::Pin {
                    name: name.into(),
                    path,
                    source,
                })?;
            }
        }
        let mut maps = Maps::take(&mut ebpf, options.benchmark)?;
        new_flow_cache_seed(&mut maps)?;
        Ok(Self {
            ebpf,
            maps,
            sync: SyncState::default(),
            pin_dir: options.pin_dir.clone(),
            attached: Vec::new(),
            created_links: Vec::new(),
            encap_ports: std::collections::BTreeSet::new(),
        })
    }

    /// Attach XDP ingress and TC egress to `interface`. On error nothing new stays attached.
    ///
    /// With a pin directory, both links are pinned there, so the programs stay attached after
    /// the daemon exits or dies: protected flows keep failing closed (no ESP engine, drop) and
    /// discard policies keep dropping. A later daemon takes the pinned links over and swaps its
    /// programs in atomically (`bpf_link_update`): no packet ever meets an unattached interface.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: XdpModeChoice,
    ) -> Result<Attached, DatapathError> {
        check_interface(interface)?;
        let xdp_pin = self
            .pin_dir
            .as_ref()
            .map(|d| d.join(format!("link_xdp_{interface}")));
        let tc_pin = self
            .pin_dir
            .as_ref()
            .map(|d| d.join(format!("link_tc_{interface}")));
        let xdp_mode = match mode {
            XdpModeChoice::Native => XdpMode::Driver,
            XdpModeChoice::Generic => XdpMode::Skb,
            XdpModeChoice::Auto => {
                if is_physical(interface) {
                    XdpMode::Driver
                } else {
                    XdpMode::Skb
                }
            }
        };
        let attach_err = |program, e: AttachError| match e {
            AttachError::Program(source) => DatapathError::Attach {
                program,
                interface: interface.into(),
                source,
            },
            AttachError::Pin(e) => e,
        };

        let mut used_mode = xdp_mode;
        let xdp: &mut Xdp = program(&mut self.ebpf, abi::PROG_XDP_INGRESS)?;
        let taken_over =
            attach_pinned(
                xdp,
                xdp_pin.as_deref(),
                &mut self.created_links,
                |xdp| match xdp.attach(interface, xdp_mode) {
                    // A physical NIC whose driver lacks XDP: generic mode still filters.
                    Err(_) if mode == XdpModeChoice::Auto && xdp_mode == XdpMode::Driver => {
                        used_mode = XdpMode::Skb;
                        xdp.attach(interface, XdpMode::Skb)
                    }
                    result => result,
                },
            )
            .map_err(|e| attach_err(abi::PROG_XDP_INGRESS, e))?;

        let tc_prog: &mut SchedClassifier = program(&mut self.ebpf, abi::PROG_TC_EGRESS)?;
        attach_pinned(tc_prog, tc_pin.as_deref(), &mut self.created_links, |tc| {
            tc.attach(interface, TcAttachType::Egress).or_else(|_| {
                // Older kernels attach through the clsact qdisc; add it and retry once.
                let _ = tc::qdisc_add_clsact(interface);
                tc.attach(interface, TcAttachType::Egress)
            })
        })
        .map_err(|e| {
            // Nothing new stays attached: unpin the XDP link this call created.
            if let Some(pin) = xdp_pin.as_ref().filter(|_| !taken_over) {
                let _ = std::fs::remove_file(pin);
            }
            attach_err(abi::PROG_TC_EGRESS, e)
        })?;
        let attached = Attached {
            interface: interface.into(),
            xdp_mode: if used_mode == XdpMode::Driver {
                "native".into()
            } else {
                "generic".into()
            },
        };
        self.attached.push(attached.clone());
        Ok(attached)
    }

    /// Tell TC egress where the ESP engine reads `ipsec` packets (0: nowhere, drop them).
    pub fn set_esp_target(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        self.maps
            .config
            .set(abi::CONFIG_ESP_IFINDEX, u64::from(ifindex), 0)
            .map_err(map_io(abi::CONFIG))
    }

    /// The sockets (by socket cookie) whose ESP TC egress lets through unclassified, when it is
    /// under one of our outbound SPIs. Replaces the previous set.
    pub fn set_engine_sockets(&mut self, cookies: &[u64]) -> Result<(), DatapathError> {
        let io = map_io(abi::ENGINE_SOCKETS);
        let old: Vec<u64> = self
            .maps
            .engine_sockets
            .keys()
            .filter_map(Result::ok)
            .collect();
        for cookie in cookies.iter().take(abi::MAX_ENGINE_SOCKETS as usize) {
            self.maps.engine_sockets.insert(cookie, 1, 0).map_err(io)?;
        }
        for cookie in old.iter().filter(|c| !cookies.contains(c)) {
            self.maps.engine_sockets.remove(cookie).map_err(io)?;
        }
        Ok(())
    }

    /// Tell TC egress the engine is alive now (see `abi::CONFIG_ENGINE_ALIVE_NS`); the daemon's
    /// heartbeat does this every `abi::ENGINE_HEARTBEAT_NS`.
    pub fn set_engine_alive(&mut self) -> Result<(), DatapathError> {
        self.maps
            .config
            .set(abi::CONFIG_ENGINE_ALIVE_NS, monotonic_ns(), 0)
            .map_err(map_io(abi::CONFIG))
    }

    /// Route inbound ESP on each socket's (interface, queue) to that AF_XDP socket: slot `i` of
    /// `XIPSEC_XSKS` holds `sockets[i]` (at most `abi::MAX_XSK`; any further one is not used).
    pub fn set_esp_sockets(&mut self, sockets: &[XskSocket]) -> Result<(), DatapathError> {
        for (slot, socket) in (0..abi::MAX_XSK).zip(sockets) {
            self.maps
                .xsks
                .set(slot, socket.fd, 0)
                .map_err(map_io(abi::XSKS))?;
            self.maps
                .xsk_slots
                .insert(abi::xsk_slot_key(socket.ifindex, socket.queue), slot, 0)
                .map_err(map_io(abi::XSK_SLOTS))?;
        }
        Ok(())
    }

    /// Undo the attachments this process made (a start-up that failed half way): remove the
    /// link pins it created, so the links go when their last descriptor closes. Links taken
    /// over from a previous daemon stay.
    pub fn abandon_attachments(&mut self) {
        for pin in self.created_links.drain(..) {
            let _ = std::fs::remove_file(pin);
        }
        self.attached.clear();
    }

    pub fn attached(&self) -> &[Attached] {
        &self.attached
    }

    /// Make the maps equal `spd` (see `sync.rs` for the generation flip).
    pub fn sync(&mut self, spd: &Spd) -> Result<(), DatapathError> {
        super::ike_bypass::mark_encap_ports(self, spd)?;
        super::ike_bypass::sync_ike_peers(self, spd)?;
        super::sync::sync(self, spd, |_| {})?;
        super::ike_bypass::unmark_encap_ports(self, spd)
    }

    /// Tests only: [`Self::sync`], running `before_flip` once the new tables are written, just
    /// before the epoch flips to them (packets run there must still see the old SPD).
    #[doc(hidden)]
    pub fn sync_pausing_before_flip(
        &mut self,
        spd: &Spd,
        before_flip: impl FnOnce(&KernelDatapath),
    ) -> Result<(), DatapathError> {
        super::sync::sync(self, spd, before_flip)
    }

    /// Per-SP counters (summed over CPUs), keyed by `Sp::id`, for the given ids.
    pub fn sp_counters(
        &self,
        ids: impl IntoIterator<Item = u32>,
    ) -> Result<BTreeMap<u32, SpStats>, DatapathError> {
        let mut out = BTreeMap::new();
        for id in ids {
            let values = self
                .maps
                .sp_stats
                .get(&id, 0)
                .map_err(map_io(abi::SP_STATS))?;
            let mut sum = SpStats::default();
            for v in values.iter() {
                sum.packets += v.packets;
                sum.bytes += v.bytes;
            }
            out.insert(id, sum);
        }
        Ok(out)
    }

    /// Datapath counters (summed over CPUs), in `Counter::ALL` order.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, DatapathError> {
        Counter::ALL
            .iter()
            .map(|c| {
                let values = self
                    .maps
                    .counters
                    .get(&(*c as u32), 0)
                    .map_err(map_io(abi::COUNTERS))?;
                Ok((*c, values.iter().sum()))
            })
            .collect()
    }

    /// The loaded object (the explain programs run from it: `datapath::explain`).
    pub(super) fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Run the XDP ingress program once on `frame`; the XDP action.
    pub fn test_run_xdp(&self, frame: &[u8]) -> Result<u32, DatapathError> {
        Ok(self.run(abi::PROG_XDP_INGRESS, frame, 1)?.0)
    }

    /// Run the TC egress program once on `frame`; the TC action.
    pub fn test_run_tc(&self, frame: &[u8]) -> Result<i32, DatapathError> {
        let result = test_run::<SchedClassifier>(&self.ebpf, abi::PROG_TC_EGRESS, frame, 1)?;
        Ok(result.return_value.cast_signed())
    }

    /// Run an XDP program (`abi::PROG_*`) `repeat` times on `frame`: its action and the kernel's
    /// average duration per run.
    pub fn run(
        &self,
        name: &'static str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), DatapathError> {
        let result = test_run::<Xdp>(&self.ebpf, name, frame, repeat)?;
        Ok((result.return_value, result.duration))
    }

    /// Benchmarks only: make the hash baseline's lookup of `flow` hit.
    pub fn insert_bench_flow(&mut self, flow: &FlowKey) -> Result<(), DatapathError> {
        let Some(flows) = self.maps.bench_flows.as_mut() else {
            // Only the benchmark object has it.
            return Err(DatapathError::MissingMap {
                name: abi::bench::FLOWS,
            });
        };
        flows
            .insert(flow, CacheValue::default(), 0)
            .map_err(map_io(abi::bench::FLOWS))
    }

    /// Read back the tables of the active generation (tests compare them with the model).
    pub fn active_tables(&self) -> Result<super::compile::Tables, DatapathError> {
        active_tables(
            self.epoch()?,
            &self.maps.rules,
            &self.maps.prefixes,
            &self.maps.len_pairs,
            &self.maps.field_sets,
        )
    }

    /// Inbound SPIs present in the kernel.
    pub fn spis(&self) -> Result<Vec<(u32, SaInfo)>, DatapathError> {
        self.maps
            .sa_by_spi
            .iter()
            .map(|r| r.map_err(map_io(abi::SA_BY_SPI)))
            .collect()
    }

    pub(super) fn epoch(&self) -> Result<u64, DatapathError> {
        self.maps
            .config
            .get(&abi::CONFIG_EPOCH, 0)
            .map_err(map_io(abi::CONFIG))
    }

    /// Tests only: set the action of every active rule to `action` (an unknown value shows the
    /// programs fail closed). Returns how many rules were rewritten.
    #[doc(hidden)]
    pub fn corrupt_rule_actions_for_tests(&mut self, action: u32) -> Result<usize, DatapathError> {
        let rules = self.active_tables()?.rules;
        for (key, mut value) in rules.iter().map(|(k, v)| (*k, *v)) {
            value.action = action;
            self.maps
                .rules
                .insert(key, value, 0)
                .map_err(map_io(abi::RULES))?;
        }
        Ok(rules.len())
    }

    /// Forget every remembered first-fragment verdict (tests use it to exercise fragments whose
    /// first fragment was not seen).
    pub fn clear_fragment_state(&mut self) -> Result<(), DatapathError> {
        let keys: Vec<FragKey> = self.maps.frag_state.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = self.maps.frag_state.remove(&k);
        }
        Ok(())
    }

    /// Forget every cached classification (tests use it to exercise the miss path): a new
    /// seed, under which no slot written before is found or accepted (`abi::CacheSlot`).
    pub fn clear_flow_cache(&mut self) -> Result<(), DatapathError> {
        new_flow_cache_seed(&mut self.maps)
    }

    /// Tests only: the flow cache's slot `index` and its current seed.
    #[doc(hidden)]
    pub fn flow_cache_slot(&self, index: u32) -> Result<(CacheSlot, u64), DatapathError> {
        let slot = self
            .maps
            .flow_cache
            .get(&index, 0)
            .map_err(map_io(abi::FLOW_CACHE))?;
        let seed = self
            .maps
            .config
            .get(&abi::CONFIG_FLOW_CACHE_SEED, 0)
            .map_err(map_io(abi::CONFIG))?;
        Ok((slot, seed))
    }
}

impl Drop for KernelDatapath {
    fn drop(&mut self) {
        if let Some(dir) = &self.pin_dir {
            remove_pins(dir);
        }
    }
}

/// The tables of the generation `epoch` makes active, read from the maps (a loaded datapath's,
/// or those a daemon pinned).
pub fn active_tables<M: std::borrow::Borrow<MapData>>(
    epoch: u64,
    rules: &HashMap<M, RuleKey, RuleValue>,
    prefixes: &LpmTrie<M, PrefixKey, LenSet>,
    len_pairs: &Array<M, LenSet>,
    field_sets: &Array<M, FieldSet>,
) -> Result<super::compile::Tables, DatapathError> {
    let generation = generation(epoch);
    let mut tables = super::compile::Tables::default();
    for item in rules {
        let (key, value) = item.map_err(map_io(abi::RULES))?;
        if key.generation() == generation {
            tables.rules.insert(key, value);
        }
    }
    for item in prefixes {
        let (key, value) = item.map_err(map_io(abi::PREFIXES))?;
        let data = key.data();
        if data.tag >> 2 == generation {
            let len = u8::try_from(key.prefix_len().saturating_sub(8)).unwrap_or(u8::MAX);
            tables
                .prefixes
                .insert(super::compile::PrefixEntry { len, key: data }, value);
        }
    }
    for kind in super::compile::KINDS {
        for dir in [abi::DIR_IN, abi::DIR_OUT] {
            let set = abi::rule_set(kind, generation, dir);
            for s in 0..abi::PREFIX_LENS {
                let pairs = len_pairs
                    .get(&abi::pairs_index(set, s), 0)
                    .map_err(map_io(abi::LEN_PAIRS))?;
                if pairs.is_empty() {
                    continue;
                }
                tables.pairs.insert(abi::pairs_index(set, s), pairs);
                for d in pairs.iter() {
                    let index = abi::field_set_index(set, s, u32::from(d));
                    let fields = field_sets.get(&index, 0).map_err(map_io(abi::FIELD_SETS))?;
                    tables.field_sets.insert(index, fields);
                }
            }
        }
    }
    Ok(tables)
}

/// Remove the pins a previous instance left (after kill -9, say); unknown files are kept.
/// Pins that daemons before the benchmark object existed made (its programs and map were in the
/// production object then): removed with ours, so an upgrade leaves nothing behind.
const RETIRED_PINS: [&str; 3] = ["XIPSEC_BENCH_FLOWS", "xdp_bench_parse", "xdp_bench_hash"];

fn remove_pins(dir: &Path) {
    for name in MAP_NAMES.iter().chain(&PROGRAM_NAMES).chain(&RETIRED_PINS) {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(DatapathError::MissingProgram { name })?;
    prog.try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

/// `BPF_PROG_TEST_RUN` of program `name` (of type `P`: `Xdp` or `SchedClassifier`), `repeat`
/// times on `frame`.
fn test_run<'a, P>(
    ebpf: &'a Ebpf,
    name: &'static str,
    frame: &[u8],
    repeat: u32,
) -> Result<TestRunResult, DatapathError>
where
    P: for<'o> TestRun<Opts<'o> = TestRunOptions<'o>, Result = TestRunResult> + 'a,
    &'a P: TryFrom<&'a aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog: &P = ebpf
        .program(name)
        .ok_or(DatapathError::MissingProgram { name })?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })?;
    // Room for programs that grow the packet (headroom they push is at most this).
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    };
    prog.test_run(opts)
        .map_err(|source| DatapathError::TestRun {
            program: name,
            source,
        })
}

/// The programs `attach` puts on an interface, as far as their links go (aya has no trait for
/// it: `take_link` and `attach_to_link` are inherent methods).
trait LinkedProgram {
    type Link: TryFrom<FdLink>;
    type LinkId;
    /// `attach_to_link`: swap this program into `link` (`bpf_link_update`).
    fn update_link(&mut self, link: Self::Link) -> bool;
    /// `take_link`: own the link of an attachment, so it can be pinned.
    fn own_link(&mut self, id: Self::LinkId) -> Result<Self::Link, ProgramError>;
}

/// Each impl forwards to aya's inherent `attach_to_link` and `take_link`.
macro_rules! linked_program {
    ($program:ty, $link:ty, $id:ty) => {
        impl LinkedProgram for $program {
            type Link = $link;
            type LinkId = $id;
            fn update_link(&mut self, link: $link) -> bool {
                self.attach_to_link(link).is_ok()
            }
            fn own_link(&mut self, id: $id) -> Result<$link, ProgramError> {
                self.take_link(id)
            }
        }
    };
}
linked_program!(Xdp, XdpLink, XdpLinkId);
linked_program!(SchedClassifier, SchedClassifierLink, SchedClassifierLinkId);

/// Why [`attach_pinned`] failed: the program's own attach (the caller names the program), or
/// pinning its link.
enum AttachError {
    Program(ProgramError),
    Pin(DatapathError),
}

/// Put `prog` on an interface. With a pin path: swap it into the link a previous daemon pinned
/// there if that link is usable (`Ok(true)`; a stale pin is removed), else `attach` it and pin
/// the new link there, recording the pin in `created_links`. Without one: just `attach`.
fn attach_pinned<P: LinkedProgram>(
    prog: &mut P,
    pin: Option<&Path>,
    created_links: &mut Vec<PathBuf>,
    attach: impl FnOnce(&mut P) -> Result<P::LinkId, ProgramError>,
) -> Result<bool, AttachError>
where
    FdLink: TryFrom<P::Link, Error = LinkError>,
{
    let Some(pin) = pin else {
        attach(prog).map_err(AttachError::Program)?;
        return Ok(false);
    };
    if let Ok(pinned) = PinnedLink::from_pin(pin) {
        let swapped = P::Link::try_from(FdLink::from(pinned))
            .ok()
            .is_some_and(|link| prog.update_link(link));
        if swapped {
            return Ok(true);
        }
        let _ = std::fs::remove_file(pin);
    }
    let id = attach(prog).map_err(AttachError::Program)?;
    let link = prog.own_link(id).map_err(AttachError::Program)?;
    pin_link(link, pin).map_err(AttachError::Pin)?;
    created_links.push(pin.to_path_buf());
    Ok(false)
}

/// Pin a freshly attached link (it must be a bpf_link: XDP and TCX on this kernel are).
fn pin_link<L>(link: L, pin: &Path) -> Result<(), DatapathError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    let fd_link = FdLink::try_from(link).map_err(|source| DatapathError::LinkNotPinnable {
        path: pin.to_path_buf(),
        source,
    })?;
    fd_link.pin(pin).map_err(|source| DatapathError::Pin {
        name: "link".into(),
        path: pin.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// Whether this process holds CAP_BPF and CAP_NET_ADMIN in its effective set.
fn has_bpf_capabilities() -> bool {
    [Capability::CAP_BPF, Capability::CAP_NET_ADMIN]
        .into_iter()
        .all(|cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false))
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would only make the heartbeat look stale.
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec()).unwrap_or(0)
    })
}

/// `ARPHRD_ETHER`: the link type of Ethernet devices (veth included).
const ARPHRD_ETHER: &str = "1";

/// The link type (`ARPHRD_*`) of `interface` in the calling thread's network namespace, by
/// `SIOCGIFHWADDR` (sysfs may show another namespace's devices).
fn link_type(interface: &str) -> Option<u16> {
    /// `SIOCGIFHWADDR` from linux/sockios.h: nix and rustix have no wrapper for it.
    const SIOCGIFHWADDR: libc::c_ulong = 0x8927;
    // struct ifreq: the name (IFNAMSIZ bytes), then a union whose `sockaddr` starts with the
    // family; 40 bytes cover it on every Linux ABI.
    let mut ifreq = [0u8; 40];
    let name = interface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    ifreq[..name.len()].copy_from_slice(name);
    let sock = socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    // SAFETY: SIOCGIFHWADDR reads the name from and writes a sockaddr into the 40-byte buffer,
    // which outlives the call; `sock` is an open socket.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFHWADDR, ifreq.as_mut_ptr()) };
    (rc == 0).then(|| u16::from_ne_bytes([ifreq[libc::IFNAMSIZ], ifreq[libc::IFNAMSIZ + 1]]))
}

/// The interface must exist and be Ethernet: the programs parse Ethernet frames, and on any
/// other link type (TUN, WireGuard, ip6tnl, PPP, loopback) every packet would read as "not IPv6"
/// and pass unfiltered.
pub fn check_interface(interface: &str) -> Result<(), DatapathError> {
    if nix_if_index(interface).is_none() {
        return Err(DatapathError::NoSuchInterface(interface.into()));
    }
    let link_type = link_type(interface).map_or_else(|| "unknown".into(), |t| t.to_string());
    if link_type != ARPHRD_ETHER {
        return Err(DatapathError::NotEthernet {
            interface: interface.into(),
            link_type,
        });
    }
    Ok(())
}

fn nix_if_index(interface: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(interface).ok()
}

/// Physical NICs have a backing device in sysfs; veth, tun, bridges and loopback do not.
fn is_physical(interface: &str) -> bool {
    Path::new("/sys/class/net")
        .join(interface)
        .join("device")
        .exists()
}

/// Whether loading failed because the kernel refused us (`EPERM`/`EACCES`): missing
/// capabilities, or a lockdown. Decided on the `io::Error` aya carries, not on its text.
fn is_permission(err: &aya::EbpfError) -> bool {
    use aya::maps::MapError;
    use aya::programs::ProgramError;
    use aya::sys::SyscallError;
    let io = match err {
        aya::EbpfError::FileError { error, .. }
        | aya::EbpfError::MapError(MapError::IoError(error)) => error,
        aya::EbpfError::MapError(
            MapError::CreateError { io_error, .. }
            | MapError::SyscallError(SyscallError { io_error, .. }),
        )
        | aya::EbpfError::ProgramError(
            ProgramError::LoadError { io_error, .. }
            | ProgramError::SyscallError(SyscallError { io_error, .. }),
        ) => io_error,
        _ => return false,
    };
    matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

#[cfg(test)]
mod tests {
    use std::io;

    use aya::maps::MapError;
    use aya::programs::ProgramError;
    use aya::sys::SyscallError;

    use super::*;

    fn create_error(errno: i32) -> aya::EbpfError {
        aya::EbpfError::MapError(MapError::CreateError {
            name: "XIPSEC_RULES".into(),
            io_error: io::Error::from_raw_os_error(errno),
        })
    }

    #[test]
    fn permission_is_read_from_the_errno_aya_carries() {
        assert!(is_permission(&create_error(libc::EPERM)));
        assert!(is_permission(&create_error(libc::EACCES)));
        let prog = aya::EbpfError::ProgramError(ProgramError::SyscallError(SyscallError {
            call: "bpf_prog_load",
            io_error: io::Error::from_raw_os_error(libc::EPERM),
        }));
        assert!(is_permission(&prog));
        let map_io = aya::EbpfError::MapError(MapError::IoError(io::Error::from_raw_os_error(
            libc::EACCES,
        )));
        assert!(is_permission(&map_io));
    }

    #[test]
    fn other_load_failures_are_not_permission() {
        assert!(!is_permission(&create_error(libc::ENOMEM)));
        assert!(!is_permission(&create_error(libc::EINVAL)));
        assert!(!is_permission(&aya::EbpfError::NoBTF));
        // The old text match took any message containing "EPERM": a name is not an errno.
        let named = aya::EbpfError::MapError(MapError::InvalidName {
            name: "EPERM PermissionDenied (os error 1)".into(),
        });
        assert!(!is_permission(&named));
    }

    #[test]
    fn missing_map_and_missing_program_are_told_apart() {
        let map = DatapathError::MissingMap { name: abi::RULES }.to_string();
        let prog = DatapathError::MissingProgram {
            name: abi::PROG_TC_EGRESS,
        }
        .to_string();
        assert_eq!(map, format!("map {} is not in the eBPF object", abi::RULES));
        assert_eq!(
            prog,
            format!("program {} is not in the eBPF object", abi::PROG_TC_EGRESS)
        );
    }

    #[test]
    fn monotonic_clock_advances() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a, "monotonic_ns went from {a} to {b}");
    }
}
