//! The control protocol between `xipsec` commands and the daemon.
//!
//! Newline-delimited JSON over a Unix stream socket: the client writes one [`Request`] per line
//! and reads exactly one [`Response`] line back; a connection may carry several exchanges in
//! turn. Requests carry the raw option strings ([`SaAddArgs`], ...): the daemon hands them to the
//! model, which alone validates them, so a rejected command comes back as
//! [`Response::Error`] with the model's one-line message and changes nothing.
//!
//! Listings ([`SaEntry`], [`SpEntry`]) never carry keys.

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
}

/// The daemon's answer to one [`Request`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// An SA or SP was added, and persisted, under this name.
    Added {
        name: String,
    },
    /// These SAs or SPs were removed, and the removal persisted.
    Removed {
        names: Vec<String>,
    },
    /// The replay window of this SA was emptied and its persisted ceiling forgotten.
    ReplayReset {
        name: String,
    },
    SaList(Vec<SaEntry>),
    SpList(Vec<SpEntry>),
    Stats(StatsReport),
    Status(StatusReport),
    /// The request was refused or failed; nothing changed. One line, no `error:` prefix.
    Error {
        message: String,
    },
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}
