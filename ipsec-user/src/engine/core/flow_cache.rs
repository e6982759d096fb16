//! A bounded flow cache in front of the classifier.
//!
//! Contract:
//! - At most `capacity` entries; a new flow past that evicts the least recently used one (a
//!   port scan costs its own entries, not the whole cache).
//! - Every entry carries the generation it was classified under; [`FlowCache::invalidate`]
//!   (an SPD change) starts a new generation, and an entry of an older one is never returned:
//!   it is classified again and overwritten (fail closed, and no O(n) wipe under the lock).
//! - The last verdict served is remembered beside the cache, with its generation: consecutive
//!   packets of one flow (a stream's segments, a receive burst) skip the hash and the LRU's
//!   list update. It obeys the same generation rule, so it never outlives an SPD change.

use std::hash::Hash;
use std::num::NonZeroUsize;

use lru::LruCache;

/// Verdicts of type `V` per key `K`; see the module contract.
pub(crate) struct FlowCache<K: Hash + Eq, V: Copy> {
    entries: LruCache<K, (u64, V)>,
    generation: u64,
    /// The verdict served last: key, generation, verdict.
    last: Option<(K, u64, V)>,
}

impl<K: Hash + Eq + Copy, V: Copy> FlowCache<K, V> {
    pub(crate) fn new(capacity: NonZeroUsize) -> Self {
        Self {
            entries: LruCache::new(capacity),
            generation: 0,
            last: None,
        }
    }

    /// The verdict of `key` in the current generation, from `classify` on a miss.
    pub(crate) fn get_or_classify(&mut self, key: &K, classify: impl FnOnce() -> V) -> V {
        if let Some((last, generation, verdict)) = &self.last
            && *generation == self.generation
            && last == key
        {
            return *verdict;
        }
        let verdict = match self.entries.get(key) {
            Some((generation, verdict)) if *generation == self.generation => *verdict,
            _ => {
                let verdict = classify();
                self.entries.put(*key, (self.generation, verdict));
                verdict
            }
        };
        self.last = Some((*key, self.generation, verdict));
        verdict
    }

    /// Forgets every verdict (lazily: they are never served again).
    pub(crate) fn invalidate(&mut self) {
        self.generation += 1;
        self.last = None;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize) -> FlowCache<u32, u32> {
        FlowCache::new(NonZeroUsize::new(capacity).expect("non-zero"))
    }

    #[test]
    fn evicts_the_least_recently_used_flow_not_everything() {
        let mut cache = cache(3);
        let mut misses = 0;
        let mut get = |cache: &mut FlowCache<u32, u32>, key| {
            cache.get_or_classify(&key, || {
                misses += 1;
                key * 10
            })
        };
        for key in [1, 2, 3] {
            assert_eq!(get(&mut cache, key), key * 10);
        }
        assert_eq!(get(&mut cache, 1), 10, "1 is now the most recent");
        assert_eq!(get(&mut cache, 4), 40, "evicts 2, the least recent");
        assert_eq!(cache.len(), 3);
        let mut hit = |key| {
            let mut missed = false;
            cache.get_or_classify(&key, || {
                missed = true;
                0
            });
            !missed
        };
        assert!(hit(1) && hit(3) && hit(4), "the others stay cached");
        assert!(!hit(2), "2 was evicted");
        assert_eq!(misses, 4);
    }

    #[test]
    fn a_verdict_of_an_older_generation_is_never_served() {
        let mut cache = cache(8);
        assert_eq!(cache.get_or_classify(&1, || 100), 100);
        assert_eq!(cache.get_or_classify(&1, || 999), 100, "cached");
        cache.invalidate();
        assert_eq!(cache.get_or_classify(&1, || 200), 200, "classified again");
        assert_eq!(cache.get_or_classify(&1, || 999), 200, "and cached again");
    }

    /// The remembered last verdict is served for a repeated key, and never across an SPD
    /// change, even when the key repeats right after it.
    #[test]
    fn the_last_verdict_is_served_only_in_its_generation() {
        let mut cache = cache(8);
        let mut misses = 0;
        for _ in 0..3 {
            cache.get_or_classify(&7, || {
                misses += 1;
                70
            });
        }
        assert_eq!(misses, 1, "classified once, then served");
        cache.invalidate();
        assert_eq!(
            cache.get_or_classify(&7, || 71),
            71,
            "classified again after the change"
        );
        assert_eq!(cache.get_or_classify(&7, || 999), 71);
        assert_eq!(
            cache.get_or_classify(&8, || 80),
            80,
            "another key is not the last one"
        );
        assert_eq!(cache.get_or_classify(&7, || 999), 71, "from the cache");
    }
}
