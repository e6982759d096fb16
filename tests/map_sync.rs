//! Map sync: after random sequences of adds and removes, synced one change at a time as the
//! daemon does, the kernel maps read back equal what the model compiles to, and the packet
//! verdicts of those incrementally built maps still equal the reference classifier's. An SPD past
//! the classifier's step bound is refused with a clear error and changes nothing; random
//! policies of many shapes go through the daemon's CLI (the shape limit is gone).

use std::collections::BTreeSet;

use ipsec_tests::{
    maps::{kernel_meaning, model_meaning, pinned_meaning},
    random::{FrameGen, Rng, random_sp_args, random_spd, sa_args, shaped_sp_args},
    reference::expected,
};
use ipsec_user::{
    datapath::{DatapathError, KernelDatapath, LoadOptions, compile::CompileError},
    model::{Direction, SaRemoveArgs, SpRemoveArgs, Spd},
};
use xipsec_testkit::{as_root, daemon::Node, netns::VethPair};

#[test]
fn maps_equal_model_after_random_adds_and_removes() {
    as_root("maps_equal_model_after_random_adds_and_removes", || {
        let mut dp = KernelDatapath::load(&LoadOptions::default()).expect("loading");
        let mut spd = Spd::default();
        let mut rng = Rng::new(4242);
        for i in 0..8 {
            spd.add_sa(&sa_args(i)).expect("valid SA");
        }
        dp.sync(&spd).expect("sync");
        let mut next = 0usize;
        for step in 0..1500 {
            match rng.below(10) {
                0..=5 => {
                    let _ = spd.add_sp(&random_sp_args(&mut rng, &format!("p{next}"), 8));
                    next += 1;
                }
                6..=8 if !spd.sps().is_empty() => {
                    let victim = spd.sps()[rng.index(spd.sps().len())].name.clone();
                    spd.remove_sp(&SpRemoveArgs {
                        sp_name: Some(victim),
                        remove_all: false,
                    })
                    .expect("removing an existing SP");
                }
                _ => {
                    // Removing an SA only works when no SP holds it: both outcomes are fine.
                    let name = format!("sa{}", rng.below(8));
                    if spd
                        .remove_sa(&SaRemoveArgs {
                            sa_name: Some(name.clone()),
                            ..Default::default()
                        })
                        .is_ok()
                    {
                        let i: u32 = name[2..].parse().expect("sa index");
                        spd.add_sa(&sa_args(i)).expect("re-adding the SA");
                    }
                }
            }
            dp.sync(&spd).expect("sync after one change");
            if step % 100 == 99 {
                assert_eq!(
                    kernel_meaning(&dp),
                    model_meaning(&spd),
                    "maps differ from the model at step {step}"
                );
                let spis: BTreeSet<u32> = dp
                    .spis()
                    .expect("SPIs")
                    .into_iter()
                    .map(|(spi, _)| spi)
                    .collect();
                let want: BTreeSet<u32> = spd
                    .sas()
                    .iter()
                    .filter(|sa| spd.is_inbound_sa(&sa.name))
                    .map(|sa| sa.spi)
                    .collect();
                assert_eq!(spis, want, "SPI map differs at step {step}");
            }
        }
        assert!(
            spd.sps().len() > 100,
            "the sequence must build a sizeable SPD"
        );

        // The incrementally built maps classify like the reference.
        verdicts_follow(&mut dp, &spd, &mut rng, 20_000);
    });
}

/// The kernel's verdict (passed on or not) of `frame` in `direction`, from an empty flow cache
/// and fragment state.
fn kernel_passes(dp: &KernelDatapath, direction: Direction, frame: &[u8]) -> bool {
    match direction {
        Direction::In => dp.test_run_xdp(frame).expect("XDP run") == 2,
        Direction::Out => dp.test_run_tc(frame).expect("TC run") == 0,
    }
}

/// Inbound SPIs as the datapath holds them for `spd`.
fn inbound_spis(spd: &Spd) -> BTreeSet<u32> {
    spd.sas()
        .iter()
        .filter(|sa| spd.is_inbound_sa(&sa.name))
        .map(|sa| sa.spi)
        .collect()
}

/// A change is atomic for packets: with the new tables written but the epoch not yet flipped,
/// every packet gets the old SPD's verdict (and the old and new SPIs are both known: new ones
/// go in before the flip, old ones leave after it); right after the flip, the new SPD's.
#[test]
fn packets_during_a_sync_see_the_old_spd_then_the_new() {
    as_root("packets_during_a_sync_see_the_old_spd_then_the_new", || {
        let mut dp = KernelDatapath::load(&LoadOptions::default()).expect("loading");
        let mut rng = Rng::new(0xa70);
        for round in 0..6 {
            let old = random_spd(&mut rng, 400);
            let new = random_spd(&mut rng, 400);
            dp.sync(&old).expect("syncing the old spd");
            // Frames near the policies of both.
            let mut generator = FrameGen::new();
            let frames: Vec<(Direction, Vec<u8>)> = (0..1_500)
                .map(|i| generator.frame(&mut rng, if i % 2 == 0 { &old } else { &new }))
                .collect();
            // Checks `spd`'s verdicts; counts the frames on which `other` would differ.
            let check = |dp: &KernelDatapath,
                         (spd, other): (&Spd, &Spd),
                         spis: &BTreeSet<u32>,
                         when: &str| {
                let mut differs = 0;
                // As the kernel's fragment state (cleared before each pass), one per SPD.
                let mut fragments = ipsec_user::model::FirstFragments::new();
                let mut their_fragments = ipsec_user::model::FirstFragments::new();
                for (i, (direction, frame)) in frames.iter().enumerate() {
                    let want = expected(
                        spd,
                        &mut fragments,
                        (*direction, frame),
                        |spi| spis.contains(&spi),
                        false,
                        false,
                    );
                    let pass = kernel_passes(dp, *direction, frame);
                    assert_eq!(
                        pass, want.pass,
                        "round {round} {when}: frame {i} {direction:?}: want {want:?}"
                    );
                    let theirs = expected(
                        other,
                        &mut their_fragments,
                        (*direction, frame),
                        |spi| spis.contains(&spi),
                        false,
                        false,
                    );
                    differs += usize::from(theirs.pass != want.pass);
                }
                differs
            };
            let both: BTreeSet<u32> = inbound_spis(&old)
                .union(&inbound_spis(&new))
                .copied()
                .collect();
            let mut differs = 0;
            dp.clear_fragment_state().expect("clearing fragment state");
            dp.sync_pausing_before_flip(&new, |dp| {
                differs = check(dp, (&old, &new), &both, "before the flip");
            })
            .expect("syncing the new spd");
            dp.clear_fragment_state().expect("clearing fragment state");
            check(&dp, (&new, &old), &inbound_spis(&new), "after the flip");
            assert!(
                differs > 50,
                "round {round}: the two SPDs differ on only {differs} frames"
            );
        }
    });
}

/// Whether every one of `frames` random frames gets the reference's verdict under `spd`.
fn verdicts_follow(dp: &mut KernelDatapath, spd: &Spd, rng: &mut Rng, frames: usize) {
    dp.clear_flow_cache().expect("clearing the flow cache");
    dp.clear_fragment_state().expect("clearing fragment state");
    let mut fragments = ipsec_user::model::FirstFragments::new();
    let mut generator = FrameGen::new();
    for i in 0..frames {
        let (direction, frame) = generator.frame(rng, spd);
        let known = |spi: u32| {
            spd.sas()
                .iter()
                .any(|sa| sa.spi == spi && spd.is_inbound_sa(&sa.name))
        };
        let want = expected(
            spd,
            &mut fragments,
            (direction, &frame),
            known,
            false,
            false,
        );
        let pass = match direction {
            Direction::In => dp.test_run_xdp(&frame).expect("XDP run") == 2,
            Direction::Out => dp.test_run_tc(&frame).expect("TC run") == 0,
        };
        assert_eq!(pass, want.pass, "packet {i} {direction:?}: want {want:?}");
    }
}

#[test]
fn an_spd_past_the_step_bound_is_refused_and_changes_nothing() {
    as_root(
        "an_spd_past_the_step_bound_is_refused_and_changes_nothing",
        || {
            let mut dp = KernelDatapath::load(&LoadOptions::default()).expect("loading");
            let mut rng = Rng::new(77);
            let spd = random_spd(&mut rng, 300);
            dp.sync(&spd).expect("syncing a random spd");
            let before = kernel_meaning(&dp);

            // A source prefix at every length with every field combination: a packet inside the
            // longest could need 129 source lengths times 5 rules.
            let mut deep = spd.clone();
            let src = 0x2001_0db8_0001_0000_0000_0000_0000_0042_u128;
            for s in 0..=128u8 {
                for fields in [0u8, 1, 3, 5, 7] {
                    let name = format!("deep{s}-{fields}");
                    let args =
                        shaped_sp_args(&mut rng, &name, Direction::Out, (s, 0, fields), (src, 0));
                    // The random SPD may hold the same selector already: the rest nest deep enough.
                    let _ = deep.add_sp(&args);
                }
            }
            let err = dp.sync(&deep).expect_err("the step bound is exceeded");
            assert!(
                matches!(
                    err,
                    DatapathError::Compile(CompileError::TooManySteps { needed, max, .. }) if needed > max
                ),
                "{err:?}"
            );
            let message = err.to_string();
            assert!(
                message.contains("classifier steps") && message.contains("nested"),
                "unclear error: {message}"
            );
            assert_eq!(
                kernel_meaning(&dp),
                before,
                "a refused sync changed the maps"
            );
            verdicts_follow(&mut dp, &spd, &mut rng, 3_000);
            // And the datapath still takes the next valid change.
            dp.sync(&Spd::default()).expect("syncing the empty spd");
            assert_eq!(kernel_meaning(&dp), model_meaning(&Spd::default()));
        },
    );
}

/// The reproducer: 150 random policies, one CLI call each, prefix lengths /16 to /128
/// on both addresses and protocol and ports wildcarded at random, all inbound (more than 64
/// shapes, which the tuple-space classifier refused). All are accepted and in the kernel.
#[test]
fn one_hundred_fifty_random_policies_through_the_cli() {
    as_root("one_hundred_fifty_random_policies_through_the_cli", || {
        let net = VethPair::new("xcl", 0x7c);
        let node = Node::start(&net.ns_a, &net.if_a);
        let mut rng = Rng::new(150);
        let mut shapes = std::collections::BTreeSet::new();
        for i in 0..150 {
            let shape = (
                16 + rng.below_in(113u8),
                16 + rng.below_in(113u8),
                rng.pick(&[0u8, 1, 3, 5, 7]),
            );
            shapes.insert(shape);
            let addr = |rng: &mut Rng| {
                (0xfd_u128 << 120) | (u128::from(rng.next_u64()) << 56) | u128::from(rng.next_u64())
            };
            let addrs = (addr(&mut rng), addr(&mut rng));
            let args = shaped_sp_args(&mut rng, &format!("r{i}"), Direction::In, shape, addrs);
            let port = |p: &Option<String>| p.clone().unwrap_or_else(|| "any".into());
            let (src, dst) = (port(&args.sp_source), port(&args.sp_destination));
            let (sport, dport) = (port(&args.source_port), port(&args.destination_port));
            let proto = port(&args.upper_layer_protocol);
            // Inbound ipsec policies would need SAs: none and discard only.
            let action = if args.action.as_deref() == Some("discard") {
                "discard"
            } else {
                "none"
            };
            let name = format!("r{i}");
            node.sandbox.ok(&[
                "sp",
                "add",
                "--sp-source",
                &src,
                "--sp-destination",
                &dst,
                "--source-port",
                &sport,
                "--destination-port",
                &dport,
                "--upper-layer-protocol",
                &proto,
                "--flow-direction",
                "in",
                "--action",
                action,
                "--sp-name",
                &name,
            ]);
        }
        assert!(shapes.len() > 64, "only {} distinct shapes", shapes.len());
        let (_, sps) = node.sandbox.lists();
        assert_eq!(sps.as_array().expect("an array").len(), 150);
        let meaning = pinned_meaning(&node.sandbox.pin_dir());
        assert_eq!(
            meaning.1.len(),
            150 * ipsec_common::abi::RULE_KINDS as usize,
            "every policy is one rule of each kind in the kernel"
        );
    });
}
