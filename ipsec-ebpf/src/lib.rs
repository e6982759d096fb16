//! Host-side stub: the real programs are the `ipsec` binary built for the BPF target. This library
//! exists so `ipsec-user` can name this crate as a build dependency (cache invalidation).
#![no_std]
