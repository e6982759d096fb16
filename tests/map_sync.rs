//! Map sync: after random sequences of adds and removes, synced one change at a time as the
//! daemon does, the kernel maps read back equal what the model compiles to, and the packet
//! verdicts of those incrementally built maps still equal the reference classifier's.

use std::collections::BTreeSet;

use ipsec_tests::{
    maps::{kernel_meaning, model_meaning},
    random::{FrameGen, Rng, random_sp_args, sa_args},
    reference::expected,
};
use ipsec_user::{
    datapath::{KernelDatapath, LoadOptions},
    model::{Direction, SaRemoveArgs, SpRemoveArgs, Spd},
};
use xipsec_testkit::as_root;

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
        let known = |spi: u32| {
            spd.sas()
                .iter()
                .any(|sa| sa.spi == spi && spd.is_inbound_sa(&sa.name))
        };
        dp.clear_fragment_state().expect("clearing fragment state");
        let mut fragments = ipsec_user::model::FirstFragments::new();
        let mut frames = FrameGen::new();
        for i in 0..20_000 {
            let (direction, frame) = frames.frame(&mut rng, &spd);
            let want = expected(
                &spd,
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
    });
}
