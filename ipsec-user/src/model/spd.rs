//! `Spd`: the set of SAs and SPs, every rule that spans records, and the persisted state.
//!
//! Every mutating operation validates everything first and only then changes `self`, so on error
//! the SPD is exactly as it was. Lookups go through an `Index` (names, SPIs, selectors, SA users,
//! free ids), so adding or finding a record is O(log n) amortised and the daemon can build
//! `MAX_SP` policies one command at a time; removing one record still shifts the creation-ordered
//! vector, which is O(n) memory moves but no per-record lookups. The index is derived state: not
//! serialised, rebuilt whenever records arrive from elsewhere (deserialising).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Deserialize;

use super::args::{IkeSpAddArgs, SaAddArgs, SaRemoveArgs, SpAddArgs, SpRemoveArgs, opt};
use super::error::{ModelError, shown};
use super::former::Former;
use super::index::Index;
use super::parse::{self, allowed};
use super::peer::Peer;
use super::sa::Sa;
use super::sp::Sp;

/// Most SAs and SPs the kernel maps hold: the map ABI's limits, so the model refuses what the
/// maps could not take.
pub use ipsec_common::abi::{MAX_SA, MAX_SP};
/// Width of `Sp::seq`, the tie-breaking field of `Sp::rank`.
pub const SEQ_BITS: u32 = 28;

const SEQ_LIMIT: u32 = 1 << SEQ_BITS;

mod ike;

pub use ike::OutboundSwitch;

/// The security policy database: SAs, SPs and the creation counter. This is the persisted state;
/// after deserialising one, call `validate`.
///
/// Equality, `Debug` and the serialised form cover the records and the counter only, never the
/// index derived from them.
#[derive(Clone, Default, Deserialize)]
#[serde(from = "Records")]
pub struct Spd {
    /// In creation order.
    sas: Vec<Sa>,
    /// In creation order.
    sps: Vec<Sp>,
    /// The `seq` the next SP gets.
    next_seq: u32,
    /// The SAs replaced `ipsec` SPs named before, still accepted for them (`former`).
    #[serde(default, skip_serializing_if = "Former::is_empty")]
    former: Former,
    /// Lookup tables over `sas` and `sps`; every change to them goes through it too.
    #[serde(skip)]
    index: Index,
    /// IKE peers (`ike peer add`), in creation order; persisted.
    #[serde(default)]
    peers: Vec<Peer>,
    /// The SAs IKE installed (`sa list` owner `ike`), by name: their peer. In memory only: the
    /// serialised SPD leaves these SAs and the SPs' bindings to them out (negotiated keys never
    /// reach the disk).
    #[serde(skip)]
    ike_sas: BTreeMap<String, String>,
    /// Per peer, the CHILD_SAs IKE installed, in order: what its SPs are bound to (`ike`).
    #[serde(skip)]
    ike_current: ike::IkeChildren,
}

/// What a state file holds of an `Spd`: everything but the index, which is rebuilt from it.
#[derive(Deserialize)]
#[serde(rename = "Spd", expecting = "struct Spd")]
struct Records {
    sas: Vec<Sa>,
    sps: Vec<Sp>,
    next_seq: u32,
    /// Absent in state files written before key rotation kept former SAs.
    #[serde(default)]
    former: Former,
    /// Absent in state files written before IKE peers existed.
    #[serde(default)]
    peers: Vec<Peer>,
}

impl From<Records> for Spd {
    fn from(records: Records) -> Self {
        let Records {
            sas,
            sps,
            next_seq,
            former,
            peers,
        } = records;
        let index = Index::build(&sas, &sps);
        Self {
            sas,
            sps,
            next_seq,
            former,
            index,
            peers,
            ike_sas: BTreeMap::new(),
            ike_current: ike::IkeChildren::default(),
        }
    }
}

impl PartialEq for Spd {
    /// Same records, same counter; the index follows from them.
    fn eq(&self, other: &Self) -> bool {
        self.sas == other.sas
            && self.sps == other.sps
            && self.next_seq == other.next_seq
            && self.former == other.former
            && self.peers == other.peers
            && self.ike_sas == other.ike_sas
    }
}

impl Eq for Spd {}

impl fmt::Debug for Spd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spd")
            .field("sas", &self.sas)
            .field("sps", &self.sps)
            .field("next_seq", &self.next_seq)
            .field("former", &self.former)
            .field("peers", &self.peers)
            .field("ike_sas", &self.ike_sas)
            .finish_non_exhaustive()
    }
}

impl Spd {
    /// An empty SPD.
    pub fn new() -> Self {
        Self::default()
    }

    /// `sa add`: parses and validates every option, checks name and SPI uniqueness and the limit,
    /// then adds the SA in the lowest free slot.
    pub fn add_sa(&mut self, args: &SaAddArgs) -> Result<&Sa, ModelError> {
        let sa = Sa::parse(args)?;
        self.insert_sa(sa)
    }

    /// Adds a parsed SA after the checks across SAs (limit, name, SPI, GCM key).
    fn insert_sa(&mut self, mut sa: Sa) -> Result<&Sa, ModelError> {
        if self.sas.len() >= MAX_SA as usize {
            return Err(ModelError::Limit {
                option: opt::SA_NAME,
                kind: "sa",
                max: MAX_SA,
            });
        }
        if self.sa(&sa.name).is_some() {
            return Err(ModelError::NameInUse {
                option: opt::SA_NAME,
                kind: "sa",
                name: sa.name,
            });
        }
        if let Some(other) = self.sa_by_spi(sa.spi) {
            return Err(ModelError::SpiInUse {
                spi: sa.spi,
                sa: other.name.clone(),
            });
        }
        if let Some(key) = sa.gcm_aes_key()
            && let Some(other) = self.sas.iter().find(|o| o.gcm_aes_key() == Some(key))
        {
            return Err(ModelError::GcmKeyInUse {
                sa: other.name.clone(),
            });
        }
        sa.id = self.index.free_sa_id();
        self.index.push_sa(&sa);
        let index = self.sas.len();
        self.sas.push(sa);
        Ok(&self.sas[index])
    }

    /// `sa remove`: by `--sa-name`, by `--sa-source` + `--sa-destination` + `--sa-spi`, or
    /// `--remove-all`. An SA that any SP references is never removed; `--remove-all` removes
    /// nothing if any is referenced. Returns the removed SAs.
    pub fn remove_sa(&mut self, args: &SaRemoveArgs) -> Result<Vec<Sa>, ModelError> {
        const TRIPLE: &str = "--sa-source, --sa-destination and --sa-spi";
        let triple_given =
            args.sa_source.is_some() || args.sa_destination.is_some() || args.sa_spi.is_some();
        if args.remove_all {
            let other = match (&args.sa_name, triple_given) {
                (Some(_), _) => Some(opt::SA_NAME),
                (None, true) => Some(TRIPLE),
                (None, false) => None,
            };
            if let Some(other) = other {
                return Err(ModelError::RemoveConflict {
                    option: opt::REMOVE_ALL,
                    other,
                });
            }
            if !self.ike_sas.is_empty() {
                return self.remove_user_sas();
            }
            let held: Vec<(String, Vec<String>)> = self
                .sas
                .iter()
                .filter(|sa| self.index.has_users(&sa.name))
                .map(|sa| (sa.name.clone(), self.user_names(&sa.name)))
                .collect();
            if !held.is_empty() {
                return Err(ModelError::SasInUse { held });
            }
            self.index.clear_sas();
            self.former.clear();
            return Ok(std::mem::take(&mut self.sas));
        }
        let (option, index) = if let Some(name) = &args.sa_name {
            if triple_given {
                return Err(ModelError::RemoveConflict {
                    option: opt::SA_NAME,
                    other: TRIPLE,
                });
            }
            let index = self.index.sa(name).ok_or_else(|| ModelError::NotFound {
                option: opt::SA_NAME,
                kind: "sa",
                name: shown(name),
            })?;
            (opt::SA_NAME, index)
        } else {
            if !triple_given {
                return Err(ModelError::Missing {
                    option: opt::SA_NAME,
                    allowed: allowed::SA_REMOVE,
                });
            }
            (opt::SA_SPI, self.find_by_triple(args)?)
        };
        if let Some(peer) = self.ike_sas.get(&self.sas[index].name) {
            return Err(ModelError::IkeOwned {
                sa: self.sas[index].name.clone(),
                peer: peer.clone(),
            });
        }
        let users = self.user_names(&self.sas[index].name);
        if !users.is_empty() {
            return Err(ModelError::SaInUse {
                option,
                sa: self.sas[index].name.clone(),
                sps: users,
            });
        }
        let sa = self.sas.remove(index);
        self.index.remove_sa(index, &sa);
        self.former.sa_removed(&sa.name);
        Ok(vec![sa])
    }

    /// The index of the SA that `--sa-source`, `--sa-destination` and `--sa-spi` identify.
    fn find_by_triple(&self, args: &SaRemoveArgs) -> Result<usize, ModelError> {
        let (source, destination) = parse::sa_endpoints(
            args.sa_source.as_ref(),
            args.sa_destination.as_ref(),
            allowed::SA_TRIPLE,
        )?;
        let spi = parse::spi(parse::required(
            args.sa_spi.as_ref(),
            opt::SA_SPI,
            allowed::SA_TRIPLE,
        )?)?;
        // SPIs are unique, so the SA with this SPI is the only candidate.
        self.index
            .sa_by_spi(spi)
            .filter(|&i| self.sas[i].source == source && self.sas[i].destination == destination)
            .ok_or_else(|| {
                let show =
                    |a: Option<std::net::Ipv6Addr>| a.map_or("any".into(), |a| a.to_string());
                ModelError::NoSuchSa {
                    sa_source: show(source),
                    sa_destination: show(destination),
                    spi,
                }
            })
    }

    /// `sp add`: parses and validates every option (the SA must exist and agree on the mode),
    /// checks name uniqueness, duplicate selectors and the limit, then adds the SP in the lowest
    /// free slot with the next `seq`.
    pub fn add_sp(&mut self, args: &SpAddArgs) -> Result<&Sp, ModelError> {
        let sp = Sp::parse(args, |name| self.sa(name))?;
        self.insert_sp(sp)
    }

    /// `sp add --ike-peer`: like `add_sp`, for an SP whose SAs IKE negotiates with a configured
    /// peer. It is bound at once to the peer's current CHILD_SA, if there is one.
    pub fn add_ike_sp(&mut self, args: &IkeSpAddArgs) -> Result<&Sp, ModelError> {
        let Some(peer) = &args.ike_peer else {
            return self.add_sp(&args.sp);
        };
        let mut sp = Sp::parse_ike(
            &args.sp,
            peer,
            |name| self.sa(name),
            |name| self.peer(name).is_some(),
        )?;
        sp.sa_name = self.ike_binding(peer, sp.direction, sp.mode);
        self.insert_sp(sp)
    }

    /// Adds a parsed SP after the checks across SPs.
    fn insert_sp(&mut self, mut sp: Sp) -> Result<&Sp, ModelError> {
        if self.sps.len() >= MAX_SP as usize {
            return Err(ModelError::Limit {
                option: opt::SP_NAME,
                kind: "sp",
                max: MAX_SP,
            });
        }
        if self.index.sp(&sp.name).is_some() {
            return Err(ModelError::NameInUse {
                option: opt::SP_NAME,
                kind: "sp",
                name: sp.name,
            });
        }
        let key = sp.selector_key();
        if let Some(existing) = self.index.sp_by_selector(&key) {
            return Err(ModelError::DuplicateSelector {
                existing: self.sps[existing].name.clone(),
            });
        }
        if let Some(sa) = &sp.sa_name
            && let Some(other) = self
                .sa_users(sa)
                .into_iter()
                .find(|other| other.direction != sp.direction)
        {
            return Err(ModelError::SaBothDirections {
                sa: sa.clone(),
                other_sp: other.name.clone(),
                other_direction: other.direction,
                direction: sp.direction,
            });
        }
        // Nothing can fail from here on.
        if self.next_seq >= SEQ_LIMIT {
            self.renumber_seq();
        }
        sp.id = self.index.free_sp_id();
        sp.seq = self.next_seq;
        self.next_seq += 1;
        self.index.push_sp(&sp);
        self.former.sp_added(&sp);
        let index = self.sps.len();
        self.sps.push(sp);
        Ok(&self.sps[index])
    }

    /// Gives the SPs the seqs 0..n in their current order, so `seq` fits in `SEQ_BITS` again.
    /// Ranks change but their order does not.
    fn renumber_seq(&mut self) {
        let mut order: Vec<usize> = (0..self.sps.len()).collect();
        order.sort_by_key(|&i| self.sps[i].seq);
        for (seq, i) in (0u32..).zip(order) {
            self.sps[i].seq = seq;
        }
        self.next_seq = u32::try_from(self.sps.len()).unwrap_or(SEQ_LIMIT);
    }

    /// `sp remove`: by `--sp-name` or `--remove-all`. Returns the removed SPs.
    pub fn remove_sp(&mut self, args: &SpRemoveArgs) -> Result<Vec<Sp>, ModelError> {
        match (&args.sp_name, args.remove_all) {
            (Some(_), true) => Err(ModelError::RemoveConflict {
                option: opt::REMOVE_ALL,
                other: opt::SP_NAME,
            }),
            (None, true) => {
                self.index.clear_sps();
                self.former.clear();
                Ok(std::mem::take(&mut self.sps))
            }
            (Some(name), false) => {
                let index = self.index.sp(name).ok_or_else(|| ModelError::NotFound {
                    option: opt::SP_NAME,
                    kind: "sp",
                    name: shown(name),
                })?;
                let sp = self.sps.remove(index);
                self.index.remove_sp(index, &sp);
                self.former.sp_removed(&sp);
                Ok(vec![sp])
            }
            (None, false) => Err(ModelError::Missing {
                option: opt::SP_NAME,
                allowed: allowed::SP_REMOVE,
            }),
        }
    }

    /// Every SA, in creation order.
    pub fn sas(&self) -> &[Sa] {
        &self.sas
    }

    /// Every SP, in creation order (see `ranked` for precedence order).
    pub fn sps(&self) -> &[Sp] {
        &self.sps
    }

    /// The SA named `name`.
    pub fn sa(&self, name: &str) -> Option<&Sa> {
        self.index.sa(name).map(|i| &self.sas[i])
    }

    /// The SA with SPI `spi` (SPIs are unique).
    pub fn sa_by_spi(&self, spi: u32) -> Option<&Sa> {
        self.index.sa_by_spi(spi).map(|i| &self.sas[i])
    }

    /// The SP named `name`.
    pub fn sp(&self, name: &str) -> Option<&Sp> {
        self.index.sp(name).map(|i| &self.sps[i])
    }

    /// The SPs that reference the SA named `name`, in creation order.
    pub fn sa_users(&self, name: &str) -> Vec<&Sp> {
        self.index.users(name).map(|i| &self.sps[i]).collect()
    }

    /// Whether ESP may arrive on the SA named `name`: an inbound `ipsec` SP names it, or named
    /// it before (`former`). Only these SAs are "known" to the inbound datapath; ESP under any
    /// other SPI is dropped unread.
    pub fn is_inbound_sa(&self, name: &str) -> bool {
        let receives =
            |sp: &Sp| sp.direction == super::Direction::In && sp.action == super::Action::Ipsec;
        self.sa_users(name).into_iter().any(receives)
            || self.former.iter().any(|(sp, former)| {
                former.sa_names.iter().any(|sa| sa == name) && self.sp(sp).is_some_and(receives)
            })
    }

    /// Whether ESP under the SA named `name` may travel in `direction`: inbound, whether it is
    /// an inbound SA (`is_inbound_sa`); outbound, whether it is not one, i.e. an outbound SP
    /// names it or no SP does. The engine seals only under SAs an outbound `ipsec` SP names, but
    /// it learns a change before the kernel does: an SA added ahead of its use (a rotation's next
    /// outbound SA, added in phase 1) must already be allowed out when phase 2 points an SP at
    /// it, or the first packets the engine seals under it would be refused.
    pub fn carries_esp(&self, direction: super::Direction, name: &str) -> bool {
        let inbound = self.is_inbound_sa(name)
            || self
                .sa_users(name)
                .iter()
                .any(|sp| sp.direction == super::Direction::In);
        match direction {
            super::Direction::In => self.is_inbound_sa(name),
            super::Direction::Out => !inbound,
        }
    }

    /// The SAs the SP named `sp` named before and still accepts (see `former`); empty when it
    /// is not a live SP.
    pub fn former_sas(&self, sp: &str) -> &[String] {
        if self.sp(sp).is_none() {
            return &[];
        }
        self.former.of(sp)
    }

    /// The SAs traffic of `sp` may be carried by: the one it names, then those it named before
    /// and still accepts. The datapath's SPI tables follow this.
    pub fn sa_names_of<'a>(&'a self, sp: &'a Sp) -> impl Iterator<Item = &'a str> + 'a {
        sp.sa_name
            .iter()
            .chain(self.former_sas(&sp.name))
            .map(String::as_str)
    }

    /// Whether `sp` names, or named before and still accepts, the SA named `sa`.
    pub fn accepts_sa(&self, sp: &Sp, sa: &str) -> bool {
        self.sa_names_of(sp).any(|name| name == sa)
    }

    fn user_names(&self, name: &str) -> Vec<String> {
        self.sa_users(name)
            .into_iter()
            .map(|sp| sp.name.clone())
            .collect()
    }

    /// Re-checks every invariant of a deserialised state: each record on its own (names, SPIs,
    /// keys, prefixes, ports), uniqueness of names, SPIs, ids, seqs and selectors, the limits,
    /// SP -> SA references and mode agreement. The first violation is returned.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.sas.len() > MAX_SA as usize {
            return Err(ModelError::state(
                "sas",
                format!("{} sas exceed the limit of {MAX_SA}", self.sas.len()),
            ));
        }
        if self.sps.len() > MAX_SP as usize {
            return Err(ModelError::state(
                "sps",
                format!("{} sps exceed the limit of {MAX_SP}", self.sps.len()),
            ));
        }
        if self.next_seq > SEQ_LIMIT {
            return Err(ModelError::state(
                "next_seq",
                format!("{} exceeds 2^{SEQ_BITS}", self.next_seq),
            ));
        }

        let mut sa_ids = HashSet::new();
        let mut sa_by_name: HashMap<&str, &Sa> = HashMap::new();
        let mut sa_by_spi: HashMap<u32, &str> = HashMap::new();
        let mut sa_by_gcm_key: HashMap<&[u8], &str> = HashMap::new();
        for sa in &self.sas {
            let what = || format!("sa '{}'", shown(&sa.name));
            sa.check().map_err(|e| ModelError::state(what(), e))?;
            if sa.id >= MAX_SA {
                return Err(ModelError::state(
                    what(),
                    format!("id {} is outside 0 to {}", sa.id, MAX_SA - 1),
                ));
            }
            if !sa_ids.insert(sa.id) {
                return Err(ModelError::state(
                    what(),
                    format!("id {} is used twice", sa.id),
                ));
            }
            if sa_by_name.insert(&sa.name, sa).is_some() {
                return Err(ModelError::state(what(), "the name is used twice"));
            }
            if let Some(other) = sa_by_spi.insert(sa.spi, &sa.name) {
                return Err(ModelError::state(
                    what(),
                    format!("spi 0x{:x} is also used by sa '{other}'", sa.spi),
                ));
            }
            if let Some(key) = sa.gcm_aes_key()
                && let Some(other) = sa_by_gcm_key.insert(key, &sa.name)
            {
                return Err(ModelError::state(
                    what(),
                    format!("its aes-gcm key is also used by sa '{other}'"),
                ));
            }
        }

        let mut sp_ids = HashSet::new();
        let mut sp_names = HashSet::new();
        let mut seqs = HashSet::new();
        let mut selectors: HashMap<_, &str> = HashMap::new();
        // The first SP naming each SA, whose direction every other user must share.
        let mut sa_direction: HashMap<&str, &Sp> = HashMap::new();
        for sp in &self.sps {
            let what = || format!("sp '{}'", shown(&sp.name));
            sp.check().map_err(|e| ModelError::state(what(), e))?;
            if sp.source_port == Some(0) || sp.destination_port == Some(0) {
                return Err(ModelError::state(
                    what(),
                    "port 0 must be stored as any (null)",
                ));
            }
            if sp.id >= MAX_SP {
                return Err(ModelError::state(
                    what(),
                    format!("id {} is outside 0 to {}", sp.id, MAX_SP - 1),
                ));
            }
            if !sp_ids.insert(sp.id) {
                return Err(ModelError::state(
                    what(),
                    format!("id {} is used twice", sp.id),
                ));
            }
            if !sp_names.insert(&sp.name) {
                return Err(ModelError::state(what(), "the name is used twice"));
            }
            if sp.seq >= self.next_seq {
                return Err(ModelError::state(
                    what(),
                    format!("seq {} is not below next_seq {}", sp.seq, self.next_seq),
                ));
            }
            if !seqs.insert(sp.seq) {
                return Err(ModelError::state(
                    what(),
                    format!("seq {} is used twice", sp.seq),
                ));
            }
            if let Some(existing) = selectors.insert(sp.selector_key(), &sp.name) {
                return Err(ModelError::state(
                    what(),
                    ModelError::DuplicateSelector {
                        existing: existing.to_owned(),
                    },
                ));
            }
            if let Some(name) = &sp.sa_name {
                let sa = sa_by_name.get(name.as_str()).ok_or_else(|| {
                    ModelError::state(what(), ModelError::UnknownSa { name: shown(name) })
                })?;
                if sa.mode != sp.mode {
                    return Err(ModelError::state(
                        what(),
                        ModelError::ModeMismatch {
                            sp_mode: sp.mode,
                            sa: sa.name.clone(),
                            sa_mode: sa.mode,
                        },
                    ));
                }
                let first = *sa_direction.entry(name.as_str()).or_insert(sp);
                if first.direction != sp.direction {
                    return Err(ModelError::state(
                        what(),
                        ModelError::SaBothDirections {
                            sa: sa.name.clone(),
                            other_sp: first.name.clone(),
                            other_direction: first.direction,
                            direction: sp.direction,
                        },
                    ));
                }
            }
        }
        for (sp, former) in self.former.iter() {
            let what = || format!("former sas of sp '{}'", shown(sp));
            if !parse::is_valid_name(sp) {
                return Err(ModelError::state(what(), "the sp name is not valid"));
            }
            for name in &former.sa_names {
                if !sa_by_name.contains_key(name.as_str()) {
                    return Err(ModelError::state(
                        what(),
                        ModelError::UnknownSa { name: shown(name) },
                    ));
                }
            }
        }
        self.validate_peers()
    }
}

impl Spd {
    /// Rebuilds the index after a test edited the records directly.
    #[cfg(test)]
    fn reindex(&mut self) {
        self.index = Index::build(&self.sas, &self.sps);
    }

    /// Panics unless the index answers what linear scans of the records answer.
    #[cfg(test)]
    pub(super) fn assert_index_agrees(&self) {
        self.index.assert_agrees(&self.sas, &self.sps);
    }
}

#[cfg(test)]
mod tests {
    use ipnet::Ipv6Net;

    use super::*;
    use crate::model::fixtures::{
        discard_sp_args, example_sa_args, example_sp_args, named_sa_args,
    };

    fn example_spd() -> Spd {
        let mut spd = Spd::new();
        spd.add_sa(&example_sa_args())
            .expect("adding the spec's sa example");
        spd.add_sp(&example_sp_args())
            .expect("adding the spec's sp example");
        spd
    }

    #[test]
    fn spec_examples_work_together() {
        let spd = example_spd();
        assert_eq!(spd.sas().len(), 1);
        assert_eq!(spd.sps().len(), 1);
        assert_eq!(spd.sa_users("sa1")[0].name, "sp1");
        spd.validate().expect("the example state is valid");
    }

    #[test]
    fn ids_reuse_the_lowest_free_slot_and_seq_grows() {
        let mut spd = Spd::new();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let spi = 0x100 + u32::try_from(i).expect("small");
            let sa = spd
                .add_sa(&named_sa_args(name, spi, "tunnel"))
                .expect("adding an sa");
            assert_eq!(sa.id, u32::try_from(i).expect("small"));
        }
        spd.remove_sa(&SaRemoveArgs {
            sa_name: Some("a".into()),
            ..SaRemoveArgs::default()
        })
        .expect("removing sa a");
        let sa = spd
            .add_sa(&named_sa_args("d", 0x200, "tunnel"))
            .expect("adding sa d");
        assert_eq!(sa.id, 0, "slot 0 is reused");

        for (i, name) in ["p", "q", "r"].into_iter().enumerate() {
            let dst = format!("2001:db8:{i}::/48");
            let sp = spd
                .add_sp(&discard_sp_args(name, "any", &dst))
                .expect("adding an sp");
            assert_eq!(
                (sp.id, sp.seq),
                (
                    u32::try_from(i).expect("small"),
                    u32::try_from(i).expect("small")
                )
            );
        }
        spd.remove_sp(&SpRemoveArgs {
            sp_name: Some("q".into()),
            remove_all: false,
        })
        .expect("removing sp q");
        let sp = spd
            .add_sp(&discard_sp_args("s", "any", "any"))
            .expect("adding sp s");
        assert_eq!((sp.id, sp.seq), (1, 3), "slot reused, seq keeps growing");
        spd.validate().expect("state stays valid");
        spd.assert_index_agrees();
    }

    #[test]
    fn remove_sa_ways() {
        let mut spd = example_spd();
        let by_triple = SaRemoveArgs {
            sa_source: Some("3ffe:501:ffff::a".into()),
            sa_destination: Some("3ffe:501:ffff:1::1".into()),
            sa_spi: Some("0x1000".into()),
            ..SaRemoveArgs::default()
        };
        assert_eq!(
            spd.remove_sa(&by_triple)
                .expect_err("sa1 is in use")
                .to_string(),
            "--sa-spi: sa 'sa1' is used by sp 'sp1'; remove those policies first"
        );
        spd.remove_sp(&SpRemoveArgs {
            sp_name: None,
            remove_all: true,
        })
        .expect("removing every sp");
        let removed = spd
            .remove_sa(&by_triple)
            .expect("removing by source, destination and spi");
        assert_eq!(removed[0].name, "sa1");
        assert!(spd.sas().is_empty());

        spd.add_sa(&named_sa_args("a", 0x100, "transport"))
            .expect("adding a");
        spd.add_sa(&named_sa_args("b", 0x101, "transport"))
            .expect("adding b");
        let removed = spd
            .remove_sa(&SaRemoveArgs {
                remove_all: true,
                ..SaRemoveArgs::default()
            })
            .expect("removing every sa");
        assert_eq!(removed.len(), 2);
        assert!(spd.sas().is_empty());
    }

    #[test]
    fn remove_all_is_atomic_and_names_the_holders() {
        let mut spd = Spd::new();
        for (name, spi) in [("a", 0x100), ("b", 0x101), ("c", 0x102)] {
            spd.add_sa(&named_sa_args(name, spi, "transport"))
                .expect("adding an sa");
        }
        let mut args = discard_sp_args("p1", "any", "2001:db8::/64");
        args.action = Some("ipsec".into());
        args.sa_name = Some("a".into());
        spd.add_sp(&args).expect("adding p1");
        args.sp_name = Some("p2".into());
        args.priority = Some("1".into());
        spd.add_sp(&args).expect("adding p2");
        args.sp_name = Some("p3".into());
        args.sa_name = Some("c".into());
        args.priority = Some("2".into());
        spd.add_sp(&args).expect("adding p3");
        let before = spd.clone();
        assert_eq!(
            spd.remove_sa(&SaRemoveArgs {
                remove_all: true,
                ..SaRemoveArgs::default()
            })
            .expect_err("sas in use")
            .to_string(),
            "--remove-all: nothing removed; sa 'a' is used by sp 'p1', 'p2'; sa 'c' is used by sp 'p3'; remove those policies first"
        );
        assert_eq!(spd, before, "nothing removed");
        spd.assert_index_agrees();
    }

    #[test]
    fn seq_is_renumbered_before_it_overflows() {
        let mut spd = Spd::new();
        spd.add_sp(&discard_sp_args("a", "any", "2001:db8:1::/48"))
            .expect("adding a");
        spd.add_sp(&discard_sp_args("b", "any", "2001:db8:2::/48"))
            .expect("adding b");
        spd.add_sp(&discard_sp_args("c", "any", "2001:db8:3::/48"))
            .expect("adding c");
        // Pretend a long history: seqs near the top, out of creation order in the vector.
        spd.sps[0].seq = SEQ_LIMIT - 5;
        spd.sps[1].seq = SEQ_LIMIT - 1;
        spd.sps[2].seq = SEQ_LIMIT - 3;
        spd.next_seq = SEQ_LIMIT;
        spd.validate().expect("a state at the seq limit is valid");
        let order = |spd: &Spd| {
            let mut v: Vec<&Sp> = spd.sps().iter().collect();
            v.sort_by_key(|sp| sp.rank());
            v.into_iter().map(|sp| sp.name.clone()).collect::<Vec<_>>()
        };
        let before = order(&spd);
        spd.add_sp(&discard_sp_args("d", "any", "2001:db8:4::/48"))
            .expect("adding d");
        let seqs: Vec<u32> = spd.sps().iter().map(|sp| sp.seq).collect();
        assert_eq!(seqs, vec![0, 2, 1, 3], "compact, order kept, new one last");
        assert_eq!(spd.next_seq, 4);
        let mut after = order(&spd);
        after.retain(|n| n != "d");
        assert_eq!(after, before, "renumbering keeps the precedence order");
        spd.validate().expect("renumbered state is valid");
    }

    #[test]
    fn limits() {
        let mut spd = Spd::new();
        let template = Sa::parse(&named_sa_args("x", 0x100, "transport")).expect("template sa");
        for i in 0..MAX_SA {
            let mut sa = template.clone();
            sa.id = i;
            sa.name = format!("sa{i}");
            sa.spi = 0x100 + i;
            spd.sas.push(sa);
        }
        spd.reindex();
        spd.validate().expect("a full sa table is valid");
        let before = spd.clone();
        assert_eq!(
            spd.add_sa(&named_sa_args("one-more", 0xffff_0000, "transport"))
                .expect_err("sa table full")
                .to_string(),
            "--sa-name: cannot add another sa; the limit of 16384 sas is reached, remove one first"
        );
        assert_eq!(spd, before);

        let mut spd = Spd::new();
        let template =
            Sp::parse(&discard_sp_args("x", "any", "any"), |_| None).expect("template sp");
        for i in 0..MAX_SP {
            let mut sp = template.clone();
            sp.id = i;
            sp.seq = i;
            sp.name = format!("sp{i}");
            sp.priority = Some(u16::try_from(i % 65536).expect("fits"));
            sp.source_port = None;
            sp.destination = Ipv6Net::new(std::net::Ipv6Addr::from(u128::from(i) << 64), 64)
                .expect("valid prefix");
            spd.sps.push(sp);
        }
        spd.next_seq = MAX_SP;
        spd.reindex();
        assert_eq!(
            spd.add_sp(&discard_sp_args("one-more", "any", "any"))
                .expect_err("sp table full")
                .to_string(),
            "--sp-name: cannot add another sp; the limit of 262144 sps is reached, remove one first"
        );
        assert_eq!(spd.sps.len(), MAX_SP as usize);
    }

    #[test]
    fn serde_round_trip() {
        let mut spd = example_spd();
        spd.add_sa(&named_sa_args("t", 0xabc, "tunnel"))
            .expect("adding a tunnel sa");
        let mut args = discard_sp_args("icmp", "any", "2001:db8::/32");
        args.upper_layer_protocol = Some("icmp6".into());
        args.destination_port = Some("135".into());
        args.priority = Some("7".into());
        args.flow_direction = Some("in".into());
        spd.add_sp(&args).expect("adding an icmp6 sp");
        let json = serde_json::to_string_pretty(&spd).expect("serialising the spd");
        assert!(
            json.contains("\"6970763672656164796c6f676f336465736362636f757432\""),
            "keys are stored as hex"
        );
        let back: Spd = serde_json::from_str(&json).expect("deserialising the spd");
        back.validate().expect("the reloaded state is valid");
        assert_eq!(back, spd);
        back.assert_index_agrees();
        let compact = serde_json::to_string(&spd).expect("serialising");
        assert!(
            compact.starts_with(r#"{"sas":[{"#)
                && compact.contains(r#"}],"sps":[{"#)
                && compact.ends_with(&format!(r#"}}],"next_seq":{}}}"#, spd.next_seq)),
            "the index is not serialised: {compact}"
        );
        assert!(
            serde_json::from_str::<Spd>("1")
                .expect_err("a number is no spd")
                .to_string()
                .contains("expected struct Spd"),
            "deserialising errors name the struct as before"
        );
        let sa = back.sa("sa1").expect("sa1 survives");
        assert_eq!(sa.encryption_key.as_bytes(), b"ipv6readylogo3descbcout2");
        assert_eq!(
            back.sp("icmp").expect("icmp survives").destination_port,
            Some(135)
        );
    }

    /// Deserialises `spd` after `corrupt` edits its JSON, and returns `validate`'s message.
    fn corrupted(corrupt: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut spd = example_spd();
        spd.add_sa(&named_sa_args("t", 0xabc, "tunnel"))
            .expect("adding a tunnel sa");
        spd.add_sp(&discard_sp_args("d", "any", "any"))
            .expect("adding a discard sp");
        let mut value = serde_json::to_value(&spd).expect("serialising");
        corrupt(&mut value);
        let loaded: Spd =
            serde_json::from_value(value).expect("the corrupted json still has the right shape");
        loaded
            .validate()
            .expect_err("validate must catch the corruption")
            .to_string()
    }

    /// An edit of the serialised state that `validate` must catch.
    type Corruption = Box<dyn FnOnce(&mut serde_json::Value)>;

    #[test]
    fn validate_catches_corruption() {
        use serde_json::json;
        let cases: Vec<(&str, Corruption, &str)> = vec![
            (
                "duplicate sa name",
                Box::new(|v| v["sas"][1]["name"] = json!("sa1")),
                "state: sa 'sa1': the name is used twice",
            ),
            (
                "duplicate spi",
                Box::new(|v| v["sas"][1]["spi"] = json!(0x1000)),
                "state: sa 't': spi 0x1000 is also used by sa 'sa1'",
            ),
            (
                "duplicate sa id",
                Box::new(|v| v["sas"][1]["id"] = json!(0)),
                "state: sa 't': id 0 is used twice",
            ),
            (
                "sa id out of range",
                Box::new(|v| v["sas"][1]["id"] = json!(MAX_SA)),
                "state: sa 't': id 16384 is outside 0 to 16383",
            ),
            (
                "reserved spi",
                Box::new(|v| v["sas"][1]["spi"] = json!(5)),
                "state: sa 't': --sa-spi: 0x5 is reserved (0x0-0xff); use 0x100 to 0xffffffff",
            ),
            (
                "short key",
                Box::new(|v| v["sas"][0]["encryption_key"] = json!("00112233")),
                "state: sa 'sa1': --encryption-key: 3des-cbc needs a 24-byte key, got 4 bytes; give 0x followed by 48 hex digits, or 24 ascii characters",
            ),
            (
                "any in tunnel",
                Box::new(|v| v["sas"][1]["source"] = json!(null)),
                "state: sa 't': --sa-source: any is allowed in transport mode only; give an ipv6 address for tunnel mode",
            ),
            (
                "bad sa name",
                Box::new(|v| v["sas"][1]["name"] = json!("a b")),
                "state: sa 'a b': --sa-name: 'a b' is not valid; use 1 to 64 characters from A-Z a-z 0-9 _ . -",
            ),
            (
                "missing sa",
                Box::new(|v| v["sps"][0]["sa_name"] = json!("gone")),
                "state: sp 'sp1': --sa-name: no sa named 'gone'; add it first with sa add",
            ),
            (
                "mode mismatch",
                Box::new(|v| v["sps"][0]["mode"] = json!("tunnel")),
                "state: sp 'sp1': --sp-mode: tunnel does not match sa 'sa1' (transport); omit --sp-mode or give transport",
            ),
            (
                "an sa used by both directions",
                Box::new(|v| {
                    v["sps"][1]["sa_name"] = json!("sa1");
                    v["sps"][1]["direction"] = json!("in");
                }),
                "state: sp 'd': --sa-name: sa 'sa1' is already used by sp 'sp1' (direction out); an sa protects one direction only (RFC 4301 §4.1): add a second sa with its own spi for direction in",
            ),
            (
                "duplicate sp name",
                Box::new(|v| v["sps"][1]["name"] = json!("sp1")),
                "state: sp 'sp1': the name is used twice",
            ),
            (
                "duplicate sp id",
                Box::new(|v| v["sps"][1]["id"] = json!(0)),
                "state: sp 'd': id 0 is used twice",
            ),
            (
                "duplicate seq",
                Box::new(|v| v["sps"][1]["seq"] = json!(0)),
                "state: sp 'd': seq 0 is used twice",
            ),
            (
                "seq beyond next_seq",
                Box::new(|v| v["next_seq"] = json!(1)),
                "state: sp 'd': seq 1 is not below next_seq 1",
            ),
            (
                "next_seq too big",
                Box::new(|v| v["next_seq"] = json!(u64::from(SEQ_LIMIT) + 1)),
                "state: next_seq: 268435457 exceeds 2^28",
            ),
            (
                "host bits",
                Box::new(|v| v["sps"][1]["destination"] = json!("2001:db8::1/64")),
                "state: sp 'd': --sp-destination: '2001:db8::1/64' has host bits set beyond /64; did you mean 2001:db8::/64",
            ),
            (
                "port zero",
                Box::new(|v| v["sps"][0]["source_port"] = json!(0)),
                "state: sp 'sp1': port 0 must be stored as any (null)",
            ),
            (
                "ipsec without sa",
                Box::new(|v| v["sps"][0]["sa_name"] = json!(null)),
                "state: sp 'sp1': --sa-name: required with --action ipsec; give an existing sa, or use --action none or discard",
            ),
            (
                "duplicate selector",
                Box::new(|v| {
                    let first = v["sps"][0].clone();
                    for field in [
                        "source",
                        "destination",
                        "source_port",
                        "destination_port",
                        "protocol",
                        "direction",
                        "priority",
                    ] {
                        v["sps"][1][field] = first[field].clone();
                    }
                }),
                "state: sp 'd': --sp-name: same selector, direction and priority as sp 'sp1'; remove sp 'sp1' or give a different --priority",
            ),
        ];
        for (what, corrupt, expected) in cases {
            assert_eq!(corrupted(corrupt), expected, "{what}");
        }
    }

    #[test]
    fn corrupt_keys_fail_to_deserialise() {
        let mut value = serde_json::to_value(example_spd()).expect("serialising");
        value["sas"][0]["integrity_key"] = serde_json::json!("xyz");
        let error = serde_json::from_value::<Spd>(value).expect_err("a non-hex key must not load");
        assert!(
            error
                .to_string()
                .contains("a key must be a string of hex digit pairs"),
            "{error}"
        );
    }

    #[test]
    fn debug_output_redacts_keys() {
        let spd = example_spd();
        let debug = format!("{spd:?}");
        assert!(
            !debug.contains("ipv6readylogo"),
            "debug output leaks no key: {debug}"
        );
        assert!(debug.contains("<redacted 24 bytes>"));
    }

    /// `sp add` arguments for policy `i` of the scale test, in one of four selector shapes:
    /// /64 destinations, /128 sources, /48 tcp flows to an SA, and /96 with a priority.
    fn scale_sp_args(name: &str, i: u32, sas: u32) -> SpAddArgs {
        let net = |top: u128, i: u32, shift: u32, len: u8| {
            format!(
                "{}/{len}",
                std::net::Ipv6Addr::from(top << 112 | u128::from(i) << shift)
            )
        };
        let mut args = discard_sp_args(name, "any", "any");
        match i % 4 {
            0 => args.sp_destination = Some(net(0x2001, i, 64, 64)),
            1 => args.sp_source = Some(net(0x2002, i, 0, 128)),
            2 => {
                args.sp_source = Some(net(0x2003, i, 80, 48));
                args.sp_destination = Some(net(0x2004, i % 7, 80, 48));
                args.upper_layer_protocol = Some("tcp".into());
                args.source_port = Some("1024".into());
                args.destination_port = Some((i % 1000 + 1).to_string());
                args.action = Some("ipsec".into());
                args.sa_name = Some(format!("sa{}", i / 4 % sas));
            }
            _ => {
                args.sp_destination = Some(net(0x2005, i, 32, 96));
                args.priority = Some((i % 65_536).to_string());
                args.flow_direction = Some("in".into());
            }
        }
        args
    }

    #[test]
    fn many_policies_one_at_a_time() {
        const SAS: u32 = 1_000;
        const SPS: u32 = 100_000;
        /// SAs 0..USED_SAS are referenced by SPs; the others are free to remove.
        const USED_SAS: u32 = 500;
        let mut spd = Spd::new();
        let started = std::time::Instant::now();
        for i in 0..SAS {
            spd.add_sa(&named_sa_args(&format!("sa{i}"), 0x1000 + i, "transport"))
                .expect("adding an sa");
        }
        for i in 0..SPS {
            spd.add_sp(&scale_sp_args(&format!("sp{i}"), i, USED_SAS))
                .expect("adding an sp");
        }
        let elapsed = started.elapsed();
        eprintln!("added {SAS} sas and {SPS} sps one at a time in {elapsed:?}");
        if !cfg!(debug_assertions) {
            // Linear lookups took tens of seconds here; indexed ones take well under one.
            assert!(elapsed.as_secs() < 10, "adding took {elapsed:?}");
        }
        assert_eq!(spd.sps().len(), SPS as usize);
        assert_eq!(spd.sa_users("sa7").len(), 50, "every 500th tcp policy");
        assert_eq!(
            spd.sa_users("sa7")
                .iter()
                .map(|sp| sp.id)
                .collect::<Vec<_>>(),
            (0..SPS)
                .filter(|i| i % 4 == 2 && i / 4 % USED_SAS == 7)
                .collect::<Vec<_>>(),
            "users in creation order"
        );

        // Rejections change nothing and name the same records a scan would.
        assert_eq!(
            spd.add_sp(&scale_sp_args("again", 4242, USED_SAS))
                .expect_err("duplicate selector")
                .to_string(),
            "--sp-name: same selector, direction and priority as sp 'sp4242'; remove sp 'sp4242' or give a different --priority"
        );
        assert!(matches!(
            spd.add_sp(&scale_sp_args("sp17", SPS, USED_SAS)),
            Err(ModelError::NameInUse { .. })
        ));
        assert!(matches!(
            spd.add_sa(&named_sa_args("new", 0x1000 + 17, "transport")),
            Err(ModelError::SpiInUse { .. })
        ));

        // Remove a spread of SPs and unused SAs (by name and by triple), then add again: the
        // freed ids come back lowest first, seqs keep growing.
        let mut freed_sp_ids = Vec::new();
        for i in (0..SPS).step_by(97) {
            let removed = spd
                .remove_sp(&SpRemoveArgs {
                    sp_name: Some(format!("sp{i}")),
                    remove_all: false,
                })
                .expect("removing an sp");
            freed_sp_ids.push(removed[0].id);
        }
        let mut freed_sa_ids = Vec::new();
        for i in (USED_SAS..SAS).step_by(3) {
            let args = if i % 2 == 0 {
                SaRemoveArgs {
                    sa_name: Some(format!("sa{i}")),
                    ..SaRemoveArgs::default()
                }
            } else {
                SaRemoveArgs {
                    sa_source: Some("2001:db8::1".into()),
                    sa_destination: Some("2001:db8::2".into()),
                    sa_spi: Some(format!("{:#x}", 0x1000 + i)),
                    ..SaRemoveArgs::default()
                }
            };
            freed_sa_ids.push(spd.remove_sa(&args).expect("removing an unused sa")[0].id);
        }
        assert!(
            spd.remove_sa(&SaRemoveArgs {
                sa_name: Some("sa3".into()),
                ..SaRemoveArgs::default()
            })
            .expect_err("sa3 is in use")
            .to_string()
            .starts_with("--sa-name: sa 'sa3' is used by sp 'sp"),
        );
        spd.validate().expect("state after removals is valid");
        spd.assert_index_agrees();

        freed_sp_ids.sort_unstable();
        freed_sa_ids.sort_unstable();
        let next_seq = spd.next_seq;
        for (k, &id) in (0..).zip(&freed_sp_ids) {
            let sp = spd
                .add_sp(&scale_sp_args(&format!("re{k}"), SPS + k, USED_SAS))
                .expect("re-adding an sp");
            assert_eq!(
                (sp.id, sp.seq),
                (id, next_seq + k),
                "lowest freed id, next seq"
            );
        }
        for (k, &id) in (0..).zip(&freed_sa_ids) {
            let sa = spd
                .add_sa(&named_sa_args(&format!("re{k}"), 0x10_0000 + k, "tunnel"))
                .expect("re-adding an sa");
            assert_eq!(sa.id, id, "lowest freed sa id");
        }
        let sp = spd
            .add_sp(&scale_sp_args("last", 2 * SPS, USED_SAS))
            .expect("adding past the freed ids");
        assert_eq!(sp.id, SPS, "no free id left below the high-water mark");
        spd.validate().expect("state after re-adding is valid");
        spd.assert_index_agrees();

        // The reloaded state rebuilds the same index.
        let json = serde_json::to_vec(&spd).expect("serialising");
        let back: Spd = serde_json::from_slice(&json).expect("deserialising");
        assert_eq!(back, spd);
        back.validate().expect("reloaded state is valid");
        back.assert_index_agrees();

        spd.remove_sp(&SpRemoveArgs {
            sp_name: None,
            remove_all: true,
        })
        .expect("removing every sp");
        spd.remove_sa(&SaRemoveArgs {
            remove_all: true,
            ..SaRemoveArgs::default()
        })
        .expect("removing every sa");
        spd.assert_index_agrees();
        let sp = spd
            .add_sp(&scale_sp_args("fresh", 0, USED_SAS))
            .expect("adding to an empty spd");
        assert_eq!(sp.id, 0, "ids start over");
    }
}
