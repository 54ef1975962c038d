//! Rate limits (GCRA with a burst), daily quotas and per-principal concurrency.
//!
//! GCRA is written here rather than taken from `governor` because the answer must carry what the client needs to
//! behave: the remaining burst and the reset time for the `RateLimit-*` headers, and `Retry-After` when refused.
//! State is sharded to keep lock contention low, and bounded: clients whose limit has fully recovered are forgotten,
//! and past the bound the clients nearest to recovery.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Rate;

const SHARDS: usize = 16;

/// A limiter's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Allowed; `remaining` requests may follow at once; the burst is whole again after `reset`.
    Allow {
        /// The burst's size.
        limit: u32,
        /// Requests left in the burst.
        remaining: u32,
        /// Until the burst is whole again.
        reset: Duration,
    },
    /// Refused; try again after `retry_after`.
    Deny {
        /// The burst's size.
        limit: u32,
        /// When a request would be allowed.
        retry_after: Duration,
    },
}

/// A keyed GCRA limiter.
#[derive(Debug)]
pub struct Gcra<K> {
    interval_ns: u64,
    tolerance_ns: u64,
    burst: u32,
    epoch: Instant,
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<K, u64>>>,
    max_per_shard: usize,
}

impl<K: Hash + Eq + Clone> Gcra<K> {
    /// A limiter of `rate` remembering at most about `max_clients` clients.
    pub fn new(rate: Rate, max_clients: usize) -> Gcra<K> {
        let interval_ns = (1e9 / rate.per_second).clamp(1.0, 1e15) as u64;
        Gcra {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(rate.burst)),
            burst: rate.burst,
            epoch: Instant::now(),
            hasher: std::collections::hash_map::RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_per_shard: (max_clients / SHARDS).max(16),
        }
    }

    /// Counts one request of `key`.
    pub fn check(&self, key: &K) -> RateDecision {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        let Some(shard) = self.shards.get(index) else {
            return RateDecision::Deny {
                limit: self.burst,
                retry_after: Duration::from_secs(1),
            };
        };
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat.saturating_add(self.interval_ns);
        let ahead = new_tat - now;
        if ahead > self.tolerance_ns {
            return RateDecision::Deny {
                limit: self.burst,
                retry_after: Duration::from_nanos(ahead - self.tolerance_ns),
            };
        }
        // A known client is updated in place: no key is cloned on the common path.
        if let Some(t) = map.get_mut(key) {
            *t = new_tat;
        } else {
            if map.len() >= self.max_per_shard {
                // Clients whose limit has recovered are forgotten at no cost. If every one is still paying back its
                // burst (a flood from ever new addresses), the eighth nearest to recovery go too: the table stays
                // bounded, and a new client does not make each request scan it.
                map.retain(|_, t| *t > now);
                if map.len() >= self.max_per_shard {
                    rampart_defend::evict_oldest(&mut map, |&t| t);
                }
            }
            map.insert(key.clone(), new_tat);
        }
        RateDecision::Allow {
            limit: self.burst,
            remaining: u32::try_from((self.tolerance_ns - ahead) / self.interval_ns)
                .unwrap_or(u32::MAX),
            reset: Duration::from_nanos(ahead),
        }
    }
}

/// Requests per principal per UTC day.
#[derive(Debug)]
pub struct DailyQuota {
    limit: u64,
    used: Mutex<HashMap<String, (u64, u64)>>,
}

impl DailyQuota {
    /// A quota of `limit` requests a day.
    pub fn new(limit: u64) -> DailyQuota {
        DailyQuota {
            limit,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request; refused ones return the time until the quota resets (midnight UTC).
    pub fn take(&self, principal: &str) -> Result<u64, Duration> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let day = secs / 86_400;
        let until_midnight = Duration::from_secs(86_400 - secs % 86_400);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.len() > 100_000 {
            used.retain(|_, (d, _)| *d == day);
        }
        // Not `entry()`: it needs an owned key, an allocation on every request; looking up first allocates only for
        // a principal not yet in the map.
        if !used.contains_key(principal) {
            used.insert(principal.to_owned(), (day, 0));
        }
        let Some(entry) = used.get_mut(principal) else {
            return Err(until_midnight);
        };
        if entry.0 != day {
            *entry = (day, 0);
        }
        if entry.1 >= self.limit {
            return Err(until_midnight);
        }
        entry.1 += 1;
        Ok(self.limit - entry.1)
    }
}

/// Requests in flight per principal.
#[derive(Debug)]
pub struct Concurrency {
    limit: u32,
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

/// Holds one slot; gives it back when dropped.
#[derive(Debug)]
pub struct Slot {
    principal: String,
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.principal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.principal);
            }
        }
    }
}

impl Concurrency {
    /// At most `limit` requests per principal at once.
    pub fn new(limit: u32) -> Concurrency {
        Concurrency {
            limit,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes a slot for `principal`, or `None` when it has `limit` requests in flight.
    pub fn acquire(&self, principal: &str) -> Option<Slot> {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        // Not `entry()`, as in `DailyQuota::take`: the key is allocated only for a principal not yet in the map.
        if !map.contains_key(principal) {
            map.insert(principal.to_owned(), 0);
        }
        let n = map.get_mut(principal)?;
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            principal: principal.to_owned(),
            in_flight: Arc::clone(&self.in_flight),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_refuses_with_a_wait() {
        let gcra = Gcra::new(
            Rate {
                per_second: 1.0,
                burst: 3,
            },
            100,
        );
        for expected in [2, 1, 0] {
            match gcra.check(&"a") {
                RateDecision::Allow { remaining, .. } => assert_eq!(remaining, expected),
                deny => panic!("{deny:?}"),
            }
        }
        match gcra.check(&"a") {
            RateDecision::Deny { retry_after, limit } => {
                assert_eq!(limit, 3);
                assert!(
                    retry_after > Duration::from_millis(500)
                        && retry_after <= Duration::from_secs(1)
                );
            }
            allow => panic!("{allow:?}"),
        }
        assert!(matches!(gcra.check(&"b"), RateDecision::Allow { .. }));
    }

    #[test]
    fn gcra_stays_bounded_when_every_client_is_still_limited() {
        let gcra = Gcra::new(
            Rate {
                per_second: 1.0,
                burst: 3,
            },
            100,
        );
        // Each new key owes a second: none recovers during the test, so none can be forgotten for free.
        for i in 0..2000_u32 {
            assert!(matches!(gcra.check(&i), RateDecision::Allow { .. }));
        }
        let held: usize = gcra.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= SHARDS * gcra.max_per_shard, "{held} clients held");
        // The last client is still known, and still limited.
        for _ in 0..2 {
            assert!(matches!(gcra.check(&1999), RateDecision::Allow { .. }));
        }
        assert!(matches!(gcra.check(&1999), RateDecision::Deny { .. }));
    }

    #[test]
    fn quota_counts_down_and_refuses() {
        let quota = DailyQuota::new(2);
        assert_eq!(quota.take("p"), Ok(1));
        assert_eq!(quota.take("p"), Ok(0));
        assert!(quota.take("p").is_err());
        assert_eq!(quota.take("q"), Ok(1));
    }

    #[test]
    fn concurrency_slots_come_back_when_dropped() {
        let limit = Concurrency::new(1);
        let slot = limit.acquire("p").unwrap();
        assert!(limit.acquire("p").is_none());
        drop(slot);
        assert!(limit.acquire("p").is_some());
    }
}
