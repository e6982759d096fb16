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
//! out = ike.rekey_child_sa(spi, now)? / rekey_ike_sa("peer", now)?   // on demand; the
//!                                                    // timers rekey by themselves
//! (out, spis) = ike.rekey_children("peer", now)?     // every CHILD_SA of the peer's IKE SA
//! out = ike.delete_ike_sa("peer", now)? / delete_child_sa(..)?
//! out = ike.check_liveness("peer", now)?           // on demand; `Lifetimes::dpd` does it
//! ike.note_inbound_esp(inbound_spi, now)             // optional: ESP seen, the peer is alive
//! ike.ike_sas()                                      // `ike sa list`: SPIs, state, suite,
//!                                                    // counters, rekey and expiry times
//! out = ike.forget_all()                             // stopping, after the Deletes
//! ```
//!
//! Every call returns an [`Output`]: [`Datagram`]s to send (from `local`, port 500 or 4500, to
//! `remote`; on 4500 the non-ESP marker is already in the bytes) and [`Event`]s:
//! [`Event::ChildSaEstablished`] carries a [`ChildSa`] (SPIs, [`proposal::EspSuite`] in the
//! model's algorithms, both directions' keys, mode, narrowed traffic selectors, whether ESP is
//! UDP-encapsulated; `rekeys` names the CHILD_SA it replaces; `send_from` says when ESP we send
//! may move to it, [`SendFrom`]) for the daemon to install as an `ike`-owned SA; [`Event::ChildSaDeleted`] and [`Event::IkeSaDeleted`] to remove;
//! [`Event::IkeSaRekeyed`] when the CHILD_SAs moved to a new IKE SA (nothing to reinstall);
//! [`Event::RekeyCollision`] when a simultaneous rekey was settled (to log);
//! [`Event::Failed`] with a [`Failure`] to log (`AUTHENTICATION_FAILED` either way,
//! `NO_PROPOSAL_CHOSEN` for IKE or ESP, TS_UNACCEPTABLE, mode mismatch, and
//! [`Failure::Timeout`] when a request, a liveness check included, went unanswered: the peer is
//! dead, its SAs follow as deleted); [`Event::Dropped`] and [`Event::CookieSent`] to count.
//!
//! Time is only the `now` of each call: everything the clock drives (retransmissions,
//! half-open expiry, rekeys, lifetimes, dead peer detection, COOKIE secret rotation) happens in
//! [`Ike::on_timeout`] at [`Ike::next_deadline`] (the rotation lazily, on the next cookie).
//!
//! # What is implemented
//!
//! - IKE_SA_INIT as initiator and responder: proposals in strongSwan's syntax (`proposal`), DH
//!   groups 31, 19 and 14 (`dh`), INVALID_KE_PAYLOAD retry with the group asked for, COOKIE
//!   (§2.6) once half-open SAs reach [`Settings::half_open_limit`] with the secret rotated every
//!   [`Settings::cookie_rotation`] (the previous one accepted for one period, `cookie`), NAT
//!   detection (§2.23) with the move to port 4500 (strongSwan's kernel-libipsec fakes a NAT to
//!   get ESP in UDP).
//! - IKE_AUTH with PSK (§2.15) and ID_IPV6_ADDR, ID_IPV4_ADDR or ID_FQDN identities, creating
//!   the first CHILD_SA: ESP proposal, traffic selectors narrowed as responder (§2.9),
//!   USE_TRANSPORT_MODE.
//! - INFORMATIONAL: Delete of the IKE SA or CHILD_SAs, liveness; message IDs with a window of
//!   one, retransmission with exponential backoff as outputs, the last response kept for a
//!   retransmitted request.
//! - CREATE_CHILD_SA rekeying a CHILD_SA from either side, with optional PFS
//!   ([`Ike::rekey_child_sa`]; the new CHILD_SA names the one it replaces, which is deleted
//!   after it: make before break).
//! - Rekeying the IKE SA from either side (§1.3.2, §2.18, `ike_rekey`): new SPIs, nonces and
//!   KE, SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), the CHILD_SAs moved to the new SA
//!   (which starts its message IDs at 0), the old one deleted after.
//! - Lifetimes (`lifetimes`, [`Lifetimes`]): each CHILD_SA and IKE SA rekeyed `rekey_margin`
//!   (less a random jitter of up to a tenth of it) before its lifetime ends, by whichever side
//!   is first; deleted when the lifetime ends unrekeyed. Dead peer detection: an empty
//!   INFORMATIONAL after `dpd` without an authenticated message (or ESP the daemon reports
//!   with [`Ike::note_inbound_esp`]); unanswered, the SAs are removed.
//! - Simultaneous rekeys (§2.8.1, §2.8.2) of a CHILD_SA or of the IKE SA: the exchange with the
//!   lowest nonce made the redundant SA, which its initiator deletes; the survivor is the same
//!   on both sides and is never interrupted. §2.25: TEMPORARY_FAILURE for a rekey of a CHILD_SA
//!   being deleted or of anything while the IKE SA is being rekeyed or deleted (retried after
//!   a short random delay), CHILD_SA_NOT_FOUND when a Delete crossed the rekey.
//! - The responder's half-open state stays bounded under a flood: unknown addresses get no
//!   state, no answer and no DH; over the bound, configured addresses get a stateless COOKIE
//!   (one HMAC, no DH) and at most twice the bound (16 at least) of cookie-verified half-open
//!   SAs exist; [`Ike::stored_entries`] counts what the core holds.
//! - Not yet: certificates, EAP, fragmentation, MOBIKE, reauthentication, childless IKE SAs,
//!   several IKE SAs per peer on purpose.
//!
//! # Modules
//!
//! Wire format: `message` (header, payload chain), `payload` (bodies), `sa_payload`
//! (proposals/transforms), `selector` (traffic selectors and narrowing). Crypto: `dh`, `keys`
//! (prf, prf+, SKEYSEED, SK_*, KEYMAT, PSK AUTH), `sk` (the Encrypted payload), `natd` (NAT
//! detection hashes, cookies), `cookie` (the rotating COOKIE secrets). Negotiation:
//! `proposal`, `config`. State machine: `endpoint` (dispatch, timers, half-open bound), `sa`
//! (one IKE SA), `initiator`, `responder`, `informational`, `create_child` (CHILD_SA rekeys and
//! their collisions), `ike_rekey` (IKE SA rekeys and theirs), `lifetimes` (rekey, expiry and
//! DPD timers); `event` (what comes out).
//!
//! # Invariants
//!
//! - Untrusted bytes never panic and never allocate beyond the datagram's size (fuzz target
//!   `ike_message`); a datagram that does not parse or authenticate is dropped unanswered.
//! - Keys (DH private values, SKEYSEED, SK_*, KEYMAT, the PSK) live in `Zeroizing` buffers or
//!   `ZeroizeOnDrop` key schedules and are wiped on drop; no type that holds one prints it.
//! - AUTH is verified before any CHILD_SA is derived or reported, and SK integrity before any
//!   decryption or parsing of the inner payloads.
//! - Make before break: a CHILD_SA is reported deleted because of a rekey only after its
//!   successor was reported established, and an IKE SA rekey reports no CHILD_SA change at all.
//!   ESP moves to a new CHILD_SA only once the peer receives on it: at once for the side that
//!   started the exchange (the peer installed it before answering), after the old one's Delete
//!   for the side that answered ([`SendFrom::AfterRekeyed`]), never for the redundant CHILD_SA
//!   of a collision ([`SendFrom::Never`]). The daemon must act on an [`Output`]'s events before
//!   it sends its datagrams.

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
pub use event::{ChildSa, Datagram, DirectionKeys, Event, Failure, Output, SendFrom};
pub use sa::SaState;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_rekey;
