//! The userspace classifier: the SPD compiled ([`compile`]) into the tuple-space tables the
//! kernel programs search, and the kernel's search over them, with no kernel. It answers what
//! the ESP engine asks on a flow-cache miss; `Spd::classify` (filter and sort every policy of a
//! direction) stays the reference the tests compare it with, never on a packet path.
//!
//! One representation: `datapath` writes [`compile::compile`]'s output into the maps and this
//! module searches that same output with the same masking ([`RuleKey::masked`]) and the same
//! mask test ([`MaskDesc::applies_to`]), so the kernel and the engine cannot disagree about what
//! a policy means. A [`CompiledSpd`] is immutable: a change to the SPD builds a new one, which
//! the engine swaps in behind an `Arc`.
//!
//! Cost of a lookup: one hash lookup per mask of the flow's direction and rule kind, in
//! ascending best-rank order, stopping once the best rule found outranks every rule of the next
//! mask (the kernel's `classify::search`). It does not grow with the number of policies.
//!
//! Flows are taken as the parsers make them: TCP and UDP carry ports, ICMPv6 its type, and
//! everything else (other protocols, non-first fragments) is [`L4::Opaque`].

use ipsec_common::abi::{
    FLOW_OPAQUE, FlowKey, MaskDesc, RULE_FLOW, RULE_FRAG_ANY, RULE_FRAG_PORTS, RULE_KINDS, RuleKey,
    RuleValue,
};

use crate::model::{Direction, Flow, L4, Sp, Spd};

pub mod compile;

use compile::{CompileError, ShapeIds, Tables, dir_code};

#[cfg(test)]
mod tests;

/// The generation the userspace tables are compiled into. They never flip (a change builds a
/// new [`CompiledSpd`]), so the generation only appears in the rule keys' tag.
const GENERATION: u8 = 0;

/// Marks an unused slot of [`CompiledSpd::by_id`].
const NO_POSITION: u32 = u32::MAX;

/// An SPD compiled for lookups: the tables [`compile::compile`] makes for the kernel, and the
/// policies they name.
#[derive(Clone, Debug, Default)]
pub struct CompiledSpd {
    spd: Spd,
    /// [`Tables::masks`]: per rule kind and direction, in search order.
    masks: [[Vec<MaskDesc>; 2]; RULE_KINDS as usize],
    /// [`Tables::rules`], under a fast hash (foldhash, seeded per process): the keys come from
    /// packets, but only policies insert rules, so colliding keys cannot make a lookup slow.
    rules: foldhash::HashMap<RuleKey, RuleValue>,
    /// Position in `spd.sps()` of each policy, indexed by `Sp::id`, which the rules carry. Ids
    /// are the lowest free slot, so this stays as long as the SPD is large.
    by_id: Vec<u32>,
}

impl CompiledSpd {
    /// Compiles `spd` (a copy of it is kept: the verdicts borrow its policies).
    ///
    /// # Errors
    /// [`CompileError::TooManyShapes`] when the SPD needs more masks than the datapath has, the
    /// same error the kernel sync gives for it.
    pub fn build(spd: &Spd) -> Result<Self, CompileError> {
        let Tables { masks, rules } = compile::compile(spd, GENERATION, &mut ShapeIds::default())?;
        let len = spd
            .sps()
            .iter()
            .map(|sp| sp.id as usize + 1)
            .max()
            .unwrap_or(0);
        let mut by_id = vec![NO_POSITION; len];
        for (position, sp) in (0u32..).zip(spd.sps()) {
            if let Some(slot) = by_id.get_mut(sp.id as usize) {
                *slot = position;
            }
        }
        Ok(Self {
            spd: spd.clone(),
            masks,
            rules: rules.into_iter().collect(),
            by_id,
        })
    }

    /// The SPD this was compiled from.
    pub fn spd(&self) -> &Spd {
        &self.spd
    }

    /// The policy that decides `flow` travelling in `direction`: the first of that direction in
    /// rank order whose selector covers it, `None` when none does (the packet passes in clear).
    /// Neighbour discovery only matches a policy naming ICMPv6 and its type. Same answer as
    /// `Spd::classify`.
    pub fn classify(&self, direction: Direction, flow: &Flow) -> Option<&Sp> {
        self.search(&flow_key(direction, flow), RULE_FLOW)
    }

    /// The verdict of a later fragment whose first fragment was not seen: the strictest policy
    /// of direction `dir` that could match it with ports ignored (and the protocol too unless
    /// `proto_known`), the oldest among equally strict ones. Same answer as
    /// `Spd::classify_fragment`.
    pub fn classify_fragment(&self, dir: Direction, flow: &Flow, proto_known: bool) -> Option<&Sp> {
        // A later fragment shows no transport header: the kernel's parser makes it opaque.
        let later = Flow {
            l4: L4::Opaque,
            ..*flow
        };
        let kind = if proto_known {
            RULE_FRAG_PORTS
        } else {
            RULE_FRAG_ANY
        };
        self.search(&flow_key(dir, &later), kind)
    }

    /// Tuple-space search of the rules of `kind`, as the kernel's `classify::search` does it.
    fn search(&self, flow: &FlowKey, kind: u8) -> Option<&Sp> {
        let masks = self
            .masks
            .get(usize::from(kind))?
            .get(usize::from(flow.dir))?;
        let mut best_rank = u64::MAX;
        let mut best: Option<&RuleValue> = None;
        for mask in masks {
            // Masks come in ascending order of their best rule: none further can win.
            if mask.min_rank >= best_rank {
                break;
            }
            if !mask.applies_to(flow) {
                continue;
            }
            if let Some(rule) = self.rules.get(&RuleKey::masked(flow, mask, GENERATION))
                && rule.rank < best_rank
            {
                best_rank = rule.rank;
                best = Some(rule);
            }
        }
        let position = *self.by_id.get(best?.sp_id as usize)?;
        self.spd.sps().get(position as usize)
    }
}

/// What the kernel's parser makes of `flow` travelling in `direction`: the key the tables are
/// searched with.
pub fn flow_key(direction: Direction, flow: &Flow) -> FlowKey {
    let (sport, dport, flags) = match flow.l4 {
        L4::Ports { src, dst } => (src, dst, 0),
        L4::Icmp { kind } => (0, u16::from(kind), 0),
        L4::Opaque => (0, 0, FLOW_OPAQUE),
    };
    FlowKey {
        src: flow.src.octets(),
        dst: flow.dst.octets(),
        sport,
        dport,
        proto: flow.next_header,
        dir: dir_code(direction),
        flags,
        _pad: 0,
    }
}
