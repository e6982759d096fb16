//! The raw arguments of each command, exactly as the CLI collects them, and the option names.
//!
//! Every field is the untouched string the user typed (or `None` if the option was absent): the
//! model parses and validates all of it, so the CLI and the daemon can never disagree about what
//! a command means. These structs travel over the control socket, hence serde.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The long option names, as they appear at the start of every error message.
pub mod opt {
    pub const SA_SOURCE: &str = "--sa-source";
    pub const SA_DESTINATION: &str = "--sa-destination";
    pub const SA_MODE: &str = "--sa-mode";
    pub const SA_SPI: &str = "--sa-spi";
    pub const ENCRYPTION_ALGORITHM: &str = "--encryption-algorithm";
    pub const ENCRYPTION_KEY: &str = "--encryption-key";
    pub const INTEGRITY_ALGORITHM: &str = "--integrity-algorithm";
    pub const INTEGRITY_KEY: &str = "--integrity-key";
    pub const SA_NAME: &str = "--sa-name";
    pub const REMOVE_ALL: &str = "--remove-all";
    pub const SP_SOURCE: &str = "--sp-source";
    pub const SP_DESTINATION: &str = "--sp-destination";
    pub const SOURCE_PORT: &str = "--source-port";
    pub const DESTINATION_PORT: &str = "--destination-port";
    pub const UPPER_LAYER_PROTOCOL: &str = "--upper-layer-protocol";
    pub const FLOW_DIRECTION: &str = "--flow-direction";
    pub const ACTION: &str = "--action";
    pub const SP_MODE: &str = "--sp-mode";
    pub const SP_NAME: &str = "--sp-name";
    pub const PRIORITY: &str = "--priority";
    // `ike peer add|remove` and `sp add --ike-peer` (IKEv2; not ESXi options).
    pub const PEER_NAME: &str = "--peer-name";
    pub const LOCAL: &str = "--local";
    pub const REMOTE: &str = "--remote";
    pub const AUTH: &str = "--auth";
    pub const PSK: &str = "--psk";
    pub const IKE_PROPOSAL: &str = "--ike-proposal";
    pub const ESP_PROPOSAL: &str = "--esp-proposal";
    pub const LIFETIME: &str = "--lifetime";
    pub const IKE_LIFETIME: &str = "--ike-lifetime";
    pub const REKEY_MARGIN: &str = "--rekey-margin";
    pub const DPD: &str = "--dpd";
    pub const INITIATE: &str = "--initiate";
    pub const IKE_PEER: &str = "--ike-peer";
    pub const UDP_ENCAPSULATION: &str = "--udp-encapsulation";
}

/// `sa add`. Its `Debug` never shows the keys (see the impl below).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaAddArgs {
    pub sa_source: Option<String>,
    pub sa_destination: Option<String>,
    pub sa_mode: Option<String>,
    pub sa_spi: Option<String>,
    pub encryption_algorithm: Option<String>,
    pub encryption_key: Option<String>,
    pub integrity_algorithm: Option<String>,
    pub integrity_key: Option<String>,
    pub sa_name: Option<String>,
    /// xipsec only: `PORTS` of ESP in UDP (RFC 3948); absent in older requests and files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_encapsulation: Option<String>,
}

/// How a raw key option shows in `Debug`: whether it was given, and its length, never its text.
struct RedactedKey<'a>(&'a Option<String>);

impl fmt::Debug for RedactedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("None"),
            Some(text) => write!(f, "Some(<redacted {} characters>)", text.len()),
        }
    }
}

/// Written out (not derived) so the raw key strings never reach a log or a panic message; a
/// field added to the struct must be added here too (the exhaustive destructuring makes the
/// compiler say so).
impl fmt::Debug for SaAddArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            sa_source,
            sa_destination,
            sa_mode,
            sa_spi,
            encryption_algorithm,
            encryption_key,
            integrity_algorithm,
            integrity_key,
            sa_name,
            udp_encapsulation,
        } = self;
        f.debug_struct("SaAddArgs")
            .field("sa_source", sa_source)
            .field("sa_destination", sa_destination)
            .field("sa_mode", sa_mode)
            .field("sa_spi", sa_spi)
            .field("encryption_algorithm", encryption_algorithm)
            .field("encryption_key", &RedactedKey(encryption_key))
            .field("integrity_algorithm", integrity_algorithm)
            .field("integrity_key", &RedactedKey(integrity_key))
            .field("sa_name", sa_name)
            .field("udp_encapsulation", udp_encapsulation)
            .finish()
    }
}

/// `sa remove`: by `sa_name`, by `sa_source` + `sa_destination` + `sa_spi`, or `remove_all`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaRemoveArgs {
    pub sa_name: Option<String>,
    pub sa_source: Option<String>,
    pub sa_destination: Option<String>,
    pub sa_spi: Option<String>,
    pub remove_all: bool,
}

/// `sp add`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpAddArgs {
    pub sp_source: Option<String>,
    pub sp_destination: Option<String>,
    pub source_port: Option<String>,
    pub destination_port: Option<String>,
    pub upper_layer_protocol: Option<String>,
    pub flow_direction: Option<String>,
    pub action: Option<String>,
    pub sp_mode: Option<String>,
    pub sa_name: Option<String>,
    pub sp_name: Option<String>,
    pub priority: Option<String>,
}

/// `sp remove`: by `sp_name` or `remove_all`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpRemoveArgs {
    pub sp_name: Option<String>,
    pub remove_all: bool,
}

/// `ike peer add`. Its `Debug` never shows the PSK.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddArgs {
    pub peer_name: Option<String>,
    pub local: Option<String>,
    pub remote: Option<String>,
    pub auth: Option<String>,
    pub psk: Option<String>,
    pub ike_proposal: Option<String>,
    pub esp_proposal: Option<String>,
    pub lifetime: Option<String>,
    pub ike_lifetime: Option<String>,
    pub rekey_margin: Option<String>,
    pub dpd: Option<String>,
    pub initiate: Option<String>,
}

/// Written out like `SaAddArgs`'s: the PSK text never reaches a log.
impl fmt::Debug for PeerAddArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            peer_name,
            local,
            remote,
            auth,
            psk,
            ike_proposal,
            esp_proposal,
            lifetime,
            ike_lifetime,
            rekey_margin,
            dpd,
            initiate,
        } = self;
        f.debug_struct("PeerAddArgs")
            .field("peer_name", peer_name)
            .field("local", local)
            .field("remote", remote)
            .field("auth", auth)
            .field("psk", &RedactedKey(psk))
            .field("ike_proposal", ike_proposal)
            .field("esp_proposal", esp_proposal)
            .field("lifetime", lifetime)
            .field("ike_lifetime", ike_lifetime)
            .field("rekey_margin", rekey_margin)
            .field("dpd", dpd)
            .field("initiate", initiate)
            .finish()
    }
}

/// `ike peer remove`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRemoveArgs {
    pub peer_name: Option<String>,
}

/// `sp add --ike-peer NAME`: an `ipsec` SP whose SAs IKE negotiates with that peer, instead of
/// naming one with `--sa-name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IkeSpAddArgs {
    #[serde(flatten)]
    pub sp: SpAddArgs,
    pub ike_peer: Option<String>,
}
