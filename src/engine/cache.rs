//! An LRU map bounded by the bytes of its values, reporting to a set of cache metrics; optionally with a share
//! that no one tenant's entries may pass (keys are [`crate::tenant::Tenant::scope`]d).

use std::collections::HashMap;
use std::hash::Hash;

use lru::LruCache;

use crate::metrics::CacheMetrics;
use crate::tenant::owner_of_scoped;

pub struct ByteLru<K: Hash + Eq, V> {
    entries: LruCache<K, (V, usize)>,
    bytes: usize,
    capacity: usize,
    /// The most bytes one tenant's entries may hold (`usize::MAX`: no share), and what each holds.
    tenant_capacity: usize,
    tenant_bytes: HashMap<String, usize>,
}

impl<K: Hash + Eq + Clone + AsRef<str>, V: Clone> ByteLru<K, V> {
    /// A cache of `capacity_bytes` in which a tenant past `tenant_capacity` bytes evicts its own least recently
    /// used entries, never another tenant's (`usize::MAX`: no share).
    pub fn new(capacity_bytes: usize, tenant_capacity: usize) -> Self {
        Self {
            entries: LruCache::unbounded(),
            bytes: 0,
            capacity: capacity_bytes,
            tenant_capacity,
            tenant_bytes: HashMap::new(),
        }
    }

    /// The value, marked as most recently used.
    pub fn get(&mut self, key: &K, metrics: &CacheMetrics) -> Option<V> {
        let found = self.entries.get(key).map(|(value, _)| value.clone());
        if found.is_some() { &metrics.hits } else { &metrics.misses }.inc();
        found
    }

    /// The value without counting a hit or changing the order (metadata reads).
    pub fn peek(&self, key: &K) -> Option<V> {
        self.entries.peek(key).map(|(value, _)| value.clone())
    }

    /// Inserts, then evicts least recently used entries until the total fits: first the inserting tenant's own
    /// past its share, then anyone's past the capacity. The entry just inserted is never evicted, so a value larger
    /// than the whole budget is still kept until the next insert.
    pub fn insert(&mut self, key: K, value: V, size: usize, metrics: &CacheMetrics) {
        let owner = owner_of_scoped(key.as_ref()).to_string();
        if let Some((_, old_size)) = self.entries.put(key.clone(), (value, size)) {
            self.account(&owner, old_size, false);
        }
        self.account(&owner, size, true);
        while self.tenant_bytes.get(&owner).is_some_and(|&held| held > self.tenant_capacity) {
            let oldest_of_owner =
                self.entries.iter().rev().map(|(k, _)| k).find(|k| *k != &key && owner_of_scoped(k.as_ref()) == owner);
            let Some(oldest) = oldest_of_owner.cloned() else { break };
            self.evict(&oldest, metrics);
        }
        // The newest entry is the most recently used, so with more than one entry the oldest is another one.
        while self.bytes > self.capacity && self.entries.len() > 1 {
            let Some(oldest) = self.entries.peek_lru().map(|(k, _)| k.clone()) else { break };
            self.evict(&oldest, metrics);
        }
        self.report(metrics);
    }

    pub fn remove(&mut self, key: &K, metrics: &CacheMetrics) -> bool {
        let removed = self.entries.pop(key).map(|(_, size)| self.account(owner_of_scoped(key.as_ref()), size, false));
        self.report(metrics);
        removed.is_some()
    }

    fn evict(&mut self, key: &K, metrics: &CacheMetrics) {
        if let Some((_, size)) = self.entries.pop(key) {
            self.account(owner_of_scoped(key.as_ref()), size, false);
            metrics.evictions.inc();
        }
    }

    /// Counts `size` bytes of `owner` in (`added`) or out.
    fn account(&mut self, owner: &str, size: usize, added: bool) {
        let held = self.tenant_bytes.entry(owner.to_string()).or_default();
        if added {
            self.bytes += size;
            *held += size;
        } else {
            self.bytes -= size;
            *held -= size;
            if *held == 0 {
                self.tenant_bytes.remove(owner);
            }
        }
    }

    fn report(&self, metrics: &CacheMetrics) {
        metrics.bytes.set(self.bytes as i64);
        metrics.entries.set(self.entries.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let metrics = Metrics::new();
        let cache_metrics = &metrics.embedding_cache;
        let mut cache = ByteLru::new(100, usize::MAX);
        cache.insert("a", 1, 40, cache_metrics);
        cache.insert("b", 2, 40, cache_metrics);
        assert_eq!(cache.get(&"a", cache_metrics), Some(1)); // "b" is now the oldest
        cache.insert("c", 3, 40, cache_metrics);
        assert_eq!(cache.peek(&"b"), None);
        assert_eq!(cache.peek(&"a"), Some(1));
        assert_eq!(cache_metrics.evictions.get(), 1);
        assert_eq!(cache_metrics.bytes.get(), 80);
        assert_eq!((cache_metrics.hits.get(), cache_metrics.misses.get()), (1, 0));
        assert_eq!(cache.get(&"zz", cache_metrics), None);
        assert_eq!(cache_metrics.misses.get(), 1);
    }

    #[test]
    fn an_oversized_entry_stays_until_the_next_insert() {
        let metrics = Metrics::new();
        let cache_metrics = &metrics.logits_cache;
        let mut cache = ByteLru::new(10, usize::MAX);
        cache.insert("1", "small", 5, cache_metrics);
        cache.insert("2", "huge", 50, cache_metrics);
        assert_eq!(cache.peek(&"1"), None);
        assert_eq!(cache.peek(&"2"), Some("huge"));
        cache.insert("3", "small", 5, cache_metrics);
        assert_eq!(cache.peek(&"2"), None);
        assert!(cache.remove(&"3", cache_metrics));
        assert_eq!(cache_metrics.bytes.get(), 0);
    }

    #[test]
    fn a_tenant_past_its_share_evicts_its_own_entries_only() {
        let metrics = Metrics::new();
        let cache_metrics = &metrics.embedding_cache;
        let mut cache = ByteLru::new(100, 50);
        cache.insert("bob.1", 1, 20, cache_metrics);
        cache.insert("alice.1", 1, 20, cache_metrics);
        cache.insert("alice.2", 2, 20, cache_metrics);
        // alice's third entry passes her 50 bytes: her oldest goes, bob's older one stays.
        cache.insert("alice.3", 3, 20, cache_metrics);
        assert_eq!((cache.peek(&"alice.1"), cache.peek(&"bob.1")), (None, Some(1)));
        assert_eq!((cache.peek(&"alice.2"), cache.peek(&"alice.3")), (Some(2), Some(3)));
        assert_eq!(cache_metrics.bytes.get(), 60);
        // Replacing an entry counts its new size only.
        cache.insert("alice.3", 3, 30, cache_metrics);
        assert_eq!((cache.peek(&"alice.2"), cache_metrics.bytes.get()), (Some(2), 70));
        assert!(cache.remove(&"alice.2", cache_metrics) && cache.remove(&"alice.3", cache_metrics));
        assert_eq!(cache.tenant_bytes.get("alice"), None);
        assert_eq!(cache.tenant_bytes.get("bob"), Some(&20));
    }
}
