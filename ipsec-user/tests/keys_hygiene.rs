//! Key hygiene (issue 8, item 8): no key-holding type shows its key in `Debug` (`{:?}` or
//! `{:#?}`, as hex, decimal bytes or text), and every key-holding type wipes itself on drop
//! (checked at compile time through the `zeroize` traits; the wiping itself is `zeroize`'s
//! guarantee).

use aes::Aes128;
use des::TdesEde3;
use hmac::EagerHash;
use ipsec_user::crypto::{Aes128Cbc, HmacSha1_96, HmacSha256_128, TripleDesCbc};
use ipsec_user::daemon::protocol::Request;
use ipsec_user::model::{Key, Sa, SaAddArgs, Spd};
use sha1::Sha1;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Distinct bytes per key, so a leak of any one is recognisable.
const AES_KEY: [u8; 16] = [
    0xde, 0xad, 0xbe, 0xef, 0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x01, 0x23, 0x45, 0x67,
];
const TDES_KEY: &[u8; 24] = b"Zx4QpL0vBn7RtY2wHk9JmC3s";
const SHA1_KEY: &[u8; 20] = b"Qz7#Wv9!Xq2$Jm5&Tp8*";
const SHA256_KEY: [u8; 32] = [
    0xa5, 0x5a, 0xc3, 0x3c, 0x96, 0x69, 0x0f, 0xf0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
    0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf1, 0x0f,
];

/// Panics if `text` shows `key` as hex (either case, with or without separators), as decimal
/// bytes (compact or one per line), or as text. Four consecutive bytes count as a leak.
fn assert_no_key(text: &str, key: &[u8], what: &str) {
    let compact: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ',' && *c != ':')
        .collect::<String>()
        .to_lowercase();
    let numbers: Vec<u64> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    for window in key.windows(4) {
        let hex = hex::encode(window);
        assert!(
            !compact.contains(&hex),
            "{what} shows key bytes {hex}: {text}"
        );
        let spaced = window
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(!text.to_lowercase().contains(&spaced), "{what}: {text}");
        let decimal: Vec<u64> = window.iter().map(|b| u64::from(*b)).collect();
        assert!(
            !numbers.windows(4).any(|w| w == decimal.as_slice()),
            "{what} shows key bytes {decimal:?} in decimal: {text}"
        );
        if window.iter().all(u8::is_ascii_graphic) {
            let ascii = std::str::from_utf8(window).expect("ascii");
            assert!(
                !text.contains(ascii),
                "{what} shows key text {ascii:?}: {text}"
            );
        }
    }
}

/// Checks `{:?}` and `{:#?}` of `value` against every key.
fn assert_redacted(value: &dyn std::fmt::Debug, what: &str) {
    for text in [format!("{value:?}"), format!("{value:#?}")] {
        for key in [&AES_KEY[..], TDES_KEY, SHA1_KEY, &SHA256_KEY[..]] {
            assert_no_key(&text, key, what);
        }
    }
}

fn sa_args(encryption: &str, key: &[u8], integrity: &str, ikey: &[u8]) -> SaAddArgs {
    SaAddArgs {
        sa_source: Some("2001:db8::1".to_owned()),
        sa_destination: Some("2001:db8::2".to_owned()),
        sa_mode: Some("transport".to_owned()),
        sa_spi: Some("0x1000".to_owned()),
        encryption_algorithm: Some(encryption.to_owned()),
        encryption_key: Some(format!("0x{}", hex::encode(key))),
        integrity_algorithm: Some(integrity.to_owned()),
        integrity_key: Some(format!("0x{}", hex::encode(ikey))),
        sa_name: Some("sa1".to_owned()),
        udp_encapsulation: None,
    }
}

#[test]
fn the_checker_finds_keys_in_every_spelling() {
    // The checker itself must be able to fail, or the tests below prove nothing.
    let leaks = [
        format!("{:?}", AES_KEY.to_vec()),
        format!("{:#?}", AES_KEY.to_vec()),
        format!("{:x?}", AES_KEY.to_vec()),
        hex::encode(AES_KEY),
        hex::encode_upper(AES_KEY),
        String::from_utf8(TDES_KEY.to_vec()).expect("ascii key"),
    ];
    for leak in leaks {
        let caught = std::panic::catch_unwind(|| {
            assert_no_key(&leak, &AES_KEY, "leak");
            assert_no_key(&leak, TDES_KEY, "leak");
        });
        assert!(caught.is_err(), "not caught: {leak}");
    }
    assert_no_key("Key(<redacted 16 bytes>)", &AES_KEY, "redacted");
}

#[test]
fn no_key_holding_type_shows_its_key_in_debug() {
    let key = Key::new(AES_KEY.to_vec());
    assert_eq!(format!("{key:?}"), "<redacted 16 bytes>");
    assert_redacted(&key, "Key");

    let mut spd = Spd::new();
    let args = sa_args("aes128-cbc", &AES_KEY, "hmac-sha2-256", &SHA256_KEY);
    assert_redacted(&args, "SaAddArgs");
    let text = format!("{args:?}");
    assert!(
        text.contains("encryption_key: Some(<redacted 34 characters>)")
            && text.contains("sa_name: Some(\"sa1\")"),
        "{text}"
    );
    assert_redacted(&Request::SaAdd(args.clone()), "Request::SaAdd");
    let sa: &Sa = spd.add_sa(&args).expect("adding an aes128-cbc SA");
    assert_eq!(
        sa.encryption_key.as_bytes(),
        AES_KEY,
        "the SA holds the key"
    );
    assert_redacted(sa, "Sa (aes128-cbc, hmac-sha2-256)");
    let mut spd = Spd::new();
    let args = sa_args("3des-cbc", TDES_KEY, "hmac-sha1", SHA1_KEY);
    assert_redacted(&args, "SaAddArgs (3des)");
    assert_redacted(spd.add_sa(&args).expect("adding a 3des SA"), "Sa (3des)");

    let aes = Aes128Cbc::new(&AES_KEY).expect("keying AES-128-CBC");
    assert_eq!(format!("{aes:?}"), "Aes128Cbc { key: \"<redacted>\" }");
    assert_redacted(&aes, "Aes128Cbc");
    assert_redacted(
        &TripleDesCbc::new(TDES_KEY).expect("keying 3DES-CBC"),
        "TripleDesCbc",
    );
    assert_redacted(
        &HmacSha1_96::new(SHA1_KEY).expect("keying HMAC-SHA1-96"),
        "HmacSha1_96",
    );
    assert_redacted(
        &HmacSha256_128::new(&SHA256_KEY).expect("keying HMAC-SHA-256-128"),
        "HmacSha256_128",
    );
}

fn wipes_on_drop<T: ZeroizeOnDrop>() {}
fn wipeable<T: Zeroize>() {}

#[test]
fn every_key_holding_type_wipes_itself_on_drop() {
    // Ours.
    wipeable::<Key>();
    wipes_on_drop::<Key>();
    wipes_on_drop::<Sa>();
    wipes_on_drop::<Aes128Cbc>();
    wipes_on_drop::<TripleDesCbc>();
    wipes_on_drop::<HmacSha1_96>();
    wipes_on_drop::<HmacSha256_128>();
    // What they hold: the key schedules and the keyed hash states (the RustCrypto `zeroize`
    // features this crate enables). Without those features these lines do not compile.
    wipes_on_drop::<Aes128>();
    wipes_on_drop::<TdesEde3>();
    wipes_on_drop::<<Sha1 as EagerHash>::Core>();
    wipes_on_drop::<<Sha256 as EagerHash>::Core>();
    wipes_on_drop::<cbc::Decryptor<Aes128>>();
    // And `Key::zeroize` really clears the bytes.
    let mut key = Key::new(AES_KEY.to_vec());
    key.zeroize();
    assert!(
        key.as_bytes().iter().all(|b| *b == 0),
        "{:?}",
        key.as_bytes()
    );
}
