//! Writes the seed corpus under `fuzz/corpus/<target>/`: a few valid inputs per target, made with
//! the crate's own code (real ESP packets from `encapsulate`, real requests and state files from
//! the model). Run it after changing an input layout: `cargo run --example make_corpus` in
//! `fuzz/`, then commit the files.

use std::fs;
use std::path::Path;

use ipsec_fuzz::{ipv6, outbound, state_file, tcp_packet};
use ipsec_user::daemon::protocol::{Apply, BatchItem, Change};
use ipsec_user::fuzzing::Request;
use ipsec_user::model::{Mode, SaAddArgs, SaRemoveArgs, SpAddArgs, SpRemoveArgs, Spd};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("creating the corpus directory");
    fs::write(dir.join(name), bytes).expect("writing a seed");
}

fn udp(payload: &[u8]) -> Vec<u8> {
    let mut udp = vec![0x13, 0x89, 0x23, 0x28];
    udp.extend_from_slice(
        &u16::try_from(8 + payload.len())
            .expect("short")
            .to_be_bytes(),
    );
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    ipv6(17, &udp)
}

fn ethernet(ethertype: &[u8], packet: &[u8]) -> Vec<u8> {
    let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    frame.extend_from_slice(ethertype);
    frame.extend_from_slice(packet);
    frame
}

fn main() {
    let inner = [
        ("udp", udp(b"hello over esp")),
        ("tcp", tcp_packet(1, 0x18, &[], b"GET / HTTP/1.0\r\n\r\n")),
        ("icmp", ipv6(58, &[128, 0, 0, 0, 0, 1, 0, 1, 0xab, 0xcd])),
    ];

    // esp_decap_raw: mode byte, then an ESP packet from encapsulate.
    for (mode, bit) in [(Mode::Transport, 0u8), (Mode::Tunnel, 1)] {
        let mut sa = outbound(mode);
        for (name, packet) in &inner {
            let mut esp = Vec::new();
            sa.encapsulate(packet, &mut esp)
                .expect("encapsulating a seed");
            let mut seed = vec![bit];
            seed.extend_from_slice(&esp);
            write(
                "esp_decap_raw",
                &format!("{mode:?}-{name}").to_lowercase(),
                &seed,
            );
        }
    }

    // esp_decap_valid: flags, next header, pad blocks, corruption index and mask, seq, tamper
    // position, IV, payload.
    let valid = |flags: u8, next_header: u8, payload: &[u8]| {
        let mut seed = vec![flags, next_header, 1, 3, 0x40, 0, 0, 0, 1, 0x01, 0x23];
        seed.extend_from_slice(&[0x5a; 16]);
        seed.extend_from_slice(payload);
        seed
    };
    let udp_payload = &inner[0].1[40..];
    write(
        "esp_decap_valid",
        "transport-udp",
        &valid(4 | 16, 17, udp_payload),
    );
    write(
        "esp_decap_valid",
        "transport-hbh-tcp",
        &valid(2 | 4 | 16, 6, &inner[1].1[40..]),
    );
    write(
        "esp_decap_valid",
        "tunnel-udp",
        &valid(1 | 4 | 16, 41, &inner[0].1),
    );
    write(
        "esp_decap_valid",
        "tunnel-icmp",
        &valid(1 | 4, 41, &inner[2].1),
    );
    write("esp_decap_valid", "dummy", &valid(4, 59, b""));
    write(
        "esp_decap_valid",
        "bad-padding",
        &valid(4 | 8, 17, udp_payload),
    );
    let mut raw_trailer = udp_payload.to_vec();
    raw_trailer.resize(30, 0);
    raw_trailer.extend_from_slice(&[1, 17]);
    write("esp_decap_valid", "raw-trailer", &valid(0, 0, &raw_trailer));

    // packet_parse: Ethernet frames.
    let v6 = [0x86, 0xdd];
    write("packet_parse", "udp", &ethernet(&v6, &inner[0].1));
    write("packet_parse", "tcp", &ethernet(&v6, &inner[1].1));
    write("packet_parse", "icmp", &ethernet(&v6, &inner[2].1));
    let mut esp = Vec::new();
    outbound(Mode::Transport)
        .encapsulate(&inner[0].1, &mut esp)
        .expect("encapsulating a seed");
    write("packet_parse", "esp", &ethernet(&v6, &esp));
    let mut tagged_esp = vec![0x00, 0x64, 0x86, 0xdd];
    tagged_esp.extend_from_slice(&esp);
    write(
        "packet_parse",
        "vlan-esp",
        &ethernet(&[0x81, 0x00], &tagged_esp),
    );
    let mut tagged = vec![0x00, 0x64, 0x86, 0xdd];
    tagged.extend_from_slice(&inner[0].1);
    write(
        "packet_parse",
        "vlan-udp",
        &ethernet(&[0x81, 0x00], &tagged),
    );
    let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&inner[0].1[40..]);
    write(
        "packet_parse",
        "hbh-dstopts-udp",
        &ethernet(&v6, &ipv6(0, &ext)),
    );
    let mut first = vec![17, 0, 0x00, 0x01, 0, 0, 0, 7];
    first.extend_from_slice(&inner[0].1[40..]);
    write(
        "packet_parse",
        "first-fragment",
        &ethernet(&v6, &ipv6(44, &first)),
    );
    let later = [50, 0, 0x00, 0xb8, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8];
    write(
        "packet_parse",
        "esp-later-fragment",
        &ethernet(&v6, &ipv6(44, &later)),
    );
    write("packet_parse", "arp", &ethernet(&[0x08, 0x06], &[0; 28]));

    // gro, mode 0: MSS, flags, option words, options, payload.
    let timestamps = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let mut seed = vec![0, 0x05, 0x14, 0x18, 3];
    seed.extend_from_slice(&timestamps);
    seed.extend_from_slice(&payload);
    write("gro", "tso-3000-mss-1300", &seed);
    let mut seed = vec![0, 0, 100, 0x10, 0];
    seed.extend_from_slice(&payload[..450]);
    write("gro", "tso-450-mss-100", &seed);
    // Mode 1: length-prefixed segments of one flow, in order.
    let mut seed = vec![1];
    for i in 0..3u32 {
        let seg = tcp_packet(1000 + i * 500, 0x10, &timestamps, &payload[..500]);
        seed.extend_from_slice(&u16::try_from(seg.len()).expect("short").to_be_bytes());
        seed.extend_from_slice(&seg);
    }
    write("gro", "three-segments", &seed);
    // Mode 2: a virtio-net header, a prefix length, a TSO packet.
    let mut seed = vec![2, 1, 4, 72, 0, 0x14, 0x05, 40, 0, 16, 0, 10];
    seed.extend_from_slice(&tcp_packet(5, 0x18, &timestamps, &payload[..2000]));
    write("gro", "raw-tso", &seed);
    // Mode 3: a checksum to complete.
    let mut seed = vec![3, 1, 0, 0, 0, 0, 0, 40, 0, 16, 0];
    seed.extend_from_slice(&tcp_packet(5, 0x10, &[], &payload[..99]));
    write("gro", "checksum", &seed);

    // mss: limit, flags, packet.
    let syn = |options: &[u8]| tcp_packet(1, 0x02, options, &[]);
    let seed = |limit: u16, packet: &[u8]| {
        let mut seed = limit.to_be_bytes().to_vec();
        seed.push(1);
        seed.extend_from_slice(packet);
        seed
    };
    let linux_syn = [
        2, 4, 0x05, 0xa0, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    write("mss", "linux-syn", &seed(1379, &syn(&linux_syn)));
    write(
        "mss",
        "odd-offset-mss",
        &seed(1379, &syn(&[1, 2, 4, 0x05, 0xa0, 1, 1, 1])),
    );
    write(
        "mss",
        "already-small",
        &seed(1379, &syn(&[2, 4, 0x02, 0x18])),
    );
    write(
        "mss",
        "syn-ack",
        &seed(1200, &tcp_packet(1, 0x12, &[2, 4, 0x05, 0xa0], &[])),
    );
    write(
        "mss",
        "not-syn",
        &seed(1200, &tcp_packet(1, 0x10, &[2, 4, 0x05, 0xa0], b"x")),
    );

    // control_request: the lines `xipsec` sends.
    let s = |v: &str| Some(v.to_owned());
    let sp9000 = SpAddArgs {
        sp_source: s("2001:db8:1::/64"),
        sp_destination: s("2002:db8:1::/64"),
        source_port: s("any"),
        destination_port: s("9000"),
        upper_layer_protocol: s("udp"),
        flow_direction: s("in"),
        action: s("ipsec"),
        sp_mode: s("tunnel"),
        sa_name: s("to-b"),
        sp_name: s("sp9000"),
        priority: s("10"),
    };
    let sa3 = SaAddArgs {
        sa_source: s("2001:db8::1"),
        sa_destination: s("2001:db8::2"),
        sa_mode: s("tunnel"),
        sa_spi: s("0x3000"),
        encryption_algorithm: s("aes128-cbc"),
        encryption_key: s("0x000102030405060708090a0b0c0d0e0f"),
        integrity_algorithm: s("hmac-sha2-256"),
        integrity_key: s("0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
        sa_name: s("sa3"),
        udp_encapsulation: None,
    };
    // Apply files: the base configuration itself (nothing to do), and the same with sa1's key
    // changed (sa1 is replaced, and sp1, which keeps its options, is re-added with it).
    let (sas, sps) = ipsec_fuzz::example_args();
    let apply_file = |sas: Vec<SaAddArgs>| {
        let changes = sas
            .into_iter()
            .map(Change::SaAdd)
            .chain(sps.iter().cloned().map(Change::SpAdd));
        Request::Apply(Apply {
            expect_generation: None,
            dry_run: false,
            items: (1..)
                .zip(changes)
                .map(|(line, change)| BatchItem {
                    line: Some(line),
                    change,
                })
                .collect(),
        })
    };
    let mut rekeyed = sas.clone();
    rekeyed[0].encryption_key = s("0x6970763672656164796c6f676f336465736362636f757433");
    let requests = [
        ("sa-add", Request::SaAdd(sa3)),
        ("sp-add", Request::SpAdd(sp9000.clone())),
        ("apply-same", apply_file(sas)),
        ("apply-rekey", apply_file(rekeyed)),
        (
            // Refused: sp1 exists (the model must change nothing).
            "sp-add-name-in-use",
            Request::SpAdd(SpAddArgs {
                sp_name: s("sp1"),
                ..sp9000
            }),
        ),
        (
            "sa-remove",
            Request::SaRemove(SaRemoveArgs {
                sa_name: s("to-b"),
                ..SaRemoveArgs::default()
            }),
        ),
        (
            "sp-remove-all",
            Request::SpRemove(SpRemoveArgs {
                sp_name: None,
                remove_all: true,
            }),
        ),
        ("sa-list", Request::SaList),
        ("status", Request::Status),
    ];
    for (name, request) in &requests {
        let mut line = serde_json::to_vec(request).expect("serialising a request");
        line.push(b'\n');
        write("control_request", name, &line);
    }

    // state_file: what the daemon saves.
    write(
        "state_file",
        "readme-examples",
        &state_file(&ipsec_fuzz::example_spd()),
    );
    write("state_file", "empty", &state_file(&Spd::new()));
}
