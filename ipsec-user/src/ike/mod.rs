//! IKEv2 (RFC 7296): the protocol core that negotiates ESP SAs with a peer, free of I/O like the
//! ESP engine's core. It never opens a socket, reads a clock, sleeps, logs or touches the disk:
//! the daemon hands it datagrams and the time and acts on what comes back.
//!
//! # The API the daemon drives
//!
//! ```text
//! let mut ike = Ike::new(Settings::default());
//! ike.add_peer(PeerConfig { .. })?;                  // validated; PSK >= 16 bytes
//! out = ike.initiate("peer", now)?;                  // or wait for the peer to initiate
//! out = ike.receive(local, remote, &udp_payload, now); // every datagram on UDP 500 and 4500
//! out = ike.on_timeout(now);                         // when ike.next_deadline() is reached
//! out = ike.rekey_child_sa(spi, now)? / delete_ike_sa("peer", now)? / delete_child_sa(..)?
//! out = ike.check_liveness("peer", now)?           // dead peer detection
//! ike.ike_sas()                                      // `ike sa list`: SPIs, state, suite, counters
//! ```
//!
//! Every call returns an [`Output`]: [`Datagram`]s to send (from `local`, port 500 or 4500, to
//! `remote`; on 4500 the non-ESP marker is already in the bytes) and [`Event`]s:
//! [`Event::ChildSaEstablished`] carries a [`ChildSa`] (SPIs, [`proposal::EspSuite`] in the
//! model's algorithms, both directions' keys, mode, narrowed traffic selectors, whether ESP is
//! UDP-encapsulated) for the daemon to install as an `ike`-owned SA; [`Event::ChildSaDeleted`]
//! and [`Event::IkeSaDeleted`] to remove; [`Event::Failed`] with a [`Failure`] to log
//! (`AUTHENTICATION_FAILED` either way, `NO_PROPOSAL_CHOSEN` for IKE or ESP, TS_UNACCEPTABLE,
//! mode mismatch, timeout); [`Event::Dropped`] and [`Event::CookieSent`] to count.
//!
//! # What is implemented
//!
//! - IKE_SA_INIT as initiator and responder: proposals in strongSwan's syntax (`proposal`), DH
//!   groups 31, 19 and 14 (`dh`), INVALID_KE_PAYLOAD retry with the group asked for, COOKIE
//!   (§2.6) once half-open SAs reach [`Settings::half_open_limit`], NAT detection (§2.23) with
//!   the move to port 4500 (strongSwan's kernel-libipsec fakes a NAT to get ESP in UDP).
//! - IKE_AUTH with PSK (§2.15) and ID_IPV6_ADDR, ID_IPV4_ADDR or ID_FQDN identities, creating
//!   the first CHILD_SA: ESP proposal, traffic selectors narrowed as responder (§2.9),
//!   USE_TRANSPORT_MODE.
//! - INFORMATIONAL: Delete of the IKE SA or CHILD_SAs, liveness; message IDs with a window of
//!   one, retransmission with exponential backoff as outputs, the last response kept for a
//!   retransmitted request.
//! - CREATE_CHILD_SA rekeying a CHILD_SA from either side, with optional PFS
//!   ([`Ike::rekey_child_sa`]; the new CHILD_SA names the one it replaces, which is deleted
//!   after it: make before break).
//! - Not yet: rekeying the IKE SA (answered NO_ADDITIONAL_SAS), simultaneous rekeys (§2.8.1),
//!   certificates, EAP, fragmentation, MOBIKE.
//!
//! # Modules
//!
//! Wire format: `message` (header, payload chain), `payload` (bodies), `sa_payload`
//! (proposals/transforms), `selector` (traffic selectors and narrowing). Crypto: `dh`, `keys`
//! (prf, prf+, SKEYSEED, SK_*, KEYMAT, PSK AUTH), `sk` (the Encrypted payload), `natd` (NAT
//! detection hashes, cookies). Negotiation: `proposal`, `config`. State machine: `endpoint`
//! (dispatch, timers, half-open bound), `sa` (one IKE SA), `initiator`, `responder`,
//! `informational`; `event` (what comes out).
//!
//! # Invariants
//!
//! - Untrusted bytes never panic and never allocate beyond the datagram's size (fuzz target
//!   `ike_message`); a datagram that does not parse or authenticate is dropped unanswered.
//! - Keys (DH private values, SKEYSEED, SK_*, KEYMAT, the PSK) live in `Zeroizing` buffers or
//!   `ZeroizeOnDrop` key schedules and are wiped on drop; no type that holds one prints it.
//! - AUTH is verified before any CHILD_SA is derived or reported, and SK integrity before any
//!   decryption or parsing of the inner payloads.

pub mod config;
mod cookie;
mod create_child;
pub mod dh;
pub mod endpoint;
pub mod event;
mod ike_rekey;
mod informational;
mod initiator;
pub mod keys;
mod lifetimes;
pub mod message;
pub mod natd;
pub mod payload;
pub mod proposal;
mod responder;
mod sa;
pub mod sa_payload;
pub mod selector;
pub mod sk;

pub use config::{Identity, Lifetimes, PeerConfig, Psk, Settings};
pub use endpoint::{Ike, IkeError, IkeSaInfo};
pub use event::{ChildSa, Datagram, DirectionKeys, Event, Failure, Output};
pub use sa::SaState;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_rekey;
