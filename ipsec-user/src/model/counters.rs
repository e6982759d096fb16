//! Traffic counters of SPs and SAs, keyed by the model's slot ids: what the datapath and the
//! ESP engine report and the CLI lists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counters read back from the datapath, keyed by the model's slot ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Per SP, keyed by `Sp::id`.
    pub sp: BTreeMap<u32, PacketCount>,
    /// Per SA, keyed by `Sa::id`.
    pub sa: BTreeMap<u32, SaCount>,
    /// Per drop reason: the reason's name and how many packets it dropped.
    pub reasons: Vec<(String, u64)>,
}

/// Packets and bytes that matched one SP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketCount {
    pub packets: u64,
    pub bytes: u64,
}

/// Traffic and failures of one SA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaCount {
    pub packets: u64,
    pub bytes: u64,
    /// ICV verification failures (RFC 4303 §3.4.4).
    pub auth_failures: u64,
    /// Packets refused by the anti-replay window (RFC 4303 §3.4.3).
    pub replay_drops: u64,
    /// Every other failure (bad padding, sequence number exhausted, ...).
    pub errors: u64,
}
