//! The only code that touches aya: loading, attaching and pinning the programs, and syncing the
//! model into the maps.
//!
//! Invariant: the kernel maps are written only from `model` types, through [`compile`], so the
//! CLI, the daemon, the maps and the reference classifier can never disagree.

pub mod bpffs;
pub mod inspect;
/// The compiler lives with the userspace classifier that shares its output (`crate::classifier`).
pub use crate::classifier::compile;
mod explain;
mod ike_bypass;
mod kernel;
mod sync;
mod xdp_mode;

pub use kernel::{Attached, DatapathError, KernelDatapath, LoadOptions, XskSocket};
pub use kernel::{active_tables, check_interface, monotonic_ns};
pub use xdp_mode::XdpMode;
