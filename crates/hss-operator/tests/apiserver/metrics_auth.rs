//! `/metrics` as a shared cluster serves it: `hss-operator run` against the real API server,
//! its metrics server over HTTPS on its own port, each scraper's bearer token reviewed by the
//! API server (TokenReview) and authorized for `get /metrics` (SubjectAccessReview). The
//! probes stay plain on the admin port, which no longer serves `/metrics`.

use std::time::Duration;

use hss_simulator::{SimConfig, Simulator};
use hss_testkit::{
    cluster::*,
    identity::service_account_token,
    metrics::{bind, reader_role, scrape, service_account},
};

#[tokio::test]
async fn metrics_answer_401_without_a_valid_token_403_without_the_role_and_200_with_it() {
    let admin = admin().await;
    let ns = namespace(&admin, "metrics-auth").await;
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let admin_port = free_port();
    let op = fast_operator(&ns, &sim.base_url(), "metrics-auth-operator", admin_port);
    let port = op.metrics_port();
    let _op = op.spawn().expect("start hss-operator run");

    // A role of this test's own (the chart's is created by the rbac test).
    let role = "metrics-auth-test-reader";
    reader_role(&admin, role).await;
    service_account(&admin, &ns, "reader").await;
    bind(&admin, role, &ns, "reader").await;
    service_account(&admin, &ns, "stranger").await;
    let reader = service_account_token(&admin, &ns, "reader").await;
    let stranger = service_account_token(&admin, &ns, "stranger").await;

    let first = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(answer) = scrape(port, None).await {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the metrics server answers over HTTPS");
    assert_eq!(first.0, 401, "no token: {}", first.1);
    assert!(!first.1.contains("hss_operator_"), "{}", first.1);

    let forged = scrape(port, Some("not-a-token")).await.expect("answer");
    assert_eq!(forged.0, 401, "a token the API server does not know");
    // A real token with one character of its signature changed: well-formed, not authentic.
    // (Not the last one: its low bits are padding, and a change there may decode to the same
    // signature; a 1.36 API server accepted such a token.)
    let tampered = {
        let mut chars: Vec<char> = reader.chars().collect();
        let at = chars.len() - 10;
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    assert_eq!(scrape(port, Some(&tampered)).await.expect("answer").0, 401);

    let denied = scrape(port, Some(&stranger)).await.expect("answer");
    assert_eq!(denied.0, 403, "authenticated, without get /metrics");
    assert!(!denied.1.contains("hss_operator_"), "{}", denied.1);

    let allowed = scrape(port, Some(&reader)).await.expect("answer");
    assert_eq!(allowed.0, 200, "{}", allowed.1);
    assert!(allowed.1.contains("hss_operator_"), "{}", allowed.1);
    // Cached answers keep their verdicts.
    assert_eq!(scrape(port, Some(&stranger)).await.expect("answer").0, 403);
    assert_eq!(scrape(port, Some(&reader)).await.expect("answer").0, 200);

    // The metrics port speaks only TLS; the admin port keeps the probes and nothing else.
    let http = reqwest::Client::new();
    assert!(
        http.get(format!("http://127.0.0.1:{port}/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_or(true, |r| !r.status().is_success()),
        "plain http gets no metrics"
    );
    let probe = |path: &str| {
        let url = format!("http://127.0.0.1:{admin_port}{path}");
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .expect("admin port")
                .status()
                .as_u16()
        }
    };
    assert_eq!(probe("/livez").await, 200);
    assert_eq!(
        probe("/metrics").await,
        404,
        "no /metrics on the admin port"
    );
}
