//! Pages of the result APIs shared between the objects that finish together, so that 200
//! all-cluster scans finishing in the same minute read each listing once, not 200 times.
//!
//! Guarantees: a page is handed to a reader only if it was fetched after the reader's
//! `not_before` (when its task was seen finished), so no reader gets findings older than its
//! scan; readers of the same page wait for one fetch instead of each spending a budget token
//! (one fetch in flight per page); failures are not cached. Bounded: pages live
//! [`TTL`], at most [`MAX_PAGES`] are kept.
//!
//! Assumptions: a page is identified by everything that selects it: endpoint, credential
//! identity, project, enterprise project, API, risk type, cluster filter and offset.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

/// How long a page serves later readers.
pub const TTL: Duration = Duration::from_secs(120);
/// Pages kept at most.
pub const MAX_PAGES: usize = 1_024;

type Slot<T> = Arc<tokio::sync::Mutex<Option<(Timestamp, T)>>>;

/// Pages of one listing type `T`, shared by key.
pub struct PageCache<T> {
    slots: Mutex<HashMap<String, Slot<T>>>,
}

impl<T> Default for PageCache<T> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> std::fmt::Debug for PageCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache").finish_non_exhaustive()
    }
}

impl<T: Clone> PageCache<T> {
    fn slot(&self, key: &str, now: Timestamp) -> Slot<T> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() >= MAX_PAGES && !slots.contains_key(key) {
            // Drop what no one is fetching and what has expired; then, if still full, anything
            // no one is fetching.
            slots.retain(|_, s| {
                s.try_lock()
                    .map_or(true, |g| g.as_ref().is_some_and(|(at, _)| fresh(*at, now)))
            });
            if slots.len() >= MAX_PAGES {
                slots.retain(|_, s| s.try_lock().is_err());
            }
        }
        slots.entry(key.to_string()).or_default().clone()
    }

    /// The page under `key`: a cached one fetched at or after `not_before` and within [`TTL`],
    /// else `fetch()`'s (stored on success).
    pub async fn get<E, F, Fut>(&self, key: &str, not_before: Timestamp, fetch: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let slot = self.slot(key, Timestamp::now());
        let mut guard = slot.lock().await;
        if let Some((at, page)) = guard.as_ref()
            && *at >= not_before
            && fresh(*at, Timestamp::now())
        {
            return Ok(page.clone());
        }
        let fetched_at = Timestamp::now();
        let page = fetch().await?;
        *guard = Some((fetched_at, page.clone()));
        Ok(page)
    }

    /// Pages held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn fresh(at: Timestamp, now: Timestamp) -> bool {
    now.duration_since(at)
        .try_into()
        .is_ok_and(|age: Duration| age < TTL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn concurrent_readers_share_one_fetch_and_a_later_scan_fetches_again() {
        let cache: PageCache<u32> = PageCache::default();
        let fetches = AtomicU32::new(0);
        let fetch = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok::<u32, ()>(7)
        };
        let before = Timestamp::now();
        let reads = futures::future::join_all((0..20).map(|_| cache.get("k", before, fetch))).await;
        assert!(reads.iter().all(|r| *r == Ok(7)));
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "one fetch for 20 readers"
        );
        // A reader whose scan finished after that fetch does not take the older page.
        let later = Timestamp::now() + jiff::SignedDuration::from_secs(1);
        assert_eq!(cache.get("k", later, fetch).await, Ok(7));
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // Failures are not kept.
        let failing = || async { Err::<u32, &str>("503") };
        assert_eq!(cache.get("f", before, failing).await, Err("503"));
        assert_eq!(
            cache
                .get("f", before, || async { Ok::<u32, &str>(1) })
                .await,
            Ok(1)
        );
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let cache: PageCache<u32> = PageCache::default();
        let now = Timestamp::now();
        for i in 0..(MAX_PAGES + 50) {
            let _ = cache
                .get(&format!("k{i}"), now, || async { Ok::<u32, ()>(1) })
                .await;
        }
        assert!(cache.len() <= MAX_PAGES, "{}", cache.len());
    }
}
