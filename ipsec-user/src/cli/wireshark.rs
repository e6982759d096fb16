//! `xipsec sa export --wireshark FILE`: the SAs' keys as Wireshark's ESP SA table.
//!
//! Contract:
//! - FILE is Wireshark's `esp_sa` user access table (the file Wireshark keeps in its profile
//!   directory; tshark reads it from there, or from `-o uat:esp_sa:LINE`): one line per SA,
//!   eight quoted comma-separated fields: protocol (`IPv6`), source, destination (`*` for
//!   `any`), SPI (`0x` and 8 hex digits), encryption algorithm, encryption key (`0x` hex, empty
//!   for NULL), authentication algorithm, authentication key (empty for NULL). The algorithm
//!   names are the strings of Wireshark's `esp_encryption_type_vals` and
//!   `esp_authentication_type_vals` (epan/dissectors/packet-ipsec.c), checked against Debian
//!   12's Wireshark 4.0 by `tests/wireshark.rs`.
//! - ESP in UDP (`--udp-encapsulation`, RFC 3948) has no column in the table: Wireshark finds
//!   ESP inside UDP 4500 by itself (its `udpencap` dissector), and the SA lines apply to it by
//!   addresses and SPI; for another port, `tshark -d udp.port==PORT,udpencap`.
//! - FILE is created new with mode 0600 and never overwritten; root only (the daemon refuses
//!   keys to anyone else).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;

use super::Failure;
use super::export::{fetch, require_root, write_secret};
use crate::daemon::protocol::{Configuration, ExportedSa};
use crate::model::{EncryptionAlgorithm, IntegrityAlgorithm, Key};

/// `xipsec sa export`.
#[derive(Debug, Args)]
pub struct SaExportArgs {
    /// Write every SA with its keys as Wireshark's `esp_sa` table to FILE (created new, mode
    /// 0600; root only). Copy it as `esp_sa` into a Wireshark profile directory (for tshark,
    /// WIRESHARK_CONFIG_DIR=DIR) and turn on ESP decryption and ICV checking (tshark -o
    /// esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE).
    #[arg(long, value_name = "FILE", required = true)]
    pub wireshark: PathBuf,
}

/// Run `xipsec sa export`.
pub(super) fn run(socket: &Path, args: &SaExportArgs) -> Result<(), Failure> {
    require_root("sa export --wireshark")?;
    let config = fetch(socket, true)?;
    write_secret(&args.wireshark, &render(&config))?;
    println!(
        "wrote {} sas with their keys to {} (mode 0600)",
        config.sas.len(),
        args.wireshark.display()
    );
    Ok(())
}

/// Wireshark's name for an encryption algorithm.
pub fn encryption_name(algorithm: EncryptionAlgorithm) -> &'static str {
    match algorithm {
        EncryptionAlgorithm::Null => "NULL",
        EncryptionAlgorithm::TripleDesCbc => "TripleDES-CBC [RFC2451]",
        // Wireshark picks AES-128 or AES-256 by the key's length.
        EncryptionAlgorithm::Aes128Cbc | EncryptionAlgorithm::Aes256Cbc => "AES-CBC [RFC3602]",
        // Key and salt together, as RFC 4106 §8.1 gives them; ICV 16 bytes.
        EncryptionAlgorithm::Aes128Gcm | EncryptionAlgorithm::Aes256Gcm => {
            "AES-GCM with 16 octet ICV [RFC4106]"
        }
    }
}

/// Wireshark's name for an authentication algorithm.
pub fn authentication_name(algorithm: IntegrityAlgorithm) -> &'static str {
    match algorithm {
        IntegrityAlgorithm::HmacSha1 => "HMAC-SHA-1-96 [RFC2404]",
        IntegrityAlgorithm::HmacSha256 => "HMAC-SHA-256-128 [RFC4868]",
        IntegrityAlgorithm::None => "NULL",
    }
}

/// The `esp_sa` table of `config`'s SAs (which must carry their keys).
pub fn render(config: &Configuration) -> String {
    let mut text = String::new();
    for sa in &config.sas {
        let _ = writeln!(text, "{}", line(sa));
    }
    text
}

/// One SA's `esp_sa` line.
pub fn line(sa: &ExportedSa) -> String {
    let address =
        |a: Option<std::net::Ipv6Addr>| a.map_or_else(|| "*".to_owned(), |a| a.to_string());
    let key = |k: Option<&Key>| match k {
        Some(k) if !k.is_empty() => format!("0x{}", hex::encode(k.as_bytes())),
        _ => String::new(),
    };
    format!(
        "\"IPv6\",\"{}\",\"{}\",\"0x{:08x}\",\"{}\",\"{}\",\"{}\",\"{}\"",
        address(sa.source),
        address(sa.destination),
        sa.spi,
        encryption_name(sa.encryption_algorithm),
        key(sa.encryption_key.as_ref()),
        authentication_name(sa.integrity_algorithm),
        key(sa.integrity_key.as_ref()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mode;

    #[test]
    fn lines_are_wiresharks_uat_format() {
        let sa = ExportedSa {
            name: "x".into(),
            source: Some("2001:db8::1".parse().expect("an address")),
            destination: None,
            mode: Mode::Transport,
            spi: 0x1001,
            encryption_algorithm: EncryptionAlgorithm::Aes128Gcm,
            integrity_algorithm: IntegrityAlgorithm::None,
            encryption_key: Some(Key::new(vec![0xab; 20])),
            integrity_key: Some(Key::new(Vec::new())),
            udp_encap: None,
        };
        assert_eq!(
            line(&sa),
            format!(
                "\"IPv6\",\"2001:db8::1\",\"*\",\"0x00001001\",\"AES-GCM with 16 octet ICV \
                 [RFC4106]\",\"0x{}\",\"NULL\",\"\"",
                "ab".repeat(20)
            )
        );
    }
}
