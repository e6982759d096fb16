//! THE SA/SP model: types, validation, precedence and the reference classifier. No I/O.
//!
//! Everything that decides what a policy means lives here, so the CLI, the daemon, the map sync
//! and the tests can never disagree:
//!
//! - `args`: the raw command arguments and option names; the model parses all of them.
//! - `parse`: single values (addresses, prefixes, ports, SPIs, keys, names, keywords).
//! - `sa`, `sp`: validated records and the rules about one record.
//! - `spd`: the database, the rules across records, limits, `validate`, the persisted state.
//! - `peer`: IKE peers (`ike peer add`); the SPD's IKE part (peers, `--ike-peer` SPs, the SAs
//!   IKE installs, kept out of the persisted form) is `spd::ike`.
//! - `former`: the SAs replaced `ipsec` SPs named before, accepted until removed (rotation).
//! - `index`: the SPD's lookup tables (names, SPIs, selectors, SA users, free ids); derived state.
//! - `rank`: the precedence order as one `u64`.
//! - `reference`: `Flow`, `Sp::matches` and `Spd::classify`, the reference classifier.
//! - `counters`: what the datapath reports per SP and SA.
//! - `error`: `ModelError`, whose messages the CLI prints verbatim.
//! - `packet`: the reference packet parser (what the datapath must make of a frame).

mod args;
mod counters;
mod error;
#[cfg(test)]
mod fixtures;
mod former;
mod index;
mod key;
pub mod packet;
mod parse;
mod peer;
mod rank;
mod reference;
mod sa;
mod sp;
mod spd;
mod types;

pub use args::{IkeSpAddArgs, PeerAddArgs, PeerRemoveArgs};
pub use args::{SaAddArgs, SaRemoveArgs, SpAddArgs, SpRemoveArgs, opt};
pub use counters::{Counters, PacketCount, SaCount};
pub use error::{Chain, ModelError};
pub use former::{Former, FormerSas};
pub use key::Key;
pub use parse::{MAX_NAME_LEN, is_valid_name};
pub use peer::{DEFAULT_ESP_PROPOSAL, DEFAULT_IKE_PROPOSAL, Initiate, MAX_PEER_NAME_LEN, Peer};
pub use rank::RankReason;
pub use reference::{
    FirstFragments, Flow, L4, NEIGHBOUR_DISCOVERY_TYPES, NEXT_HEADER_ICMPV6, Verdict,
};
pub use reference::{UdpContext, UdpKind};
pub use sa::{Sa, UdpEncap};
pub use sp::Sp;
pub use spd::OutboundSwitch;
pub use spd::{MAX_SA, MAX_SP, SEQ_BITS, Spd};
pub use types::*;
