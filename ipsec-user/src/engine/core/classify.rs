//! The one door from the engine to the policy classifier: the flow caches' miss path.
//!
//! Contract: [`build`] compiles one `Spd` into the userspace classifier
//! ([`CompiledSpd`]: the tuple-space tables the kernel programs search, searched the kernel's
//! way without a kernel), and the engine classifies with nothing else. Its verdicts equal
//! `Spd::classify`, which stays the tests' reference and never runs on a packet path. An SPD
//! the classifier cannot compile is refused with the same [`CompileError`] the kernel sync
//! gives for it, before the engine changes anything.

use std::sync::Arc;

use crate::classifier::CompiledSpd;
use crate::classifier::compile::CompileError;
use crate::model::{Action, Direction, Flow, Spd};

/// The classifier the engine uses for `spd` (built once per update, outside any table lock).
///
/// # Errors
/// [`CompileError`] when `spd` needs more selector shapes than the tables hold.
pub fn build(spd: &Spd) -> Result<Arc<CompiledSpd>, CompileError> {
    CompiledSpd::build(spd).map(Arc::new)
}

/// A classifier that matches nothing (the empty SPD): every flow is dropped.
pub(crate) fn empty() -> Arc<CompiledSpd> {
    Arc::new(CompiledSpd::default())
}

/// The inbound `discard` SP (id, seq) a decrypted packet of `flow` matches, if it matches one:
/// such a packet is refused, and counted against that SP (one packet, its bytes), as XDP counts
/// a clear packet a `discard` SP drops.
pub(crate) fn discarding_sp(classifier: &CompiledSpd, flow: &Flow) -> Option<(u32, u32)> {
    classifier
        .classify(Direction::In, flow)
        .filter(|sp| sp.action == Action::Discard)
        .map(|sp| (sp.id, sp.seq))
}
