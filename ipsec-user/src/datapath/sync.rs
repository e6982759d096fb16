//! Model -> maps, atomically for packets.
//!
//! A commit writes the *inactive* generation (rules, masks, mask counts), then flips the epoch
//! word in one 8-byte write: a packet reads the epoch once and sees either the old tables or the
//! new ones, never a mix, and cached verdicts of older epochs are ignored. Writes are a diff
//! against what that generation already holds (it is two commits old), so one CLI change costs a
//! handful of syscalls even with 100,000 policies installed.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuValues};
use ipsec_common::abi::{self, DIR_IN, DIR_OUT, MAX_MASKS, RuleKey, RuleValue, SaInfo, SpStats};

use super::{
    compile::{KINDS, ShapeIds, compile},
    kernel::{DatapathError, KernelDatapath, generation as generation_of, map_io as io},
};
use crate::model::{Action, Direction, Spd};

/// SPIs of the SAs that `ipsec` SPs of `direction` name.
fn spis_of(spd: &Spd, direction: Direction) -> HashMap<u32, SaInfo> {
    spd.sps()
        .iter()
        .filter(|sp| sp.direction == direction && sp.action == Action::Ipsec)
        .filter_map(|sp| sp.sa_name.as_deref().and_then(|name| spd.sa(name)))
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

#[derive(Debug, Default)]
pub(crate) struct SyncState {
    ids: ShapeIds,
    /// What each generation holds in the kernel, kept in step with every successful write.
    mirror: [HashMap<RuleKey, RuleValue>; 2],
    /// Which policy (`seq`) owns each counter slot, so a reused slot starts from zero.
    counter_owner: HashMap<u32, u32>,
    spis: HashMap<u32, SaInfo>,
    out_spis: HashMap<u32, SaInfo>,
    last_flip: Option<Instant>,
}

/// A kernel hash map with the mirror of what it holds, so a sync writes only the difference.
struct Mirrored<'a, K, V> {
    name: &'static str,
    map: &'a mut BpfHashMap<MapData, K, V>,
    mirror: &'a mut HashMap<K, V>,
}

impl<'a, K, V> Mirrored<'a, K, V>
where
    K: aya::Pod + Eq + Hash,
    V: aya::Pod + PartialEq,
{
    fn new(
        name: &'static str,
        map: &'a mut BpfHashMap<MapData, K, V>,
        mirror: &'a mut HashMap<K, V>,
    ) -> Self {
        Self { name, map, mirror }
    }

    /// Write the entries of `wanted` the map lacks or holds differently.
    fn add(&mut self, wanted: &HashMap<K, V>) -> Result<(), DatapathError> {
        for (key, value) in wanted {
            if self.mirror.get(key) != Some(value) {
                self.map.insert(key, value, 0).map_err(io(self.name))?;
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
            self.map.remove(&key).map_err(io(self.name))?;
            self.mirror.remove(&key);
        }
        Ok(())
    }
}

pub(crate) fn sync(dp: &mut KernelDatapath, spd: &Spd) -> Result<(), DatapathError> {
    let next = dp.epoch()? + 1;
    let generation = generation_of(next);
    let tables = compile(spd, generation, &mut dp.sync.ids)?;
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

    // Rules of the inactive generation: write what differs, delete what is gone.
    let mut rules = Mirrored::new(
        abi::RULES,
        &mut dp.maps.rules,
        &mut dp.sync.mirror[usize::from(generation)],
    );
    rules.add(&tables.rules)?;
    rules.retire(&tables.rules)?;

    for kind in KINDS {
        for dir in [DIR_IN, DIR_OUT] {
            let set = abi::mask_set(kind, generation, dir);
            let masks = &tables.masks[usize::from(kind)][usize::from(dir)];
            // `compile` keeps each set within MAX_MASKS, so the u32 index never wraps.
            let mut count = 0u32;
            for (i, mask) in (0u32..).zip(masks) {
                dp.maps
                    .masks
                    .set(set * MAX_MASKS + i, mask, 0)
                    .map_err(io(abi::MASKS))?;
                count = i + 1;
            }
            dp.maps
                .mask_count
                .set(set, count, 0)
                .map_err(io(abi::MASK_COUNT))?;
        }
    }

    // Inbound SPIs (SAs an inbound ipsec SP names): new ones before the flip, retired ones after.
    let wanted = spis_of(spd, Direction::In);
    let mut inbound = Mirrored::new(abi::SA_BY_SPI, &mut dp.maps.sa_by_spi, &mut dp.sync.spis);
    inbound.add(&wanted)?;
    // Outbound SPIs (SAs an outbound ipsec SP names): the only ESP the engine may send
    // unclassified. New ones before the flip (the engine may use them as soon as it learns them).
    let wanted_out = spis_of(spd, Direction::Out);
    let mut outbound = Mirrored::new(
        abi::SA_OUT_BY_SPI,
        &mut dp.maps.sa_out_by_spi,
        &mut dp.sync.out_spis,
    );
    outbound.add(&wanted_out)?;

    dp.maps
        .config
        .set(abi::CONFIG_EPOCH, next, 0)
        .map_err(io(abi::CONFIG))?;
    dp.sync.last_flip = Some(Instant::now());

    inbound.retire(&wanted)?;
    outbound.retire(&wanted_out)?;
    let live: HashSet<u32> = spd.sps().iter().map(|sp| sp.id).collect();
    dp.sync.counter_owner.retain(|id, _| live.contains(id));
    Ok(())
}
