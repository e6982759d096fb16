//! The IKEv2 message parser (`ike::message`) and the endpoint that receives datagrams
//! (`ike::Ike::receive`), on arbitrary bytes.
//!
//! Checks: parsing never panics; a message that parses emits again and parses back to the same
//! message (so the codec loses nothing it accepted); an SK payload opened with fixed CBC and GCM
//! keys never panics; a responder endpoint with a configured peer receiving the bytes on port 500
//! and (after the non-ESP marker) on 4500 never panics, and answers an unparseable datagram with
//! nothing.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use ipsec_user::ike::message::Message;
use ipsec_user::ike::proposal::{parse_esp, parse_ike};
use ipsec_user::ike::selector::TrafficSelector;
use ipsec_user::ike::sk::SkOpener;
use ipsec_user::ike::{Identity, Ike, Lifetimes, PeerConfig, Psk, Settings};
use ipsec_user::model::{EncryptionAlgorithm, IntegrityAlgorithm, Mode};
use libfuzzer_sys::fuzz_target;

const LOCAL: &str = "[fd00::2]:500";
const LOCAL_NATT: &str = "[fd00::2]:4500";
const PEER: &str = "[fd00::1]:500";

fn endpoint() -> &'static Mutex<Ike> {
    static IKE: OnceLock<Mutex<Ike>> = OnceLock::new();
    IKE.get_or_init(|| {
        let mut ike = Ike::new(Settings::default());
        ike.add_peer(PeerConfig {
            name: "fuzz".into(),
            local: "fd00::2".parse().expect("an address"),
            remote: "fd00::1".parse().expect("an address"),
            local_id: Identity::Fqdn("responder".into()),
            remote_id: None,
            psk: Psk::new(&[7; 32]).expect("a psk"),
            ike_proposals: parse_ike("aes128-sha256-x25519,aes128gcm16-x25519")
                .expect("ike proposals"),
            esp_proposals: parse_esp("aes128gcm16,aes128-sha256").expect("esp proposals"),
            mode: Mode::Tunnel,
            local_ts: vec![TrafficSelector::any_v6()],
            remote_ts: vec![TrafficSelector::any_v6()],
            lifetimes: Lifetimes::default(),
        })
        .expect("adding the peer");
        Mutex::new(ike)
    })
}

fn openers() -> &'static [SkOpener; 2] {
    static OPENERS: OnceLock<[SkOpener; 2]> = OnceLock::new();
    OPENERS.get_or_init(|| {
        [
            SkOpener::new(
                EncryptionAlgorithm::Aes128Cbc,
                IntegrityAlgorithm::HmacSha256,
                &[1; 16],
                &[2; 32],
            )
            .expect("cbc keys"),
            SkOpener::new(EncryptionAlgorithm::Aes128Gcm, IntegrityAlgorithm::None, &[3; 20], &[])
                .expect("gcm keys"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let parsed = Message::parse(data);
    if let Ok(message) = &parsed {
        let bytes = message.emit().expect("a parsed message emits");
        assert_eq!(
            Message::parse(&bytes).as_ref(),
            Ok(message),
            "emit then parse changed the message"
        );
        for opener in openers() {
            let _ = opener.open(data, message);
        }
    }
    let peer: SocketAddr = PEER.parse().expect("an address");
    let mut ike = endpoint().lock().expect("the endpoint");
    let now = Instant::now();
    let out = ike.receive(LOCAL.parse().expect("an address"), peer, data, now);
    if parsed.is_err() {
        assert!(out.datagrams.is_empty(), "answered an unparseable datagram");
    }
    let mut marked = vec![0; 4];
    marked.extend_from_slice(data);
    let natt = SocketAddr::new(peer.ip(), 4500);
    let _ = ike.receive(LOCAL_NATT.parse().expect("an address"), natt, &marked, now);
    let _ = ike.on_timeout(now);
});
