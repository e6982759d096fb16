//! The control protocol between `xipsec` commands and the daemon.
//!
//! Newline-delimited JSON over a Unix stream socket: the client writes one [`Request`] per line
//! and reads exactly one [`Response`] line back; a connection may carry several exchanges in
//! turn. Requests carry the raw option strings ([`SaAddArgs`], ...): the daemon hands them to the
//! model, which alone validates them, so a rejected command comes back as
//! [`Response::Error`] with the model's one-line message and changes nothing.
//!
//! Listings ([`SaEntry`], [`SpEntry`]) never carry keys.
//!
//! Generations: every committed change (one single command, or one whole [`Batch`]) moves the
//! configuration to the next generation, a number persisted with the state and shown by
//! `status`. Each change's acknowledgement carries the generation it created, and a batch may
//! name the generation it was computed against ([`Batch::expect_generation`]): if the
//! configuration has moved on since, the batch is refused and nothing changes.
//!
//! A [`Request::Batch`] is the one request that may exceed the daemon's usual line limit; its
//! line must start with exactly `{"batch":` (as serde_json writes it) for the larger limit to
//! apply (see `socket`).

use serde::{Deserialize, Serialize};

use crate::model::{
    Action, Direction, EncryptionAlgorithm, IntegrityAlgorithm, Mode, SaAddArgs, SaRemoveArgs,
    SpAddArgs, SpRemoveArgs, UpperLayerProtocol,
};

/// Longest request or response line either side accepts, so a confused peer cannot make the
/// other buffer without bound. A listing of every SP the kernel can hold fits well within it.
pub const MAX_LINE: usize = 256 * 1024 * 1024;

/// One command from the CLI.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    SaAdd(SaAddArgs),
    SaList,
    SaRemove(SaRemoveArgs),
    /// Empty an inbound SA's anti-replay window (see `xipsec sa reset-replay --help`).
    SaResetReplay {
        sa_name: Option<String>,
    },
    SpAdd(SpAddArgs),
    SpList,
    SpRemove(SpRemoveArgs),
    Stats,
    Status,
    /// Several adds and removes applied as one change: all or nothing, one datapath flip, one
    /// state write, one answer ([`Response::BatchApplied`]).
    Batch(Batch),
    /// The whole desired set of user-owned SAs and SPs: the daemon applies the difference from
    /// the running configuration as one batch, or only reports it ([`Response::Applied`]).
    Apply(Apply),
    /// The running configuration in full ([`Response::Configuration`]); keys only with
    /// `with_keys`, which only root may ask for.
    Export {
        #[serde(default)]
        with_keys: bool,
    },
    /// What the kernel's classifier and the reference make of one packet; changes nothing
    /// ([`Response::Explained`]).
    Explain(ExplainArgs),
    /// Everything `GET /metrics` exposes, read at one moment ([`Response::Metrics`]): per-SP
    /// entries only for the first `max_sps` SPs in creation order, the rest summed.
    Metrics {
        max_sps: u64,
    },
    // IKEv2 (see `daemon::ike`): peers are configuration like SAs and SPs; `ike sa list` is
    // answered by the IKE task.
    PeerAdd(crate::model::PeerAddArgs),
    PeerRemove(crate::model::PeerRemoveArgs),
    PeerList,
    IkeSaList,
    /// `sp add --ike-peer`: an SP whose SAs IKE negotiates.
    SpAddIke(crate::model::IkeSpAddArgs),
    /// `ike sa rekey`: rekey the peer's CHILD_SAs, or with `ike` its IKE SA, now
    /// ([`Response::IkeRekeyStarted`]); answered by the IKE task.
    IkeSaRekey {
        peer_name: Option<String>,
        #[serde(default)]
        ike: bool,
    },
}

/// The prefix of every serialised [`Request::Apply`] line: like a batch, it may be large.
pub const APPLY_TAG: &[u8] = b"{\"apply\":";

impl Request {
    /// Whether only uid 0 may send this request, whoever else the socket serves: it answers
    /// with key material.
    pub fn needs_root(&self) -> bool {
        matches!(self, Self::Export { with_keys: true })
    }
}

/// `xipsec apply`: the desired configuration, one `sa add`/`sp add` per item, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Apply {
    /// Refuse, changing nothing, unless the configuration is at this generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_generation: Option<u64>,
    /// Only compute and report the difference.
    #[serde(default)]
    pub dry_run: bool,
    pub items: Vec<BatchItem>,
}

/// The prefix of every serialised [`Request::Batch`] line (see the module docs).
pub const BATCH_TAG: &[u8] = b"{\"batch\":";

/// One change a [`Batch`] may hold: the same raw options as the single commands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    SaAdd(SaAddArgs),
    SaRemove(SaRemoveArgs),
    SpAdd(SpAddArgs),
    SpRemove(SpRemoveArgs),
    PeerAdd(crate::model::PeerAddArgs),
    PeerRemove(crate::model::PeerRemoveArgs),
    SpAddIke(crate::model::IkeSpAddArgs),
}

/// Changes validated as a whole, in order (each against the ones before it), and committed
/// together or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Refuse the batch, changing nothing, unless the configuration is at this generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_generation: Option<u64>,
    pub items: Vec<BatchItem>,
}

/// One change of a [`Batch`], with where it came from for error messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    /// Line of the batch file it was read from (1-based), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub change: Change,
}

/// The daemon's answer to one [`Request`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// An SA or SP was added, and persisted, under this name.
    Added {
        name: String,
        /// The configuration generation this change created.
        #[serde(default)]
        generation: u64,
    },
    /// These SAs or SPs were removed, and the removal persisted.
    Removed {
        names: Vec<String>,
        /// The configuration generation this change created.
        #[serde(default)]
        generation: u64,
    },
    /// A whole [`Batch`] was applied and persisted as one change.
    BatchApplied {
        /// The configuration generation the batch created (unchanged for an empty batch).
        generation: u64,
        /// SAs and SPs the batch added.
        added: u64,
        /// SAs and SPs the batch removed.
        removed: u64,
    },
    /// The replay window of this SA was emptied and its persisted ceiling forgotten.
    ReplayReset {
        name: String,
    },
    SaList(Vec<SaEntry>),
    SpList(Vec<SpEntry>),
    Stats(StatsReport),
    /// Boxed: the largest answer by far, and rare.
    Status(Box<StatusReport>),
    Metrics(MetricsReport),
    /// The request was refused or failed; nothing changed. One line, no `error:` prefix.
    Error {
        message: String,
    },
    /// The difference an [`Apply`] found, and whether it was applied.
    Applied(ApplyReport),
    /// The running configuration ([`Request::Export`]).
    Configuration(Configuration),
    /// The answer to [`Request::Explain`].
    Explained(ExplainReport),
    PeerList(Vec<PeerEntry>),
    IkeSaList(Vec<IkeSaEntry>),
    /// A rekey was started ([`Request::IkeSaRekey`]): the SAs being replaced (the IKE SA's
    /// SPIi, or the CHILD_SAs' inbound SPIs, in hex).
    IkeRekeyStarted {
        peer: String,
        sas: Vec<String>,
    },
}

/// One IKE peer as `xipsec ike peer list` shows it (never the PSK).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// Its `ike peer add` options, without the PSK.
    #[serde(flatten)]
    pub peer: ExportedPeer,
    pub auth: String,
    /// Names of the SPs that name this peer.
    pub in_use_by: Vec<String>,
    /// The `ike` SAs installed for it.
    pub sas: Vec<String>,
}

/// One peer with everything `ike peer add` needs; the PSK only when asked for with keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedPeer {
    pub name: String,
    pub local: std::net::Ipv6Addr,
    pub remote: std::net::Ipv6Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk: Option<crate::model::Key>,
    pub ike_proposal: String,
    pub esp_proposal: String,
    pub lifetime: u32,
    pub ike_lifetime: u32,
    pub rekey_margin: u32,
    pub dpd: u32,
    pub initiate: crate::model::Initiate,
}

/// One IKE SA as `xipsec ike sa list` shows it: never a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IkeSaEntry {
    pub peer: String,
    /// `initiator` or `responder`.
    pub role: String,
    /// `init-sent`, `auth-sent`, `half-open`, `established`, `deleting`, `retiring`, ...
    pub state: String,
    /// SPIi and SPIr, 16 hex digits each.
    pub spi_i: String,
    pub spi_r: String,
    /// The IKE suite (`aes128-sha256-prfsha256-x25519`), empty before IKE_SA_INIT completed.
    pub suite: String,
    pub local: String,
    pub remote: String,
    pub encapsulated: bool,
    /// Seconds since IKE_AUTH completed (`None` before).
    pub established_seconds: Option<u64>,
    /// Seconds until the IKE SA is rekeyed (its lifetime less the margin and a jitter), when
    /// a rekey is scheduled.
    pub rekey_seconds: Option<u64>,
    /// Seconds until the IKE SA's lifetime ends (it is deleted then if not rekeyed).
    #[serde(default)]
    pub expire_seconds: Option<u64>,
    /// CHILD_SAs: `inbound/outbound` SPIs in hex.
    pub child_sas: Vec<String>,
    /// Per CHILD_SA, in `child_sas`' order: seconds until it is rekeyed (`-` once it is being
    /// replaced or deleted), and until its lifetime ends.
    #[serde(default)]
    pub child_sa_rekey_seconds: Vec<String>,
    #[serde(default)]
    pub child_sa_expire_seconds: Vec<String>,
    pub messages_received: u64,
    pub messages_sent: u64,
}

/// What `xipsec apply` found and did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// True if nothing was changed on purpose (`--dry-run`).
    pub dry_run: bool,
    /// The generation the difference was computed against (dry run, or nothing to do), or the
    /// one applying it created.
    pub generation: u64,
    /// Per SA, then per SP, by name: what differs. Never a key.
    pub differences: Vec<Difference>,
}

/// One SA or SP that the apply file and the running configuration disagree on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// `sa` or `sp`.
    pub kind: String,
    pub name: String,
    pub change: DifferenceKind,
}

/// How an SA or SP differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// In the file only.
    Added,
    /// Running only.
    Removed,
    /// In both, with these options (long names without `--`) different; keys are named,
    /// never shown.
    Changed { fields: Vec<String> },
    /// The same in both, but removed and added again with its changed SA (an SA in use cannot
    /// be replaced under its policies).
    Readded { sa: String },
}

/// The running configuration, as `xipsec export` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    pub generation: u64,
    /// By name.
    pub sas: Vec<ExportedSa>,
    /// In creation order (the order their age ranks them by).
    pub sps: Vec<SpEntry>,
    /// IKE peers, in creation order (before the SPs that name them in an apply file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<ExportedPeer>,
    /// SP name -> the peer it names (`sp add --ike-peer`); such an SP's `sa_name` is IKE's.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ike_peers: std::collections::BTreeMap<String, String>,
    /// Names of the `sas` IKE negotiated: in the Wireshark table, never in an apply file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ike_sas: Vec<String>,
}

/// One SA with everything `sa add` needs; the keys only when asked for with keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedSa {
    pub name: String,
    pub source: Option<std::net::Ipv6Addr>,
    pub destination: Option<std::net::Ipv6Addr>,
    pub mode: Mode,
    pub spi: u32,
    pub encryption_algorithm: EncryptionAlgorithm,
    pub integrity_algorithm: IntegrityAlgorithm,
    /// `None` when keys were not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<crate::model::Key>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity_key: Option<crate::model::Key>,
    /// ESP in UDP (`--udp-encapsulation`); absent for plain ESP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_encap: Option<crate::model::UdpEncap>,
}

/// One SA as `xipsec sa list` shows it. `None` addresses mean `any`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaEntry {
    pub name: String,
    pub source: Option<std::net::Ipv6Addr>,
    pub destination: Option<std::net::Ipv6Addr>,
    pub mode: Mode,
    pub spi: u32,
    pub encryption_algorithm: EncryptionAlgorithm,
    pub integrity_algorithm: IntegrityAlgorithm,
    /// Who installed the SA: `user` for `sa add` (key exchange will add its own owner).
    pub owner: String,
    /// Names of the SPs that reference this SA.
    pub in_use_by: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
    pub auth_failures: u64,
    pub replay_drops: u64,
    pub errors: u64,
    /// ESP in UDP (`--udp-encapsulation`); absent for plain ESP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_encap: Option<crate::model::UdpEncap>,
}

/// One SP as `xipsec sp list` shows it. `None` ports mean `any`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpEntry {
    pub name: String,
    pub source: ipnet::Ipv6Net,
    pub destination: ipnet::Ipv6Net,
    pub source_port: Option<u16>,
    pub destination_port: Option<u16>,
    pub protocol: UpperLayerProtocol,
    pub direction: Direction,
    pub action: Action,
    pub mode: Mode,
    pub sa_name: Option<String>,
    pub priority: Option<u16>,
    pub packets: u64,
    pub bytes: u64,
}

/// What `xipsec stats` shows: packets dropped, per reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    pub reasons: Vec<(String, u64)>,
}

/// What `xipsec status` shows about the daemon.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub socket: String,
    pub state_file: String,
    /// `xdp` when a datapath is attached, `none` under `--no-datapath`.
    pub datapath: String,
    pub interfaces: Vec<String>,
    pub xdp_mode: String,
    pub pin_dir: String,
    pub sas: u64,
    pub sps: u64,
    pub uptime_seconds: u64,
    /// The ESP engine: `running`, `none` (no datapath), or `dead: ...` when one of its threads
    /// died (the daemon is then exiting; protected flows fail closed).
    #[serde(default)]
    pub engine: String,
    /// The configuration generation: how many changes were committed since the state was
    /// created (a batch counts as one).
    #[serde(default)]
    pub generation: u64,
    /// Per interface, in `interfaces` order: the XDP mode the kernel reports in effect
    /// (`native`, `generic`, `offload`, `multi` or `none`), not the configured `xdp_mode`.
    #[serde(default)]
    pub xdp_in_effect: Vec<String>,
    /// Per interface: the id of the XDP program the kernel runs there (`0`: none).
    #[serde(default)]
    pub xdp_program_ids: Vec<String>,
    /// Per interface: the TC egress attachment (`tcx egress program N link M`, or `none`).
    #[serde(default)]
    pub tc_attachment: Vec<String>,
    /// Per interface: since when the programs are attached there (UTC, RFC 3339): when the
    /// first daemon pinned the links; a restarted daemon swaps its programs into them.
    #[serde(default)]
    pub attached_since: Vec<String>,
    /// Names of the ESP engine's running threads.
    #[serde(default)]
    pub engine_threads: Vec<String>,
    /// The engine's TUN device (`name ifindex N`), empty without an engine.
    #[serde(default)]
    pub engine_tun: String,
    /// The engine's AF_XDP sockets: `interface queue N` each.
    #[serde(default)]
    pub engine_xsk: Vec<String>,
    /// The engine's last fatal error (a dead thread), if any.
    #[serde(default)]
    pub engine_last_error: Option<String>,
}

/// What `GET /metrics` serves, read from the committed state and one counter snapshot, so a
/// scrape equals `sa list`, `sp list` and `stats` taken at the same moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// Every SA with its counters (as `sa list`).
    pub sas: Vec<SaEntry>,
    /// Per SA name: the directions of the SPs that use it (`in`, `out`, `both` or `unused`).
    pub sa_directions: Vec<(String, String)>,
    /// The first SPs in creation order (as `sp list`), at most the `max_sps` asked for.
    pub sps: Vec<SpEntry>,
    /// How many SPs there are in all.
    pub sp_count: u64,
    /// Packets and bytes of the SPs not in `sps`, summed.
    pub sp_rest_packets: u64,
    pub sp_rest_bytes: u64,
    /// What `stats` shows: kernel drops and events, then the engine's counters.
    pub reasons: Vec<(String, u64)>,
    /// Every kernel verdict counter (passes included), for the flow-cache ratio.
    pub verdicts: Vec<(String, u64)>,
    /// The configuration generation.
    pub generation: u64,
    pub uptime_seconds: u64,
}

/// `xipsec explain`'s options, raw: the daemon parses them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainArgs {
    pub direction: Option<String>,
    pub source: Option<String>,
    pub destination: Option<String>,
    pub protocol: Option<String>,
    pub source_port: Option<String>,
    pub destination_port: Option<String>,
}

/// One side's answer for an explained packet: the kernel's or the reference model's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainVerdict {
    /// What the datapath does: `pass`, `drop`, `protect` (to the ESP engine), `esp-to-engine`.
    pub verdict: String,
    /// Why, in words (`no policy`, `discard policy`, `unknown spi`, `malformed`, ...).
    pub because: String,
    /// The matched policy, its id, action and rank (`Sp::rank`), if one matched.
    pub sp: Option<String>,
    pub sp_id: Option<u32>,
    pub action: Option<Action>,
    pub rank: Option<u64>,
    /// Why that policy won over the next matching one (`model::RankReason`, in words).
    pub rank_reason: Option<String>,
    /// The SA the policy names, or that inbound ESP's SPI belongs to.
    pub sa: Option<String>,
}

/// `xipsec explain`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainReport {
    pub direction: Direction,
    /// The packet built, in words.
    pub packet: String,
    /// The configuration generation both answers were computed for.
    pub generation: u64,
    /// `None` without a kernel datapath (`--no-datapath`).
    pub kernel: Option<ExplainVerdict>,
    pub reference: ExplainVerdict,
    /// The kernel agrees with the reference (true without a kernel); false is a bug.
    pub agree: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line() {
        let request = Request::SaAdd(SaAddArgs {
            sa_name: Some("sa\n1".into()),
            ..SaAddArgs::default()
        });
        let line = serde_json::to_string(&request).expect("serialising a request");
        assert!(!line.contains('\n'), "{line}");
        let back: Request = serde_json::from_str(&line).expect("parsing a request");
        assert!(matches!(back, Request::SaAdd(a) if a.sa_name.as_deref() == Some("sa\n1")));
        let list = serde_json::to_string(&Request::SaList).expect("serialising sa list");
        assert_eq!(list, "\"sa_list\"");
    }

    #[test]
    fn a_batch_line_starts_with_its_tag() {
        let batch = Request::Batch(Batch {
            expect_generation: Some(3),
            items: vec![BatchItem {
                line: Some(7),
                change: Change::SpRemove(SpRemoveArgs {
                    sp_name: Some("sp1".into()),
                    remove_all: false,
                }),
            }],
        });
        let line = serde_json::to_vec(&batch).expect("serialising a batch");
        assert!(
            line.starts_with(BATCH_TAG),
            "{}",
            String::from_utf8_lossy(&line)
        );
        let back: Request = serde_json::from_slice(&line).expect("parsing a batch");
        assert!(matches!(back, Request::Batch(b) if b == match batch {
            Request::Batch(b) => b,
            _ => unreachable!(),
        }));
        // The generation is optional on the wire.
        let bare: Request =
            serde_json::from_str(r#"{"batch":{"items":[]}}"#).expect("parsing a bare batch");
        assert!(
            matches!(bare, Request::Batch(Batch { expect_generation: None, ref items }) if items.is_empty())
        );
    }
}
