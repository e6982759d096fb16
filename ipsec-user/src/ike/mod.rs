//! IKEv2 (RFC 7296), I/O-free: WIP.

pub mod config;
pub mod dh;
pub mod endpoint;
pub mod event;
mod informational;
mod initiator;
pub mod keys;
pub mod message;
pub mod natd;
pub mod payload;
pub mod proposal;
mod responder;
mod sa;
pub mod sa_payload;
pub mod selector;
pub mod sk;

pub use config::{Identity, PeerConfig, Psk, Settings};
pub use endpoint::{Ike, IkeError, IkeSaInfo};
pub use event::{ChildSa, Datagram, DirectionKeys, Event, Failure, Output};
pub use sa::SaState;

#[cfg(test)]
mod tests;
