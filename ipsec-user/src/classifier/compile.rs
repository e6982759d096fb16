//! Compiles the model into tuple-space tables: pure, no kernel. The one representation of a
//! compiled SPD: `datapath` writes it into the kernel maps, and [`super::CompiledSpd`] searches
//! it in userspace.
//!
//! Policies are grouped by *shape* (source and destination prefix lengths, and which of
//! protocol/source port/destination port are exact). Each shape is one mask; each policy one rule
//! under its mask, keyed by its own selector masked with the same [`RuleKey::masked`] the eBPF
//! programs use. Masks are ordered by their best rank so the kernel can stop searching early.
//!
//! Every policy is compiled three times, once per rule kind: `RULE_FLOW` (its selector, ranked
//! by `Sp::rank`), and for non-first fragments whose first fragment was not seen
//! `RULE_FRAG_PORTS` (ports dropped from the shape) and `RULE_FRAG_ANY` (ports and protocol
//! dropped), both ranked by [`fragment_rank`] so the search yields the strictest policy that could
//! match (the model's `Spd::classify_fragment`).

use std::collections::{BTreeMap, HashMap};

use ipsec_common::abi::{
    ACTION_DISCARD, ACTION_IPSEC, ACTION_NONE, DIR_IN, DIR_OUT, FIELD_DPORT, FIELD_PROTO,
    FIELD_SPORT, FlowKey, MAX_MASKS, MaskDesc, RULE_FLOW, RULE_FRAG_ANY, RULE_FRAG_PORTS,
    RULE_KINDS, RuleKey, RuleValue, fragment_rank,
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

    fn mask(self, kind: u8, id: u8, min_rank: u64) -> MaskDesc {
        MaskDesc {
            src: prefix_mask(self.src_len),
            dst: prefix_mask(self.dst_len),
            min_rank,
            fields: self.fields,
            id,
            kind,
            _pad: [0; 5],
        }
    }
}

fn prefix_mask(len: u8) -> [u8; 16] {
    let bits: u128 = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    };
    bits.to_be_bytes()
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
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error(
        "too many distinct selector shapes for direction {direction}: {count} (the datapath supports {max}); use fewer distinct prefix lengths or port/protocol combinations"
    )]
    TooManyShapes {
        direction: &'static str,
        count: usize,
        max: u32,
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

/// The tables of one generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    /// Masks per rule kind and direction (index by `RULE_*`, then `DIR_*`), in search order.
    pub masks: [[Vec<MaskDesc>; 2]; RULE_KINDS as usize],
    pub rules: HashMap<RuleKey, RuleValue>,
}

/// Mask ids are `0..MASK_IDS`; [`RuleKey::tag`] carries them in 7 bits.
#[allow(
    clippy::cast_possible_truncation,
    reason = "asserted to fit just below"
)]
const MASK_IDS: u8 = MAX_MASKS as u8;
const _: () = assert!(MAX_MASKS <= 0x80);

/// Keeps mask ids stable across compiles, so unchanged policies keep unchanged rule keys.
#[derive(Debug, Default)]
pub struct ShapeIds {
    ids: [[BTreeMap<Shape, u8>; 2]; RULE_KINDS as usize],
}

impl ShapeIds {
    fn assign(&mut self, kind: u8, dir: u8, live: &[Shape]) -> Result<Vec<u8>, CompileError> {
        let ids = &mut self.ids[usize::from(kind)][usize::from(dir)];
        ids.retain(|shape, _| live.contains(shape));
        let mut out = Vec::with_capacity(live.len());
        for shape in live {
            if let Some(id) = ids.get(shape) {
                out.push(*id);
                continue;
            }
            let used: Vec<u8> = ids.values().copied().collect();
            let Some(free) = (0..MASK_IDS).find(|id| !used.contains(id)) else {
                return Err(CompileError::TooManyShapes {
                    direction: if dir == DIR_IN { "in" } else { "out" },
                    count: live.len(),
                    max: MAX_MASKS,
                });
            };
            ids.insert(*shape, free);
            out.push(free);
        }
        Ok(out)
    }
}

/// Compile `spd` into the tables of generation `generation`.
pub fn compile(spd: &Spd, generation: u8, ids: &mut ShapeIds) -> Result<Tables, CompileError> {
    let mut tables = Tables::default();
    for dir in [DIR_IN, DIR_OUT] {
        let sps: Vec<&Sp> = spd
            .sps()
            .iter()
            .filter(|sp| dir_code(sp.direction) == dir)
            .collect();
        for kind in KINDS {
            // Best rank per shape, and each policy's shape.
            let mut shapes: BTreeMap<Shape, u64> = BTreeMap::new();
            for sp in &sps {
                let rank = rank_of_kind(sp, kind);
                shapes
                    .entry(Shape::of_kind(sp, kind))
                    .and_modify(|best| *best = (*best).min(rank))
                    .or_insert(rank);
            }
            let live: Vec<Shape> = shapes.keys().copied().collect();
            if live.len() > MAX_MASKS as usize {
                return Err(CompileError::TooManyShapes {
                    direction: if dir == DIR_IN { "in" } else { "out" },
                    count: live.len(),
                    max: MAX_MASKS,
                });
            }
            let shape_ids = ids.assign(kind, dir, &live)?;
            let by_shape: HashMap<Shape, MaskDesc> = live
                .iter()
                .zip(&shape_ids)
                .map(|(shape, id)| (*shape, shape.mask(kind, *id, shapes[shape])))
                .collect();
            let mut masks: Vec<MaskDesc> = by_shape.values().copied().collect();
            masks.sort_by_key(|m| (m.min_rank, m.id));
            tables.masks[usize::from(kind)][usize::from(dir)] = masks;

            for sp in &sps {
                let mask = by_shape[&Shape::of_kind(sp, kind)];
                let key = RuleKey::masked(&selector_flow(sp), &mask, generation);
                let sa_id = sp
                    .sa_name
                    .as_deref()
                    .and_then(|name| spd.sa(name))
                    .map_or(0, |sa| sa.id);
                let value = RuleValue {
                    rank: rank_of_kind(sp, kind),
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
        }
    }
    Ok(tables)
}
