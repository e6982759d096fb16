//! IKEv2 (RFC 7296), I/O-free: WIP.

pub mod dh;
pub mod keys;
pub mod message;
pub mod payload;
pub mod proposal;
pub mod sa_payload;
pub mod selector;
pub mod sk;
