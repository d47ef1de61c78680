//! Events: one per object, type, reason and action, counted, at a bounded number of writes.
//!
//! Events are `events.k8s.io/v1` objects reported by [`REPORTER`] (instance: the pod's name),
//! in the shape kube's `Recorder` writes them: one Event per object, type, reason and action,
//! whose `series` counts its repeats. kube's `Recorder` writes on every publish (a PATCH of the
//! series per repeat), so an object retrying every few seconds costs a write each time; with
//! 1,000 objects that is O(objects x retries). [`Events`] counts repeats in memory and writes
//! the count at most once per [`REFRESH`]. It is hand-written for that one reason, over
//! kube's `Api<Event>`; the counting ([`Tally`]) is pure and tested on its own.
//!
//! # Guarantees
//! - The first occurrence is created at once. `series.count` is the number of occurrences,
//!   `series.lastObservedTime` the latest one's time; `note` stays the first occurrence's (the
//!   API server keeps an Event's note immutable).
//! - Writes per Event: one create, then at most one series write per [`REFRESH`] while it
//!   repeats, however often it repeats. A repeat that comes [`REFRESH`] after the last write is
//!   written at once; the others every [`FLUSH_EVERY`] by [`Events::run`].
//! - Publishing does not wait for the API server: writes are queued (up to 1,024; beyond that
//!   publishing waits) and [`Events::run`] performs them, four at once, started in the order
//!   they were published. A reconcile's slot goes to the next object, not to its Events, and
//!   in a burst Events take a bounded share of the API server's writes.
//! - Memory: an Event is forgotten [`IDLE`] after its last occurrence (its count written
//!   first); a repeat after that starts a new Event, as kube's Recorder does after 6 minutes.
//!
//! # Caveats
//! - Counts not yet written, and queued writes, are lost when the process ends (at most
//!   [`REFRESH`] of repeats).
//! - Nothing is written unless [`Events::run`] runs (the controllers run it beside their
//!   reconciles).
//! - An Event the API server no longer has (its `--event-ttl`, 1 h by default, or deleted) is
//!   forgotten at its next series write; the next occurrence creates a new one.
//!
//! # Errors
//! A failed write is logged, never returned: an Event is worth less than the reconcile that
//! published it. A failed create leaves nothing remembered, so the next occurrence creates.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event, events::v1::EventSeries},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use tokio::{sync::mpsc, time::Instant};

/// The reporting controller of every Event the operator publishes.
pub const REPORTER: &str = "hss-operator";
/// At most one series write per Event in this time.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// An Event without occurrences for this long is forgotten.
pub const IDLE: Duration = Duration::from_secs(15 * 60);
/// How often [`Events::run`] writes the counts that are due.
pub const FLUSH_EVERY: Duration = Duration::from_secs(30);
/// Event writes waiting for a writer; beyond this, publishing waits.
const QUEUED: usize = 1024;
/// Event writes at once: Events yield to the writes that move objects on.
const WRITERS: usize = 4;

/// An Event to publish: what a decision says, compared and printed in tests, turned into the
/// API's Event only when published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    /// PascalCase.
    pub reason: String,
    /// What the operator was doing (PascalCase).
    pub action: String,
    /// For people; at most 1,000 characters (the API server caps notes at 1 KiB).
    pub note: String,
}

pub fn normal(reason: &str, action: &str, note: &str) -> Note {
    event(false, reason, action, note)
}

pub fn warning(reason: &str, action: &str, note: &str) -> Note {
    event(true, reason, action, note)
}

fn event(warning: bool, reason: &str, action: &str, note: &str) -> Note {
    Note {
        warning,
        reason: reason.to_string(),
        action: action.to_string(),
        note: note.chars().take(1000).collect(),
    }
}

/// `invalid_request` -> `InvalidRequest`: an error category as an Event or condition reason.
pub fn reason_for(category: &str) -> String {
    category
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

// ------------------------------------------------------------------ counting (pure)

/// What makes two occurrences the same Event: the object (by uid), type, reason and action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub object: String,
    pub warning: bool,
    pub reason: String,
    pub action: String,
}

/// What the API server must be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A new Event, `name` in `namespace`.
    Create { namespace: String, name: String },
    /// The series of the Event `name` in `namespace`: `count` occurrences so far.
    Series {
        namespace: String,
        name: String,
        count: i32,
    },
}

#[derive(Debug)]
struct Counted {
    namespace: String,
    name: String,
    count: i32,
    written: i32,
    last_write: Instant,
    last_seen: Instant,
}

/// The counts of the Events this process has published. Pure: time is passed in.
#[derive(Debug, Default)]
pub struct Tally {
    events: HashMap<Key, Counted>,
}

impl Tally {
    /// An occurrence at `now`: create (as `namespace/name`, when no Event of `key` is
    /// counted), write the series now, or only count. Counted from here on, so a concurrent
    /// repeat does not create a second Event while the first is on its way.
    pub fn occur(
        &mut self,
        key: Key,
        namespace: &str,
        name: String,
        now: Instant,
    ) -> Option<Write> {
        if let Some(c) = self
            .events
            .get_mut(&key)
            .filter(|c| now.duration_since(c.last_seen) < IDLE)
        {
            c.count += 1;
            c.last_seen = now;
            return (now.duration_since(c.last_write) >= REFRESH).then(|| c.series(now));
        }
        self.events.insert(
            key,
            Counted {
                namespace: namespace.to_string(),
                name: name.clone(),
                count: 1,
                written: 1,
                last_write: now,
                last_seen: now,
            },
        );
        Some(Write::Create {
            namespace: namespace.to_string(),
            name,
        })
    }

    /// The series writes due at `now` (unwritten repeats, last write [`REFRESH`] ago), and
    /// forgets Events idle for [`IDLE`] whose count is written.
    pub fn due(&mut self, now: Instant) -> Vec<Write> {
        self.events
            .retain(|_, c| c.count > c.written || now.duration_since(c.last_seen) < IDLE);
        self.events
            .values_mut()
            .filter(|c| c.count > c.written && now.duration_since(c.last_write) >= REFRESH)
            .map(|c| c.series(now))
            .collect()
    }

    /// The Event `name` is gone from the API server, or its create failed: forget it.
    pub fn gone(&mut self, namespace: &str, name: &str) {
        self.events
            .retain(|_, c| !(c.namespace == namespace && c.name == name));
    }

    /// Events remembered.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

impl Counted {
    fn series(&mut self, now: Instant) -> Write {
        self.written = self.count;
        self.last_write = now;
        Write::Series {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            count: self.count,
        }
    }
}

// ------------------------------------------------------------------ publishing

/// The operator's Event publisher: shared by a controller's reconciles (`Arc` or a field of
/// the shared context).
pub struct Events {
    client: Client,
    instance: String,
    tally: Mutex<Tally>,
    queue: mpsc::Sender<Job>,
    /// Taken by the one [`Events::run`].
    jobs: Mutex<Option<mpsc::Receiver<Job>>>,
}

/// A queued write.
enum Job {
    Create {
        namespace: String,
        name: String,
        regarding: Box<ObjectReference>,
        note: Note,
        at: jiff::Timestamp,
    },
    Series(Write),
}

impl Events {
    /// Reporter [`REPORTER`], reporting instance `instance` (the pod's name, or [`REPORTER`]).
    pub fn new(client: Client, instance: String) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUED);
        Self {
            client,
            instance,
            tally: Mutex::default(),
            queue,
            jobs: Mutex::new(Some(jobs)),
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `note` about `obj`: queues its Event's creation, or counts a repeat (see the
    /// module doc for when the count is written). Failures are logged, never returned.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, note: &Note) {
        let key = Key {
            object: obj.uid().unwrap_or_else(|| obj.name_any()),
            warning: note.warning,
            reason: note.reason.clone(),
            action: note.action.clone(),
        };
        let regarding = obj.object_ref(&());
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(REPORTER),
            jiff::Timestamp::now().as_nanosecond()
        );
        let job = match self.tally().occur(key, &namespace, name, Instant::now()) {
            Some(Write::Create { namespace, name }) => Job::Create {
                namespace,
                name,
                regarding: Box::new(regarding),
                note: note.clone(),
                at: jiff::Timestamp::now(),
            },
            Some(series) => Job::Series(series),
            None => return,
        };
        if self.queue.send(job).await.is_err() {
            tracing::debug!(reason = %note.reason, "Events are no longer written; dropped one");
        }
    }

    /// Performs the queued writes and, every [`FLUSH_EVERY`], the counts that are due, until
    /// dropped. Run once, beside the reconciles; a second call only waits.
    pub async fn run(&self) {
        let Some(mut jobs) = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return futures::future::pending().await;
        };
        let writers = futures::stream::poll_fn(|cx| jobs.poll_recv(cx))
            .for_each_concurrent(WRITERS, |job| self.perform(job));
        let flusher = async {
            let mut ticker = tokio::time::interval(FLUSH_EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                self.flush_at(Instant::now()).await;
            }
        };
        tokio::select! {
            _ = writers => {}
            _ = flusher => {}
        }
    }

    /// Writes the counts due at `now` at once (tests write counts without waiting).
    pub async fn flush_at(&self, now: Instant) {
        let due = self.tally().due(now);
        for w in due {
            self.perform(Job::Series(w)).await;
        }
    }

    async fn perform(&self, job: Job) {
        match job {
            Job::Create {
                namespace,
                name,
                regarding,
                note,
                at,
            } => self.create(&namespace, &name, *regarding, &note, at).await,
            Job::Series(Write::Series {
                namespace,
                name,
                count,
            }) => self.write(&namespace, &name, count).await,
            // `Tally::due` and repeats only ever queue series writes.
            Job::Series(Write::Create { .. }) => {}
        }
    }

    async fn create(
        &self,
        namespace: &str,
        name: &str,
        regarding: ObjectReference,
        note: &Note,
        at: jiff::Timestamp,
    ) {
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            action: Some(note.action.clone()),
            reason: Some(note.reason.clone()),
            note: Some(note.note.clone()),
            type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
            event_time: Some(MicroTime(at)),
            regarding: Some(regarding),
            reporting_controller: Some(REPORTER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(error = %e, reason = %note.reason, "failed to publish an Event");
            self.tally().gone(namespace, name);
        }
    }

    async fn write(&self, namespace: &str, name: &str, count: i32) {
        // A merge patch of the series alone: the rest of an Event is immutable.
        let patch = serde_json::json!({
            "series": EventSeries {
                count,
                last_observed_time: MicroTime(jiff::Timestamp::now()),
            }
        });
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => self.tally().gone(namespace, name),
            Err(e) => tracing::warn!(error = %e, event = %name, "failed to write an Event's count"),
        }
    }
}

#[cfg(test)]
mod tests;
