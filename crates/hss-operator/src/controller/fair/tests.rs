use std::collections::HashMap;

use futures::StreamExt;

use super::*;

fn created(second: i64, name: &str) -> (Option<jiff::Timestamp>, String) {
    (jiff::Timestamp::from_second(second).ok(), name.to_string())
}

fn object(ns: &str, name: &str) -> ObjectRef<ClusterScanTask> {
    ObjectRef::new(name).within(ns)
}

/// A lane with `n` waiters in each namespace, created in order.
fn lane(namespaces: &[(&str, usize, u32)]) -> Lane {
    let mut lane = Lane::default();
    for (ns, n, weight) in namespaces {
        for i in 0..*n {
            let name = format!("{ns}-{i:04}");
            lane.join(
                &format!("uid-{name}"),
                ns,
                created(i as i64, &name),
                *weight,
                object(ns, &name),
            );
        }
    }
    lane
}

fn serve(lane: &mut Lane, tokens: usize) -> Vec<String> {
    (0..tokens)
        .filter_map(|_| lane.serve())
        .filter_map(|(_, w)| w.into_object())
        .map(|o| o.namespace.expect("namespaced"))
        .collect()
}

fn counts(served: &[String]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for ns in served {
        *out.entry(ns.clone()).or_default() += 1;
    }
    out
}

#[test]
fn within_a_namespace_the_oldest_goes_first_whatever_the_order_they_asked_in() {
    let mut lane = Lane::default();
    for (second, name) in [(30, "c"), (10, "a"), (20, "b")] {
        lane.join(
            &format!("uid-{name}"),
            "team",
            created(second, name),
            1,
            object("team", name),
        );
    }
    let order: Vec<String> = (0..3)
        .filter_map(|_| lane.serve())
        .filter_map(|(_, w)| w.into_object())
        .map(|o| o.name)
        .collect();
    assert_eq!(order, ["a", "b", "c"]);
    assert!(lane.serve().is_none());
}

#[test]
fn equal_shares_split_the_tokens_equally_between_300_30_and_3_waiting() {
    let mut lane = lane(&[("big", 300, 1), ("mid", 30, 1), ("small", 3, 1)]);
    let served = serve(&mut lane, 9);
    let c = counts(&served);
    assert_eq!((c["big"], c["mid"], c["small"]), (3, 3, 3), "{served:?}");
    // Once the small namespace is done, the other two keep splitting.
    let c = counts(&serve(&mut lane, 40));
    assert_eq!((c["big"], c["mid"]), (20, 20));
}

#[test]
fn weights_share_the_tokens_in_proportion() {
    let mut lane = lane(&[("gold", 100, 3), ("bronze", 100, 1)]);
    let c = counts(&serve(&mut lane, 40));
    assert_eq!((c["gold"], c["bronze"]), (30, 10));
}

#[test]
fn a_namespace_that_joins_late_is_served_within_two_tokens_and_gets_no_credit_for_the_past() {
    let mut lane = lane(&[("flood", 300, 1), ("other", 100, 1)]);
    serve(&mut lane, 50);
    lane.join(
        "uid-late",
        "late",
        created(1000, "late-0"),
        1,
        object("late", "late-0"),
    );
    let place = lane.place("uid-late").expect("waits");
    assert_eq!(place.in_namespace, 1);
    assert!(place.tokens_ahead <= 2, "{place:?}");
    let next = serve(&mut lane, 2);
    assert!(next.iter().any(|ns| ns == "late"), "{next:?}");
    // It joined with many more: it is not paid back for the 50 tokens it was not waiting for.
    for i in 1..20 {
        let name = format!("late-{i}");
        lane.join(
            &format!("uid-{name}"),
            "late",
            created(1000 + i, &name),
            1,
            object("late", &name),
        );
    }
    let c = counts(&serve(&mut lane, 30));
    assert_eq!((c["flood"], c["other"], c["late"]), (10, 10, 10));
}

#[test]
fn a_place_counts_the_namespaces_ahead_by_weight() {
    let lane = lane(&[("a", 10, 1), ("b", 10, 1)]);
    let place = lane.place("uid-a-0002").expect("waits");
    assert_eq!(place.in_namespace, 3);
    assert_eq!(place.tokens_ahead, 5, "2 of its own and 3 of b's");
}

#[test]
fn leaving_takes_an_object_out_of_its_queue() {
    let mut lane = lane(&[("a", 3, 1)]);
    lane.leave("uid-a-0000");
    assert_eq!(
        lane.serve().map(|(uid, _)| uid).as_deref(),
        Some("uid-a-0001")
    );
    assert_eq!(lane.len(), 1);
}

fn task(ns: &str, name: &str, second: i64) -> ClusterScanTask {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "hss.scanops.dev/v1alpha1", "kind": "ClusterScanTask",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"),
            "creationTimestamp": jiff::Timestamp::from_second(second).expect("t").to_string()},
        "spec": {"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["cluster_vul"], "rangeType": "all_cluster"}},
    }))
    .expect("task")
}

#[tokio::test(start_paused = true)]
async fn each_token_wakes_exactly_one_waiter_and_every_token_is_used() {
    let budget = Budget::per_minute(5);
    let (wake, mut woken) = futures::channel::mpsc::unbounded();
    let queue = FairQueue::new(budget, wake);
    let key = BudgetKey {
        endpoint: "https://hss.example".into(),
        identity: "AK".into(),
        api: hss_client::Api::CreateTask,
    };
    let mut all = Vec::new();
    for (ns, n) in [("big", 50), ("small", 2)] {
        for i in 0..n {
            let t = task(ns, &format!("s{i:03}"), i);
            let uid = format!("uid-{ns}-s{i:03}");
            match (queue.turn(&key, &t, &uid, ns, 1), all.is_empty()) {
                (Turn::Wait { joined, .. }, false) => assert!(joined),
                (Turn::Granted(_), true) => {} // nobody waited yet: the free token at once
                (turn, first) => panic!("first asker {first}: {turn:?}"),
            }
            all.push((t, uid));
        }
    }
    // Then one token every 12 s (+ the safety margin), each to one waiter.
    let mut served = Vec::new();
    let start = tokio::time::Instant::now();
    while served.len() < 5 {
        let o = woken.next().await.expect("a wake-up");
        served.push(o.namespace.clone().expect("ns"));
        let (t, uid) = all
            .iter()
            .find(|(t, _)| {
                t.metadata.name.as_deref() == Some(o.name.as_str())
                    && t.metadata.namespace == o.namespace
            })
            .expect("a waiter");
        assert!(
            matches!(
                queue.turn(&key, t, uid, o.namespace.as_deref().expect("ns"), 1),
                Turn::Granted(_)
            ),
            "the woken one holds the token"
        );
        assert!(woken.try_recv().is_err(), "one wake-up per token, no herd");
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(62),
        "5 more tokens take 5 periods: {took:?}"
    );
    assert!(took > Duration::from_secs(59), "and not less: {took:?}");
    assert_eq!(
        counts(&served)["small"],
        2,
        "the small namespace is not starved: {served:?}"
    );
    assert_eq!(queue.waiting(), 51 - 5);
}

fn read_key() -> BudgetKey {
    BudgetKey {
        endpoint: "https://hss.example".into(),
        identity: "AK".into(),
        api: hss_client::Api::ListClusterRisks,
    }
}

fn caller(ns: &str, i: i64) -> Caller {
    Caller {
        uid: format!("uid-{ns}-{i}"),
        namespace: ns.to_string(),
        weight: 1,
        created: created(i, &format!("{ns}-{i:03}")),
    }
}

#[tokio::test(start_paused = true)]
async fn reads_wait_in_their_namespaces_queue_and_a_caller_that_gives_up_leaves_it() {
    let (wake, _woken) = futures::channel::mpsc::unbounded();
    let queue = FairQueue::new(Budget::per_minute(5), wake);
    let (done, mut order) = tokio::sync::mpsc::unbounded_channel::<String>();
    // The free token goes to the first caller at once.
    let first = as_caller(caller("big", 0), queue.wait(read_key())).await;
    assert_eq!(first.key().api, hss_client::Api::ListClusterRisks);
    let mut tasks = Vec::new();
    for (ns, n) in [("big", 20), ("small", 2)] {
        for i in 1..=n {
            let (queue, done) = (queue.clone(), done.clone());
            tasks.push(tokio::spawn(as_caller(caller(ns, i), async move {
                let _permit = queue.wait(read_key()).await;
                let _ = done.send(format!("{ns}-{i}"));
            })));
            tokio::task::yield_now().await;
        }
    }
    // One caller of the big namespace gives up while it waits: it leaves the queue.
    let quitter = {
        let queue = queue.clone();
        tokio::spawn(as_caller(caller("big", 99), async move {
            let _permit = queue.wait(read_key()).await;
            unreachable!("aborted before its turn");
        }))
    };
    tokio::task::yield_now().await;
    assert_eq!(queue.waiting(), 23);
    quitter.abort();
    let _ = quitter.await;
    assert_eq!(queue.waiting(), 22, "a caller that gave up left the queue");
    assert_eq!(
        queue.waiting_by_namespace(),
        [
            (hss_client::Api::ListClusterRisks, "big".to_string(), 20),
            (hss_client::Api::ListClusterRisks, "small".to_string(), 2)
        ]
    );

    let mut served = Vec::new();
    for _ in 0..4 {
        served.push(order.recv().await.expect("a caller served"));
    }
    // Each namespace in turn, oldest first within it.
    assert_eq!(
        served,
        ["big-1", "small-1", "big-2", "small-2"],
        "{served:?}"
    );
    assert_eq!(queue.waiting(), 18);
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn calls_made_for_no_tenant_queue_as_the_operators_own_namespace() {
    let (wake, _woken) = futures::channel::mpsc::unbounded();
    let queue = FairQueue::new(Budget::per_minute(5), wake);
    let _free = queue.wait(read_key()).await;
    let (done, mut order) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    for i in 1..=3 {
        let (queue, done) = (queue.clone(), done.clone());
        tokio::spawn(as_caller(caller("team", i), async move {
            let _permit = queue.wait(read_key()).await;
            let _ = done.send("team");
        }));
        tokio::task::yield_now().await;
    }
    let (q, d) = (queue.clone(), done.clone());
    tokio::spawn(async move {
        let _permit = q.wait(read_key()).await;
        let _ = d.send("poll");
    });
    tokio::task::yield_now().await;
    let mut served = Vec::new();
    for _ in 0..2 {
        served.push(order.recv().await.expect("served"));
    }
    assert!(
        served.contains(&"poll"),
        "the shared poll waits behind one tenant's token, not all of them: {served:?}"
    );
}
