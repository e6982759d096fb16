//! The frame generator of `cargo xtask bench filter` and the XDP programs it measures against,
//! all from the benchmark object (`ipsec-ebpf/src/bench_filter.rs`, built into `ipsec-bench` by
//! `ipsec-user`'s build script; the production object has none of them).
//!
//! A run is one `BPF_PROG_TEST_RUN` of the generator with `BPF_F_TEST_XDP_LIVE_FRAMES` on a
//! thread that joined the sending namespace and is pinned to one CPU: the kernel builds each
//! frame from the template, the generator writes the next flow of its table into it and returns
//! `XDP_TX`, and the frame leaves the sending veth. The receiving veth's NAPI poll is scheduled
//! on the same CPU and runs at the end of every batch of frames, inside the same system call, so
//! the wall time of the call is the time one core took to generate and to receive (filter,
//! drop or pass up the stack) every frame.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, ArrayOfMaps, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    util::nr_cpus,
};
use ipsec_common::abi::{
    CacheSlot,
    bench::{
        FRAME_MIN, GEN_CONFIG, GEN_CONFIG_ACTION, GEN_CONFIG_BASE, GEN_CONFIG_FLOWS, GEN_COUNT,
        GEN_FLOWS, GEN_FLOWS_CAPACITY, GenFlow, PROBE_DIRECT_MAPS, PROBE_DIRECT_OUTER,
        PROBE_DIRECT_SLOTS, PROG_GEN,
    },
};
use xipsec_testkit::netns;

use crate::util;

/// Frames per `BPF_PROG_TEST_RUN` batch (the kernel's maximum is 256; xdp-trafficgen's default).
const BATCH: u32 = 64;
const XDP_DROP: u32 = 1;
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;
const XDP_TX: u32 = 3;

/// The benchmark object of the newest `ipsec-user` build (`cargo xtask build` just made it).
fn bench_object() -> anyhow::Result<PathBuf> {
    let build = util::root().join("target/release/build");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&build)
        .with_context(|| format!("reading {}", build.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("ipsec-user-"))
        .map(|e| e.path().join("out/ipsec-bench"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .filter(|(_, p)| p.metadata().is_ok_and(|m| m.len() > 0))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(|| {
        anyhow!(
            "no benchmark object under {}: run cargo xtask build",
            build.display()
        )
    })
}

/// The MAC address of `iface` in namespace `ns`.
pub(crate) fn mac(ns: &str, iface: &str) -> anyhow::Result<[u8; 6]> {
    let text = netns::output(ns, &["cat", &format!("/sys/class/net/{iface}/address")]);
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC address of {iface}: {text:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("MAC address of {iface}: {text:?}"))
}

/// The generator's template: Ethernet to `dst_mac`, IPv6, UDP with 6 bytes of payload (68
/// bytes). Addresses and ports are the generator's to write; the UDP checksum stays zero (the
/// frames are filtered, or routed to a blackhole, never delivered to a socket).
pub(crate) fn template(src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME_MIN + 6);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 14, 17, 64]);
    f.extend_from_slice(&[0; 32]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 14, 0, 0]);
    f.extend_from_slice(&[0; 6]);
    f
}

/// The loaded benchmark object: generator, floor and pass programs and their maps.
pub(crate) struct Generator {
    ebpf: Ebpf,
    flows: u32,
}

impl Generator {
    pub(crate) fn load() -> anyhow::Result<Self> {
        let path = bench_object()?;
        // The loader takes the direct-mapped memory floor's array of maps from a pin (see
        // `direct_probe_table`), removed once the object holds it.
        let pin = PathBuf::from(format!(
            "/sys/fs/bpf/xipsec-bench-{}-probe-outer",
            std::process::id()
        ));
        direct_probe_table(&pin)?;
        let loaded = EbpfLoader::new()
            .map_pin_path(PROBE_DIRECT_OUTER, pin.as_path())
            .load_file(&path);
        std::fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
        let ebpf =
            loaded.with_context(|| format!("loading the benchmark object {}", path.display()))?;
        let mut generator = Self { ebpf, flows: 0 };
        generator
            .program(PROG_GEN)?
            .load()
            .context("loading the generator")?;
        Ok(generator)
    }

    fn program(&mut self, name: &str) -> anyhow::Result<&mut Xdp> {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("no program {name} in the benchmark object"))?
            .try_into()
            .with_context(|| format!("{name} is not an XDP program"))
    }

    /// Attach program `name` in native (driver) mode to `iface` of namespace `ns`, for as long
    /// as the generator lives.
    pub(crate) fn attach(&mut self, name: &str, ns: &str, iface: &str) -> anyhow::Result<()> {
        let program = self.program(name)?;
        program.load().with_context(|| format!("loading {name}"))?;
        netns::in_netns(ns, || program.attach(iface, XdpMode::Driver))
            .with_context(|| format!("attaching {name} to {iface} (native XDP)"))?;
        Ok(())
    }

    /// Write the two tables (`tables[0]` from index 0, `tables[1]` after it).
    pub(crate) fn fill(&mut self, tables: [&[GenFlow]; 2]) -> anyhow::Result<()> {
        let mut map: Array<_, GenFlow> = Array::try_from(
            self.ebpf
                .map_mut(GEN_FLOWS)
                .ok_or_else(|| anyhow!("no map {GEN_FLOWS}"))?,
        )?;
        let (first, second) = (tables[0], tables[1]);
        if first.len() != second.len() || 2 * first.len() > GEN_FLOWS_CAPACITY as usize {
            bail!(
                "two tables of equal length up to {} flows",
                GEN_FLOWS_CAPACITY / 2
            );
        }
        for (i, flow) in first.iter().chain(second).enumerate() {
            map.set(u32::try_from(i)?, flow, 0)?;
        }
        self.flows = u32::try_from(first.len())?;
        Ok(())
    }

    fn configure(&mut self, table: usize, action: u32) -> anyhow::Result<()> {
        let mut config: Array<_, u32> = Array::try_from(
            self.ebpf
                .map_mut(GEN_CONFIG)
                .ok_or_else(|| anyhow!("no map {GEN_CONFIG}"))?,
        )?;
        config.set(GEN_CONFIG_FLOWS, self.flows, 0)?;
        config.set(GEN_CONFIG_BASE, u32::try_from(table)? * self.flows, 0)?;
        config.set(GEN_CONFIG_ACTION, action, 0)?;
        let mut count: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map_mut(GEN_COUNT)
                .ok_or_else(|| anyhow!("no map {GEN_COUNT}"))?,
        )?;
        let cpus = nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        count.set(0, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        Ok(())
    }

    /// Send `frames` frames of table `table` out of `iface` of namespace `ns` from CPU `cpu`
    /// (`transmit` false: the generator drops them itself). The first frame carries flow 0.
    pub(crate) fn send(
        &mut self,
        (ns, iface): (&str, &str),
        template: &[u8],
        (table, frames): (usize, u32),
        transmit: bool,
        cpu: usize,
    ) -> anyhow::Result<Spent> {
        self.configure(table, if transmit { XDP_TX } else { XDP_DROP })?;
        let program = self.program(PROG_GEN)?;
        let softirq = ksoftirqd(cpu)?;
        netns::in_netns(ns, || -> anyhow::Result<Spent> {
            pin_to(cpu)?;
            let ifindex = ifindex(iface)?;
            let data_end = u32::try_from(template.len())?;
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
            // egress_ifindex.
            let ctx: Vec<u8> = [0, data_end, 0, ifindex, 0, 0]
                .iter()
                .flat_map(|v: &u32| v.to_ne_bytes())
                .collect();
            let opts = TestRunOptions {
                data_in: Some(template),
                ctx_in: Some(&ctx),
                repeat: frames,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..Default::default()
            };
            let (cpu_start, softirq_start) = (thread_cpu_ns()?, schedstat_ns(&softirq)?);
            let start = Instant::now();
            program
                .test_run(opts)
                .context("BPF_PROG_TEST_RUN of the generator (live frames)")?;
            let wall = start.elapsed();
            let cpu_ns = thread_cpu_ns()? - cpu_start + schedstat_ns(&softirq)? - softirq_start;
            Ok(Spent {
                wall,
                cpu: Duration::from_nanos(cpu_ns),
            })
        })
    }

    /// Frames the floor program (`FLOOR_COUNT`) or the memory floor (`PROBE_COUNT`) dropped
    /// so far, per CPU.
    pub(crate) fn dropped(&self, counter: &str) -> anyhow::Result<Vec<u64>> {
        let count: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(counter)
                .ok_or_else(|| anyhow!("no map {counter}"))?,
        )?;
        Ok(count.get(&0, 0)?.to_vec())
    }
}

/// Create the direct-mapped memory floor's table (`abi::bench::PROG_PROBE_DIRECT`) and pin it
/// at `pin`: an array of maps of `PROBE_DIRECT_MAPS` arrays of `PROBE_DIRECT_SLOTS` 64-byte
/// slots, each small enough to be `kmalloc`'d. Created here rather than by the loader, which
/// cannot: the object declares it as a plain array (aya-ebpf has no map-of-maps definition),
/// and an array of maps needs an inner map to be created.
fn direct_probe_table(pin: &std::path::Path) -> anyhow::Result<()> {
    let slot = u32::try_from(std::mem::size_of::<CacheSlot>())?;
    let inner = (0..PROBE_DIRECT_MAPS)
        .map(|_| map_create([BPF_MAP_TYPE_ARRAY, 4, slot, PROBE_DIRECT_SLOTS, 0, 0]))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("creating the direct-mapped memory floor's arrays")?;
    let template = u32::try_from(inner[0].as_raw_fd())?;
    let outer = map_create([
        BPF_MAP_TYPE_ARRAY_OF_MAPS,
        4,
        4,
        PROBE_DIRECT_MAPS,
        0,
        template,
    ])
    .context("creating the direct-mapped memory floor's array of maps")?;
    let mut outer: ArrayOfMaps<MapData, MapData> =
        ArrayOfMaps::try_from(Map::ArrayOfMaps(MapData::from_fd(outer)?))?;
    for (i, fd) in inner.into_iter().enumerate() {
        outer.set(u32::try_from(i)?, &MapData::from_fd(fd)?, 0)?;
    }
    outer
        .pin(pin)
        .with_context(|| format!("pinning {}", pin.display()))
}

/// `BPF_MAP_CREATE` with `union bpf_attr`'s first six fields: map type, key size, value size,
/// max entries, flags, inner map descriptor (aya creates no array of maps on its own).
fn map_create(fields: [u32; 6]) -> anyhow::Result<OwnedFd> {
    let mut attr = [0u32; 32];
    attr[..6].copy_from_slice(&fields);
    // SAFETY: BPF_MAP_CREATE reads `size_of_val(&attr)` bytes of `attr`, a valid buffer; the
    // kernel checks that the bytes it does not know are zero.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        bail!("BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd)?) })
}

/// Slots `indices` of the pinned per-CPU `u64` array at `path` (xipsec's counters map), summed
/// per CPU.
pub(crate) fn pinned_counters(path: &std::path::Path, indices: &[u32]) -> anyhow::Result<Vec<u64>> {
    let data = aya::maps::MapData::from_pin(path)
        .with_context(|| format!("opening the pinned map {}", path.display()))?;
    let array: PerCpuArray<_, u64> = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))?;
    let mut sums = Vec::new();
    for index in indices {
        let values = array.get(index, 0)?;
        sums.resize(values.len(), 0);
        for (sum, value) in sums.iter_mut().zip(values.iter()) {
            *sum += value;
        }
    }
    Ok(sums)
}

/// Silence the sending side, `iface` of namespace `ns`: switch its IPv6 off (it has no IPv4
/// address), so its stack sends nothing (no MLD report, neighbour or router solicitation).
///
/// Why: the receiving veth's NAPI runs on the CPU that scheduled it. A packet of the sending
/// side's own stack, sent from another CPU than the generator's, schedules it there; while the
/// generator keeps its ring from running empty it stays there, so the receiver runs on that
/// other CPU, in parallel with the generator (its time missing from the generator core's), and
/// the generator, faster than any receiver, overflows the ring (256 frames): up to a quarter of
/// a run's frames were lost that way, in the first seconds of a fresh veth, when its stack
/// sends its reports and solicitations. The generator itself needs no stack: it runs on the
/// interface by its index.
pub(crate) fn silence(ns: &str, iface: &str) -> anyhow::Result<()> {
    let key = format!("net.ipv6.conf.{iface}.disable_ipv6=1");
    util::run(&mut netns::exec(ns, &["sysctl", "-q", "-w", &key]))
}

/// Frames the sending veth could not hand to its peer so far: its `tx_dropped`, which counts
/// the frames the peer's receive ring had no room for (`peer_tq_xdp_xmit_err` of `ethtool -S`;
/// the sending side transmits nothing else, see [`silence`]).
pub(crate) fn ring_overflow(ns: &str, iface: &str) -> anyhow::Result<u64> {
    device_stat(ns, iface, "tx_dropped")
}

/// Packets the stack of namespace `ns` sent out of `iface` so far (sent or dropped by the veth).
pub(crate) fn sent_packets(ns: &str, iface: &str) -> anyhow::Result<u64> {
    Ok(device_stat(ns, iface, "tx_packets")? + device_stat(ns, iface, "tx_dropped")?)
}

/// Packets `iface` of namespace `ns` received so far.
pub(crate) fn received_packets(ns: &str, iface: &str) -> anyhow::Result<u64> {
    device_stat(ns, iface, "rx_packets")
}

fn device_stat(ns: &str, iface: &str, stat: &str) -> anyhow::Result<u64> {
    let path = format!("/sys/class/net/{iface}/statistics/{stat}");
    let text = netns::output(ns, &["cat", &path]);
    text.trim()
        .parse()
        .with_context(|| format!("{path} in {ns}: {text:?}"))
}

/// What a run cost: wall time, and CPU time of the generator's core spent on it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spent {
    pub wall: Duration,
    /// The generating thread's CPU time plus that of the core's `ksoftirqd`: everything the
    /// run made that core do (generating, the veth transfer, the receiver's NAPI poll, which
    /// runs in the generating thread's system call or, when deferred, in `ksoftirqd`). This
    /// kernel has no `CONFIG_IRQ_TIME_ACCOUNTING`, so softirq work is charged to the thread it
    /// interrupted. Unlike the wall time it leaves out whatever else the scheduler ran on that
    /// core meanwhile (a busy machine's other processes).
    pub cpu: Duration,
}

/// The calling thread's CPU time so far, in nanoseconds.
fn thread_cpu_ns() -> anyhow::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) } != 0 {
        bail!("clock_gettime: {}", std::io::Error::last_os_error());
    }
    Ok(u64::try_from(ts.tv_sec)? * 1_000_000_000 + u64::try_from(ts.tv_nsec)?)
}

/// The `/proc/PID/schedstat` of `ksoftirqd/CPU`.
fn ksoftirqd(cpu: usize) -> anyhow::Result<PathBuf> {
    let name = format!("ksoftirqd/{cpu}");
    for entry in std::fs::read_dir("/proc")?.filter_map(Result::ok) {
        let dir = entry.path();
        if std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == name) {
            return Ok(dir.join("schedstat"));
        }
    }
    bail!("no {name} thread")
}

/// Time on CPU (nanoseconds) from a `schedstat` file: its first field.
fn schedstat_ns(path: &std::path::Path) -> anyhow::Result<u64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| anyhow!("{}: {text:?}", path.display()))
}

fn ifindex(iface: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no interface {iface}: {}", std::io::Error::last_os_error());
    }
    Ok(index)
}

/// Pin the calling thread to `cpu`.
fn pin_to(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes within it (cpu is checked
    // against its size); sched_setaffinity(0) applies to the calling thread only.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            bail!("cpu {cpu} is out of range");
        }
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set)
    };
    if rc != 0 {
        bail!("pinning to cpu {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
