//! Differential test: the loaded XDP and TC programs, run with `BPF_PROG_TEST_RUN`, against the
//! reference (model parser + linear-scan classifier) on random SPDs and packets biased to policy
//! edges, malformed frames included. Every packet runs twice (flow-cache miss, then hit); verdict,
//! matched policy (its counter moved by exactly one packet) and verdict counter must agree.

use ipsec_common::abi::{Counter, XIPSEC_MARK};
use ipsec_tests::{
    random::{Rng, random_frame, random_spd},
    reference::expected,
    require_root,
};
use ipsec_user::{
    daemon::esp_engine::XskReceiver,
    datapath::{KernelDatapath, LoadOptions},
    model::Direction,
};

const SPDS: u64 = 20;
const PACKETS_PER_SPD: usize = 10_000;
const MAX_POLICIES: usize = 2_000;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;
const TC_ACT_REDIRECT: i32 = 7;

fn counter(dp: &KernelDatapath, which: Counter) -> u64 {
    dp.counters()
        .expect("reading counters")
        .into_iter()
        .find(|(c, _)| *c == which)
        .map(|(_, v)| v)
        .expect("counter present")
}

fn sp_packets(dp: &KernelDatapath, id: u32) -> u64 {
    dp.sp_counters([id]).expect("reading SP counters")[&id].packets
}

#[test]
fn kernel_verdicts_equal_reference() {
    if !require_root("kernel_verdicts_equal_reference") {
        return;
    }
    let mut dp = KernelDatapath::load(&LoadOptions::default()).expect("loading the eBPF programs");
    // BPF_PROG_TEST_RUN runs XDP as if the frame arrived on queue 0 of the loopback device: an
    // engine socket bound there makes the hand-off to AF_XDP observable (the redirect itself
    // is not performed, only its return code).
    // SAFETY: a NUL-terminated name.
    let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    let socket = XskReceiver::open(lo, 0).expect("binding an AF_XDP socket to lo");
    let mut total = 0usize;
    let mut seen = std::collections::BTreeMap::<&'static str, usize>::new();
    for seed in 0..SPDS {
        let mut rng = Rng::new(seed);
        let spd = random_spd(&mut rng, MAX_POLICIES);
        dp.sync(&spd).expect("syncing a random SPD");
        // Half the SPDs run with an ESP engine attached (any ifindex will do: under
        // BPF_PROG_TEST_RUN a redirect only sets the return code), half without.
        let engine = seed % 2 == 1;
        // The second half of the SPDs runs with the AF_XDP socket registered.
        let xsk = seed >= SPDS / 2;
        if seed == SPDS / 2 {
            dp.set_esp_sockets(&[socket.binding()])
                .expect("registering the AF_XDP socket");
        }
        dp.set_esp_target(u32::from(engine))
            .expect("setting the ESP target");
        let known = |spi: u32| {
            spd.sas()
                .iter()
                .any(|sa| sa.spi == spi && spd.is_inbound_sa(&sa.name))
        };
        for i in 0..PACKETS_PER_SPD {
            let (direction, frame) = random_frame(&mut rng, &spd);
            let want = expected(&spd, direction, &frame, known, engine, xsk);
            *seen.entry(want.counter.name()).or_default() += 1;
            for round in ["miss", "hit"] {
                let before_counter = counter(&dp, want.counter);
                let before_sp = want.sp_id.map(|id| sp_packets(&dp, id));
                let pass = match direction {
                    Direction::In => {
                        let action = dp.test_run_xdp(&frame).expect("running XDP");
                        assert!(
                            action == XDP_PASS || action == XDP_DROP || action == XDP_REDIRECT,
                            "XDP action {action}"
                        );
                        assert_eq!(
                            action == XDP_REDIRECT,
                            want.counter == Counter::EspKnownSpiXsk,
                            "redirect to AF_XDP exactly for known-SPI ESP of the plain shape"
                        );
                        action != XDP_DROP
                    }
                    Direction::Out => {
                        let action = dp
                            .test_run_tc(&frame)
                            .unwrap_or_else(|e| panic!("running TC on {}: {e:?}", hex(&frame)));
                        assert!(
                            action == TC_ACT_OK
                                || action == TC_ACT_SHOT
                                || action == TC_ACT_REDIRECT,
                            "TC action {action}"
                        );
                        assert_eq!(
                            action == TC_ACT_REDIRECT,
                            want.counter == Counter::IpsecToEngine,
                            "redirect to the ESP engine exactly for ipsec verdicts with an engine"
                        );
                        action != TC_ACT_SHOT
                    }
                };
                let context = || {
                    format!(
                        "seed {seed} packet {i} ({round}) {direction:?} want {want:?} frame {}",
                        hex(&frame)
                    )
                };
                assert_eq!(pass, want.pass, "verdict differs: {}", context());
                assert_eq!(
                    counter(&dp, want.counter),
                    before_counter + 1,
                    "counter differs: {}",
                    context()
                );
                if let (Some(id), Some(before)) = (want.sp_id, before_sp) {
                    assert_eq!(
                        sp_packets(&dp, id),
                        before + 1,
                        "matched policy differs: {}",
                        context()
                    );
                }
                total += 1;
            }
        }
    }
    assert!(total >= 2 * SPDS as usize * PACKETS_PER_SPD);
    eprintln!("differential: {total} program runs agreed with the reference: {seen:?}");
    // The generator must reach every verdict, or the comparison proves less than it claims.
    // Our own marked ESP needs more than a test run (TC sees the mark only on packets the
    // engine sends); every ESP test depends on it (unmarked, the engine's ESP would be
    // redirected back into its TUN device).
    for c in Counter::ALL {
        if c != Counter::PassOwnEsp {
            assert!(
                seen.get(c.name()).copied().unwrap_or(0) >= 20,
                "verdict {} too rare: {seen:?}",
                c.name()
            );
        }
    }
}

#[test]
fn spd_change_is_seen_and_cache_invalidated() {
    if !require_root("spd_change_is_seen_and_cache_invalidated") {
        return;
    }
    use ipsec_tests::frames::{FrameSpec, l4_ports};
    use ipsec_user::model::{SpAddArgs, SpRemoveArgs, Spd};
    let mut dp = KernelDatapath::load(&LoadOptions::default()).expect("loading");
    let mut spd = Spd::default();
    dp.sync(&spd).expect("sync empty");
    let frame = FrameSpec::new(
        "2001:db8::1".parse().expect("addr"),
        "2001:db8::2".parse().expect("addr"),
        17,
        l4_ports(1000, 53, 8),
    )
    .build();
    assert_eq!(dp.test_run_xdp(&frame).expect("run"), XDP_PASS);
    assert_eq!(dp.test_run_xdp(&frame).expect("run (cached)"), XDP_PASS);
    spd.add_sp(&SpAddArgs {
        sp_source: Some("any".into()),
        sp_destination: Some("2001:db8::/64".into()),
        source_port: Some("any".into()),
        destination_port: Some("53".into()),
        upper_layer_protocol: Some("udp".into()),
        flow_direction: Some("in".into()),
        action: Some("discard".into()),
        sp_name: Some("dns".into()),
        ..Default::default()
    })
    .expect("valid SP");
    dp.sync(&spd).expect("sync discard");
    assert_eq!(
        dp.test_run_xdp(&frame).expect("run"),
        XDP_DROP,
        "cached pass must not survive the change"
    );
    spd.remove_sp(&SpRemoveArgs {
        sp_name: Some("dns".into()),
        remove_all: false,
    })
    .expect("remove");
    dp.sync(&spd).expect("sync removal");
    assert_eq!(dp.test_run_xdp(&frame).expect("run"), XDP_PASS);
    // Our own ESP leaves untouched whatever the SPD says: the mark short-cuts classification.
    assert_ne!(XIPSEC_MARK, 0);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
