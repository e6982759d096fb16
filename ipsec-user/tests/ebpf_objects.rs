//! What each eBPF object `build.rs` embeds carries: the production object (`ipsec`, loaded and
//! pinned by the daemon) has the two datapath programs and their maps and nothing of the
//! benchmark; the benchmark object (`ipsec-bench`) has the same programs plus the baselines of
//! `bench classify` and their map. Names are found in the objects' symbol and BTF string tables.

/// Production object, as `datapath/kernel.rs` embeds it.
static PRODUCTION: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ipsec"));
/// Benchmark object.
static BENCH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ipsec-bench"));

/// Every program and map of the production datapath.
const DATAPATH: [&str; 16] = [
    "xdp_ingress",
    "tc_egress",
    "XIPSEC_RULES",
    "XIPSEC_PREFIXES",
    "XIPSEC_LEN_PAIRS",
    "XIPSEC_FIELD_SETS",
    "XIPSEC_CONFIG",
    "XIPSEC_FLOW_CACHE",
    "XIPSEC_SP_STATS",
    "XIPSEC_COUNTERS",
    "XIPSEC_SA_BY_SPI",
    "XIPSEC_XSKS",
    "XIPSEC_XSK_SLOTS",
    "XIPSEC_SA_OUT_BY_SPI",
    "XIPSEC_ENGINE_SOCKETS",
    "XIPSEC_FRAG_STATE",
];

/// What only the benchmark may carry: its programs, its map, and the load-time switch that
/// once forced flow-cache misses.
const BENCH_ONLY: [&str; 4] = [
    "xdp_bench_parse",
    "xdp_bench_hash",
    "XIPSEC_BENCH_FLOWS",
    "FORCE_CACHE_MISS",
];

fn carries(object: &[u8], name: &str) -> bool {
    object.windows(name.len()).any(|w| w == name.as_bytes())
}

fn built(object: &[u8], which: &str) {
    assert!(
        object.starts_with(b"\x7fELF"),
        "the {which} eBPF object is not an ELF file: it was not built (AYA_BUILD_SKIP set?)"
    );
}

#[test]
fn production_object_has_the_datapath_and_nothing_of_the_benchmark() {
    built(PRODUCTION, "production");
    for name in DATAPATH {
        assert!(carries(PRODUCTION, name), "production object lacks {name}");
    }
    for name in BENCH_ONLY {
        assert!(
            !carries(PRODUCTION, name),
            "production object carries {name}"
        );
    }
}

#[test]
fn benchmark_object_has_the_datapath_and_its_baselines() {
    built(BENCH, "benchmark");
    for name in DATAPATH.iter().chain(&BENCH_ONLY[..3]) {
        assert!(carries(BENCH, name), "benchmark object lacks {name}");
    }
    assert!(
        !carries(BENCH, BENCH_ONLY[3]),
        "the cache-miss switch is gone"
    );
}
