//! Copies of an object this process has already replaced by its own writes.
//!
//! A reconcile gets the object from the cache, which trails the API server: after a reconcile
//! wrote the finalizer, the attempt record and the task id, the watch events of those writes
//! each trigger another reconcile, and the first of them can still see the copy from before the
//! writes. Acting on it costs a write that fails with 409 and a requeue (the bench counted 22
//! such writes for a burst of 100 objects). [`Superseded`] remembers, per object, the
//! resourceVersions its own writes started from, so a reconcile can tell such a copy and wait
//! for the watch to bring the newer one.
//!
//! # Guarantees
//! - [`is_superseded`](Superseded::is_superseded) is true only for a resourceVersion a write of
//!   this process succeeded from: a newer version exists, and its watch event is still to
//!   come (had it come, the cache would not hold the older copy), so waiting for it is safe.
//! - Memory: at most [`KEPT`] versions per object, and an object's entry goes once a reconcile
//!   sees the version of its last write, or when the object is gone ([`forget`](Superseded::forget)).
//!
//! # Assumptions
//! resourceVersions are compared for equality only (they are opaque).

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

/// Versions remembered per object: the writes one reconcile makes, with room to spare.
pub const KEPT: usize = 4;

#[derive(Debug, Default)]
struct Writes {
    /// Versions writes started from, oldest first.
    from: VecDeque<String>,
    /// The version the last write produced.
    last: String,
}

/// Per object (by uid): the versions this process's writes replaced.
#[derive(Debug, Default)]
pub struct Superseded {
    objects: Mutex<HashMap<String, Writes>>,
}

impl Superseded {
    fn objects(&self) -> std::sync::MutexGuard<'_, HashMap<String, Writes>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A write of `uid` from version `from` produced version `to`.
    pub fn wrote(&self, uid: &str, from: Option<String>, to: Option<String>) {
        let (Some(from), Some(to)) = (from, to) else {
            return;
        };
        if from == to {
            return;
        }
        let mut objects = self.objects();
        let w = objects.entry(uid.to_string()).or_default();
        w.from.push_back(from);
        while w.from.len() > KEPT {
            w.from.pop_front();
        }
        w.last = to;
    }

    /// Whether the copy of `uid` at `version` was replaced by a write of this process. A copy
    /// at the last written version ends the bookkeeping for the object.
    pub fn is_superseded(&self, uid: &str, version: Option<&str>) -> bool {
        let Some(version) = version else {
            return false;
        };
        let mut objects = self.objects();
        let Some(w) = objects.get(uid) else {
            return false;
        };
        if w.last == version {
            objects.remove(uid);
            return false;
        }
        w.from.iter().any(|v| v == version)
    }

    /// The object is gone.
    pub fn forget(&self, uid: &str) {
        self.objects().remove(uid);
    }

    /// Objects with versions remembered.
    pub fn len(&self) -> usize {
        self.objects().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn copies_replaced_by_own_writes_are_superseded_until_the_last_one_is_seen() {
        let s = Superseded::default();
        // Finalizer 10 -> 11, attempt record 11 -> 12, task id 12 -> 13.
        s.wrote("u", v("10"), v("11"));
        s.wrote("u", v("11"), v("12"));
        s.wrote("u", v("12"), v("13"));
        for old in ["10", "11", "12"] {
            assert!(s.is_superseded("u", Some(old)), "{old} was replaced");
        }
        assert!(!s.is_superseded("other", Some("10")), "another object");
        assert!(
            !s.is_superseded("u", Some("14")),
            "a newer version (someone else's) is acted on"
        );
        assert!(
            !s.is_superseded("u", Some("13")),
            "the last write's version is current"
        );
        assert!(s.is_empty(), "caught up: nothing kept");
        assert!(
            !s.is_superseded("u", Some("10")),
            "forgotten once caught up"
        );
    }

    #[test]
    fn at_most_kept_versions_per_object_and_forget_drops_them() {
        let s = Superseded::default();
        for i in 0..10 {
            s.wrote("u", v(&i.to_string()), v(&(i + 1).to_string()));
        }
        assert!(!s.is_superseded("u", Some("0")), "the oldest fell out");
        assert!(s.is_superseded("u", Some("9")));
        s.forget("u");
        assert!(s.is_empty());
        assert!(!s.is_superseded("u", Some("9")));
    }

    #[test]
    fn writes_without_versions_or_without_change_are_not_remembered() {
        let s = Superseded::default();
        s.wrote("u", None, v("2"));
        s.wrote("u", v("2"), v("2"));
        assert!(s.is_empty());
        assert!(!s.is_superseded("u", None));
    }
}
