//! The key guard over real loopback HTTP: clients sharing one [`KeyGuard`] whose credentials
//! carry the same access key with different wrong secret keys spend exactly one bad
//! signature at the simulator, however many of them call at once; a changed holder with the
//! right key then works, and the wrong ones are still never sent.

use std::time::Duration;

use hss_client::{
    Api, Outcome,
    budget::Budget,
    client::{ClientConfig, HssClient},
    credentials::Credentials,
    endpoint::Endpoint,
    guard::KeyGuard,
};
use hss_simulator::{Credential, SimConfig, Simulator};

const AK: &str = "AKTEAMSHARED0001";
const SK: &str = "the-right-secret-key";

fn client(sim: &Simulator, guard: &KeyGuard, sk: &str) -> HssClient {
    let mut config = ClientConfig::new(Endpoint::parse(&sim.base_url()).expect("url"), "proj");
    config.timeout = Duration::from_secs(5);
    let credentials = Credentials::permanent(AK, sk).expect("credentials");
    HssClient::new(config, credentials, Budget::per_minute(0))
        .expect("client")
        .with_guard(guard.clone())
}

fn unauthenticated(sim: &Simulator) -> u64 {
    sim.calls()
        .into_iter()
        .filter(|((_, status), _)| *status == 401)
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn many_wrong_secret_keys_for_one_access_key_spend_one_bad_signature() {
    let sim = Simulator::start(SimConfig {
        credentials: vec![Credential::new(AK, SK)],
        throttle_per_minute: 0,
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let guard = KeyGuard::default();
    let wrong: Vec<HssClient> = (0..8)
        .map(|i| client(&sim, &guard, &format!("wrong-{i}")))
        .collect();
    for (i, c) in wrong.iter().enumerate() {
        guard
            .check_holder(c.credentials(), &format!("secret:team/s{i}"), "v1")
            .expect("nothing known yet");
    }
    let results =
        futures::future::join_all(wrong.iter().map(|c| c.list_clusters(0, 10, None))).await;
    assert_eq!(
        unauthenticated(&sim),
        1,
        "one bad signature: {:?}",
        sim.calls()
    );
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(refused.len(), 8);
    assert_eq!(
        refused.iter().filter(|e| e.is_signature_failure()).count(),
        1,
        "one was sent and refused"
    );
    for e in refused.iter().filter(|e| !e.is_signature_failure()) {
        assert_eq!(e.category(), "key_guarded", "{e}");
        assert_eq!(e.outcome(), Outcome::Retryable, "not sent: {e}");
    }
    // Again, later: still nothing is sent.
    for c in &wrong {
        assert!(c.list_clusters(0, 10, None).await.is_err());
    }
    assert_eq!(unauthenticated(&sim), 1);

    // Holder s3's Secret changes, to the right key: it may try, and works.
    let fixed = client(&sim, &guard, SK);
    guard
        .check_holder(fixed.credentials(), "secret:team/s3", "v2")
        .expect("a changed Secret lifts the guard for its key");
    fixed.list_clusters(0, 10, None).await.expect("accepted");
    assert_eq!(sim.call_count(Api::ListClusters, Some(200)), 1);
    // The others are known wrong now: refused here, never sent.
    for (i, c) in wrong.iter().enumerate() {
        let why = guard
            .check_holder(c.credentials(), &format!("secret:team/s{i}"), "v1")
            .expect_err("a wrong secret key");
        assert_eq!(why.category(), "wrong_secret_key");
        assert!(!why.to_string().contains(AK), "only a prefix: {why}");
        assert!(c.list_clusters(0, 10, None).await.is_err());
    }
    assert_eq!(unauthenticated(&sim), 1, "{:?}", sim.calls());
}
