//! Compiles the model into the classifier's tables: pure, no kernel. The one representation of a
//! compiled SPD: `datapath` writes it into the kernel maps, and [`super::CompiledSpd`] searches
//! it in userspace, both with `abi::search`.
//!
//! Policies are grouped by *shape* (source and destination prefix lengths, and which of
//! protocol/source port/destination port are exact). Each policy is one rule, keyed by its own
//! selector masked with the same [`RuleKey::probe`] the search uses, the shape in the key. Beside
//! the rules: every distinct prefix (but `::/0`) with the lengths of all prefixes containing it
//! (`PREFIXES`), per source length the destination lengths that occur with it (`LEN_PAIRS`), and
//! per length pair the field combinations and their best rank (`FIELD_SETS`).
//!
//! Every policy is compiled three times, once per rule kind: `RULE_FLOW` (its selector, ranked
//! by `Sp::rank`), and for non-first fragments whose first fragment was not seen
//! `RULE_FRAG_PORTS` (ports dropped from the shape) and `RULE_FRAG_ANY` (ports and protocol
//! dropped), both ranked by [`fragment_rank`] so the search yields the strictest policy that could
//! match (the model's `Spd::classify_fragment`).
//!
//! The limit is not a shape count but the search's step budget (`MAX_PROBES`): [`compile`]
//! bounds the steps any packet could need from the nesting of the prefixes on each side and the
//! shapes present, and refuses an SPD past it ([`CompileError::TooManySteps`]).

use std::collections::BTreeSet;

// A fast hash (foldhash, seeded per process): only policies insert keys here, and a sync of
// 100,000 policies hashes every key a few times.
use foldhash::{HashMap, HashMapExt as _, HashSet};

use ipsec_common::abi::{
    ACTION_DISCARD, ACTION_IPSEC, ACTION_NONE, DIR_IN, DIR_OUT, FIELD_DPORT, FIELD_PROTO,
    FIELD_SPORT, FieldSet, FlowKey, LenSet, MAX_PROBES, PrefixKey, RULE_FLOW, RULE_FRAG_ANY,
    RULE_FRAG_PORTS, RULE_KINDS, RuleKey, RuleValue, SIDE_DST, SIDE_SRC, field_set_index,
    fragment_rank, pairs_index, prefix_tag, rule_set,
};

use crate::model::{Action, Direction, Sp, Spd};

/// A selector shape: what one mask keeps of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape {
    pub src_len: u8,
    pub dst_len: u8,
    pub fields: u8,
}

impl Shape {
    pub fn of(sp: &Sp) -> Self {
        let mut fields = 0;
        if sp.protocol.next_header().is_some() {
            fields |= FIELD_PROTO;
        }
        if sp.source_port.is_some() {
            fields |= FIELD_SPORT;
        }
        if sp.destination_port.is_some() {
            fields |= FIELD_DPORT;
        }
        Shape {
            src_len: sp.source.prefix_len(),
            dst_len: sp.destination.prefix_len(),
            fields,
        }
    }

    /// The shape of `sp`'s rule of `kind`: fragment kinds drop the fields a non-first fragment
    /// does not show.
    pub fn of_kind(sp: &Sp, kind: u8) -> Self {
        let mut shape = Self::of(sp);
        match kind {
            RULE_FRAG_PORTS => shape.fields &= FIELD_PROTO,
            RULE_FRAG_ANY => shape.fields = 0,
            _ => {}
        }
        shape
    }
}

pub fn dir_code(direction: Direction) -> u8 {
    match direction {
        Direction::In => DIR_IN,
        Direction::Out => DIR_OUT,
    }
}

pub fn action_code(action: Action) -> u32 {
    match action {
        Action::None => ACTION_NONE,
        Action::Discard => ACTION_DISCARD,
        Action::Ipsec => ACTION_IPSEC,
    }
}

/// The flow a policy's own selector describes (its prefixes' network addresses, its ports).
fn selector_flow(sp: &Sp) -> FlowKey {
    FlowKey {
        src: sp.source.network().octets(),
        dst: sp.destination.network().octets(),
        sport: sp.source_port.unwrap_or(0),
        dport: sp.destination_port.unwrap_or(0),
        proto: sp.protocol.next_header().unwrap_or(0),
        dir: dir_code(sp.direction),
        flags: 0,
        _pad: 0,
    }
}

/// Why a model cannot be compiled into kernel tables.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error(
        "a packet of direction {direction} could need {needed} classifier steps, beyond the datapath's {max}: {nested} nested source prefixes (::/0 included) meet up to {dst_nested} nested destination prefixes in too many prefix-length pairs and port/protocol combinations; use fewer nested prefix lengths or fewer distinct combinations under them"
    )]
    TooManySteps {
        direction: &'static str,
        needed: u32,
        max: u32,
        nested: u32,
        dst_nested: u32,
    },
}

/// The rank of `sp`'s rule of `kind`.
pub fn rank_of_kind(sp: &Sp, kind: u8) -> u64 {
    if kind == RULE_FLOW {
        sp.rank()
    } else {
        fragment_rank(action_code(sp.action), sp.seq)
    }
}

/// Every rule kind, in `RULE_*` order.
pub const KINDS: [u8; RULE_KINDS as usize] = [RULE_FLOW, RULE_FRAG_PORTS, RULE_FRAG_ANY];

/// A [`PREFIXES`](ipsec_common::abi::PREFIXES) entry: the prefix `key.addr/len` of the table
/// `key.tag` (the trie's prefix length is `8 + len`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrefixEntry {
    pub len: u8,
    pub key: PrefixKey,
}

/// The tables of one generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    /// Every distinct source and destination prefix but `::/0`, with the lengths of every stored
    /// prefix of its table containing it (itself included).
    pub prefixes: HashMap<PrefixEntry, LenSet>,
    /// `LEN_PAIRS` entries by [`pairs_index`]: only the non-empty ones.
    pub pairs: HashMap<u32, LenSet>,
    /// `FIELD_SETS` entries by [`field_set_index`]: only the non-empty ones.
    pub field_sets: HashMap<u32, FieldSet>,
    pub rules: HashMap<RuleKey, RuleValue>,
    /// The most search steps any packet can need, as bounded by [`compile`] (at most
    /// `MAX_PROBES`). Not a map: read-back tables leave it 0.
    pub steps: u32,
}

fn direction_name(dir: u8) -> &'static str {
    if dir == DIR_IN { "in" } else { "out" }
}

/// The prefixes of one side (lengths above 0), each with the lengths of the prefixes containing
/// it. Sorted by (network, length), nested prefixes come in depth-first order, so a stack of
/// the current prefix's ancestors gives each its chain in one pass.
fn chains(prefixes: &BTreeSet<(u128, u8)>) -> Vec<(u128, u8, LenSet)> {
    let mut out = Vec::with_capacity(prefixes.len());
    let mut stack: Vec<(u128, u8, LenSet)> = Vec::new();
    for &(network, len) in prefixes {
        while let Some(&(top, top_len, _)) = stack.last() {
            if network & prefix_bits(top_len) == top {
                break;
            }
            stack.pop();
        }
        let mut set = stack
            .last()
            .map_or_else(LenSet::default, |(_, _, set)| *set);
        set.insert(len);
        stack.push((network, len, set));
        out.push((network, len, set));
    }
    out
}

fn prefix_bits(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// An upper bound of the steps `abi::search` takes for any packet of one rule set: the final
/// step, plus per candidate source length (a chain of `src_chains`, 0 included) one step and,
/// for at most `dst_depth` destination lengths occurring with it, one step and one per field
/// combination of the pair (the costliest ones counted).
fn step_bound(
    src_chains: &HashSet<LenSet>,
    dst_depth: usize,
    pairs: &HashMap<u8, Vec<u32>>,
) -> u32 {
    let per_src: HashMap<u8, u32> = pairs
        .iter()
        .map(|(&s, weights)| {
            let mut weights = weights.clone();
            weights.sort_unstable_by(|a, b| b.cmp(a));
            (s, weights.iter().take(dst_depth).sum())
        })
        .collect();
    src_chains
        .iter()
        .map(|chain| {
            1 + chain
                .iter()
                .map(|s| 1 + per_src.get(&s).copied().unwrap_or(0))
                .sum::<u32>()
        })
        .max()
        .unwrap_or(1)
}

/// Compile `spd` into the tables of generation `generation`.
pub fn compile(spd: &Spd, generation: u8) -> Result<Tables, CompileError> {
    let mut tables = Tables::default();
    for dir in [DIR_IN, DIR_OUT] {
        let sps: Vec<&Sp> = spd
            .sps()
            .iter()
            .filter(|sp| dir_code(sp.direction) == dir)
            .collect();

        // Prefixes of each side, with their chains; the chains' length sets bound the search.
        let mut src_chains: HashSet<LenSet> = HashSet::from_iter([LenSet::ROOT]);
        let mut dst_depth = 1usize;
        for side in [SIDE_SRC, SIDE_DST] {
            let prefixes: BTreeSet<(u128, u8)> = sps
                .iter()
                .map(|sp| {
                    let net = if side == SIDE_SRC {
                        &sp.source
                    } else {
                        &sp.destination
                    };
                    (u128::from(net.network()), net.prefix_len())
                })
                .filter(|&(_, len)| len > 0)
                .collect();
            let tag = prefix_tag(generation, dir, side);
            for (network, len, set) in chains(&prefixes) {
                tables.prefixes.insert(
                    PrefixEntry {
                        len,
                        key: PrefixKey {
                            tag,
                            addr: network.to_be_bytes(),
                        },
                    },
                    set,
                );
                let with_root = set.or(&LenSet::ROOT);
                if side == SIDE_SRC {
                    src_chains.insert(with_root);
                } else {
                    dst_depth = dst_depth.max(with_root.len() as usize);
                }
            }
        }

        for kind in KINDS {
            let set = rule_set(kind, generation, dir);
            for sp in &sps {
                let shape = Shape::of_kind(sp, kind);
                let rank = rank_of_kind(sp, kind);
                let (s, d) = (u32::from(shape.src_len), u32::from(shape.dst_len));
                tables
                    .pairs
                    .entry(pairs_index(set, s))
                    .or_default()
                    .insert(shape.dst_len);
                let field_set = tables
                    .field_sets
                    .entry(field_set_index(set, s, d))
                    .or_insert(FieldSet {
                        min_rank: u64::MAX,
                        ..FieldSet::default()
                    });
                field_set.combos |= 1 << shape.fields;
                field_set.min_rank = field_set.min_rank.min(rank);

                let key = RuleKey::probe(
                    &selector_flow(sp),
                    s,
                    d,
                    u32::from(shape.fields),
                    kind,
                    generation,
                );
                let sa_id = sp
                    .sa_name
                    .as_deref()
                    .and_then(|name| spd.sa(name))
                    .map_or(0, |sa| sa.id);
                let value = RuleValue {
                    rank,
                    sp_id: sp.id,
                    sa_id,
                    action: action_code(sp.action),
                    _pad: 0,
                };
                // Identical masked selectors: only the best-ranked policy can ever match.
                tables
                    .rules
                    .entry(key)
                    .and_modify(|old| {
                        if value.rank < old.rank {
                            *old = value;
                        }
                    })
                    .or_insert(value);
            }

            // Per source length: the weight (1 + field combinations) of each pair.
            let mut weights: HashMap<u8, Vec<u32>> = HashMap::new();
            for s in 0..=128u8 {
                let Some(dsts) = tables.pairs.get(&pairs_index(set, u32::from(s))) else {
                    continue;
                };
                let list = dsts
                    .iter()
                    .map(|d| {
                        let combos = tables
                            .field_sets
                            .get(&field_set_index(set, u32::from(s), u32::from(d)))
                            .map_or(0, |f| f.combos.count_ones());
                        1 + combos
                    })
                    .collect();
                weights.insert(s, list);
            }
            let needed = step_bound(&src_chains, dst_depth, &weights);
            tables.steps = tables.steps.max(needed);
            if needed > MAX_PROBES {
                return Err(CompileError::TooManySteps {
                    direction: direction_name(dir),
                    needed,
                    max: MAX_PROBES,
                    nested: src_chains.iter().map(LenSet::len).max().unwrap_or(1),
                    dst_nested: u32::try_from(dst_depth).unwrap_or(u32::MAX),
                });
            }
        }
    }
    Ok(tables)
}
