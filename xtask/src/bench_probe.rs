//! `bench e2e`'s per-run breakdown (`XIPSEC_BENCH_E2E_BREAKDOWN=1`): where one run's CPU went
//! and how the packets were shaped, printed to stderr after each run, so stdout keeps only the
//! report (or the JSON).
//!
//! A [`Snapshot`] holds, for the processes in the lab's two namespaces, every thread's CPU time
//! (`/proc/PID/task/TID/stat` fields 14-15) and voluntary and involuntary context switches
//! (`status`), and every interface's packet and byte counters (`ip -s -j link`). The difference
//! of two snapshots says, per thread, the CPU microseconds and the wake-ups per ESP packet on
//! the wire, and per device the average size of what crossed it: on the TUN device `tx` is what
//! the kernel handed the engine (TSO packets read), `rx` what the engine wrote (GSO packets
//! after receive coalescing); on the veth, the ESP frames each way. The kernel's softirq work
//! is charged to the thread it ran in (on a veth, the sender runs the peer's receive path).

use std::collections::BTreeMap;
use std::process::Command;

/// `XIPSEC_BENCH_E2E_BREAKDOWN=1` turns the breakdown on.
pub(crate) fn enabled() -> bool {
    std::env::var("XIPSEC_BENCH_E2E_BREAKDOWN").as_deref() == Ok("1")
}

/// One thread's counters: CPU clock ticks, voluntary and involuntary context switches.
#[derive(Clone, Copy, Default)]
struct Thread {
    ticks: u64,
    voluntary: u64,
    involuntary: u64,
}

/// Counters of the lab's threads and interfaces at one moment.
#[derive(Default)]
pub(crate) struct Snapshot {
    /// By (namespace, thread name, tid).
    threads: BTreeMap<(String, String, String), Thread>,
    /// By (namespace, interface): rx packets, rx bytes, tx packets, tx bytes.
    links: BTreeMap<(String, String), [u64; 4]>,
}

fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0)
}

impl Snapshot {
    /// The counters of every thread and interface in `namespaces` now.
    pub(crate) fn take(namespaces: &[&str]) -> Self {
        let mut snapshot = Self::default();
        for ns in namespaces {
            for pid in crate::bench::namespace_pids(ns) {
                let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                    continue;
                };
                for task in tasks.flatten() {
                    let dir = task.path();
                    let tid = task.file_name().to_string_lossy().into_owned();
                    let (Ok(stat), Ok(status)) = (
                        std::fs::read_to_string(dir.join("stat")),
                        std::fs::read_to_string(dir.join("status")),
                    ) else {
                        continue;
                    };
                    let Some((head, rest)) = stat.rsplit_once(')') else {
                        continue;
                    };
                    let comm = head.split_once('(').map_or("?", |(_, c)| c).to_owned();
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    let ticks = [11, 12]
                        .iter()
                        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
                        .sum();
                    snapshot.threads.insert(
                        ((*ns).to_owned(), comm, tid),
                        Thread {
                            ticks,
                            voluntary: field(&status, "voluntary_ctxt_switches:"),
                            involuntary: field(&status, "nonvoluntary_ctxt_switches:"),
                        },
                    );
                }
            }
            let Ok(out) = Command::new("ip")
                .args(["-n", ns, "-s", "-j", "link"])
                .output()
            else {
                continue;
            };
            let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            for link in links.as_array().into_iter().flatten() {
                let stats = &link["stats64"];
                let get = |dir: &str, what: &str| stats[dir][what].as_u64().unwrap_or(0);
                let name = link["ifname"].as_str().unwrap_or("?").to_owned();
                snapshot.links.insert(
                    ((*ns).to_owned(), name),
                    [
                        get("rx", "packets"),
                        get("rx", "bytes"),
                        get("tx", "packets"),
                        get("tx", "bytes"),
                    ],
                );
            }
        }
        snapshot
    }

    /// Prints what happened between `before` and `self` to stderr: `what` names the run,
    /// `seconds` is its length; the frames of the measured direction are those of the
    /// interface of namespace `client` (not `lo`) that transmitted the most (the veth).
    pub(crate) fn print_since(&self, before: &Self, what: &str, seconds: f64, client: &str) {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        #[allow(clippy::cast_precision_loss, reason = "clock ticks per second")]
        let hz = if hz > 0 { hz as f64 } else { 100.0 };
        let delta = |key: &(String, String)| {
            let now = self.links.get(key).copied().unwrap_or_default();
            let then = before.links.get(key).copied().unwrap_or_default();
            [0, 1, 2, 3].map(|i| now[i].saturating_sub(then[i]))
        };
        let wire = self
            .links
            .keys()
            .filter(|(ns, name)| ns == client && name != "lo")
            .max_by_key(|key| delta(key)[2]);
        let frames = wire.map_or(0, |key| delta(key)[2]);
        #[allow(clippy::cast_precision_loss, reason = "packet counts of one run")]
        let packets = frames.max(1) as f64;
        eprintln!("breakdown of {what} ({seconds:.1} s, {frames} frames out of {wire:?}):");
        for key in self.links.keys() {
            let [rx_p, rx_b, tx_p, tx_b] = delta(key);
            if rx_p + tx_p < 1000 {
                continue;
            }
            #[allow(clippy::cast_precision_loss, reason = "counters of one run")]
            let avg = |b: u64, p: u64| b as f64 / p.max(1) as f64;
            eprintln!(
                "  link {:>14} {:>14}: rx {rx_p:>9} pkts avg {:>7.0} B, tx {tx_p:>9} pkts avg {:>7.0} B",
                key.0,
                key.1,
                avg(rx_b, rx_p),
                avg(tx_b, tx_p)
            );
        }
        for (key, now) in &self.threads {
            let then = before.threads.get(key).copied().unwrap_or_default();
            #[allow(clippy::cast_precision_loss, reason = "ticks of one run")]
            let cpu = now.ticks.saturating_sub(then.ticks) as f64 / hz;
            if cpu < 0.02 {
                continue;
            }
            let vol = now.voluntary.saturating_sub(then.voluntary);
            let invol = now.involuntary.saturating_sub(then.involuntary);
            #[allow(clippy::cast_precision_loss, reason = "switches of one run")]
            let (vol, invol) = (vol as f64, invol as f64);
            eprintln!(
                "  thread {:>14} {:>16} {:>7}: cpu {:>5.2} s = {:>5.2} us/frame, {:>7.0} voluntary + {:>6.0} involuntary switches/s ({:.3} per frame)",
                key.0,
                key.1,
                key.2,
                cpu,
                cpu * 1e6 / packets,
                vol / seconds,
                invol / seconds,
                (vol + invol) / packets
            );
        }
    }
}
