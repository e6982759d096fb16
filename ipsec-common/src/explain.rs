//! The ABI of `xipsec explain`: the explain programs, their own search-state map, and the result
//! they write back.
//!
//! The explain programs (`ipsec-ebpf/src/explain.rs`, in the production object only) parse a
//! frame the daemon built, exactly as the live programs do, and run the classifier's search
//! ([`crate::abi::search`]'s steps under `bpf_loop`) over the same maps. They change nothing the
//! live datapath reads or counts: no counter, no flow-cache entry, no fragment state. Their
//! search state is their own per-CPU map ([`EXPLAIN_SEARCH`]), so a live packet classified on
//! the same CPU cannot overwrite it mid-search. The daemon runs them with `BPF_PROG_TEST_RUN`;
//! each writes an [`ExplainResult`] in front of the frame (into XDP's headroom), so the run's
//! output data starts with it.

use bytemuck::{Pod, Zeroable};

/// Explain a frame arriving (XDP ingress's view: ESP is steered by SPI).
pub const PROG_EXPLAIN_IN: &str = "xdp_explain_in";
/// Explain a frame leaving (TC egress's view: ESP from anyone but the engine is classified).
pub const PROG_EXPLAIN_OUT: &str = "xdp_explain_out";
/// The explain programs' search state: one per CPU.
pub const EXPLAIN_SEARCH: &str = "XIPSEC_EXPLAIN_SEARCH";

/// Marks the output data as starting with a result: `"xplnRSLT"` read as a little-endian u64.
pub const EXPLAIN_MAGIC: u64 = u64::from_le_bytes(*b"xplnRSLT");

/// What the parser made of the frame (`ExplainResult::outcome`).
pub const OUTCOME_CLASSIFIED: u32 = 0;
pub const OUTCOME_NOT_IPV6: u32 = 1;
pub const OUTCOME_MALFORMED: u32 = 2;
pub const OUTCOME_EXT_LIMIT: u32 = 3;
pub const OUTCOME_VLAN_DEPTH: u32 = 4;
/// Inbound ESP: steered by its SPI, not classified (`sa_id` valid when `spi_known`).
pub const OUTCOME_ESP: u32 = 5;
pub const OUTCOME_ESP_FRAGMENT: u32 = 6;
/// A fragment: the live path would use fragment state, which explain never reads or writes.
pub const OUTCOME_FRAGMENT: u32 = 7;
/// The search ran out of steps (the compiler makes this unreachable).
pub const OUTCOME_OUT_OF_STEPS: u32 = 8;

/// What an explain program found, written in front of the frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ExplainResult {
    /// [`EXPLAIN_MAGIC`].
    pub magic: u64,
    /// The epoch the search read (its low bit is the generation searched).
    pub epoch: u64,
    /// The matched rule's rank (`Sp::rank`), `u64::MAX` for none.
    pub rank: u64,
    /// `OUTCOME_*`.
    pub outcome: u32,
    /// The matched policy's id, `abi::NO_SP` for none.
    pub sp_id: u32,
    pub sa_id: u32,
    /// `abi::ACTION_*`.
    pub action: u32,
    /// Inbound ESP: the SPI (host order) and whether `SA_BY_SPI` knows it (1) or not (0).
    pub spi: u32,
    pub spi_known: u32,
}
const _: () = assert!(size_of::<ExplainResult>() == 48);
