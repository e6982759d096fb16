//! Interop of xipsec's I/O-free IKEv2 core (`ipsec_user::ike`) with strongSwan's charon, both
//! roles: a small driver runs the core over UDP sockets on ports 500 and 4500 in namespace a;
//! charon (Debian's 5.9.8, its own `strongswan.conf`, VICI socket and log, `kernel-libipsec` for
//! the CHILD_SA since the kernel has no ESP) runs in namespace b. For each case the CHILD_SA
//! must be established on both sides with the SPIs our core computed (`swanctl --list-sas`
//! shows the IKE SPIs, `INSTALLED`, and the in/out ESP SPIs crossed with ours), then our
//! CHILD_SA is rekeyed (CREATE_CHILD_SA, by charon when we initiated, by us when it did) and
//! charon lists the new SPIs only, then our INFORMATIONAL delete must empty charon's list. Cases
//! cover groups 31, 19 and 14, a CBC and a GCM IKE proposal, a CBC and a GCM ESP proposal,
//! ID_IPV6_ADDR and ID_FQDN identities, and two failures (wrong PSK, no common proposal) that
//! charon answers as RFC 7296 says.
//!
//! Timers: with charon rekeying the CHILD_SA every 10 s and the IKE SA every 20 s
//! (`rand_time = 1s`) and our core on short [`Lifetimes`], 60 s of traffic-free operation must
//! see at least two CHILD_SA rekeys and one IKE SA rekey in each direction (over the two roles),
//! end with charon listing exactly our current IKE SA and CHILD_SA, and report nothing failed.
//! Killing charon, our dead peer detection reports the peer dead within dpd plus the
//! retransmission time.
//!
//! No ESP traffic: the datapath's ESP-in-UDP comes later. Needs root (namespaces); fails under
//! `CI=true` when it cannot run.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr, UdpSocket},
    process::Stdio,
    thread::sleep,
    time::{Duration, Instant},
};

use ipsec_user::ike::{
    ChildSa, Event, Failure, Identity, Ike, Lifetimes, PeerConfig, Psk, Settings,
    message::{ExchangeType, Message},
    proposal::{parse_esp, parse_ike},
    selector::TrafficSelector,
};
use ipsec_user::model::Mode;
use xipsec_testkit::{as_root, netns::VethPair, strongswan::Charon};

/// charon gives up on a peer quickly: two retransmissions, a second apart.
const CHARON_SETTINGS: &str = "retransmit_tries = 2\n  retransmit_timeout = 1";
const PSK_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// Inner (tunnelled) prefixes of a and b.
const INNER_A: &str = "fd00:1ce:a::/64";
const INNER_B: &str = "fd00:1ce:b::/64";
const INNER_B_HOST: &str = "fd00:1ce:b::1/128";

/// One interop case.
struct Case {
    ike: &'static str,
    esp: &'static str,
    /// FQDN identities instead of the addresses.
    fqdn: bool,
}

const CASES: [Case; 4] = [
    Case {
        ike: "aes128-sha256-x25519",
        // x25519 is PFS for the rekey (IKE_AUTH's CHILD_SA ignores it, §1.2).
        esp: "aes128gcm16-x25519",
        fqdn: false,
    },
    Case {
        ike: "aes256-sha256-ecp256",
        esp: "aes128-sha256",
        fqdn: true,
    },
    Case {
        ike: "aes128-sha256-modp2048",
        esp: "aes256gcm16",
        fqdn: false,
    },
    Case {
        ike: "aes128gcm16-prfsha256-x25519",
        esp: "aes128-sha256",
        fqdn: false,
    },
];

fn ids(case: &Case, net: &VethPair) -> (String, String) {
    if case.fqdn {
        ("xipsec.example".into(), "charon.example".into())
    } else {
        (net.addr_a.clone(), net.addr_b.clone())
    }
}

/// charon's side of `case`: connection `xi` to a, tunnel mode between the inner prefixes.
fn swanctl_conf(case: &Case, net: &VethPair, psk_hex: &str) -> String {
    swanctl_conf_with(case, net, psk_hex, "", "")
}

/// [`swanctl_conf`] with extra lines for the connection (`ike`) and the CHILD_SA (`child`).
fn swanctl_conf_with(case: &Case, net: &VethPair, psk_hex: &str, ike: &str, child: &str) -> String {
    let (id_a, id_b) = ids(case, net);
    format!(
        "connections {{\n  xi {{\n    version = 2\n    local_addrs = {b}\n    remote_addrs = {a}\n    \
         proposals = {proposals}\n    mobike = no\n{ike}    local {{\n      auth = psk\n      id = {id_b}\n    }}\n    \
         remote {{\n      auth = psk\n      id = {id_a}\n    }}\n    children {{\n      net {{\n        \
         local_ts = {INNER_B}\n        remote_ts = {INNER_A}\n        esp_proposals = {esp}\n        \
         mode = tunnel\n{child}      }}\n    }}\n  }}\n}}\nsecrets {{\n  ike-xi {{\n    id-a = {id_a}\n    \
         id-b = {id_b}\n    secret = 0x{psk_hex}\n  }}\n}}\n",
        a = net.addr_a,
        b = net.addr_b,
        proposals = case.ike,
        esp = case.esp,
    )
}

fn our_peer(case: &Case, net: &VethPair, psk_hex: &str) -> PeerConfig {
    let (id_a, id_b) = ids(case, net);
    let identity = |id: String| match id.parse::<IpAddr>() {
        Ok(addr) => Identity::address(addr),
        Err(_) => Identity::Fqdn(id),
    };
    PeerConfig {
        name: "charon".into(),
        local: net.addr_a.parse().expect("a's address"),
        remote: net.addr_b.parse().expect("b's address"),
        local_id: identity(id_a),
        remote_id: Some(identity(id_b)),
        psk: Psk::new(&hex::decode(psk_hex).expect("hex")).expect("a psk"),
        ike_proposals: parse_ike(case.ike).expect("ike proposals"),
        esp_proposals: parse_esp(case.esp).expect("esp proposals"),
        mode: Mode::Tunnel,
        local_ts: vec![TrafficSelector::prefix(INNER_A.parse().expect("a prefix"))],
        remote_ts: vec![TrafficSelector::prefix(INNER_B.parse().expect("a prefix"))],
        lifetimes: Lifetimes::default(),
    }
}

/// The driver: our core on UDP 500 and 4500 of `local` (inside namespace a).
struct Driver {
    ike: Ike,
    sockets: [UdpSocket; 2],
    events: Vec<Event>,
    /// CREATE_CHILD_SA requests (IKE SPIs, message ID) we sent and we received: who rekeyed.
    requests_out: HashSet<([u8; 8], [u8; 8], u32)>,
    requests_in: HashSet<([u8; 8], [u8; 8], u32)>,
    /// For each IKE SA rekey, whether we started it (we are the new SA's initiator).
    ike_rekeys: Vec<bool>,
}

/// The IKE SPIs and message ID of a CREATE_CHILD_SA request (with or without the non-ESP
/// marker), or None for anything else.
fn create_child_request(bytes: &[u8]) -> Option<([u8; 8], [u8; 8], u32)> {
    let bytes = bytes.strip_prefix(&[0, 0, 0, 0][..]).unwrap_or(bytes);
    let header = Message::parse(bytes).ok()?.header;
    (header.exchange == ExchangeType::CREATE_CHILD_SA && !header.is_response()).then_some((
        header.spi_i,
        header.spi_r,
        header.message_id,
    ))
}

impl Driver {
    fn new(local: IpAddr, peer: PeerConfig) -> Self {
        Self::with_settings(local, peer, Settings::default())
    }

    fn with_settings(local: IpAddr, peer: PeerConfig, settings: Settings) -> Self {
        let sockets = [settings.ike_port, settings.natt_port].map(|port| {
            let socket =
                UdpSocket::bind(SocketAddr::new(local, port)).expect("binding the ike socket");
            socket.set_nonblocking(true).expect("a non-blocking socket");
            socket
        });
        let mut ike = Ike::new(settings);
        ike.add_peer(peer).expect("adding the peer");
        Self {
            ike,
            sockets,
            events: Vec::new(),
            requests_out: HashSet::new(),
            requests_in: HashSet::new(),
            ike_rekeys: Vec::new(),
        }
    }

    fn send(&mut self, out: ipsec_user::ike::Output) {
        for e in &out.events {
            if let Event::IkeSaRekeyed { new_spis, .. } = e {
                let ours = self
                    .ike
                    .ike_sas()
                    .iter()
                    .find(|sa| (sa.spi_i, sa.spi_r) == *new_spis)
                    .is_some_and(|sa| sa.initiator);
                self.ike_rekeys.push(ours);
            }
        }
        for d in out.datagrams {
            self.requests_out.extend(create_child_request(&d.bytes));
            let socket = if d.local.port() == self.ike.settings().natt_port {
                &self.sockets[1]
            } else {
                &self.sockets[0]
            };
            socket
                .send_to(&d.bytes, d.remote)
                .expect("sending a datagram");
        }
        self.events.extend(out.events);
    }

    /// Receives, answers and retransmits until `done` holds for an event or `limit` passes.
    fn run(&mut self, limit: Duration, done: impl Fn(&Event) -> bool) -> bool {
        let end = Instant::now() + limit;
        let mut buf = vec![0; 65536];
        while Instant::now() < end {
            if self.events.iter().any(&done) {
                return true;
            }
            let mut idle = true;
            for i in 0..2 {
                if let Ok((n, from)) = self.sockets[i].recv_from(&mut buf) {
                    idle = false;
                    let local = self.sockets[i].local_addr().expect("a bound socket");
                    self.requests_in.extend(create_child_request(&buf[..n]));
                    let out = self.ike.receive(local, from, &buf[..n], Instant::now());
                    self.send(out);
                }
            }
            if self
                .ike
                .next_deadline()
                .is_some_and(|d| d <= Instant::now())
            {
                let out = self.ike.on_timeout(Instant::now());
                self.send(out);
            }
            if idle {
                sleep(Duration::from_millis(2));
            }
        }
        self.events.iter().any(&done)
    }

    /// Brings up the IKE SA and its CHILD_SA, started by us or (`swanctl --initiate`) by
    /// charon; true once the CHILD_SA is established here and charon's initiate succeeded.
    fn establish(&mut self, charon: &Charon, we_initiate: bool) -> bool {
        let mut initiator = None;
        if we_initiate {
            let out = self
                .ike
                .initiate("charon", Instant::now())
                .expect("initiating");
            self.send(out);
        } else {
            initiator = Some(
                charon
                    .command(&["--initiate", "--child", "net", "--timeout", "10"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("starting swanctl --initiate"),
            );
        }
        let up = self.run(Duration::from_secs(15), established);
        let initiated = initiator.is_none_or(|mut swanctl| {
            swanctl
                .wait()
                .expect("waiting for swanctl --initiate")
                .success()
        });
        up && initiated
    }

    fn child(&self) -> Option<&ChildSa> {
        self.children().into_iter().next()
    }

    fn children(&self) -> Vec<&ChildSa> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::ChildSaEstablished(c) => Some(&**c),
                _ => None,
            })
            .collect()
    }

    fn failures(&self) -> Vec<&Failure> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Failed { failure, .. } => Some(failure),
                _ => None,
            })
            .collect()
    }
}

fn established(e: &Event) -> bool {
    matches!(e, Event::ChildSaEstablished(_))
}

/// charon's `--list-sas` shows the IKE SA and the (latest) CHILD_SA with our SPIs.
fn assert_charon_has(charon: &Charon, driver: &Driver, case: &Case) {
    let child = *driver
        .children()
        .last()
        .unwrap_or_else(|| panic!("{}: no child sa: {:?}", case.ike, driver.events));
    let sas = charon.swanctl(&["--list-sas"]);
    let (spi_i, spi_r) = child.ike_spis;
    let context = || {
        format!(
            "{} / {}:\n{sas}\ncharon log:\n{}",
            case.ike,
            case.esp,
            charon.log()
        )
    };
    for want in [
        "ESTABLISHED".to_owned(),
        format!("{}_i", hex::encode(spi_i)),
        format!("{}_r", hex::encode(spi_r)),
        "INSTALLED".to_owned(),
        // charon receives on the SPI we send to, and sends on ours.
        format!("in  {:08x}", child.outbound_spi),
        format!("out {:08x}", child.inbound_spi),
    ] {
        assert!(sas.contains(&want), "missing {want:?} in {}", context());
    }
    // The algorithms charon shows are the ones our core negotiated.
    let esp_name = match child.suite.encryption.as_str() {
        "aes128-gcm" => "AES_GCM_16-128",
        "aes256-gcm" => "AES_GCM_16-256",
        "aes128-cbc" => "AES_CBC-128/HMAC_SHA2_256_128",
        other => panic!("unexpected suite {other}"),
    };
    assert!(
        sas.contains(esp_name),
        "missing {esp_name} in {}",
        context()
    );
}

/// Rekeys the CHILD_SA (we do when `we_rekey`, else charon does): the new CHILD_SA names the old
/// one, the old one is deleted after it, and charon lists the new SPIs, not the old ones.
fn rekey_and_check(charon: &Charon, driver: &mut Driver, case: &Case, we_rekey: bool) {
    let old = driver.child().expect("a child sa").inbound_spi;
    let old_out = driver.child().expect("a child sa").outbound_spi;
    if we_rekey {
        let out = driver
            .ike
            .rekey_child_sa(old, Instant::now())
            .expect("rekeying");
        driver.send(out);
    } else {
        charon.swanctl(&["--rekey", "--child", "net"]);
    }
    let deleted =
        |e: &Event| matches!(e, Event::ChildSaDeleted { inbound_spi, .. } if *inbound_spi == old);
    assert!(
        driver.run(Duration::from_secs(10), deleted),
        "{} (we rekey: {we_rekey}): old child sa not deleted: {:?}\ncharon log:\n{}",
        case.ike,
        driver.events,
        charon.log()
    );
    let children = driver.children();
    assert_eq!(children.len(), 2, "{:?}", driver.events);
    assert_eq!(children[1].rekeys, Some(old));
    assert_charon_has(charon, driver, case);
    // charon keeps a rekeyed CHILD_SA listed as DELETED for a few seconds (for packets in
    // flight); it must no longer be INSTALLED.
    let sas = charon.swanctl(&["--list-sas"]);
    let old_block = sas
        .split("  net: #")
        .find(|block| block.contains(&format!("in  {old_out:08x}")));
    if let Some(block) = old_block {
        assert!(
            !block.contains("INSTALLED") && block.contains(&format!("out {old:08x}")),
            "charon still has the old child sa installed: {sas}"
        );
    }
}

/// After the checks: our INFORMATIONAL delete of the IKE SA empties charon's list.
fn delete_and_check(charon: &Charon, driver: &mut Driver) {
    let out = driver
        .ike
        .delete_ike_sa("charon", Instant::now())
        .expect("deleting the ike sa");
    driver.send(out);
    assert!(
        driver.run(Duration::from_secs(5), |e| matches!(
            e,
            Event::IkeSaDeleted { .. }
        )),
        "charon did not answer our delete: {:?}",
        driver.events
    );
    let sas = charon.swanctl(&["--list-sas"]);
    assert!(!sas.contains("ESTABLISHED"), "charon kept the sa: {sas}");
}

/// charon's view of one case, run from a thread inside namespace a.
fn run_case(net: &VethPair, charon: &Charon, case: &Case, we_initiate: bool) {
    charon.load(&swanctl_conf(case, net, PSK_HEX));
    let local: IpAddr = net.addr_a.parse().expect("a's address");
    let peer = our_peer(case, net, PSK_HEX);
    xipsec_testkit::netns::in_netns(&net.ns_a, || {
        let mut driver = Driver::new(local, peer);
        let ok = driver.establish(charon, we_initiate);
        assert!(
            ok,
            "{} / {} (we initiate: {we_initiate}): no child sa: {:?}\ncharon log:\n{}",
            case.ike,
            case.esp,
            driver.failures(),
            charon.log()
        );
        // Keep answering a moment: a charon that failed to install its CHILD_SA deletes it.
        driver.run(Duration::from_millis(500), |e| {
            matches!(e, Event::ChildSaDeleted { .. } | Event::IkeSaDeleted { .. })
        });
        assert!(
            !driver
                .events
                .iter()
                .any(|e| matches!(e, Event::ChildSaDeleted { .. })),
            "charon deleted the child sa: {}",
            charon.log()
        );
        assert_charon_has(charon, &driver, case);
        // Rekey from the side that did not initiate, so both roles rekey in both tests.
        rekey_and_check(charon, &mut driver, case, !we_initiate);
        delete_and_check(charon, &mut driver);
    });
}

fn lab() -> (VethPair, tempfile::TempDir) {
    let net = VethPair::new("ike", 0x1ce);
    // kernel-libipsec routes b's side of the tunnel through its TUN device from an address of
    // b's inner prefix: without one, installing the CHILD_SA fails ("error installing route").
    xipsec_testkit::netns::add_address(&net.ns_b, INNER_B_HOST, "lo");
    let scratch = tempfile::Builder::new()
        .prefix("xipsec-ike-")
        .tempdir()
        .expect("a scratch directory");
    (net, scratch)
}

#[test]
fn xipsec_initiates_to_strongswan() {
    as_root("xipsec_initiates_to_strongswan", || {
        let (net, scratch) = lab();
        let charon = Charon::start(&net.ns_b, &scratch.path().join("charon"), CHARON_SETTINGS);
        for case in &CASES {
            run_case(&net, &charon, case, true);
        }
    });
}

#[test]
fn strongswan_initiates_to_xipsec() {
    as_root("strongswan_initiates_to_xipsec", || {
        let (net, scratch) = lab();
        let charon = Charon::start(&net.ns_b, &scratch.path().join("charon"), CHARON_SETTINGS);
        for case in &CASES {
            run_case(&net, &charon, case, false);
        }
    });
}

/// Wrong PSK and no common proposal: charon refuses as RFC 7296 says, and our core reports it.
#[test]
fn strongswan_refuses_a_wrong_psk_and_a_foreign_proposal() {
    as_root(
        "strongswan_refuses_a_wrong_psk_and_a_foreign_proposal",
        || {
            let (net, scratch) = lab();
            let charon = Charon::start(&net.ns_b, &scratch.path().join("charon"), CHARON_SETTINGS);
            let case = &CASES[0];
            let local: IpAddr = net.addr_a.parse().expect("a's address");
            let wrong = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
            charon.load(&swanctl_conf(case, &net, PSK_HEX));
            let foreign = Case {
                ike: "aes256-sha256-modp2048",
                ..Case { ..CASES[0] }
            };
            for (peer, expected) in [
                (our_peer(case, &net, wrong), Failure::AuthenticationRefused),
                (our_peer(&foreign, &net, PSK_HEX), Failure::NoIkeProposal),
            ] {
                xipsec_testkit::netns::in_netns(&net.ns_a, || {
                    let mut driver = Driver::new(local, peer);
                    let out = driver
                        .ike
                        .initiate("charon", Instant::now())
                        .expect("initiating");
                    driver.send(out);
                    driver.run(Duration::from_secs(10), |e| {
                        matches!(e, Event::Failed { .. })
                    });
                    assert_eq!(driver.failures(), [&expected], "{:?}", driver.events);
                    assert!(driver.child().is_none());
                });
                let sas = charon.swanctl(&["--list-sas"]);
                assert!(!sas.contains("ESTABLISHED"), "charon established: {sas}");
            }
        },
    );
}

/// charon's rekey timers for [`rekeys_with_short_lifetimes`]: the CHILD_SA every 10 s, the IKE
/// SA every 20 s, less up to 1 s.
const CHARON_REKEYS: (&str, &str) = (
    "    rekey_time = 20s\n    rand_time = 1s\n",
    "        rekey_time = 10s\n        rand_time = 1s\n",
);

/// Lifetimes that make us rekey the CHILD_SA (every ~8 s, before charon's 9 to 10 s) and leave
/// the IKE SA to charon (ours at ~30 s, charon's at 19 to 20 s), or the other way round (ours:
/// CHILD_SA at ~15 s, IKE SA at ~16 s).
fn short_lifetimes(we_rekey_children: bool) -> Lifetimes {
    let s = Duration::from_secs;
    if we_rekey_children {
        Lifetimes {
            child_lifetime: s(12),
            ike_lifetime: s(40),
            rekey_margin: s(4),
            dpd: None,
        }
    } else {
        Lifetimes {
            child_lifetime: s(20),
            ike_lifetime: s(24),
            rekey_margin: s(8),
            dpd: None,
        }
    }
}

/// 60 s of rekeys driven by the timers alone, ours and charon's: at least two CHILD_SA rekeys
/// and one IKE SA rekey by the sides the lifetimes favour; then charon lists exactly our
/// current IKE SA and CHILD_SA (new SPIs), and none of the old ones as installed.
fn rekeys_with_short_lifetimes(we_initiate: bool) {
    let (net, scratch) = lab();
    let charon = Charon::start(&net.ns_b, &scratch.path().join("charon"), CHARON_SETTINGS);
    let case = &CASES[0];
    let (ike_extra, child_extra) = CHARON_REKEYS;
    charon.load(&swanctl_conf_with(
        case,
        &net,
        PSK_HEX,
        ike_extra,
        child_extra,
    ));
    let local: IpAddr = net.addr_a.parse().expect("a's address");
    let mut peer = our_peer(case, &net, PSK_HEX);
    // Whoever initiated, we rekey one kind of SA and charon the other: both tests together
    // rekey each kind each way.
    peer.lifetimes = short_lifetimes(we_initiate);
    xipsec_testkit::netns::in_netns(&net.ns_a, || {
        let mut driver = Driver::new(local, peer);
        let up = driver.establish(&charon, we_initiate);
        assert!(
            up,
            "no child sa: {:?}\ncharon log:\n{}",
            driver.events,
            charon.log()
        );
        driver.run(Duration::from_mins(1), |_| false);
        // A rekey may be under way at the 60 s mark: keep answering until it is done.
        let mut listed = String::new();
        for _ in 0..20 {
            listed = charon.swanctl(&["--list-sas"]);
            let sas = driver.ike.ike_sas();
            if sas.len() == 1
                && sas[0].children.len() == 1
                && listed.matches("ESTABLISHED").count() == 1
                && listed.matches("INSTALLED").count() == 1
                && !listed.contains("REKEY")
            {
                break;
            }
            driver.run(Duration::from_millis(500), |_| false);
        }
        let context = || format!("{:?}\ncharon log:\n{}", driver.events, charon.log());
        assert!(driver.failures().is_empty(), "{}", context());
        let ours_ike = driver.ike_rekeys.iter().filter(|&&ours| ours).count();
        let theirs_ike = driver.ike_rekeys.len() - ours_ike;
        let ours_child = driver.requests_out.len() - ours_ike;
        let theirs_child = driver.requests_in.len() - theirs_ike;
        eprintln!(
            "rekeys in 60 s (we initiated: {we_initiate}): child sa {ours_child} by us, \
             {theirs_child} by charon; ike sa {ours_ike} by us, {theirs_ike} by charon"
        );
        let (children_by, ike_by) = if we_initiate {
            (ours_child, theirs_ike)
        } else {
            (theirs_child, ours_ike)
        };
        assert!(
            children_by >= 2,
            "child sa rekeys: {children_by}: {}",
            context()
        );
        assert!(ike_by >= 1, "ike sa rekeys: {ike_by}: {}", context());
        // Our state: one IKE SA, one CHILD_SA; charon's: the same SPIs, nothing else installed.
        let sas = driver.ike.ike_sas();
        assert_eq!(sas.len(), 1, "{sas:?}");
        assert_eq!(sas[0].children.len(), 1, "{sas:?}");
        let (inbound, outbound) = sas[0].children[0];
        for want in [
            format!("{}_i", hex::encode(sas[0].spi_i)),
            format!("{}_r", hex::encode(sas[0].spi_r)),
            format!("in  {outbound:08x}"),
            format!("out {inbound:08x}"),
        ] {
            assert!(
                listed.contains(&want),
                "missing {want:?} in {listed}\n{}",
                context()
            );
        }
        assert_eq!(listed.matches("ESTABLISHED").count(), 1, "{listed}");
        assert_eq!(listed.matches("INSTALLED").count(), 1, "{listed}");
        // Every CHILD_SA we were told of, but the current one, is gone on our side too.
        let established: Vec<u32> = driver.children().iter().map(|c| c.inbound_spi).collect();
        let deleted: Vec<u32> = driver
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ChildSaDeleted { inbound_spi, .. } => Some(*inbound_spi),
                _ => None,
            })
            .collect();
        for spi in &established {
            assert_eq!(deleted.contains(spi), *spi != inbound, "child {spi:08x}");
        }
    });
}

#[test]
fn rekeys_with_short_lifetimes_when_xipsec_initiates() {
    as_root("rekeys_with_short_lifetimes_when_xipsec_initiates", || {
        rekeys_with_short_lifetimes(true);
    });
}

#[test]
fn rekeys_with_short_lifetimes_when_strongswan_initiates() {
    as_root(
        "rekeys_with_short_lifetimes_when_strongswan_initiates",
        || {
            rekeys_with_short_lifetimes(false);
        },
    );
}

/// charon killed: our dead peer detection reports the peer dead (timeout, CHILD_SA and IKE SA
/// deleted) within dpd plus the retransmission time.
#[test]
fn dead_peer_detection_notices_a_killed_charon() {
    as_root("dead_peer_detection_notices_a_killed_charon", || {
        let (net, scratch) = lab();
        let charon = Charon::start(&net.ns_b, &scratch.path().join("charon"), CHARON_SETTINGS);
        let case = &CASES[0];
        charon.load(&swanctl_conf(case, &net, PSK_HEX));
        let local: IpAddr = net.addr_a.parse().expect("a's address");
        let mut peer = our_peer(case, &net, PSK_HEX);
        let dpd = Duration::from_secs(3);
        peer.lifetimes.dpd = Some(dpd);
        let settings = Settings {
            retransmit_tries: 2,
            ..Settings::default()
        };
        // Retransmissions after 1, 2 and 4 s: given up 7 s after the check.
        let allowed = dpd + Duration::from_secs(7);
        xipsec_testkit::netns::in_netns(&net.ns_a, || {
            let mut driver = Driver::with_settings(local, peer, settings);
            assert!(
                driver.establish(&charon, true),
                "no child sa: {}",
                charon.log()
            );
            // Alive: checks answered for a while.
            driver.run(2 * dpd + Duration::from_secs(1), |_| false);
            assert!(driver.failures().is_empty(), "{:?}", driver.events);
            drop(charon);
            let killed = Instant::now();
            let dead = driver.run(allowed + Duration::from_secs(3), |e| {
                matches!(e, Event::IkeSaDeleted { .. })
            });
            let took = killed.elapsed();
            assert!(dead, "not declared dead: {:?}", driver.events);
            assert!(took <= allowed + Duration::from_secs(1), "took {took:?}");
            assert_eq!(driver.failures(), [&Failure::Timeout(2)]);
            assert!(
                driver
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::ChildSaDeleted { .. }))
            );
            eprintln!("peer dead {took:?} after charon was killed (dpd {dpd:?})");
        });
    });
}
