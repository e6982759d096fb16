//! Model -> maps, atomically for packets.
//!
//! A commit writes the *inactive* generation (rules, prefixes, length pairs, field sets), then
//! flips the epoch word in one 8-byte write: a packet reads the epoch once and sees either the
//! old tables or the new ones, never a mix, and cached verdicts of older epochs are ignored.
//! Writes are a diff against what that generation already holds (it is two commits old), so one
//! CLI change costs a handful of syscalls even with 100,000 policies installed: a policy brings
//! at most three rules, two prefixes and a few array entries. A new prefix also rewrites the
//! prefixes it contains (their value lists the lengths of every prefix containing them), except
//! `::/0`, which is implied and never stored: adding a catch-all costs no prefix write.

use std::{
    hash::Hash,
    time::{Duration, Instant},
};

use foldhash::{HashMap, HashSet};

use aya::maps::{
    Array, HashMap as BpfHashMap, MapData, MapError, PerCpuValues,
    lpm_trie::{Key, LpmTrie},
};
use ipsec_common::abi::{self, FieldSet, LenSet, PrefixKey, RuleKey, RuleValue, SaInfo, SpStats};

use super::{
    compile::{PrefixEntry, compile},
    kernel::{DatapathError, KernelDatapath, generation as generation_of, map_io as io},
};
use crate::model::{Direction, Spd};

/// SPIs of the SAs that carry ESP in `direction` (`Spd::carries_esp`).
fn spis_of(spd: &Spd, direction: Direction) -> HashMap<u32, SaInfo> {
    spd.sas()
        .iter()
        .filter(|sa| spd.carries_esp(direction, &sa.name))
        .map(|sa| {
            (
                sa.spi,
                SaInfo {
                    sa_id: sa.id,
                    _pad: 0,
                },
            )
        })
        .collect()
}

/// Packets still running against a generation when it is retired finish within microseconds;
/// wait this long after a flip before rewriting the retired generation.
const GRACE: Duration = Duration::from_millis(2);

/// What one generation holds in the kernel, kept in step with every successful write.
#[derive(Debug, Default)]
struct Generation {
    rules: HashMap<RuleKey, RuleValue>,
    prefixes: HashMap<PrefixEntry, LenSet>,
    pairs: HashMap<u32, LenSet>,
    field_sets: HashMap<u32, FieldSet>,
}

#[derive(Debug, Default)]
pub(crate) struct SyncState {
    mirror: [Generation; 2],
    /// Which policy (`seq`) owns each counter slot, so a reused slot starts from zero.
    counter_owner: HashMap<u32, u32>,
    spis: HashMap<u32, SaInfo>,
    out_spis: HashMap<u32, SaInfo>,
    last_flip: Option<Instant>,
}

/// A kernel map as a sync writes it: put an entry, take one away.
trait MapWrite<K, V> {
    fn put(&mut self, key: &K, value: &V) -> Result<(), MapError>;
    fn delete(&mut self, key: &K) -> Result<(), MapError>;
}

impl<K: aya::Pod, V: aya::Pod> MapWrite<K, V> for BpfHashMap<MapData, K, V> {
    fn put(&mut self, key: &K, value: &V) -> Result<(), MapError> {
        self.insert(key, value, 0)
    }
    fn delete(&mut self, key: &K) -> Result<(), MapError> {
        self.remove(key)
    }
}

/// An array has no absent entries: taking one away writes the empty value.
impl<V: aya::Pod + Default> MapWrite<u32, V> for Array<MapData, V> {
    fn put(&mut self, key: &u32, value: &V) -> Result<(), MapError> {
        self.set(*key, value, 0)
    }
    fn delete(&mut self, key: &u32) -> Result<(), MapError> {
        self.set(*key, V::default(), 0)
    }
}

/// The prefix trie, keyed as the compiler spells its entries.
impl MapWrite<PrefixEntry, LenSet> for LpmTrie<MapData, PrefixKey, LenSet> {
    fn put(&mut self, key: &PrefixEntry, value: &LenSet) -> Result<(), MapError> {
        self.insert(&trie_key(key), value, 0)
    }
    fn delete(&mut self, key: &PrefixEntry) -> Result<(), MapError> {
        self.remove(&trie_key(key))
    }
}

fn trie_key(entry: &PrefixEntry) -> Key<PrefixKey> {
    // The tag byte, then the prefix.
    Key::new(8 + u32::from(entry.len), entry.key)
}

/// A kernel map with the mirror of what it holds, so a sync writes only the difference.
struct Mirrored<'a, K, V, M> {
    name: &'static str,
    map: &'a mut M,
    mirror: &'a mut HashMap<K, V>,
}

impl<'a, K, V, M> Mirrored<'a, K, V, M>
where
    K: Copy + Eq + Hash,
    V: Copy + PartialEq,
    M: MapWrite<K, V>,
{
    fn new(name: &'static str, map: &'a mut M, mirror: &'a mut HashMap<K, V>) -> Self {
        Self { name, map, mirror }
    }

    /// Write the entries of `wanted` the map lacks or holds differently.
    fn add(&mut self, wanted: &HashMap<K, V>) -> Result<(), DatapathError> {
        for (key, value) in wanted {
            if self.mirror.get(key) != Some(value) {
                self.map.put(key, value).map_err(io(self.name))?;
                self.mirror.insert(*key, *value);
            }
        }
        Ok(())
    }

    /// Delete the entries `wanted` no longer has.
    fn retire(&mut self, wanted: &HashMap<K, V>) -> Result<(), DatapathError> {
        let gone: Vec<K> = self
            .mirror
            .keys()
            .filter(|key| !wanted.contains_key(key))
            .copied()
            .collect();
        for key in gone {
            self.map.delete(&key).map_err(io(self.name))?;
            self.mirror.remove(&key);
        }
        Ok(())
    }

    /// Make the map hold exactly `wanted`.
    fn replace(&mut self, wanted: &HashMap<K, V>) -> Result<(), DatapathError> {
        self.add(wanted)?;
        self.retire(wanted)
    }
}

/// Make the maps equal `spd`; `before_flip` runs once the inactive generation is written, just
/// before the epoch flips to it (tests run packets there: they must still see the old SPD).
pub(crate) fn sync(
    dp: &mut KernelDatapath,
    spd: &Spd,
    before_flip: impl FnOnce(&KernelDatapath),
) -> Result<(), DatapathError> {
    let next = dp.epoch()? + 1;
    let generation = generation_of(next);
    let tables = compile(spd, generation)?;
    if let Some(rest) = dp
        .sync
        .last_flip
        .and_then(|flipped| GRACE.checked_sub(flipped.elapsed()))
    {
        std::thread::sleep(rest);
    }

    // Counters of policies new to their slot start from zero before any packet can hit them.
    let nr_cpus = aya::util::nr_cpus().map_err(|(_, source)| DatapathError::PerCpu { source })?;
    for sp in spd.sps() {
        if dp.sync.counter_owner.get(&sp.id) != Some(&sp.seq) {
            let zero = PerCpuValues::try_from(vec![SpStats::default(); nr_cpus])
                .map_err(|source| DatapathError::PerCpu { source })?;
            dp.maps
                .sp_stats
                .set(sp.id, zero, 0)
                .map_err(io(abi::SP_STATS))?;
            dp.sync.counter_owner.insert(sp.id, sp.seq);
        }
    }

    // The inactive generation: write what differs, delete what is gone.
    let maps = &mut dp.maps;
    let mirror = &mut dp.sync.mirror[usize::from(generation)];
    Mirrored::new(abi::RULES, &mut maps.rules, &mut mirror.rules).replace(&tables.rules)?;
    Mirrored::new(abi::PREFIXES, &mut maps.prefixes, &mut mirror.prefixes)
        .replace(&tables.prefixes)?;
    Mirrored::new(abi::LEN_PAIRS, &mut maps.len_pairs, &mut mirror.pairs).replace(&tables.pairs)?;
    Mirrored::new(
        abi::FIELD_SETS,
        &mut maps.field_sets,
        &mut mirror.field_sets,
    )
    .replace(&tables.field_sets)?;

    // Inbound SPIs (SAs an inbound ipsec SP names): new ones before the flip, retired ones after.
    let wanted = spis_of(spd, Direction::In);
    Mirrored::new(abi::SA_BY_SPI, &mut dp.maps.sa_by_spi, &mut dp.sync.spis).add(&wanted)?;
    // Outbound SPIs (SAs no inbound SP names): the only ESP the engine may send
    // unclassified. New ones before the flip (the engine may use them as soon as it learns them).
    let wanted_out = spis_of(spd, Direction::Out);
    Mirrored::new(
        abi::SA_OUT_BY_SPI,
        &mut dp.maps.sa_out_by_spi,
        &mut dp.sync.out_spis,
    )
    .add(&wanted_out)?;

    before_flip(dp);
    dp.maps
        .config
        .set(abi::CONFIG_EPOCH, next, 0)
        .map_err(io(abi::CONFIG))?;
    dp.sync.last_flip = Some(Instant::now());

    Mirrored::new(abi::SA_BY_SPI, &mut dp.maps.sa_by_spi, &mut dp.sync.spis).retire(&wanted)?;
    Mirrored::new(
        abi::SA_OUT_BY_SPI,
        &mut dp.maps.sa_out_by_spi,
        &mut dp.sync.out_spis,
    )
    .retire(&wanted_out)?;
    let live: HashSet<u32> = spd.sps().iter().map(|sp| sp.id).collect();
    dp.sync.counter_owner.retain(|id, _| live.contains(id));
    Ok(())
}
