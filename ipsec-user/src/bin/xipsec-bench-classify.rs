//! `cargo xtask bench classify`: ns/packet of the loaded XDP classifier via `BPF_PROG_TEST_RUN`,
//! beside two baselines measured in the same run: parse-and-pass, and parse plus one exact-match
//! hash lookup of the flow. Medians of `--runs` runs of `--repeat` repetitions each.
//!
//! Hit and miss: `BPF_PROG_TEST_RUN` repeats one packet, so after its first repetition every
//! lookup hits. The "hit" column is that (`--repeat` repetitions); the miss is measured one
//! packet at a time, `--shots` times: the flow cache is emptied, one run misses (a real lookup
//! that finds nothing, the classification, the insert), and one more run of the same packet
//! hits; both single runs are timed the same way, so "miss" and "hit (single)" compare like
//! with like. Every single run's verdict is checked, and the benchmark fails unless the median
//! miss costs at least the median single hit.
//!
//! Userspace: the "user ns" column is `CompiledSpd::classify` of the same packet's flow over the
//! same SPD (what the ESP engine does on a flow-cache miss: the same tables, searched without a
//! kernel), median of `--runs` runs of `--repeat` lookups; its verdict is checked like the
//! kernel's.
//!
//! SPDs: `--policies` policies over `--masks` masks (distinct prefix-length pairs, all with exact
//! protocol and ports). The benchmark packet matches one policy under the worst-ranked mask. The
//! smallest SPD with M masks has M policies, so the "1 policy" row of M masks installs M
//! policies.
//!
//! Shape rows (`--shapes`): 10,000 inbound policies (`--shape-policies`) spread over S distinct
//! shapes, prefix lengths drawn uniformly from /16 to /128 on both addresses and protocol and
//! ports wildcarded at random, at random addresses of fd00::/8. The miss is the median of
//! `--shots` single runs of distinct random packets of fd00::/8 (each a flow-cache miss: the
//! flows never repeat), each verdict checked against the userspace classifier; the hit is the
//! last of them repeated. In `--json` they are rows like the others (`"masks"` = S) marked
//! `"spread": true`.

use std::{hint::black_box, net::Ipv6Addr, time::Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use ipsec_common::abi::{self, DIR_IN, FlowKey};
use ipsec_user::{
    classifier::CompiledSpd,
    datapath::{KernelDatapath, LoadOptions},
    model::{Direction, Flow, L4, SpAddArgs, Spd},
};

#[derive(Parser)]
#[command(about = "Benchmark the XDP classifier (ns/packet, BPF_PROG_TEST_RUN)")]
struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Runs per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Repetitions per run.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Policy counts.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 1_000, 10_000, 100_000])]
    policies: Vec<usize>,
    /// Single-run miss/hit pairs per row (the medians are reported).
    #[arg(long, default_value_t = 2_000)]
    shots: usize,
    /// Mask counts.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16])]
    masks: Vec<usize>,
    /// Shape counts of the shape rows (0 alone: none).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64, 256, 1_024, 4_096])]
    shapes: Vec<usize>,
    /// Policies of each shape row.
    #[arg(long, default_value_t = 10_000)]
    shape_policies: usize,
    /// Policies (over 4,096 shapes) of the sync timing: one sync of them all, then adding one
    /// `::/0` policy on top (0: not measured).
    #[arg(long, default_value_t = 100_000)]
    sync_policies: usize,
}

/// Seconds to sync `policies` spread policies into an empty datapath, and to add one `::/0`
/// policy on top of them once both generations hold them (the steady state of a CLI change).
fn sync_times(
    dp: &mut KernelDatapath,
    policies: usize,
    rng: &mut XorShift,
) -> anyhow::Result<(f64, f64)> {
    dp.sync(&Spd::default())?;
    dp.sync(&Spd::default())?;
    let mut spd = spread_spd(policies, 4_096, rng);
    let start = Instant::now();
    dp.sync(&spd)?;
    let full = start.elapsed().as_secs_f64();
    // The other generation catches up.
    dp.sync(&spd)?;
    spd.add_sp(&SpAddArgs {
        sp_source: Some("::/0".into()),
        sp_destination: Some("::/0".into()),
        source_port: Some("any".into()),
        destination_port: Some("any".into()),
        upper_layer_protocol: Some("any".into()),
        flow_direction: Some("in".into()),
        action: Some("none".into()),
        sp_name: Some("catch-all".into()),
        ..Default::default()
    })
    .context("adding the catch-all")?;
    let start = Instant::now();
    dp.sync(&spd)?;
    Ok((full, start.elapsed().as_secs_f64()))
}

/// A small xorshift generator: reproducible SPDs and packets without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// A random address of fd00::/8.
    fn addr(&mut self) -> Ipv6Addr {
        let bits = (u128::from(self.next()) << 64) | u128::from(self.next());
        Ipv6Addr::from((0xfd_u128 << 120) | (bits >> 8))
    }
}

/// UDP `src`:`sport` -> `dst`:`dport`, as the benchmark sends it.
fn udp_frame(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 8, 0, 0]);
    f
}

/// `policies` inbound `none`/`discard` policies over `shapes` distinct shapes (see the module
/// doc), at random addresses of fd00::/8.
fn spread_spd(policies: usize, shapes: usize, rng: &mut XorShift) -> Spd {
    const COMBOS: [(bool, bool, bool); 5] = [
        (false, false, false),
        (true, false, false),
        (true, true, false),
        (true, false, true),
        (true, true, true),
    ];
    let mut chosen = std::collections::BTreeSet::new();
    while chosen.len() < shapes.min(113 * 113 * COMBOS.len()) {
        let s = 16 + u8::try_from(rng.below(113)).unwrap_or(0);
        let d = 16 + u8::try_from(rng.below(113)).unwrap_or(0);
        chosen.insert((s, d, usize::try_from(rng.below(5)).unwrap_or(0)));
    }
    let chosen: Vec<_> = chosen.into_iter().collect();
    let mut spd = Spd::default();
    let mut attempts = 0usize;
    while spd.sps().len() < policies && attempts < 20 * policies {
        let (s, d, combo) = chosen[attempts % chosen.len()];
        attempts += 1;
        let (proto, sport, dport) = COMBOS[combo];
        let port = |on: bool, rng: &mut XorShift| {
            if on {
                (1 + rng.below(65_000)).to_string()
            } else {
                "any".into()
            }
        };
        let (src, dst) = (rng.addr(), rng.addr());
        let args = SpAddArgs {
            sp_source: Some(masked(src, s)),
            sp_destination: Some(masked(dst, d)),
            source_port: Some(port(sport, rng)),
            destination_port: Some(port(dport, rng)),
            upper_layer_protocol: Some(if proto { "udp" } else { "any" }.into()),
            flow_direction: Some("in".into()),
            action: Some(if rng.below(2) == 0 { "none" } else { "discard" }.into()),
            sp_name: Some(format!("s{attempts}")),
            ..Default::default()
        };
        // A repeated selector is refused by the model: draw again.
        let _ = spd.add_sp(&args);
    }
    spd
}

/// One shape row: median ns of a flow-cache miss of random packets, of the hit right after a
/// miss, of a repeated hit, and of the userspace classifier on the same flows.
fn shape_row(
    dp: &mut KernelDatapath,
    spd: &Spd,
    args: &Args,
    rng: &mut XorShift,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    dp.sync(spd)?;
    dp.clear_flow_cache()?;
    let compiled = CompiledSpd::build(spd).context("compiling the spd for userspace")?;
    let (mut misses, mut hits, mut users) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = Vec::new();
    for _ in 0..args.shots.max(1) {
        let (src, dst) = (rng.addr(), rng.addr());
        let (sport, dport) = (
            u16::try_from(rng.below(65_536)).unwrap_or(0),
            u16::try_from(rng.below(65_536)).unwrap_or(0),
        );
        let frame = udp_frame(src, dst, sport, dport);
        let flow = Flow {
            src,
            dst,
            next_header: 17,
            l4: L4::Ports {
                src: sport,
                dst: dport,
            },
        };
        let want = compiled.classify(Direction::In, &flow);
        let pass = want.is_none_or(|sp| sp.action == ipsec_user::model::Action::None);
        for (round, samples) in [("miss", &mut misses), ("hit", &mut hits)] {
            let (action, took) = dp.run(abi::PROG_XDP_INGRESS, &frame, 1)?;
            if (action == 2) != pass {
                bail!(
                    "{round} of a random packet gave action {action}, the userspace classifier {want:?}"
                );
            }
            samples.push(took.as_secs_f64() * 1e9);
        }
        let start = Instant::now();
        for _ in 0..100 {
            black_box(compiled.classify(Direction::In, black_box(&flow)));
        }
        users.push(start.elapsed().as_secs_f64() * 1e9 / 100.0);
        last = frame;
    }
    let hit = measure(dp, abi::PROG_XDP_INGRESS, &last, args)?;
    Ok((median(misses), median(hits), hit, median(users)))
}

const SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const SPORT: u16 = 1000;
const DPORT: u16 = 53;

fn frame() -> Vec<u8> {
    udp_frame(SRC, DST, SPORT, DPORT)
}

fn flow() -> FlowKey {
    FlowKey {
        src: SRC.octets(),
        dst: DST.octets(),
        sport: SPORT,
        dport: DPORT,
        proto: 17,
        dir: DIR_IN,
        flags: 0,
        _pad: 0,
    }
}

/// The benchmark packet's flow as the userspace classifier takes it.
fn model_flow() -> Flow {
    Flow {
        src: SRC,
        dst: DST,
        next_header: 17,
        l4: L4::Ports {
            src: SPORT,
            dst: DPORT,
        },
    }
}

/// Median ns of one `CompiledSpd::classify` of the benchmark flow over `spd`, which must find
/// the benchmark's `match` policy.
fn measure_user(spd: &Spd, args: &Args) -> anyhow::Result<f64> {
    let compiled = CompiledSpd::build(spd).context("compiling the spd for userspace")?;
    let flow = model_flow();
    let found = compiled
        .classify(Direction::In, &flow)
        .map(|sp| sp.name.as_str());
    if found != Some("match") {
        bail!("the userspace classifier found {found:?}, not the benchmark's policy");
    }
    let mut samples = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let start = Instant::now();
        for _ in 0..args.repeat {
            black_box(compiled.classify(Direction::In, black_box(&flow)));
        }
        samples.push(start.elapsed().as_secs_f64() * 1e9 / f64::from(args.repeat.max(1)));
    }
    Ok(median(samples))
}

/// Shapes of the `--masks` rows: (source length, destination length) pairs of [`shape`].
const MASK_ROW_SHAPES: usize = 64;

/// Shape `k` (below [`MASK_ROW_SHAPES`]): (source length, destination length); the higher `k`,
/// the worse-ranked.
fn shape(k: usize) -> (u8, u8) {
    let k = u8::try_from(k % MASK_ROW_SHAPES).unwrap_or(0);
    (128 - 8 * (k / 4), 128 - 8 * (k % 4))
}

fn masked(addr: Ipv6Addr, len: u8) -> String {
    let bits = u128::from(addr) & (u128::MAX << (128 - u32::from(len)));
    format!("{}/{len}", Ipv6Addr::from(bits))
}

fn spd(policies: usize, masks: usize) -> anyhow::Result<Spd> {
    let mut spd = Spd::default();
    let mut state = 0x1234_5678_9abc_def0_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (src_len, dst_len) = shape(masks - 1);
    let add = |spd: &mut Spd, args: SpAddArgs| spd.add_sp(&args).map(|_| ());
    add(
        &mut spd,
        SpAddArgs {
            sp_source: Some(masked(SRC, src_len)),
            sp_destination: Some(masked(DST, dst_len)),
            source_port: Some(SPORT.to_string()),
            destination_port: Some(DPORT.to_string()),
            upper_layer_protocol: Some("udp".into()),
            flow_direction: Some("in".into()),
            action: Some("none".into()),
            sp_name: Some("match".into()),
            ..Default::default()
        },
    )
    .context("adding the matching policy")?;
    let mut i = 0usize;
    while spd.sps().len() < policies.max(masks) {
        let (s, d) = shape(i % masks);
        let r = next();
        let src = Ipv6Addr::from((0xfd00_u128 << 112) | u128::from(r));
        let dst = Ipv6Addr::from((0xfd01_u128 << 112) | u128::from(next()));
        let _ = add(
            &mut spd,
            SpAddArgs {
                sp_source: Some(masked(src, s)),
                sp_destination: Some(masked(dst, d)),
                source_port: Some((1 + r % 65_000).to_string()),
                destination_port: Some((1 + (r >> 20) % 65_000).to_string()),
                upper_layer_protocol: Some(if r & 1 == 0 { "udp" } else { "tcp" }.into()),
                flow_direction: Some("in".into()),
                action: Some(if r & 2 == 0 { "none" } else { "discard" }.into()),
                sp_name: Some(format!("p{i}")),
                ..Default::default()
            },
        );
        i += 1;
    }
    Ok(spd)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median ns/packet of program `name` on `frame`.
fn measure(
    dp: &KernelDatapath,
    name: &'static str,
    frame: &[u8],
    args: &Args,
) -> anyhow::Result<f64> {
    dp.run(name, frame, 10_000)?;
    let mut samples = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        // The kernel's own average per repetition: it stops its clock while the run yields the
        // CPU, where a wall clock would count other processes' time on a busy machine.
        let (_, per_run) = dp.run(name, frame, args.repeat)?;
        samples.push(per_run.as_secs_f64() * 1e9);
    }
    Ok(median(samples))
}

/// Median ns of one run of the classifier on `frame` after emptying the flow cache (a miss),
/// and of the run right after it (a hit), over `shots` pairs. Each run must pass the packet
/// (`none` policy: `XDP_PASS`).
fn miss_and_hit(dp: &mut KernelDatapath, frame: &[u8], shots: usize) -> anyhow::Result<(f64, f64)> {
    let (mut misses, mut hits) = (Vec::with_capacity(shots), Vec::with_capacity(shots));
    for _ in 0..shots.max(1) {
        dp.clear_flow_cache()?;
        let (action, miss) = dp.run(abi::PROG_XDP_INGRESS, frame, 1)?;
        if action != 2 {
            bail!("a cache miss gave action {action}, not XDP_PASS: the miss path is wrong");
        }
        let (action, hit) = dp.run(abi::PROG_XDP_INGRESS, frame, 1)?;
        if action != 2 {
            bail!("a cache hit gave action {action}, not XDP_PASS: the cached verdict is wrong");
        }
        misses.push(miss.as_secs_f64() * 1e9);
        hits.push(hit.as_secs_f64() * 1e9);
    }
    Ok((median(misses), median(hits)))
}

/// One `--json` row: the figures rounded to a tenth of a nanosecond.
fn row(
    policies: usize,
    masks: usize,
    [hit, hit_single, miss, user]: [f64; 4],
) -> serde_json::Value {
    let tenth = |ns: f64| (ns * 10.0).round() / 10.0;
    serde_json::json!({
        "policies": policies,
        "masks": masks,
        "hit_ns": tenth(hit),
        "hit_single_ns": tenth(hit_single),
        "miss_ns": tenth(miss),
        "user_ns": tenth(user),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(bad) = args.masks.iter().find(|&&m| m == 0 || m > MASK_ROW_SHAPES) {
        bail!("--masks {bad}: use 1 to {MASK_ROW_SHAPES}");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the classify benchmark loads eBPF programs: run it as root");
    }
    let frame = frame();
    let mut hit = KernelDatapath::load(&LoadOptions {
        benchmark: true,
        ..LoadOptions::default()
    })
    .context("loading the benchmark object")?;
    hit.insert_bench_flow(&flow())?;
    // The baselines must take the path they claim to measure: parsed, and found in the table.
    let (action, _) = hit.run(abi::bench::PROG_HASH, &frame, 1)?;
    if action != 2 {
        bail!(
            "the hash baseline missed its flow (action {action}): its key differs from the parser's"
        );
    }
    let parse_ns = measure(&hit, abi::bench::PROG_PARSE, &frame, &args)?;
    let hash_ns = measure(&hit, abi::bench::PROG_HASH, &frame, &args)?;

    let mut rows = Vec::new();
    for &masks in &args.masks {
        for &policies in &args.policies {
            let spd = spd(policies, masks)?;
            hit.sync(&spd)?;
            let (action, _) = hit.run(abi::PROG_XDP_INGRESS, &frame, 1)?;
            if action != 2 {
                bail!("benchmark packet did not pass (action {action}): the SPD is wrong");
            }
            let hit_ns = measure(&hit, abi::PROG_XDP_INGRESS, &frame, &args)?;
            let (miss_ns, hit_single_ns) = miss_and_hit(&mut hit, &frame, args.shots)?;
            let user_ns = measure_user(&spd, &args)?;
            if miss_ns < hit_single_ns {
                bail!(
                    "{policies} policies / {masks} masks: a miss ({miss_ns} ns) measured cheaper \
                     than a hit ({hit_single_ns} ns): the miss path did not do its work"
                );
            }
            rows.push(row(
                spd.sps().len(),
                masks,
                [hit_ns, hit_single_ns, miss_ns, user_ns],
            ));
            if !args.json {
                eprintln!("measured {} policies / {masks} masks", spd.sps().len());
            }
        }
    }
    let mut rng = XorShift(0x5eed_5a9e_0f0c_1a55);
    let mut shape_rows = Vec::new();
    for &shapes in args.shapes.iter().filter(|&&s| s > 0) {
        let spd = spread_spd(args.shape_policies, shapes, &mut rng);
        let (miss_ns, hit_single_ns, hit_ns, user_ns) = shape_row(&mut hit, &spd, &args, &mut rng)?;
        let mut row = row(
            spd.sps().len(),
            shapes,
            [hit_ns, hit_single_ns, miss_ns, user_ns],
        );
        row["spread"] = serde_json::Value::Bool(true);
        if !args.json {
            eprintln!("measured {} policies / {shapes} shapes", spd.sps().len());
        }
        shape_rows.push(row.clone());
        rows.push(row);
    }
    let (sync_s, catch_all_s) = if args.sync_policies > 0 {
        sync_times(&mut hit, args.sync_policies, &mut rng)?
    } else {
        (0.0, 0.0)
    };
    let report = serde_json::json!({
        "sync_policies": args.sync_policies,
        "sync_s": (sync_s * 1000.0).round() / 1000.0,
        "add_catch_all_s": (catch_all_s * 10_000.0).round() / 10_000.0,
        "baseline_parse_ns": (parse_ns * 10.0).round() / 10.0,
        "baseline_hash_ns": (hash_ns * 10.0).round() / 10.0,
        "runs": args.runs,
        "repeat": args.repeat,
        "shots": args.shots,
        "rows": rows,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "baseline parse-only: {parse_ns:.1} ns/packet; parse + one hash lookup: {hash_ns:.1} ns/packet"
    );
    println!(
        "hit: {} repetitions of one packet; 1-hit and miss: single runs, median of {} (cache \
         emptied before each miss)",
        args.repeat, args.shots
    );
    println!(
        "{:>9} {:>6} {:>8} {:>11} {:>9} {:>9} {:>12} {:>13} {:>8}",
        "policies",
        "masks",
        "hit ns",
        "1-hit ns",
        "miss ns",
        "hit/hash",
        "hit/1-policy",
        "miss/1-policy",
        "user ns"
    );
    for row in rows.iter().filter(|r| r.get("spread").is_none()) {
        let masks = row["masks"].as_u64().unwrap_or(0);
        let first = rows
            .iter()
            .find(|r| r["masks"].as_u64() == Some(masks))
            .unwrap_or(row);
        let h = row["hit_ns"].as_f64().unwrap_or(0.0);
        let m = row["miss_ns"].as_f64().unwrap_or(0.0);
        println!(
            "{:>9} {:>6} {:>8.1} {:>11.1} {:>9.1} {:>9.2} {:>12.2} {:>13.2} {:>8.1}",
            row["policies"].as_u64().unwrap_or(0),
            masks,
            h,
            row["hit_single_ns"].as_f64().unwrap_or(0.0),
            m,
            h / hash_ns,
            h / first["hit_ns"].as_f64().unwrap_or(h),
            m / first["miss_ns"].as_f64().unwrap_or(m),
            row["user_ns"].as_f64().unwrap_or(0.0)
        );
    }
    if args.sync_policies > 0 {
        println!(
            "sync of {} policies (4,096 shapes) into an empty datapath: {sync_s:.2} s; adding one \
             ::/0 policy on top: {:.1} ms",
            args.sync_policies,
            catch_all_s * 1000.0
        );
    }
    if let Some(first) = shape_rows.first() {
        println!(
            "shapes: random packets (each a cache miss), policies spread over S shapes (/16-/128 \
             both sides, protocol and ports wildcarded at random)"
        );
        println!(
            "{:>9} {:>6} {:>8} {:>11} {:>9} {:>9} {:>12} {:>8}",
            "policies",
            "shapes",
            "hit ns",
            "1-hit ns",
            "miss ns",
            "hit/hash",
            "miss/1-shape",
            "user ns"
        );
        let first_miss = first["miss_ns"].as_f64().unwrap_or(1.0);
        for row in &shape_rows {
            let h = row["hit_ns"].as_f64().unwrap_or(0.0);
            let m = row["miss_ns"].as_f64().unwrap_or(0.0);
            println!(
                "{:>9} {:>6} {:>8.1} {:>11.1} {:>9.1} {:>9.2} {:>12.2} {:>8.1}",
                row["policies"].as_u64().unwrap_or(0),
                row["masks"].as_u64().unwrap_or(0),
                h,
                row["hit_single_ns"].as_f64().unwrap_or(0.0),
                m,
                h / hash_ns,
                m / first_miss,
                row["user_ns"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}
