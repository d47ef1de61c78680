use std::time::Duration;

use tokio::time::Instant;

use super::{IDLE, Key, REFRESH, Tally, Write};

fn key(object: &str, reason: &str) -> Key {
    Key {
        object: object.into(),
        warning: true,
        reason: reason.into(),
        action: "Submit".into(),
    }
}

fn occur(t: &mut Tally, k: &Key, n: usize, now: Instant) -> Option<Write> {
    t.occur(k.clone(), "ns", format!("{}.{n:x}", k.object), now)
}

fn series_count(w: &Write) -> i32 {
    match w {
        Write::Series { count, .. } => *count,
        Write::Create { .. } => panic!("expected a series write, got {w:?}"),
    }
}

#[test]
fn categories_become_pascal_case_reasons() {
    assert_eq!(super::reason_for("invalid_request"), "InvalidRequest");
    assert_eq!(super::reason_for("throttled"), "Throttled");
}

#[test]
fn repeats_are_counted_and_written_once_per_refresh() {
    let start = Instant::now();
    let mut t = Tally::default();
    let k = key("uid-a", "Throttled");
    assert_eq!(
        occur(&mut t, &k, 0, start),
        Some(Write::Create {
            namespace: "ns".into(),
            name: "uid-a.0".into()
        })
    );
    for i in 1..100 {
        let at = start + Duration::from_secs(i);
        assert_eq!(
            occur(&mut t, &k, i as usize, at),
            None,
            "repeat {i} only counts"
        );
        assert!(t.due(at).is_empty(), "nothing due before REFRESH");
    }
    let due = t.due(start + REFRESH);
    assert_eq!(due.len(), 1);
    assert_eq!(series_count(&due[0]), 100);
    match &due[0] {
        Write::Series { name, .. } => assert_eq!(name, "uid-a.0", "the first Event is counted"),
        w => panic!("{w:?}"),
    }
    assert!(
        t.due(start + REFRESH * 2).is_empty(),
        "written counts are not written again"
    );
}

#[test]
fn a_repeat_after_refresh_is_written_at_once() {
    let start = Instant::now();
    let mut t = Tally::default();
    let k = key("uid-a", "Throttled");
    occur(&mut t, &k, 0, start);
    let w = occur(&mut t, &k, 1, start + REFRESH).expect("written at once");
    assert_eq!(series_count(&w), 2);
    assert_eq!(
        occur(&mut t, &k, 2, start + REFRESH + Duration::from_secs(1)),
        None
    );
}

#[test]
fn writes_grow_with_objects_and_time_not_with_retries() {
    // 1,000 objects, each repeating its reason every 2 s for 10 minutes, flushed every 30 s.
    let start = Instant::now();
    let mut t = Tally::default();
    let keys: Vec<Key> = (0..1000)
        .map(|i| key(&format!("uid-{i}"), "Throttled"))
        .collect();
    let mut writes = 0usize;
    let mut occurrences = 0usize;
    let minutes = 10u64;
    for s in (0..minutes * 60).step_by(2) {
        let now = start + Duration::from_secs(s);
        for k in &keys {
            occurrences += 1;
            writes += usize::from(occur(&mut t, k, occurrences, now).is_some());
        }
        if s % 30 == 0 {
            writes += t.due(now).len();
        }
    }
    let end = start + Duration::from_secs(minutes * 60);
    writes += t.due(end).len();
    let per_object = 1 + (minutes * 60 / REFRESH.as_secs()) as usize;
    assert_eq!(occurrences, 300_000);
    assert!(
        writes <= 1000 * per_object,
        "{writes} writes for 1,000 objects over {minutes} min (bound {})",
        1000 * per_object
    );
    assert!(writes >= 1000, "every object's Event was created");
}

#[test]
fn different_objects_and_reasons_are_different_events() {
    let now = Instant::now();
    let mut t = Tally::default();
    for (i, k) in [
        key("uid-a", "Throttled"),
        key("uid-a", "Submitted"),
        key("uid-b", "Throttled"),
        Key {
            warning: false,
            ..key("uid-a", "Throttled")
        },
    ]
    .iter()
    .enumerate()
    {
        assert!(
            matches!(occur(&mut t, k, i, now), Some(Write::Create { .. })),
            "{k:?} is its own Event"
        );
    }
    assert_eq!(t.len(), 4);
}

#[test]
fn idle_events_are_forgotten_after_their_count_is_written() {
    let start = Instant::now();
    let mut t = Tally::default();
    let k = key("uid-a", "Throttled");
    occur(&mut t, &k, 0, start);
    occur(&mut t, &k, 1, start + Duration::from_secs(1));
    // Idle long after an unwritten repeat: the count is written, then the Event forgotten.
    let late = start + IDLE + Duration::from_secs(2);
    let due = t.due(late);
    assert_eq!(due.len(), 1);
    assert_eq!(series_count(&due[0]), 2);
    assert!(t.due(late).is_empty());
    assert!(t.is_empty(), "forgotten once written and idle");
    assert!(matches!(
        occur(&mut t, &k, 2, late),
        Some(Write::Create { .. })
    ));
}

#[test]
fn an_event_gone_from_the_server_is_created_again() {
    let now = Instant::now();
    let mut t = Tally::default();
    let k = key("uid-a", "Throttled");
    occur(&mut t, &k, 0, now);
    t.gone("ns", "uid-a.0");
    assert_eq!(
        occur(&mut t, &k, 1, now),
        Some(Write::Create {
            namespace: "ns".into(),
            name: "uid-a.1".into()
        })
    );
}
