//! An LRU map bounded by the bytes of its values, reporting to a set of cache metrics.

use std::hash::Hash;

use lru::LruCache;

use crate::metrics::CacheMetrics;

pub struct ByteLru<K: Hash + Eq, V> {
    entries: LruCache<K, (V, usize)>,
    bytes: usize,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> ByteLru<K, V> {
    pub fn new(capacity_bytes: usize) -> Self {
        Self { entries: LruCache::unbounded(), bytes: 0, capacity: capacity_bytes }
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

    /// Inserts, then evicts least recently used entries until the total fits. The entry just inserted is never
    /// evicted, so a value larger than the whole budget is still kept until the next insert.
    pub fn insert(&mut self, key: K, value: V, size: usize, metrics: &CacheMetrics) {
        if let Some((_, old_size)) = self.entries.put(key.clone(), (value, size)) {
            self.bytes -= old_size;
        }
        self.bytes += size;
        // The newest entry is the most recently used, so with more than one entry the oldest is another one.
        while self.bytes > self.capacity && self.entries.len() > 1 {
            if let Some((_, (_, evicted_size))) = self.entries.pop_lru() {
                self.bytes -= evicted_size;
                metrics.evictions.inc();
            }
        }
        self.report(metrics);
    }

    pub fn remove(&mut self, key: &K, metrics: &CacheMetrics) -> bool {
        let removed = self.entries.pop(key).map(|(_, size)| self.bytes -= size).is_some();
        self.report(metrics);
        removed
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
        let mut cache = ByteLru::new(100);
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
        let mut cache = ByteLru::new(10);
        cache.insert(1, "small", 5, cache_metrics);
        cache.insert(2, "huge", 50, cache_metrics);
        assert_eq!(cache.peek(&1), None);
        assert_eq!(cache.peek(&2), Some("huge"));
        cache.insert(3, "small", 5, cache_metrics);
        assert_eq!(cache.peek(&2), None);
        assert!(cache.remove(&3, cache_metrics));
        assert_eq!(cache_metrics.bytes.get(), 0);
    }
}
