//! `xipsec export`: the running configuration as an `xipsec apply` file.
//!
//! Contract:
//! - Standard output gets one `sa add` line per SA (by name), then one `sp add` line per SP (in
//!   creation order, which is the order their age ranks them by), every option spelled out, so
//!   the output is deterministic and `xipsec apply` of it changes nothing. (Names need no
//!   quoting: the model allows only `A-Z a-z 0-9 _ . -` in them.)
//! - Keys are printed as `REDACTED` (`daemon::apply::KEY_PLACEHOLDER`): `apply` reads it as "the
//!   running key of this SA", which it accepts only for an SA it leaves unchanged, so a redacted
//!   export never installs a key by mistake.
//! - `--with-keys FILE` writes the same lines with the keys (hex) to FILE only, created new with
//!   mode 0600 (an existing FILE is never overwritten), and prints where they went. Root only:
//!   the daemon refuses keys to anyone else.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{Failure, call, unexpected};
use crate::daemon::apply::KEY_PLACEHOLDER;
use crate::daemon::protocol::{Configuration, ExportedSa, Request, Response, SpEntry};
use crate::model::{EncryptionAlgorithm, IntegrityAlgorithm, Key};

/// `xipsec export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write the configuration with its keys to FILE (created new, mode 0600; root only)
    /// instead of printing it with the keys redacted.
    #[arg(long, value_name = "FILE")]
    pub with_keys: Option<PathBuf>,
}

/// `xipsec export --help`: what it does.
pub const LONG_ABOUT: &str = "Print the running configuration as an `xipsec apply` file.\n\n\
    One `sa add` line per SA (by name), then one `sp add` line per SP (oldest first, the order \
    in which equally specific policies rank). Keys are printed as REDACTED: `xipsec apply` reads \
    that as \"keep this SA's running key\", which it accepts only while the SA is otherwise \
    unchanged, so `xipsec export | xipsec apply --dry-run -` shows no difference and a redacted \
    file never installs a key by mistake.\n\n\
    --with-keys FILE writes the same lines with the keys to FILE instead (a new file, mode \
    0600, never overwritten; root only).";

/// Run `xipsec export`.
pub(super) fn run(socket: &Path, args: &ExportArgs) -> Result<(), Failure> {
    let with_keys = args.with_keys.is_some();
    if with_keys {
        require_root("export --with-keys")?;
    }
    let config = fetch(socket, with_keys)?;
    let text = render(&config);
    match &args.with_keys {
        Some(file) => {
            write_secret(file, &text)?;
            println!(
                "wrote {} sas and {} sps with their keys to {} (mode 0600)",
                config.sas.len(),
                config.sps.len(),
                file.display()
            );
            Ok(())
        }
        None => super::print(&text),
    }
}

/// The running configuration, keys included if `with_keys`.
pub(super) fn fetch(socket: &Path, with_keys: bool) -> Result<Configuration, Failure> {
    match call(socket, &Request::Export { with_keys })? {
        Response::Configuration(config) => Ok(config),
        other => Err(unexpected(&other)),
    }
}

/// Refuse early, with a clear message, what the daemon would refuse anyway.
pub(super) fn require_root(what: &str) -> Result<(), Failure> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "{what} writes keys and is for root only: run it as root"
        )))
    }
}

/// Create `file` new with mode 0600 and write `text` to it; an existing file is left alone.
pub(super) fn write_secret(file: &Path, text: &str) -> Result<(), Failure> {
    let failed = |e: std::io::Error| {
        let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
            " (it exists; keys are only ever written to a new file: remove it or pick another name)"
        } else {
            ""
        };
        Failure::new(format!("cannot write {}: {e}{hint}", file.display()))
    };
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(failed)?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(failed)
}

/// The apply file of `config`: SA lines, then SP lines.
pub fn render(config: &Configuration) -> String {
    let mut text = String::new();
    // SAs IKE negotiated are not configuration (they are in the Wireshark table only).
    for sa in config
        .sas
        .iter()
        .filter(|sa| !config.ike_sas.contains(&sa.name))
    {
        text.push_str(&sa_line(sa));
        text.push('\n');
    }
    for peer in &config.peers {
        text.push_str(&peer_line(peer));
        text.push('\n');
    }
    for sp in &config.sps {
        text.push_str(&sp_line(sp));
        if let Some(peer) = config.ike_peers.get(&sp.name) {
            let _ = write!(text, " --ike-peer {peer}");
        }
        text.push('\n');
    }
    text
}

/// The `ike peer add` line of `peer`; its PSK as `key` writes keys.
pub fn peer_line(peer: &crate::daemon::protocol::ExportedPeer) -> String {
    format!(
        "ike peer add --peer-name {} --local {} --remote {} --auth psk --psk {} \
         --ike-proposal {} --esp-proposal {} --lifetime {} --ike-lifetime {} --rekey-margin {} \
         --dpd {} --initiate {}",
        peer.name,
        peer.local,
        peer.remote,
        key(peer.psk.as_ref()),
        peer.ike_proposal,
        peer.esp_proposal,
        peer.lifetime,
        peer.ike_lifetime,
        peer.rekey_margin,
        peer.dpd,
        peer.initiate.as_str()
    )
}

fn address(address: Option<std::net::Ipv6Addr>) -> String {
    address.map_or_else(|| "any".to_owned(), |a| a.to_string())
}

/// A key as `--…-key` takes it: `0x` hex, or the placeholder.
fn key(key: Option<&Key>) -> String {
    key.map_or_else(
        || KEY_PLACEHOLDER.to_owned(),
        |k| format!("0x{}", hex::encode(k.as_bytes())),
    )
}

/// The `sa add` line of `sa`.
pub fn sa_line(sa: &ExportedSa) -> String {
    let mut line = format!(
        "sa add --sa-name {} --sa-source {} --sa-destination {} --sa-mode {} --sa-spi {:#x} \
         --encryption-algorithm {}",
        sa.name,
        address(sa.source),
        address(sa.destination),
        sa.mode,
        sa.spi,
        sa.encryption_algorithm
    );
    if sa.encryption_algorithm != EncryptionAlgorithm::Null {
        let _ = write!(
            line,
            " --encryption-key {}",
            key(sa.encryption_key.as_ref())
        );
    }
    if sa.integrity_algorithm != IntegrityAlgorithm::None {
        let _ = write!(
            line,
            " --integrity-algorithm {} --integrity-key {}",
            sa.integrity_algorithm,
            key(sa.integrity_key.as_ref())
        );
    }
    if let Some(encap) = sa.udp_encap {
        let _ = write!(
            line,
            " --udp-encapsulation {}:{}",
            encap.source_port, encap.destination_port
        );
    }
    line
}

/// The `sp add` line of `sp`.
pub fn sp_line(sp: &SpEntry) -> String {
    let port = |p: Option<u16>| p.map_or_else(|| "any".to_owned(), |p| p.to_string());
    let mut line = format!(
        "sp add --sp-name {} --sp-source {} --sp-destination {} --source-port {} \
         --destination-port {} --upper-layer-protocol {} --flow-direction {} --action {} \
         --sp-mode {}",
        sp.name,
        sp.source,
        sp.destination,
        port(sp.source_port),
        port(sp.destination_port),
        sp.protocol,
        sp.direction,
        sp.action,
        sp.mode
    );
    if let Some(sa) = &sp.sa_name {
        let _ = write!(line, " --sa-name {sa}");
    }
    if let Some(priority) = sp.priority {
        let _ = write!(line, " --priority {priority}");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::protocol::{BatchItem, Change};
    use crate::daemon::{apply, batch};
    use crate::model::Spd;

    /// A configuration with every kind of SA and SP the export must spell out.
    fn running() -> Spd {
        let text = "\
sa add --sa-name a.b --sa-source any --sa-destination any --sa-mode transport --sa-spi 0x100 --encryption-algorithm null --integrity-algorithm hmac-sha1 --integrity-key ipv6readylogsha1out2
sa add --sa-name gcm --sa-source 2001:db8::1 --sa-destination 2001:db8::2 --sa-mode tunnel --sa-spi 0xffffffff --encryption-algorithm aes256-gcm --encryption-key 0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223
sa add --sa-name cbc --sa-source 2001:db8::2 --sa-destination 2001:db8::1 --sa-mode transport --sa-spi 0x1000 --encryption-algorithm 3des-cbc --encryption-key ipv6readylogo3descbcout2 --integrity-algorithm hmac-sha2-256 --integrity-key 0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
sp add --sp-name z --sp-source 2001:db8::/32 --sp-destination any --source-port 23 --destination-port 25 --upper-layer-protocol tcp --flow-direction out --sa-name gcm --priority 7
sp add --sp-name y --sp-source any --sp-destination 2001:db8:1::/48 --source-port any --destination-port 128 --upper-layer-protocol icmp6 --flow-direction in --action none --sp-mode tunnel
sp add --sp-name x --sp-source any --sp-destination any --source-port any --destination-port any --flow-direction in --action discard
sp add --sp-name w_w --sp-source any --sp-destination any --source-port any --destination-port any --flow-direction out --sa-name a.b
";
        let items = crate::cli::batch::parse(text).expect("the fixture parses");
        batch::apply(&Spd::new(), &items)
            .expect("the fixture applies")
            .0
    }

    fn reparse(text: &str) -> Vec<BatchItem> {
        crate::cli::batch::parse(text).expect("the export parses as an apply file")
    }

    #[test]
    fn a_redacted_export_applies_as_no_difference() {
        let spd = running();
        let text = render(&apply::configuration(&spd, 1, false));
        assert!(!text.contains("0001020304"), "{text}");
        assert!(!text.contains("ipv6readylog"), "{text}");
        assert_eq!(text.matches(KEY_PLACEHOLDER).count(), 4, "{text}");
        let plan = apply::plan(&spd, &reparse(&text)).expect("the export applies");
        assert!(plan.items.is_empty(), "{:?}", plan.differences);
        assert!(plan.differences.is_empty(), "{:?}", plan.differences);
        // On another daemon (nothing running) the placeholders are refused.
        let err = apply::plan(&Spd::new(), &reparse(&text)).expect_err("no running keys");
        assert!(err.to_string().contains(KEY_PLACEHOLDER), "{err}");
    }

    #[test]
    fn an_export_with_keys_rebuilds_the_configuration() {
        let spd = running();
        let text = render(&apply::configuration(&spd, 1, true));
        assert!(!text.contains(KEY_PLACEHOLDER), "{text}");
        let items = reparse(&text);
        let (copy, _) = batch::apply(&Spd::new(), &items).expect("the export applies");
        // Same records, ids and creation order included: SAs by name get other ids, so
        // compare what apply compares.
        let plan = apply::plan(
            &copy,
            &reparse(&render(&apply::configuration(&spd, 1, true))),
        )
        .expect("plans");
        assert!(plan.differences.is_empty(), "{:?}", plan.differences);
        assert_eq!(
            copy.sps()
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["z", "y", "x", "w_w"],
            "the policies' age order"
        );
        assert!(
            items
                .iter()
                .all(|i| matches!(i.change, Change::SaAdd(_) | Change::SpAdd(_)))
        );
    }
}
