//! The one door from the engine to a policy classifier: the flow caches' miss path.
//!
//! Contract: a [`Classifier`] is built from one `Spd` ([`build`]) and answers, for a flow and a
//! direction, the first SP that flow matches: exactly what `Spd::classify` (the reference)
//! answers. The engine calls nothing else to classify. To plug in another implementation (the
//! compiled userspace classifier), change [`build`] only.

use std::sync::Arc;

use crate::model::{Direction, Flow, Sp, Spd};

/// Classifies flows against the SPD it was built from.
pub trait Classifier: Send + Sync {
    /// The first SP of `direction` that `flow` matches, `None` when none does; equal to
    /// `Spd::classify` of the SPD this classifier was built from.
    fn classify(&self, direction: Direction, flow: &Flow) -> Option<&Sp>;
}

/// The reference: `Spd::classify` over a snapshot of the SPD.
struct Reference(Spd);

impl Classifier for Reference {
    fn classify(&self, direction: Direction, flow: &Flow) -> Option<&Sp> {
        self.0.classify(direction, flow)
    }
}

/// The classifier the engine uses for `spd` (built once per update, outside any table lock).
pub fn build(spd: &Spd) -> Arc<dyn Classifier> {
    Arc::new(Reference(spd.clone()))
}

/// A classifier that matches nothing (the empty SPD): every flow is dropped.
pub(crate) fn empty() -> Arc<dyn Classifier> {
    build(&Spd::new())
}
