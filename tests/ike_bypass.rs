//! The IKE bypass (RFC 7296 §2.23: IKE is never subject to the SPD, like neighbour discovery)
//! and ESP in UDP steering, on the loaded XDP and TC programs (`BPF_PROG_TEST_RUN`).
//!
//! An `ipsec` SP (inbound from the peer: clear traffic is dropped; outbound, no engine: fail
//! closed) and a `discard` SP (inbound, the rest of the prefix) cover all traffic between the
//! hosts. With the pair configured (`KernelDatapath::set_ike_peers`), UDP
//! 500 and non-ESP-marker UDP 4500 between them pass both ways (`pass_ike`); from or to an
//! unconfigured address, on another port, on 4500 without the marker, or behind an extension
//! header, the SPD decides (dropped). ESP in UDP to an encapsulation port with the bypass set
//! is steered by SPI only (a known SPI to ESP processing, an unknown one dropped), never passed
//! as IKE; a NAT-keepalive is dropped and counted. Removing the pair, and replacing the set,
//! take effect at once; a pair in both the old and the new set passes throughout.

use std::net::Ipv6Addr;

use ipsec_common::abi::Counter;
use ipsec_tests::frames::{Ext, FrameSpec};
use ipsec_user::{
    datapath::{KernelDatapath, LoadOptions},
    model::{SaAddArgs, SpAddArgs, Spd},
};
use xipsec_testkit::as_root;

const LOCAL: &str = "2001:db8:45::1";
const PEER: &str = "2001:db8:45::2";
const STRANGER: &str = "2001:db8:45::3";
const SPI: u32 = 0x4700;

mod xdp {
    pub(crate) const DROP: u32 = 1;
    pub(crate) const PASS: u32 = 2;
}

mod tc {
    pub(crate) const OK: i32 = 0;
    pub(crate) const SHOT: i32 = 2;
}

fn addr(text: &str) -> Ipv6Addr {
    text.parse().expect("an address")
}

/// A UDP datagram `src:sport -> dst:dport` carrying `data`, optionally behind a destination
/// options header.
fn udp(src: &str, dst: &str, (sport, dport): (u16, u16), data: &[u8], ext: bool) -> Vec<u8> {
    let len = u16::try_from(8 + data.len()).expect("small");
    let mut l4 = Vec::new();
    for word in [sport, dport, len, 0] {
        l4.extend_from_slice(&word.to_be_bytes());
    }
    l4.extend_from_slice(data);
    let mut spec = FrameSpec::new(addr(src), addr(dst), 17, l4);
    if ext {
        spec.ext.push(Ext::Options { kind: 60, len: 0 });
    }
    spec.build()
}

/// IKE behind the non-ESP marker (RFC 3948 §2.2), or plain IKE on 500: a header's worth.
fn ike(marker: bool) -> Vec<u8> {
    let mut data = if marker { vec![0; 4] } else { Vec::new() };
    data.extend_from_slice(&[0x11; 28]);
    data
}

fn esp_in_udp(spi: u32) -> Vec<u8> {
    let mut data = spi.to_be_bytes().to_vec();
    data.extend_from_slice(&[0, 0, 0, 1]);
    data.extend_from_slice(&[0xab; 32]);
    data
}

/// The SPD: SAs (one inbound with UDP encapsulation on 4500), a `discard` SP for everything
/// from PEER (inbound, and from STRANGER), an `ipsec` SP for everything to them (outbound).
fn spd() -> Spd {
    let mut spd = Spd::default();
    for (name, src, dst, spi) in [("in", PEER, LOCAL, SPI), ("out", LOCAL, PEER, SPI + 1)] {
        spd.add_sa(&SaAddArgs {
            sa_source: Some(src.into()),
            sa_destination: Some(dst.into()),
            sa_mode: Some("transport".into()),
            sa_spi: Some(format!("{spi:#x}")),
            encryption_algorithm: Some("aes128-gcm".into()),
            encryption_key: Some(format!("0x{:08x}{}", spi, "42".repeat(16))),
            sa_name: Some(name.into()),
            udp_encapsulation: Some("4500".into()),
            ..Default::default()
        })
        .expect("adding an sa");
    }
    let sp = |name: &str, direction: &str, action: &str, (src, dst): (&str, &str), sa| SpAddArgs {
        sp_source: Some(src.into()),
        sp_destination: Some(dst.into()),
        source_port: Some("any".into()),
        destination_port: Some("any".into()),
        upper_layer_protocol: Some("any".into()),
        flow_direction: Some(direction.into()),
        action: Some(action.into()),
        sp_mode: Some("transport".into()),
        sa_name: sa,
        sp_name: Some(name.into()),
        ..Default::default()
    };
    let net = "2001:db8:45::/64";
    for args in [
        sp(
            "esp-in",
            "in",
            "ipsec",
            (&format!("{PEER}/128"), &format!("{LOCAL}/128")),
            Some("in".into()),
        ),
        sp("drop-in", "in", "discard", (net, net), None),
        sp(
            "protect-out",
            "out",
            "ipsec",
            (net, net),
            Some("out".into()),
        ),
    ] {
        spd.add_sp(&args).expect("adding an sp");
    }
    spd
}

fn counter(dp: &KernelDatapath, which: Counter) -> u64 {
    dp.counters()
        .expect("reading counters")
        .into_iter()
        .find(|(c, _)| *c == which)
        .map_or(0, |(_, n)| n)
}

/// Runs `frame` inbound (XDP) and checks the action and the one counter that moves.
fn inbound(dp: &KernelDatapath, frame: &[u8], pass: bool, moved: Counter, what: &str) {
    let before = counter(dp, moved);
    let action = dp.test_run_xdp(frame).expect("running XDP");
    assert_eq!(
        action,
        if pass { xdp::PASS } else { xdp::DROP },
        "inbound {what}: XDP action {action}"
    );
    assert_eq!(
        counter(dp, moved),
        before + 1,
        "inbound {what}: {} did not move",
        moved.name()
    );
}

/// Runs `frame` outbound (TC, no engine) and checks the action and the counter that moves.
fn outbound(dp: &KernelDatapath, frame: &[u8], pass: bool, moved: Counter, what: &str) {
    let before = counter(dp, moved);
    let action = dp.test_run_tc(frame).expect("running TC");
    assert_eq!(
        action,
        if pass { tc::OK } else { tc::SHOT },
        "outbound {what}: TC action {action}"
    );
    assert_eq!(
        counter(dp, moved),
        before + 1,
        "outbound {what}: {} did not move",
        moved.name()
    );
}

#[test]
fn udp_ike_between_configured_peers_bypasses_the_spd_and_nothing_else_does() {
    as_root(
        "udp_ike_between_configured_peers_bypasses_the_spd_and_nothing_else_does",
        || {
            let mut dp =
                KernelDatapath::load(&LoadOptions::default()).expect("loading the programs");
            dp.sync(&spd()).expect("syncing the spd");
            dp.set_ike_peers(&[(addr(LOCAL), addr(PEER))])
                .expect("setting the ike peers");
            assert_eq!(
                dp.ike_peers().expect("reading the peers"),
                [(addr(LOCAL), addr(PEER))]
            );

            // IKE between the pair: both ways, 500 and 4500-with-marker, either end's port.
            for (ports, marker) in [
                ((500, 500), false),
                ((4500, 4500), true),
                ((31_000, 4500), true),
                ((4500, 500), false),
            ] {
                let what = format!("ike {ports:?}");
                inbound(
                    &dp,
                    &udp(PEER, LOCAL, ports, &ike(marker), false),
                    true,
                    Counter::PassIke,
                    &what,
                );
                outbound(
                    &dp,
                    &udp(LOCAL, PEER, ports, &ike(marker), false),
                    true,
                    Counter::PassIke,
                    &what,
                );
            }
            // The SPD decides everything else: an unconfigured address either way, another port,
            // 4500 without the marker (and no ESP of ours), IKE behind an extension header.
            inbound(
                &dp,
                &udp(STRANGER, LOCAL, (500, 500), &ike(false), false),
                false,
                Counter::DropDiscard,
                "ike from a stranger",
            );
            outbound(
                &dp,
                &udp(LOCAL, STRANGER, (500, 500), &ike(false), false),
                false,
                Counter::DropIpsecUnavailable,
                "ike to a stranger",
            );
            inbound(
                &dp,
                &udp(PEER, LOCAL, (501, 4501), &ike(false), false),
                false,
                Counter::DropIpsecClear,
                "another port",
            );
            outbound(
                &dp,
                &udp(LOCAL, PEER, (4501, 501), &ike(true), false),
                false,
                Counter::DropIpsecUnavailable,
                "another port",
            );
            outbound(
                &dp,
                &udp(LOCAL, PEER, (4500, 4500), &esp_in_udp(0x9999), false),
                false,
                Counter::DropIpsecUnavailable,
                "4500 without the marker",
            );
            inbound(
                &dp,
                &udp(PEER, LOCAL, (500, 500), &ike(false), true),
                false,
                Counter::DropIpsecClear,
                "ike behind an extension header",
            );
            // ESP in UDP to the encapsulation port: steering only, never the bypass.
            inbound(
                &dp,
                &udp(PEER, LOCAL, (4500, 4500), &esp_in_udp(SPI), false),
                true,
                Counter::EspKnownSpi,
                "esp in udp, our spi",
            );
            inbound(
                &dp,
                &udp(PEER, LOCAL, (4500, 4500), &esp_in_udp(0x9999), false),
                false,
                Counter::DropUnknownSpi,
                "esp in udp, unknown spi",
            );
            inbound(
                &dp,
                &udp(STRANGER, LOCAL, (4500, 4500), &esp_in_udp(0x9999), false),
                false,
                Counter::DropUnknownSpi,
                "esp in udp from a stranger",
            );
            // A NAT-keepalive is dropped, counted; a marker too short to be IKE is classified.
            inbound(
                &dp,
                &udp(PEER, LOCAL, (4500, 4500), &[0xff], false),
                false,
                Counter::DropNatKeepalive,
                "keepalive",
            );
            inbound(
                &dp,
                &udp(PEER, LOCAL, (4500, 4500), &[0, 0, 0], false),
                false,
                Counter::DropIpsecClear,
                "three bytes",
            );

            // Replacing the set: the kept pair passes, the dropped one no longer does.
            let other = (addr(LOCAL), addr(STRANGER));
            dp.set_ike_peers(&[(addr(LOCAL), addr(PEER)), other])
                .expect("adding a pair");
            inbound(
                &dp,
                &udp(STRANGER, LOCAL, (500, 500), &ike(false), false),
                true,
                Counter::PassIke,
                "ike from the new peer",
            );
            dp.set_ike_peers(&[other]).expect("replacing the set");
            inbound(
                &dp,
                &udp(STRANGER, LOCAL, (500, 500), &ike(false), false),
                true,
                Counter::PassIke,
                "ike from the kept peer",
            );
            inbound(
                &dp,
                &udp(PEER, LOCAL, (500, 500), &ike(false), false),
                false,
                Counter::DropIpsecClear,
                "ike from a removed peer",
            );
            dp.set_ike_peers(&[]).expect("clearing the set");
            assert!(dp.ike_peers().expect("reading the peers").is_empty());
            outbound(
                &dp,
                &udp(LOCAL, STRANGER, (500, 500), &ike(false), false),
                false,
                Counter::DropIpsecUnavailable,
                "ike after clearing",
            );

            // Without an SA using 4500, ESP in UDP to it is just UDP: the SPD decides.
            dp.sync(&Spd::default()).expect("emptying the spd");
            inbound(
                &dp,
                &udp(PEER, LOCAL, (4500, 4500), &esp_in_udp(SPI), false),
                true,
                Counter::PassNoPolicy,
                "no encapsulation port",
            );
        },
    );
}
