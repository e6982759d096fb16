//! `Index`: the lookup tables that make every `Spd` operation O(log n) amortised per record.
//!
//! The index is derived state: it is never persisted, and `Spd` rebuilds it from the records
//! whenever it gets records from elsewhere (deserialising). Every table maps to a *handle*, not to
//! a position: handles are handed out in creation order and never shift, so removing a record
//! (which shifts the `Vec` of records) leaves every table valid. `Handles` keeps the handles in
//! step with the records' `Vec`; as they increase along it, a binary search turns a handle back
//! into a position.
//!
//! On a state that `Spd::validate` accepts, every lookup answers exactly what a linear scan of
//! the records answers. On a state it rejects (duplicate names, SPIs, selectors), a lookup finds
//! the first record in creation order, as a scan would, until that record is removed.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use super::sa::Sa;
use super::sp::{SelectorKey, Sp};

/// A record's stable name inside the index: larger = created later.
type Handle = u64;

/// The handle of each record, in the same order as the records' `Vec`.
#[derive(Clone, Debug, Default)]
struct Handles {
    /// Strictly increasing.
    by_position: Vec<Handle>,
    /// The handle the next record gets.
    next: Handle,
}

impl Handles {
    fn build(count: usize) -> Self {
        let by_position: Vec<Handle> = (0..).take(count).collect();
        let next = by_position.len() as Handle;
        Self { by_position, next }
    }

    /// The handle of a record appended to the `Vec`.
    fn push(&mut self) -> Handle {
        let handle = self.next;
        self.next += 1;
        self.by_position.push(handle);
        handle
    }

    /// The handle of the record at `position`, which is being removed from the `Vec`.
    fn remove(&mut self, position: usize) -> Handle {
        self.by_position.remove(position)
    }

    fn position(&self, handle: Handle) -> Option<usize> {
        self.by_position.binary_search(&handle).ok()
    }

    fn clear(&mut self) {
        self.by_position.clear();
    }
}

/// The ids below `limit` in use and the free ones among them, so the lowest free id is found in
/// O(log n). Ids at or above `limit` (only in a state `validate` rejects) are not tracked: the
/// lowest free id is below the limit whenever there is room for one more record.
#[derive(Clone, Debug)]
struct Ids {
    limit: u32,
    /// How many records hold each id; no trailing zero, so its length is the high-water mark.
    uses: Vec<u32>,
    /// The ids below `uses.len()` that no record holds.
    free: BTreeSet<u32>,
}

impl Ids {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            uses: Vec::new(),
            free: BTreeSet::new(),
        }
    }

    fn build(limit: u32, ids: impl Iterator<Item = u32>) -> Self {
        let mut uses = Vec::new();
        for id in ids.filter(|&id| id < limit) {
            let slot = id as usize;
            if slot >= uses.len() {
                uses.resize(slot + 1, 0);
            }
            uses[slot] += 1;
        }
        let free = (0u32..)
            .zip(&uses)
            .filter(|(_, n)| **n == 0)
            .map(|(id, _)| id)
            .collect();
        Self { limit, uses, free }
    }

    /// The lowest id no record holds.
    fn lowest_free(&self) -> u32 {
        self.free
            .first()
            .copied()
            .unwrap_or_else(|| u32::try_from(self.uses.len()).unwrap_or(u32::MAX))
    }

    fn hold(&mut self, id: u32) {
        if id >= self.limit {
            return;
        }
        let slot = id as usize;
        if slot >= self.uses.len() {
            self.free
                .extend(u32::try_from(self.uses.len()).unwrap_or(id)..id);
            self.uses.resize(slot + 1, 0);
        }
        self.uses[slot] += 1;
        if self.uses[slot] == 1 {
            self.free.remove(&id);
        }
    }

    fn release(&mut self, id: u32) {
        let Some(uses) = self.uses.get_mut(id as usize) else {
            return;
        };
        *uses = uses.saturating_sub(1);
        if *uses != 0 {
            return;
        }
        self.free.insert(id);
        // Keep `free` below the high-water mark, so it never grows past the records removed.
        while self.uses.last() == Some(&0) {
            self.uses.pop();
            if let Ok(top) = u32::try_from(self.uses.len()) {
                self.free.remove(&top);
            }
        }
    }

    fn clear(&mut self) {
        self.uses.clear();
        self.free.clear();
    }
}

/// Adds `key -> handle` unless `key` is already there (an earlier record keeps it).
fn insert_first<K: Eq + Hash>(map: &mut HashMap<K, Handle>, key: K, handle: Handle) {
    map.entry(key).or_insert(handle);
}

/// Removes `key` if it maps to `handle` (and not to another record with the same key).
fn remove_if<K, Q>(map: &mut HashMap<K, Handle>, key: &Q, handle: Handle)
where
    K: Borrow<Q> + Eq + Hash,
    Q: Eq + Hash + ?Sized,
{
    if map.get(key) == Some(&handle) {
        map.remove(key);
    }
}

/// Every lookup table of an `Spd`, over its `sas` and `sps` vectors.
#[derive(Clone, Debug)]
pub(super) struct Index {
    sa_handles: Handles,
    sa_by_name: HashMap<String, Handle>,
    sa_by_spi: HashMap<u32, Handle>,
    sa_ids: Ids,
    sp_handles: Handles,
    sp_by_name: HashMap<String, Handle>,
    sp_by_selector: HashMap<SelectorKey, Handle>,
    /// SA name -> the SPs that reference it (by name, whether or not such an SA exists), in
    /// creation order.
    users: HashMap<String, BTreeSet<Handle>>,
    sp_ids: Ids,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            sa_handles: Handles::default(),
            sa_by_name: HashMap::new(),
            sa_by_spi: HashMap::new(),
            sa_ids: Ids::new(super::spd::MAX_SA),
            sp_handles: Handles::default(),
            sp_by_name: HashMap::new(),
            sp_by_selector: HashMap::new(),
            users: HashMap::new(),
            sp_ids: Ids::new(super::spd::MAX_SP),
        }
    }
}

impl Index {
    /// The index of `sas` and `sps`, in O(n).
    pub(super) fn build(sas: &[Sa], sps: &[Sp]) -> Self {
        let mut index = Self {
            sa_handles: Handles::build(sas.len()),
            sa_ids: Ids::build(super::spd::MAX_SA, sas.iter().map(|sa| sa.id)),
            sp_handles: Handles::build(sps.len()),
            sp_ids: Ids::build(super::spd::MAX_SP, sps.iter().map(|sp| sp.id)),
            ..Self::default()
        };
        index.sa_by_name.reserve(sas.len());
        index.sa_by_spi.reserve(sas.len());
        for (handle, sa) in (0..).zip(sas) {
            index.insert_sa_tables(sa, handle);
        }
        index.sp_by_name.reserve(sps.len());
        index.sp_by_selector.reserve(sps.len());
        for (handle, sp) in (0..).zip(sps) {
            index.insert_sp_tables(sp, handle);
        }
        index
    }

    /// The position of the SA named `name`.
    pub(super) fn sa(&self, name: &str) -> Option<usize> {
        let handle = *self.sa_by_name.get(name)?;
        self.sa_handles.position(handle)
    }

    /// The position of the SA with SPI `spi`.
    pub(super) fn sa_by_spi(&self, spi: u32) -> Option<usize> {
        let handle = *self.sa_by_spi.get(&spi)?;
        self.sa_handles.position(handle)
    }

    /// The id a new SA gets: the lowest free one.
    pub(super) fn free_sa_id(&self) -> u32 {
        self.sa_ids.lowest_free()
    }

    /// Records `sa`, which is being appended to the SAs.
    pub(super) fn push_sa(&mut self, sa: &Sa) {
        let handle = self.sa_handles.push();
        self.insert_sa_tables(sa, handle);
        self.sa_ids.hold(sa.id);
    }

    fn insert_sa_tables(&mut self, sa: &Sa, handle: Handle) {
        insert_first(&mut self.sa_by_name, sa.name.clone(), handle);
        insert_first(&mut self.sa_by_spi, sa.spi, handle);
    }

    /// Forgets `sa`, which was just removed from `position` of the SAs.
    pub(super) fn remove_sa(&mut self, position: usize, sa: &Sa) {
        let handle = self.sa_handles.remove(position);
        remove_if(&mut self.sa_by_name, sa.name.as_str(), handle);
        remove_if(&mut self.sa_by_spi, &sa.spi, handle);
        self.sa_ids.release(sa.id);
    }

    /// Forgets every SA.
    pub(super) fn clear_sas(&mut self) {
        self.sa_handles.clear();
        self.sa_by_name.clear();
        self.sa_by_spi.clear();
        self.sa_ids.clear();
    }

    /// The position of the SP named `name`.
    pub(super) fn sp(&self, name: &str) -> Option<usize> {
        let handle = *self.sp_by_name.get(name)?;
        self.sp_handles.position(handle)
    }

    /// The position of the SP with selector, direction and priority `key`.
    pub(super) fn sp_by_selector(&self, key: &SelectorKey) -> Option<usize> {
        let handle = *self.sp_by_selector.get(key)?;
        self.sp_handles.position(handle)
    }

    /// The positions of the SPs that reference the SA named `name`, in creation order.
    pub(super) fn users(&self, name: &str) -> impl Iterator<Item = usize> + '_ {
        self.users
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|&handle| self.sp_handles.position(handle))
    }

    /// Whether any SP references the SA named `name`.
    pub(super) fn has_users(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    /// The id a new SP gets: the lowest free one.
    pub(super) fn free_sp_id(&self) -> u32 {
        self.sp_ids.lowest_free()
    }

    /// Records `sp`, which is being appended to the SPs.
    pub(super) fn push_sp(&mut self, sp: &Sp) {
        let handle = self.sp_handles.push();
        self.insert_sp_tables(sp, handle);
        self.sp_ids.hold(sp.id);
    }

    fn insert_sp_tables(&mut self, sp: &Sp, handle: Handle) {
        insert_first(&mut self.sp_by_name, sp.name.clone(), handle);
        insert_first(&mut self.sp_by_selector, sp.selector_key(), handle);
        if let Some(sa) = &sp.sa_name {
            self.users.entry(sa.clone()).or_default().insert(handle);
        }
    }

    /// Forgets `sp`, which was just removed from `position` of the SPs.
    pub(super) fn remove_sp(&mut self, position: usize, sp: &Sp) {
        let handle = self.sp_handles.remove(position);
        remove_if(&mut self.sp_by_name, sp.name.as_str(), handle);
        remove_if(&mut self.sp_by_selector, &sp.selector_key(), handle);
        if let Some(sa) = &sp.sa_name
            && let Some(users) = self.users.get_mut(sa.as_str())
        {
            users.remove(&handle);
            if users.is_empty() {
                self.users.remove(sa.as_str());
            }
        }
        self.sp_ids.release(sp.id);
    }

    /// Forgets every SP.
    pub(super) fn clear_sps(&mut self) {
        self.sp_handles.clear();
        self.sp_by_name.clear();
        self.sp_by_selector.clear();
        self.users.clear();
        self.sp_ids.clear();
    }

    /// Panics unless every table answers what a scan of `sas` and `sps` answers, and holds
    /// nothing else. Test support: the reference is recomputed from the records in one pass.
    #[cfg(test)]
    pub(super) fn assert_agrees(&self, sas: &[Sa], sps: &[Sp]) {
        /// Each key's first position in the records, as `iter().position` would find it.
        fn first<K: Eq + Hash>(keys: impl Iterator<Item = K>) -> HashMap<K, usize> {
            let mut map = HashMap::new();
            for (position, key) in keys.enumerate() {
                map.entry(key).or_insert(position);
            }
            map
        }

        assert_eq!(
            self.sa_handles.by_position.len(),
            sas.len(),
            "one handle per sa"
        );
        assert!(
            self.sa_handles.by_position.is_sorted(),
            "sa handles increase"
        );
        assert_eq!(
            self.sp_handles.by_position.len(),
            sps.len(),
            "one handle per sp"
        );
        assert!(
            self.sp_handles.by_position.is_sorted(),
            "sp handles increase"
        );

        let names = first(sas.iter().map(|sa| sa.name.as_str()));
        let spis = first(sas.iter().map(|sa| sa.spi));
        assert_eq!(self.sa_by_name.len(), names.len(), "no stale sa names");
        assert_eq!(self.sa_by_spi.len(), spis.len(), "no stale spis");
        for sa in sas {
            assert_eq!(
                self.sa(&sa.name),
                names.get(sa.name.as_str()).copied(),
                "sa '{}'",
                sa.name
            );
            assert_eq!(
                self.sa_by_spi(sa.spi),
                spis.get(&sa.spi).copied(),
                "spi {}",
                sa.spi
            );
        }

        let names = first(sps.iter().map(|sp| sp.name.as_str()));
        let selectors = first(sps.iter().map(Sp::selector_key));
        assert_eq!(self.sp_by_name.len(), names.len(), "no stale sp names");
        assert_eq!(
            self.sp_by_selector.len(),
            selectors.len(),
            "no stale selectors"
        );
        let mut users: HashMap<&str, Vec<usize>> = HashMap::new();
        for (position, sp) in sps.iter().enumerate() {
            assert_eq!(
                self.sp(&sp.name),
                names.get(sp.name.as_str()).copied(),
                "sp '{}'",
                sp.name
            );
            assert_eq!(
                self.sp_by_selector(&sp.selector_key()),
                selectors.get(&sp.selector_key()).copied(),
                "selector of sp '{}'",
                sp.name
            );
            if let Some(sa) = &sp.sa_name {
                users.entry(sa).or_default().push(position);
            }
        }
        assert_eq!(self.users.len(), users.len(), "no stale users");
        for (name, positions) in users {
            assert_eq!(
                self.users(name).collect::<Vec<_>>(),
                positions,
                "users of '{name}'"
            );
        }

        assert_eq!(
            self.free_sa_id(),
            lowest_free_id(sas.iter().map(|sa| sa.id), sas.len()),
            "lowest free sa id"
        );
        assert_eq!(
            self.free_sp_id(),
            lowest_free_id(sps.iter().map(|sp| sp.id), sps.len()),
            "lowest free sp id"
        );
    }
}

/// The lowest id not in `used`, by a linear scan: the reference `Ids` must agree with. With
/// `count` unique ids in `used`, one of 0..=count is free.
#[cfg(test)]
fn lowest_free_id(used: impl Iterator<Item = u32>, count: usize) -> u32 {
    let mut taken = vec![false; count + 1];
    for id in used {
        if let Some(slot) = usize::try_from(id).ok().and_then(|i| taken.get_mut(i)) {
            *slot = true;
        }
    }
    let free = taken.iter().position(|t| !t).unwrap_or(count);
    u32::try_from(free).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_hand_out_the_lowest_free_one() {
        let mut ids = Ids::build(8, [0, 2, 3, 9].into_iter());
        assert_eq!(ids.lowest_free(), 1);
        ids.hold(1);
        assert_eq!(ids.lowest_free(), 4, "past the high-water mark");
        ids.hold(6);
        assert_eq!(ids.lowest_free(), 4, "holding 6 frees 4 and 5");
        ids.release(2);
        assert_eq!(ids.lowest_free(), 2);
        ids.release(6);
        assert_eq!(ids.uses.len(), 4, "the high-water mark drops");
        assert_eq!(ids.free, BTreeSet::from([2]));
        ids.hold(2);
        ids.hold(2);
        ids.release(2);
        assert_eq!(ids.lowest_free(), 4, "a duplicate still holds its id");
        ids.clear();
        assert_eq!(ids.lowest_free(), 0);
    }

    #[test]
    fn handles_survive_removal() {
        let mut handles = Handles::build(3);
        let fourth = handles.push();
        assert_eq!(handles.remove(1), 1);
        assert_eq!(handles.position(fourth), Some(2));
        assert_eq!(handles.position(1), None);
        assert_eq!(handles.position(0), Some(0));
    }
}
