//! The userspace classifier: the SPD compiled ([`compile`]) into the tables the kernel programs
//! search, and the kernel's search (`abi::search`, the same function) over them, with no kernel. It answers what
//! the ESP engine asks on a flow-cache miss; `Spd::classify` (filter and sort every policy of a
//! direction) stays the reference the tests compare it with, never on a packet path.
//!
//! One representation: `datapath` writes [`compile::compile`]'s output into the maps and this
//! module searches that same output with the same search ([`abi::search`]), so the kernel and
//! the engine cannot disagree about what a policy means. A [`CompiledSpd`] is immutable: a change
//! to the SPD builds a new one, which the engine swaps in behind an `Arc`.
//!
//! Cost of a lookup: the kernel's steps (bounded by `MAX_PROBES`), each a hash lookup here; the
//! longest-prefix match of each address tries the lengths its table holds, longest first. It
//! grows with neither the number of policies nor of shapes.
//!
//! Flows are taken as the parsers make them: TCP and UDP carry ports, ICMPv6 its type, and
//! everything else (other protocols, non-first fragments) is [`L4::Opaque`].

use ipsec_common::abi::{
    self, ClassifierTables, FLOW_OPAQUE, FieldSet, FlowKey, LenSet, RULE_FLOW, RULE_FRAG_ANY,
    RULE_FRAG_PORTS, RuleKey, RuleValue, Searched,
};

use crate::model::{Direction, Flow, L4, Sp, Spd};

pub mod compile;

use compile::{CompileError, PrefixEntry, Tables, dir_code};

#[cfg(test)]
mod tests;

/// The generation the userspace tables are compiled into. They never flip (a change builds a
/// new [`CompiledSpd`]), so the generation only appears in the keys' tags.
const GENERATION: u8 = 0;

/// Marks an unused slot of [`CompiledSpd::by_id`].
const NO_POSITION: u32 = u32::MAX;

/// Prefix tables: 8 tags (generation, direction, side).
const TAGS: usize = 8;

/// The compiled tables under fast hashes (foldhash, seeded per process): the keys come from
/// packets, but only policies insert entries, so colliding keys cannot make a lookup slow.
#[derive(Clone, Debug, Default)]
struct Lookup {
    prefixes: foldhash::HashMap<(u8, u8, u128), LenSet>,
    /// Per prefix table tag, the lengths it holds, longest first.
    lengths: [Vec<u8>; TAGS],
    pairs: foldhash::HashMap<u32, LenSet>,
    field_sets: foldhash::HashMap<u32, FieldSet>,
    rules: foldhash::HashMap<RuleKey, RuleValue>,
}

impl Lookup {
    fn new(tables: Tables) -> Self {
        let mut lengths: [std::collections::BTreeSet<u8>; TAGS] = Default::default();
        let mut prefixes = foldhash::HashMap::default();
        for (PrefixEntry { len, key }, set) in tables.prefixes {
            if let Some(held) = lengths.get_mut(usize::from(key.tag)) {
                held.insert(len);
            }
            prefixes.insert((key.tag, len, u128::from_be_bytes(key.addr)), set);
        }
        Self {
            prefixes,
            lengths: lengths.map(|held| held.into_iter().rev().collect()),
            pairs: tables.pairs.into_iter().collect(),
            field_sets: tables.field_sets.into_iter().collect(),
            rules: tables.rules.into_iter().collect(),
        }
    }
}

impl ClassifierTables for Lookup {
    fn prefix_lengths(&self, tag: u8, addr: &[u8; 16]) -> Option<LenSet> {
        let addr = u128::from_be_bytes(*addr);
        self.lengths.get(usize::from(tag))?.iter().find_map(|&len| {
            let network = addr & (u128::MAX << (128 - u32::from(len)));
            self.prefixes.get(&(tag, len, network)).copied()
        })
    }

    fn pairs(&self, index: u32) -> Option<LenSet> {
        self.pairs.get(&index).copied()
    }

    fn field_set(&self, index: u32) -> Option<FieldSet> {
        self.field_sets.get(&index).copied()
    }

    fn rule(&self, key: &RuleKey) -> Option<RuleValue> {
        self.rules.get(key).copied()
    }
}

/// An SPD compiled for lookups: the tables [`compile::compile`] makes for the kernel, and the
/// policies they name.
#[derive(Clone, Debug, Default)]
pub struct CompiledSpd {
    spd: Spd,
    tables: Lookup,
    /// Position in `spd.sps()` of each policy, indexed by `Sp::id`, which the rules carry. Ids
    /// are the lowest free slot, so this stays as long as the SPD is large.
    by_id: Vec<u32>,
}

impl CompiledSpd {
    /// Compiles `spd` (a copy of it is kept: the verdicts borrow its policies).
    ///
    /// # Errors
    /// [`CompileError::TooManySteps`] when a packet could need more search steps than the
    /// datapath allows, the same error the kernel sync gives for it.
    pub fn build(spd: &Spd) -> Result<Self, CompileError> {
        let tables = compile::compile(spd, GENERATION)?;
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
            tables: Lookup::new(tables),
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

    /// The kernel's search (`abi::search`) over the same tables. `OutOfSteps` cannot happen for
    /// an SPD that compiled (the compiler bounds the steps); it would decide nothing.
    fn search(&self, flow: &FlowKey, kind: u8) -> Option<&Sp> {
        let Searched::Rule(best) = abi::search(&self.tables, flow, kind, GENERATION) else {
            return None;
        };
        let position = *self.by_id.get(best.sp_id as usize)?;
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
