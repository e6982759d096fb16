//! AES-GCM with a manual key never repeats an IV under that key (RFC 4106 §8), on the wire of a
//! real daemon: the same key is installed four times (added; removed and re-added under the
//! same name and SPI; re-added under another name and SPI; the daemon killed with -9 and
//! restarted on its state) and the IVs of the ESP captured on the far side keep rising, each
//! keying above every IV sent before. Also the CLI side of AES-GCM: `sa add` prints RFC 4106's
//! warning exactly once (and not for a CBC SA), `sa list` shows integrity `none`, and
//! `--integrity-algorithm` with GCM, or a second GCM SA with the same AES key, is refused with
//! nothing changed.

use std::process::Output;

use xipsec_testkit::{
    as_root, capture::Capture, cli::SpArgs, daemon::Node, netns::VethPair, traffic,
};

/// The AES-128 key and its 4-byte salt (RFC 4106 §8.1): 20 bytes.
const GCM_KEY: &str = "0x000102030405060708090a0b0c0d0e0fa0a1a2a3";
const PORT: &str = "9107";
const PER_PHASE: usize = 3;

/// A 32-byte key (AES-256, HMAC-SHA-256), and the same with a 4-byte salt for aes256-gcm.
const KEY_32: &str = "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY_36: &str = "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa0a1a2a3";

/// `xipsec sa add` of a transport SA a -> b: `enc` with `key`, and HMAC-SHA-256 with `KEY_32`
/// when `hmac` is set.
fn sa_add(
    d: &Node,
    net: &VethPair,
    (name, spi): (&str, &str),
    (enc, key): (&str, &str),
    hmac: bool,
) -> Output {
    let mut args = vec![
        "sa",
        "add",
        "--sa-source",
        &net.addr_a,
        "--sa-destination",
        &net.addr_b,
        "--sa-mode",
        "transport",
        "--sa-spi",
        spi,
        "--encryption-algorithm",
        enc,
        "--encryption-key",
        key,
        "--sa-name",
        name,
    ];
    if hmac {
        args.extend([
            "--integrity-algorithm",
            "hmac-sha2-256",
            "--integrity-key",
            KEY_32,
        ]);
    }
    d.cli(&args)
}

/// `sa add` of the a -> b aes128-gcm SA `name`/`spi`; the CLI's stderr.
fn add_gcm(d: &Node, net: &VethPair, name: &str, spi: &str) -> String {
    let out = sa_add(d, net, (name, spi), ("aes128-gcm", GCM_KEY), false);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "sa add {name} failed: {stderr}");
    assert!(out.stdout.is_empty(), "stdout stays clean for scripts");
    stderr
}

/// The a -> b UDP policy on SA `sa`.
fn protect(d: &Node, net: &VethPair, sa: &str) {
    let (src, dst) = (format!("{}/128", net.addr_a), format!("{}/128", net.addr_b));
    // UDP only: neighbour discovery passes in clear.
    let sp = SpArgs {
        sa: Some(sa),
        proto: "udp",
        ..SpArgs::ipsec(&src, &dst, "out", "to-b")
    };
    d.ok(&sp.args());
}

fn unprotect(d: &Node) {
    d.ok(&["sp", "remove", "--remove-all"]);
    d.ok(&["sa", "remove", "--remove-all"]);
}

fn send(net: &VethPair, phase: &str) {
    let sent = traffic::py(&net.ns_a, &["udp-send", &net.addr_b, PORT, "3", phase])
        .status()
        .expect("sending protected UDP");
    assert!(sent.success(), "{phase}: udp-send failed");
}

/// (SPI, sequence number, IV) of a captured transport-mode ESP packet (IPv6 header, then ESP).
fn esp_fields(packet: &[u8]) -> (u32, u32, u64) {
    let esp = &packet[40..];
    let word = |at: usize| u32::from_be_bytes(esp[at..at + 4].try_into().expect("4 bytes"));
    let iv = u64::from_be_bytes(esp[8..16].try_into().expect("an 8-byte iv"));
    (word(0), word(4), iv)
}

#[test]
fn gcm_ivs_keep_rising_across_readd_rename_and_kill9_restart() {
    as_root(
        "gcm_ivs_keep_rising_across_readd_rename_and_kill9_restart",
        || {
            let net = VethPair::new("xgcm", 0x7c);
            let mut a = Node::start(&net.ns_a, &net.if_a);
            let _absorb = traffic::EspAbsorb::start(&net.ns_b);
            let cap = Capture::start(
                &net.ns_b,
                &net.if_b,
                &a.dir().join("gcm.pcap"),
                &[0x7c01, 0x7c02],
            );

            let warned = add_gcm(&a, &net, "g1", "0x7c01");
            assert_eq!(
                warned.matches("warning: rfc 4106").count(),
                1,
                "the rfc 4106 warning, once: {warned}"
            );
            protect(&a, &net, "g1");
            assert!(
                a.log()
                    .contains("rfc 4106 §8: aes-gcm fails catastrophically"),
                "the daemon logs the warning too: {}",
                a.log()
            );
            let listed = a.ok(&["sa", "list", "--formatter", "json"]);
            assert!(
                listed.contains("\"integrity_algorithm\":\"none\"")
                    || listed.contains("\"integrity_algorithm\": \"none\""),
                "sa list shows integrity none for gcm: {listed}"
            );
            send(&net, "first");

            unprotect(&a);
            add_gcm(&a, &net, "g1", "0x7c01");
            protect(&a, &net, "g1");
            send(&net, "re-added");

            unprotect(&a);
            add_gcm(&a, &net, "g2", "0x7c02");
            protect(&a, &net, "g2");
            send(&net, "renamed");

            a.kill9();
            a.spawn();
            send(&net, "restarted");

            let frames = cap.stop();
            frames.assert_only_esp("gcm phases");
            let packets: Vec<(u32, u32, u64)> =
                frames.esp_packets().iter().map(|p| esp_fields(p)).collect();
            assert_eq!(packets.len(), 4 * PER_PHASE, "{packets:x?}\n{}", a.log());
            let ivs: Vec<u64> = packets.iter().map(|p| p.2).collect();
            assert!(
                ivs.windows(2).all(|w| w[0] < w[1]),
                "every iv above every earlier one: {packets:x?}"
            );
            // Each keying is a new epoch (the high 32 bits), and the low 32 bits are the packet's
            // sequence number.
            let epochs: Vec<u64> = ivs.iter().map(|iv| iv >> 32).collect();
            for phase in epochs.chunks(PER_PHASE) {
                assert!(
                    phase.iter().all(|e| *e == phase[0]),
                    "one epoch per keying: {epochs:?}"
                );
            }
            assert!(
                packets
                    .iter()
                    .all(|(_, seq, iv)| u64::from(*seq) == iv & 0xffff_ffff)
            );
            let spis: Vec<u32> = packets.iter().map(|p| p.0).collect();
            assert_eq!(spis[..2 * PER_PHASE], [0x7c01; 2 * PER_PHASE]);
            assert_eq!(spis[2 * PER_PHASE..], [0x7c02; 2 * PER_PHASE]);
        },
    );
}

#[test]
fn gcm_cli_refuses_integrity_and_warns_only_for_gcm() {
    as_root("gcm_cli_refuses_integrity_and_warns_only_for_gcm", || {
        let net = VethPair::new("xgcn", 0x7d);
        let a = Node::start(&net.ns_a, &net.if_a);
        let before = a.ok(&["sa", "list", "--formatter", "json"]);
        let refused = sa_add(&a, &net, ("g", "0x7d01"), ("aes256-gcm", KEY_36), true);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success());
        assert!(
            stderr.starts_with(
                "error: --integrity-algorithm: not allowed with --encryption-algorithm aes256-gcm"
            ),
            "{stderr}"
        );
        assert!(
            !stderr.contains("warning"),
            "no warning for a refused sa: {stderr}"
        );
        assert_eq!(
            a.ok(&["sa", "list", "--formatter", "json"]),
            before,
            "nothing changed"
        );

        let cbc = sa_add(&a, &net, ("c", "0x7d02"), ("aes256-cbc", KEY_32), true);
        assert!(
            cbc.status.success(),
            "{}",
            String::from_utf8_lossy(&cbc.stderr)
        );
        assert!(cbc.stderr.is_empty(), "no warning for aes256-cbc");
        // Each GCM SA needs its own AES key (the salt does not make it another key).
        let first = sa_add(&a, &net, ("g1", "0x7d03"), ("aes256-gcm", KEY_36), false);
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        let listed = a.ok(&["sa", "list", "--formatter", "json"]);
        let other_salt = format!("{}b0b1b2b3", &KEY_36[..KEY_36.len() - 8]);
        let shared = sa_add(
            &a,
            &net,
            ("g2", "0x7d04"),
            ("aes256-gcm", &other_salt),
            false,
        );
        let stderr = String::from_utf8_lossy(&shared.stderr);
        assert!(!shared.status.success());
        assert!(
            stderr.starts_with(
                "error: --encryption-key: this aes-gcm key is already used by sa 'g1'"
            ),
            "{stderr}"
        );
        assert!(!stderr.contains(&KEY_36[2..]), "the key is never echoed");
        assert_eq!(
            a.ok(&["sa", "list", "--formatter", "json"]),
            listed,
            "nothing changed"
        );
        let help = a.ok(&["sa", "add", "--help"]);
        assert!(
            help.contains("rfc 4106 §8"),
            "sa add --help carries the warning: {help}"
        );
        assert!(
            help.contains("beyond ESXi"),
            "sa add --help says what is beyond ESXi"
        );
    });
}
