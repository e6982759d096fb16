//! `cargo xtask bench filter`: live filtering of frames arriving on an interface through its real
//! receive path, xipsec beside the floor and beside nftables, all in the same run.
//!
//! Five veth pairs, each between two namespaces of its own (the test kit's `VethPair`): the
//! generator (`bench_gen`) sends from side a, and side b receives with
//! - the floor: an XDP program that counts and drops every frame (native XDP);
//! - the memory floor: an XDP program that parses the frame as xipsec does, reads one word of
//!   the slot its flow hashes to in a table as large as xipsec's flow cache, and drops it (the
//!   least an exact per-flow lookup costs on this machine: see `bench_filter.rs` in the eBPF
//!   crate);
//! - the direct-mapped memory floor: the same, the table in `kmalloc`'d arrays of at most
//!   32 KiB (an array of maps), which live in the kernel's direct map (1 GiB and 2 MiB pages)
//!   instead of the 4 KiB `vmalloc` pages of any larger array: what the read costs without most
//!   of its TLB misses;
//! - xipsec: the daemon attached to the veth, started on a state file holding the policy set;
//! - nftables: the same policy set as a `netdev` ingress ruleset (`bench_nft`), behind a native
//!   XDP program that passes everything (so the frames take the same NAPI receive path).
//!
//! Side b routes the destinations (`2001:db8:2::/64`) to a blackhole: a passed frame goes up
//! the IPv6 stack, is routed and discarded there, silently.
//!
//! Traffic: the drop table or the pass table of `bench_policy` (131,072 distinct flows by
//! default, each frame the next flow). xipsec's flow cache (262,144 entries) holds both tables,
//! so a table's first pass is all misses (131,072 of a run's 2,000,000 frames) and later frames
//! are cache hits; `--flows` above the cache's capacity makes every frame a miss and a full
//! classification (the worst case). Per row (policy count),
//! `--runs` rounds, each measuring, in this order, the generator alone (it drops its own frames),
//! the floor, xipsec dropping, xipsec passing, nftables dropping, nftables passing, the memory
//! floor, the direct-mapped memory floor; the medians are reported. Every run's frames are counted on the receiving side (floor
//! counter, xipsec's per-SP counters, nftables' named counters), and the bench fails unless
//! every frame got the verdict the policy set prescribes, counted per band and verdict, or was
//! refused by the receiving veth's full ring (the kernel counts those): none may be
//! unaccounted for.
//!
//! The sending sides are silent (`bench_gen::silence`): a packet of their own stack, sent from
//! another CPU, would pull the receiving veth's NAPI to that CPU for the rest of a run, where
//! it receives in parallel with the generator and its ring overflows (how the first runs of a
//! fresh veth lost up to a quarter of their frames). A run that still lost frames at the ring,
//! or whose receiver counted frames on another CPU than the generator's (the floors and xipsec
//! count per CPU), is not a measurement: it is repeated (at most [`ATTEMPTS`] times in a row)
//! and reported under `discarded_runs`.
//!
//! Mpps are of one core: the generator, the veth transfer and the receiving side's work all run
//! on the CPU the generator is pinned to (see `bench_gen`), and a run's rate is its frames over
//! the CPU time that core spent on them (`bench_gen::Spent`), so other processes the scheduler
//! runs on that core meanwhile do not count; the wall-clock rates are reported beside them. The
//! receiver's own cost per frame is reported too: the time per frame of a run less that of the
//! generator alone.
//!
//! Where xipsec's time goes at 100,000 policies and 131,072 flows per table (session 7,
//! variants of the ingress program in one build, switched at run time, busy machine; receiver
//! ns per frame over the floor's): parsing 3; parsing plus one read of one random 64-byte
//! slot of the 32 MiB flow cache, nothing else, 108-118 (0.60-0.62x the floor); the same
//! single read confined to 1 MiB of slots in 256 pages 12-16 (0.92-0.94x), or to 1 MiB of
//! slots spread two to a page over all 8,192 pages 28-43 (0.80-0.86x); the full cache probe
//! without counters 156, the per-policy counter 14 more. So a frame costs one memory access
//! that misses L2 (1 MiB here; beyond it this VM's loads cost hundreds of ns, see the README),
//! about 80 ns of data miss and 20-30 ns of TLB miss: any exact per-flow (or per-policy)
//! table for 100,000 entries exceeds L2, so 0.8x the floor is out of reach of exact lookups
//! on this machine with this traffic (every frame a different flow of 131,072, cycled).
//!
//! Session 8: the direct-mapped memory floor (the same read, the table `kmalloc`'d in 32 KiB
//! arrays of an array of maps) against the `vmalloc`'d one in the same runs, 11 rows (busy
//! machine): -3% to +3% in 10, +17% in one (0.87x against 0.74x the floor, when the machine's
//! memory was quietest). The extra outer lookup and helper call cost about what the TLB misses
//! they avoid cost, unless the data comes from the cache. `over_floor_ns_per_frame` in the
//! JSON puts the target's arithmetic beside it: 0.8x the floor allows a quarter of the floor's
//! time per frame (45-47 ns) over the floor; one read of a flow-cache-sized table alone takes
//! 51-121 ns (`vmalloc`'d) or 27-129 ns (direct-mapped), xipsec 139-182 ns (in the quietest
//! row 64, 27 and 62 ns).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;
use ipsec_common::abi::{
    self,
    bench::{
        FLOOR_COUNT, GenFlow, PROBE_COUNT, PROBE_DIRECT_COUNT, PROG_FLOOR, PROG_PASS, PROG_PROBE,
        PROG_PROBE_DIRECT,
    },
};

use crate::{
    bench_gen::{self, Generator, Spent},
    bench_nft,
    bench_policy::{Outcome, PolicySet},
    lab::Lab,
    util,
};

#[derive(Parser)]
#[command(
    name = "bench filter",
    about = "Live XDP filtering: xipsec, the floor, nftables"
)]
struct Args {
    /// Policy counts (one row each).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000])]
    policies: Vec<usize>,
    /// Distinct flows per traffic table (at most 131,072).
    #[arg(long, default_value_t = 131_072)]
    flows: usize,
    /// Frames per run.
    #[arg(long, default_value_t = 2_000_000)]
    frames: u32,
    /// Rounds (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The CPU the generator (and so the receiving side) runs on.
    #[arg(long, default_value_t = 1)]
    cpu: usize,
    /// Skip the nftables runs (for profiling xipsec; the nftables figures are then 0).
    #[arg(long)]
    no_nft: bool,
}

/// The receiving sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Receiver {
    /// The generator drops its own frames: nothing is received.
    Generator,
    Floor,
    Xipsec,
    Nft,
    /// The memory floor.
    Probe,
    /// The direct-mapped memory floor.
    ProbeDirect,
}

/// One measured configuration: a receiver and a traffic table.
#[derive(Clone, Copy, Debug)]
struct Config {
    receiver: Receiver,
    drop: bool,
}

const CONFIGS: [Config; 8] = [
    Config {
        receiver: Receiver::Generator,
        drop: true,
    },
    Config {
        receiver: Receiver::Floor,
        drop: true,
    },
    Config {
        receiver: Receiver::Xipsec,
        drop: true,
    },
    Config {
        receiver: Receiver::Xipsec,
        drop: false,
    },
    Config {
        receiver: Receiver::Nft,
        drop: true,
    },
    Config {
        receiver: Receiver::Nft,
        drop: false,
    },
    Config {
        receiver: Receiver::Probe,
        drop: true,
    },
    Config {
        receiver: Receiver::ProbeDirect,
        drop: true,
    },
];

/// The three labs and what the frames are made of.
struct Bench {
    generator: Generator,
    floor: Lab,
    nft: Lab,
    probe: Lab,
    probe_direct: Lab,
    /// The lab of the current row (the daemon started on that row's policies).
    xipsec: Option<Lab>,
    templates: HashMap<String, Vec<u8>>,
    args: Args,
}

/// Per-outcome frame counts, in [`Outcome::ALL`] order.
type Counts = [u64; 5];

/// Runs of a configuration tried before the bench gives up on it (see [`Bench::measured`]).
const ATTEMPTS: usize = 5;

/// One run as the receiving side saw it.
struct Run {
    spent: Spent,
    /// Frames the receiver counted, per outcome.
    counts: Counts,
    /// xipsec's flow-cache hits (0 for the other receivers).
    hits: u64,
    /// Frames the receiving veth's ring had no room for: never classified (the sending veth's
    /// count, see [`bench_gen::ring_overflow`]).
    overflow: u64,
    /// Frames the receiver handled on another CPU than the generator's (where it can tell).
    elsewhere: u64,
    /// Packets the receiving side's own stack sent meanwhile (MLD reports, neighbour and router
    /// solicitations) that the receiver counted as "no policy": xipsec's TC egress program
    /// classifies them and shares that counter with its XDP ingress program. At most this
    /// many "no policy" verdicts are not the generator's.
    own: u64,
}

fn blackhole(lab: &Lab) {
    xipsec_testkit::sh(&[
        "ip",
        "-n",
        &lab.net.ns_b,
        "-6",
        "route",
        "add",
        "blackhole",
        "2001:db8:2::/64",
    ]);
}

/// Silence the sending side of `labs` ([`bench_gen::silence`]) and wait until their receiving
/// sides receive nothing for a while (what the stacks sent before is through).
fn quiet(labs: &[&Lab]) -> anyhow::Result<()> {
    const STILL: Duration = Duration::from_millis(500);
    const PATIENCE: Duration = Duration::from_secs(10);
    for lab in labs {
        bench_gen::silence(&lab.net.ns_a, &lab.net.if_a)?;
    }
    let received = || -> anyhow::Result<Vec<u64>> {
        labs.iter()
            .map(|lab| bench_gen::received_packets(&lab.net.ns_b, &lab.net.if_b))
            .collect()
    };
    let start = Instant::now();
    let mut last = received()?;
    loop {
        std::thread::sleep(STILL);
        let now = received()?;
        if now == last {
            return Ok(());
        }
        if start.elapsed() > PATIENCE {
            bail!("the silenced sending sides still send after {PATIENCE:?}");
        }
        last = now;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rounded(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

impl Bench {
    fn lab(&self, receiver: Receiver) -> &Lab {
        match receiver {
            Receiver::Generator | Receiver::Floor => &self.floor,
            Receiver::Nft => &self.nft,
            Receiver::Probe => &self.probe,
            Receiver::ProbeDirect => &self.probe_direct,
            Receiver::Xipsec => self.xipsec.as_ref().expect("a row's xipsec lab"),
        }
    }

    /// The template frame from `lab`'s a to its b.
    fn template(lab: &Lab) -> anyhow::Result<Vec<u8>> {
        let src = bench_gen::mac(&lab.net.ns_a, &lab.net.if_a)?;
        let dst = bench_gen::mac(&lab.net.ns_b, &lab.net.if_b)?;
        Ok(bench_gen::template(src, dst))
    }

    /// Frames per outcome the receiver of `config` counted so far.
    fn counts(&self, config: Config, names: &HashMap<String, Outcome>) -> anyhow::Result<Counts> {
        let sum = |per_cpu: Vec<u64>| per_cpu.iter().sum::<u64>();
        match config.receiver {
            Receiver::Generator => Ok([0; 5]),
            Receiver::Floor => Ok([sum(self.generator.dropped(FLOOR_COUNT)?), 0, 0, 0, 0]),
            Receiver::Probe => Ok([sum(self.generator.dropped(PROBE_COUNT)?), 0, 0, 0, 0]),
            Receiver::ProbeDirect => {
                Ok([sum(self.generator.dropped(PROBE_DIRECT_COUNT)?), 0, 0, 0, 0])
            }
            Receiver::Nft => bench_nft::counters(&self.nft.net.ns_b),
            Receiver::Xipsec => xipsec_counts(self.lab(Receiver::Xipsec), names),
        }
    }

    /// Frames the receiver of `config` has handled so far, per CPU; empty where it cannot tell
    /// (the generator alone, nftables).
    fn per_cpu(&self, config: Config) -> anyhow::Result<Vec<u64>> {
        match config.receiver {
            Receiver::Generator | Receiver::Nft => Ok(Vec::new()),
            Receiver::Floor => self.generator.dropped(FLOOR_COUNT),
            Receiver::Probe => self.generator.dropped(PROBE_COUNT),
            Receiver::ProbeDirect => self.generator.dropped(PROBE_DIRECT_COUNT),
            Receiver::Xipsec => {
                let counters = self.lab(Receiver::Xipsec).pin_dir("b")?.join(abi::COUNTERS);
                let verdicts = [
                    abi::Counter::DropDiscard,
                    abi::Counter::PassPolicyNone,
                    abi::Counter::PassNoPolicy,
                ];
                bench_gen::pinned_counters(&counters, &verdicts.map(|c| c as u32))
            }
        }
    }

    /// One run of `config`.
    fn measure(&mut self, config: Config, names: &HashMap<String, Outcome>) -> anyhow::Result<Run> {
        let lab = self.lab(config.receiver);
        let (ns, iface) = (lab.net.ns_a.clone(), lab.net.if_a.clone());
        let (ns_b, if_b) = (lab.net.ns_b.clone(), lab.net.if_b.clone());
        // Read before the counters and after them again: the window encloses theirs.
        let sent_before = bench_gen::sent_packets(&ns_b, &if_b)?;
        let before = self.counts(config, names)?;
        let hits_before = self.cache_hits(config)?;
        let cpus_before = self.per_cpu(config)?;
        let overflow_before = bench_gen::ring_overflow(&ns, &iface)?;
        let template = self.templates[&iface].clone();
        let spent = self.generator.send(
            (&ns, &iface),
            &template,
            (usize::from(!config.drop), self.args.frames),
            config.receiver != Receiver::Generator,
            self.args.cpu,
        )?;
        let after = self.counts(config, names)?;
        let mut counts = [0; 5];
        for i in 0..5 {
            counts[i] = after[i] - before[i];
        }
        let own = bench_gen::sent_packets(&ns_b, &if_b)? - sent_before;
        let elsewhere: u64 = (self.per_cpu(config)?.iter().zip(&cpus_before))
            .enumerate()
            .filter(|&(cpu, _)| cpu != self.args.cpu)
            .map(|(_, (after, before))| after - before)
            .sum();
        Ok(Run {
            spent,
            counts,
            hits: self.cache_hits(config)? - hits_before,
            overflow: bench_gen::ring_overflow(&ns, &iface)? - overflow_before,
            // Only xipsec counts them (its egress program shares the "no policy" counter), on
            // whichever CPU the receiving side's stack sent them from.
            elsewhere: if config.receiver == Receiver::Xipsec {
                elsewhere.saturating_sub(own)
            } else {
                elsewhere
            },
            own: if config.receiver == Receiver::Xipsec {
                own
            } else {
                0
            },
        })
    }

    /// Runs of `config` until one is a measurement: every frame classified, on the generator's
    /// CPU; that run and the runs discarded before it. Fails at once when a run gave a frame
    /// another verdict than the policy set prescribes or lost one unaccounted for, and after
    /// [`ATTEMPTS`] discarded runs in a row.
    fn measured(
        &mut self,
        config: Config,
        names: &HashMap<String, Outcome>,
        want: &Counts,
    ) -> anyhow::Result<(Run, Vec<Run>)> {
        let mut discarded = Vec::new();
        loop {
            let run = self.measure(config, names)?;
            if config.receiver != Receiver::Generator {
                check(&run, want, config)?;
            }
            if run.overflow == 0 && run.elsewhere == 0 {
                return Ok((run, discarded));
            }
            eprintln!(
                "bench filter: {config:?}: run discarded: {} frames found the receiving veth's \
                 ring full, {} were received on another CPU than the generator's",
                run.overflow, run.elsewhere
            );
            discarded.push(run);
            if discarded.len() == ATTEMPTS {
                bail!(
                    "{config:?}: {ATTEMPTS} runs in a row were not measurements (frames found \
                     the receiving veth's ring full: {:?}; received on another CPU: {:?}): \
                     something else schedules the receiving veth's NAPI on another CPU",
                    discarded.iter().map(|r| r.overflow).collect::<Vec<_>>(),
                    discarded.iter().map(|r| r.elsewhere).collect::<Vec<_>>()
                );
            }
        }
    }

    /// xipsec's flow-cache hits so far (its pinned counters map); 0 for the other receivers.
    fn cache_hits(&self, config: Config) -> anyhow::Result<u64> {
        if config.receiver != Receiver::Xipsec {
            return Ok(0);
        }
        let counters = self.lab(Receiver::Xipsec).pin_dir("b")?.join(abi::COUNTERS);
        let hits = bench_gen::pinned_counters(&counters, &[abi::Counter::FlowCacheHit as u32])?;
        Ok(hits.iter().sum())
    }
}

impl Bench {
    /// Install `set` in nftables and in a fresh xipsec lab; the generator's tables.
    fn install(&mut self, set: PolicySet) -> anyhow::Result<(f64, f64)> {
        let tables: Vec<Vec<GenFlow>> = [true, false]
            .iter()
            .map(|&drop| {
                (0..set.flows)
                    .map(|i| set.flow(drop, i).gen_flow())
                    .collect()
            })
            .collect();
        self.generator.fill([&tables[0], &tables[1]])?;

        let nft_load = if self.args.no_nft {
            0.0
        } else {
            self.install_nft(set)?
        };

        self.xipsec = None;
        let mut lab = Lab::new("xbfx", 0xbf3)?;
        blackhole(&lab);
        quiet(&[&lab])?;
        self.templates
            .insert(lab.net.if_a.clone(), Self::template(&lab)?);
        let start = Instant::now();
        lab.start_daemon_with_state("b", &set.xipsec_state())?;
        let xipsec_load = start.elapsed().as_secs_f64();
        self.xipsec = Some(lab);
        Ok((nft_load, xipsec_load))
    }

    /// Install `set` in nftables: the seconds it took.
    fn install_nft(&self, set: PolicySet) -> anyhow::Result<f64> {
        let ns = self.nft.net.ns_b.clone();
        let file = self.nft.scratch.path().join("ruleset.nft");
        std::fs::write(&file, bench_nft::ruleset(set, &self.nft.net.if_b))?;
        let _ = Lab::exec(&ns, &["nft", "delete", "table", "netdev", bench_nft::TABLE]).output();
        let start = Instant::now();
        util::run(&mut Lab::exec(
            &ns,
            &["nft", "-f", file.to_str().unwrap_or_default()],
        ))?;
        Ok(start.elapsed().as_secs_f64())
    }

    /// One row: `--runs` rounds of every configuration, each run's verdicts checked.
    fn row(&mut self, set: PolicySet) -> anyhow::Result<serde_json::Value> {
        eprintln!("bench filter: {} policies", set.policies);
        let (nft_load, xipsec_load) = self.install(set)?;
        let outcomes = [set.outcomes(true), set.outcomes(false)];
        let names: HashMap<String, Outcome> = set
            .policies()
            .into_iter()
            .map(|p| (p.name, p.outcome))
            .collect();
        let frames = self.args.frames;
        let mut rates = vec![Vec::new(); CONFIGS.len()];
        let mut wall_rates = vec![Vec::new(); CONFIGS.len()];
        let mut totals = [[0u64; 5]; CONFIGS.len()];
        let mut hits = [0u64; CONFIGS.len()];
        // Per configuration: runs discarded, their frames lost at the ring, received elsewhere.
        let mut discarded = [[0u64; 3]; CONFIGS.len()];
        for _ in 0..self.args.runs {
            for (k, &config) in CONFIGS.iter().enumerate() {
                if self.args.no_nft && config.receiver == Receiver::Nft {
                    rates[k].push(f64::NAN);
                    wall_rates[k].push(f64::NAN);
                    continue;
                }
                let want = match config.receiver {
                    Receiver::Generator => [0; 5],
                    Receiver::Floor | Receiver::Probe | Receiver::ProbeDirect => {
                        [u64::from(frames), 0, 0, 0, 0]
                    }
                    Receiver::Xipsec | Receiver::Nft => {
                        expected(&outcomes[usize::from(!config.drop)], frames)
                    }
                };
                let (run, tries) = self.measured(config, &names, &want)?;
                for t in &tries {
                    discarded[k][0] += 1;
                    discarded[k][1] += t.overflow;
                    discarded[k][2] += t.elsewhere;
                }
                hits[k] += run.hits;
                for (t, c) in totals[k].iter_mut().zip(run.counts) {
                    *t += c;
                }
                let received = f64::from(frames);
                rates[k].push(received / run.spent.cpu.as_secs_f64() / 1e6);
                wall_rates[k].push(received / run.spent.wall.as_secs_f64() / 1e6);
            }
        }
        let discarded_json = |k: usize| {
            serde_json::json!({
                "runs": discarded[k][0],
                "ring_overflow": discarded[k][1],
                "received_on_another_cpu": discarded[k][2],
            })
        };
        let rates: Vec<f64> = rates.into_iter().map(median).collect();
        let wall: Vec<f64> = wall_rates.into_iter().map(median).collect();
        let mpps = |k: usize| rates[k];
        // 1/Mpps is µs per frame; less the generator's own.
        let ns = |k: usize| 1e3 / rates[k] - 1e3 / rates[0];
        let total = |k: usize| counts_json(&totals[k]);
        // ns per frame more than the floor's (for k = 1, the floor's own ns per frame).
        let over = |k: usize| {
            if k == 1 {
                1e3 / rates[1]
            } else {
                1e3 / rates[k] - 1e3 / rates[1]
            }
        };
        Ok(serde_json::json!({
            "policies": set.policies,
            "floor_mpps": rounded(mpps(1)),
            "drop_mpps": rounded(mpps(2)),
            "pass_mpps": rounded(mpps(3)),
            "nft_mpps": rounded(mpps(4)),
            "nft_pass_mpps": rounded(mpps(5)),
            "generator_only_mpps": rounded(mpps(0)),
            "memory_floor_mpps": rounded(mpps(6)),
            "drop_over_floor": rounded(mpps(2) / mpps(1)),
            // The memory floor against the floor: the most any exact per-flow table of the
            // flow cache's size could reach here; xipsec against the memory floor.
            "memory_floor_over_floor": rounded(mpps(6) / mpps(1)),
            "drop_over_memory_floor": rounded(mpps(2) / mpps(6)),
            // The same read in kmalloc'd (direct-mapped) arrays: what the memory floor would
            // be without most of its TLB misses.
            "direct_memory_floor_mpps": rounded(mpps(7)),
            "direct_memory_floor_over_floor": rounded(mpps(7) / mpps(1)),
            "drop_over_nft": rounded(mpps(2) / mpps(4)),
            "pass_over_nft": rounded(mpps(3) / mpps(5)),
            // The same runs by wall time: on a busy machine these include whatever else the
            // scheduler ran on the generator's core.
            "wall_clock": {
                "floor_mpps": rounded(wall[1]),
                "memory_floor_mpps": rounded(wall[6]),
                "direct_memory_floor_mpps": rounded(wall[7]),
                "drop_mpps": rounded(wall[2]),
                "pass_mpps": rounded(wall[3]),
                "nft_mpps": rounded(wall[4]),
                "nft_pass_mpps": rounded(wall[5]),
                "drop_over_floor": rounded(wall[2] / wall[1]),
            },
            // The target's arithmetic: per frame, the time over the floor's that 0.8x the floor
            // allows, beside what one read of a flow-cache-sized table (the memory floors) and
            // xipsec take over the floor's.
            "over_floor_ns_per_frame": {
                "allowed_at_0_8x_floor": rounded(over(1) / 4.0),
                "memory_floor": rounded(over(6)),
                "direct_memory_floor": rounded(over(7)),
                "xipsec_drop": rounded(over(2)),
            },
            "receiver_ns_per_frame": {
                "floor": rounded(ns(1)),
                "memory_floor": rounded(ns(6)),
                "direct_memory_floor": rounded(ns(7)),
                "xipsec_drop": rounded(ns(2)),
                "xipsec_pass": rounded(ns(3)),
                "nft_drop": rounded(ns(4)),
                "nft_pass": rounded(ns(5)),
            },
            "verdicts_counted": {
                "xipsec_drop_table": total(2),
                "xipsec_pass_table": total(3),
                "nft_drop_table": total(4),
                "nft_pass_table": total(5),
            },
            // Runs that were not measurements (frames lost at the receiving veth's ring, or
            // received on another CPU), repeated; every measured run classified every frame.
            "discarded_runs": {
                "floor": discarded_json(1),
                "memory_floor": discarded_json(6),
                "direct_memory_floor": discarded_json(7),
                "xipsec_drop_table": discarded_json(2),
                "xipsec_pass_table": discarded_json(3),
                "nft_drop_table": discarded_json(4),
                "nft_pass_table": discarded_json(5),
            },
            // Of the frames xipsec classified, the share whose verdict came from its flow cache.
            "xipsec_cache_hit_ratio": {
                "drop_table": rounded(ratio(hits[2], &totals[2])),
                "pass_table": rounded(ratio(hits[3], &totals[3])),
            },
            "load_seconds": { "nft": rounded(nft_load), "xipsec_daemon_start": rounded(xipsec_load) },
        }))
    }
}

/// `hits` over the frames of `counts`.
#[allow(
    clippy::cast_precision_loss,
    reason = "frame counts are far below 2^52"
)]
fn ratio(hits: u64, counts: &Counts) -> f64 {
    hits as f64 / counts.iter().sum::<u64>().max(1) as f64
}

/// xipsec's per-SP packet counters (`sp list`) summed per outcome, and its no-policy passes (its
/// pinned counters map).
fn xipsec_counts(lab: &Lab, names: &HashMap<String, Outcome>) -> anyhow::Result<Counts> {
    let list: serde_json::Value =
        serde_json::from_str(&lab.cli("b", &["sp", "list", "--formatter", "json"])?)
            .context("sp list JSON")?;
    let mut counts = [0; 5];
    for sp in list.as_array().into_iter().flatten() {
        let name = sp["name"].as_str().unwrap_or_default();
        let outcome = names
            .get(name)
            .ok_or_else(|| anyhow!("xipsec lists a policy the bench did not make: {name}"))?;
        let i = Outcome::ALL.iter().position(|o| o == outcome).unwrap_or(0);
        counts[i] += sp["packets"].as_u64().unwrap_or(0);
    }
    let counters = lab.pin_dir("b")?.join(abi::COUNTERS);
    let no_policy = bench_gen::pinned_counters(&counters, &[abi::Counter::PassNoPolicy as u32])?;
    counts[4] = no_policy.iter().sum();
    Ok(counts)
}

/// Check a run against the counts the policy set prescribes (`want`): every frame the receiver
/// counted got its prescribed verdict (no count exceeds its prescribed one), and every frame
/// sent was either counted or refused by the receiving veth's full ring (the kernel's count):
/// none is unaccounted for. With no overflow the counts equal `want` exactly (the sending side
/// is silent, see [`bench_gen::silence`], so the receiver sees the generator's frames only),
/// but for the receiving side's own packets xipsec's egress program counted (`Run::own`).
fn check(run: &Run, want: &Counts, config: Config) -> anyhow::Result<()> {
    let mut counts = run.counts;
    // The receiving side's own packets that xipsec's egress program counted (see `Run::own`).
    let own = counts[4].saturating_sub(want[4]).min(run.own);
    counts[4] -= own;
    if (0..5).any(|i| counts[i] > want[i]) {
        bail!(
            "{config:?}: the receiver counted {} where the policy set prescribes {} (and \
             {} packets of the receiving side's own)",
            counts_json(&run.counts),
            counts_json(want),
            run.own
        );
    }
    let (counted, sent) = (counts.iter().sum::<u64>(), want.iter().sum::<u64>());
    if counted + run.overflow != sent {
        bail!(
            "{config:?}: of {sent} frames the receiver counted {counted} ({}) and the receiving \
             veth's ring refused {}: {} unaccounted for",
            counts_json(&counts),
            run.overflow,
            sent.abs_diff(counted + run.overflow)
        );
    }
    Ok(())
}

/// The frames of `frames` (`frames` of table `drop`, flow `i % flows` each) per outcome.
fn expected(outcomes: &[Outcome], frames: u32) -> Counts {
    let mut counts = [0u64; 5];
    let n = outcomes.len() as u64;
    for (i, outcome) in outcomes.iter().enumerate() {
        let i = i as u64;
        let times = u64::from(frames) / n + u64::from(i < u64::from(frames) % n);
        let slot = Outcome::ALL.iter().position(|o| o == outcome).unwrap_or(0);
        counts[slot] += times;
    }
    counts
}

fn counts_json(counts: &Counts) -> serde_json::Value {
    Outcome::ALL
        .iter()
        .zip(counts)
        .map(|(o, c)| (o.name().to_string(), serde_json::json!(c)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

pub(crate) fn run(json: bool, args: &[String]) -> anyhow::Result<()> {
    let args = Args::try_parse_from(
        std::iter::once("bench filter".to_string()).chain(args.iter().cloned()),
    )?;
    if !util::is_root() {
        bail!("bench filter creates network namespaces and loads eBPF: run it as root");
    }
    if args.flows > 131_072 || args.flows == 0 || args.runs == 0 {
        bail!("--flows: 1 to 131072; --runs: at least 1");
    }
    crate::build::run()?;
    let mut bench = Bench {
        generator: Generator::load()?,
        floor: Lab::new("xbff", 0xbf1)?,
        nft: Lab::new("xbfn", 0xbf2)?,
        probe: Lab::new("xbfp", 0xbf4)?,
        probe_direct: Lab::new("xbfd", 0xbf5)?,
        xipsec: None,
        templates: HashMap::new(),
        args,
    };
    bench
        .generator
        .attach(PROG_FLOOR, &bench.floor.net.ns_b, &bench.floor.net.if_b)?;
    bench
        .generator
        .attach(PROG_PASS, &bench.nft.net.ns_b, &bench.nft.net.if_b)?;
    bench
        .generator
        .attach(PROG_PROBE, &bench.probe.net.ns_b, &bench.probe.net.if_b)?;
    bench.generator.attach(
        PROG_PROBE_DIRECT,
        &bench.probe_direct.net.ns_b,
        &bench.probe_direct.net.if_b,
    )?;
    let labs = [&bench.floor, &bench.nft, &bench.probe, &bench.probe_direct];
    for lab in labs {
        blackhole(lab);
        bench
            .templates
            .insert(lab.net.if_a.clone(), Bench::template(lab)?);
    }
    quiet(&labs)?;
    let mut rows = Vec::new();
    for policies in bench.args.policies.clone() {
        rows.push(bench.row(PolicySet::new(policies, bench.args.flows)?)?);
    }
    let report = serde_json::json!({
        "rows": rows,
        "flows": bench.args.flows,
        "frames_per_run": bench.args.frames,
        "runs": bench.args.runs,
        "frame_bytes": bench_gen::template([0; 6], [0; 6]).len(),
        "mpps_of": "one core: frames per CPU-second of the generator's core, which generates, \
                    transfers and receives every frame (the generating thread's CPU time plus its \
                    ksoftirqd's); wall_clock has the same runs by wall time",
        "traffic": "drop table: 1/2 band-1 discard hits, 1/2 band-2 discard hits; pass table: \
                    1/3 band-1 none hits, 1/3 band-2 none hits, 1/3 no policy; every band-1 hit \
                    also matches a band-2 policy of the other verdict; flows cycled; xipsec's \
                    262,144-entry flow cache holds both tables, so only a table's first pass \
                    misses it",
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(report: &serde_json::Value) {
    println!(
        "Live filtering, Mpps of one core (median of {} runs of {} frames, {} distinct flows per \
         table):",
        report["runs"], report["frames_per_run"], report["flows"]
    );
    println!(
        "{:>9} {:>8} {:>9} {:>10} {:>8} {:>8} {:>8} {:>9} {:>11} {:>10} {:>10} {:>10}",
        "policies",
        "floor",
        "mem floor",
        "direct mem",
        "drop",
        "pass",
        "nft drop",
        "nft pass",
        "drop/floor",
        "drop/nft",
        "pass/nft",
        "drop/mem"
    );
    for row in report["rows"].as_array().into_iter().flatten() {
        let f = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:>9} {:>8.3} {:>9.3} {:>10.3} {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>11.2} {:>10.2} {:>10.2} {:>10.2}",
            row["policies"].as_u64().unwrap_or(0),
            f("floor_mpps"),
            f("memory_floor_mpps"),
            f("direct_memory_floor_mpps"),
            f("drop_mpps"),
            f("pass_mpps"),
            f("nft_mpps"),
            f("nft_pass_mpps"),
            f("drop_over_floor"),
            f("drop_over_nft"),
            f("pass_over_nft"),
            f("drop_over_memory_floor"),
        );
    }
    println!("{}", report["traffic"].as_str().unwrap_or_default());
}
