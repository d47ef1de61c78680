use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};

use super::{fetch::parse_credential, *};
use crate::{
    chain::{self, Choice, Setup, choose},
    credentials::Credentials,
};

/// Without proxies: a unit test never reads the process environment.
fn http() -> reqwest::Client {
    crate::transport::http_client_via(
        Duration::from_secs(5),
        Duration::from_secs(1),
        None,
        crate::transport::Proxies::Never,
    )
    .expect("client")
}

fn temporary(ak: &str, lifetime: Duration) -> Temporary {
    Temporary {
        ak: ak.into(),
        sk: SecretString::from("sk".to_string()),
        security_token: SecretString::from("st".to_string()),
        lifetime,
    }
}

/// A provider whose fetches hand out `ak-1`, `ak-2`, ... with `lifetime`.
fn counting(lifetime: Duration) -> Arc<Provider> {
    let n = Arc::new(Mutex::new(0));
    Provider::new(
        Fetcher::Scripted(Box::new(move || {
            let mut n = n.lock().expect("lock");
            *n += 1;
            Ok(temporary(&format!("ak-{n}"), lifetime))
        })),
        http(),
    )
}

#[test]
fn credentials_are_replaced_forty_minutes_early_or_at_half_their_life() {
    let min = |m: u64| Duration::from_secs(m * 60);
    assert_eq!(refresh_after(min(60)), min(20), "the SDK's 40 minutes");
    assert_eq!(refresh_after(min(360)), min(320));
    assert_eq!(
        refresh_after(min(15)),
        Duration::from_secs(450),
        "half of a short life"
    );
    assert_eq!(refresh_after(Duration::ZERO), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn cached_until_the_refresh_time_then_fetched_again() {
    let p = counting(Duration::from_secs(3600));
    let (first, g1) = p.current().await.expect("fetch");
    assert_eq!((first.ak.as_str(), g1.fresh), ("ak-1", true));
    tokio::time::advance(Duration::from_secs(20 * 60 - 1)).await;
    let (same, g) = p.current().await.expect("cached");
    assert_eq!(
        (same.ak.as_str(), g.fresh, g.number),
        ("ak-1", false, g1.number)
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    let (next, g2) = p.current().await.expect("refreshed");
    assert_eq!((next.ak.as_str(), g2.fresh), ("ak-2", true));
    assert!(g2.number > g1.number);
    assert_eq!(p.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_fetch() {
    let p = counting(Duration::from_secs(3600));
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.current().await.expect("ok").0.ak })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.expect("joined"), "ak-1");
    }
    assert_eq!(p.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_cached_credential_is_fetched_again_once_and_a_fresh_one_is_final() {
    let p = counting(Duration::from_secs(3600));
    let (_, fresh) = p.current().await.expect("fetch");
    assert!(
        !p.refused(fresh).await,
        "fetched for the refused call: final"
    );
    let (_, cached) = p.current().await.expect("cached");
    assert!(!cached.fresh);
    assert!(
        p.refused(cached).await,
        "a cached one may have expired early"
    );
    let (again, g) = p.current().await.expect("fetched anew");
    assert_eq!((again.ak.as_str(), g.fresh), ("ak-2", true));
    // A second 401 for the old generation (a concurrent call) drops nothing new.
    assert!(p.refused(cached).await);
    let (kept, _) = p.current().await.expect("still cached");
    assert_eq!(kept.ak, "ak-2");
    assert_eq!(p.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_fetch_is_not_cached() {
    let fail = Arc::new(Mutex::new(true));
    let f = fail.clone();
    let p = Provider::new(
        Fetcher::Scripted(Box::new(move || {
            if *f.lock().expect("lock") {
                Err(Error::Refused {
                    source_name: "scripted",
                    status: 403,
                    detail: None,
                })
            } else {
                Ok(temporary("ak", Duration::from_secs(3600)))
            }
        })),
        http(),
    );
    let err = p.current().await.expect_err("refused");
    assert_eq!(err.category(), "identity_refused");
    *fail.lock().expect("lock") = false;
    assert_eq!(p.current().await.expect("now").0.ak, "ak");
}

#[test]
fn credential_documents_in_each_shape_the_sdk_reads() {
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1))
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let iam = format!(
        r#"{{"credential": {{"access": "AK1", "secret": "SK1", "securitytoken": "ST1", "expires_at": "{later}"}}}}"#
    );
    let sts = format!(
        r#"{{"credentials": {{"access_key_id": "AK2", "secret_access_key": "SK2", "security_token": "ST2", "expiration": "{later}"}}}}"#
    );
    let bare = format!(
        r#"{{"accessKeyId": "AK3", "secretAccessKey": "SK3", "securityToken": "ST3", "expires_at": "{later}"}}"#
    );
    for (doc, ak, token) in [
        (iam, "AK1", "ST1"),
        (sts, "AK2", "ST2"),
        (bare, "AK3", "ST3"),
    ] {
        let t = parse_credential("test", doc.as_bytes()).expect(ak);
        assert_eq!(t.ak, ak);
        assert_eq!(t.security_token.expose_secret(), token);
        assert!(t.lifetime > Duration::from_secs(3500) && t.lifetime <= Duration::from_secs(3600));
        assert!(
            !format!("{t:?}").contains("SK"),
            "Debug hides the secret key"
        );
    }
}

#[test]
fn broken_or_expired_documents_are_refused_with_a_reason() {
    let earlier = "2020-01-01T00:00:00.000000Z";
    for (doc, why) in [
        ("not json", "not JSON"),
        (
            r#"{"credential": {"secret": "s", "securitytoken": "t", "expires_at": "2999-01-01T00:00:00Z"}}"#,
            "no access key",
        ),
        (
            r#"{"credential": {"access": "a", "secret": "s", "expires_at": "2999-01-01T00:00:00Z"}}"#,
            "no security token",
        ),
        (
            r#"{"credential": {"access": "a", "secret": "s", "securitytoken": "t"}}"#,
            "no expires_at",
        ),
        (
            &format!(
                r#"{{"credential": {{"access": "a", "secret": "s", "securitytoken": "t", "expires_at": "{earlier}"}}}}"#
            ),
            "expired",
        ),
        (
            r#"{"credential": {"access": "a\n", "secret": "s", "securitytoken": "t\u0000", "expires_at": "2999-01-01T00:00:00Z"}}"#,
            "control",
        ),
    ] {
        let err = parse_credential("test", doc.as_bytes()).expect_err(why);
        assert_eq!(err.category(), "source_bad_reply");
        assert!(err.to_string().contains(why), "{err} / {why}");
    }
}

fn setup(vars: &[(&str, &str)]) -> (HashMap<String, String>, reqwest::Client) {
    (
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        http(),
    )
}

async fn chosen(vars: &[(&str, &str)], kind: SourceKind) -> Result<Choice, Error> {
    let (env, http) = setup(vars);
    let lookup = move |k: &str| env.get(k).cloned();
    choose(
        kind,
        &Setup {
            env: &lookup,
            direct: http.clone(),
            http,
            // Nothing listens there: the chain's metadata step fails at once.
            metadata_endpoint: "http://127.0.0.1:9".into(),
            allow_insecure: false,
        },
    )
    .await
}

#[tokio::test]
async fn the_chain_takes_the_sdks_order() {
    use chain::env::*;
    let oidc = [
        (OIDC_PROVIDER_URN, "urn:p"),
        (OIDC_AGENCY_URN, "urn:a"),
        (OIDC_ID_TOKEN, "tok"),
        (AK, "AK"),
        (SK, "SK"),
    ];
    let c = chosen(&oidc, SourceKind::Chain).await.expect("oidc first");
    assert_eq!(c.source, "oidc");
    assert!(matches!(c.credentials, Credentials::Provided(_)));
    let c = chosen(&oidc[2..], SourceKind::Chain)
        .await
        .expect("then env");
    assert_eq!(c.source, "env");
    assert_eq!(c.credentials.identity(), "ak:AK");
    let c = chosen(&[(CLOUD_AK, "CAK"), (CLOUD_SK, "CSK")], SourceKind::Chain)
        .await
        .expect("the HSS pages' names");
    assert_eq!(c.credentials.identity(), "ak:CAK");
    let idp = [
        (IDP_ID, "idp"),
        (ID_TOKEN_FILE, "/var/run/token"),
        (AK, "AK"),
        (SK, "SK"),
    ];
    let c = chosen(&idp, SourceKind::Env)
        .await
        .expect("federation wins in env");
    assert_eq!(c.source, "env");
    assert!(c.detail.contains("identity provider idp"), "{}", c.detail);
    let temp = [(AK, "AK"), (SK, "SK"), (SECURITY_TOKEN, "ST")];
    let c = chosen(&temp, SourceKind::Env).await.expect("temporary");
    assert!(matches!(
        c.credentials,
        Credentials::AkSk {
            security_token: Some(_),
            ..
        }
    ));
}

#[tokio::test]
async fn an_empty_chain_says_what_each_source_lacked() {
    let err = chosen(&[("HOME", "/nonexistent")], SourceKind::Chain)
        .await
        .expect_err("nothing configured");
    let text = err.to_string();
    for part in [
        "HUAWEICLOUD_OIDC_PROVIDER_URN",
        "HUAWEICLOUD_SDK_AK",
        "credentials file",
        "metadata",
        "HC_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        assert!(text.contains(part), "{part} missing in: {text}");
    }
    assert_eq!(err.category(), "no_source");
}

#[tokio::test]
async fn the_profile_file_gives_keys_or_federation() {
    let dir = std::env::temp_dir().join(format!("hss-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let keys = dir.join("keys");
    std::fs::write(&keys, "[basic]\nak = PAK\nsk = PSK\nproject_id = p\n").expect("write");
    let c = chosen(
        &[(chain::env::CREDENTIALS_FILE, keys.to_str().expect("utf-8"))],
        SourceKind::Profile,
    )
    .await
    .expect("keys");
    assert_eq!(c.credentials.identity(), "ak:PAK");
    let fed = dir.join("fed");
    std::fs::write(
        &fed,
        "[basic]\nidp_id = my-idp\nid_token_file = /t\niam_endpoint = https://iam.example.com\n",
    )
    .expect("write");
    let c = chosen(
        &[(chain::env::CREDENTIALS_FILE, fed.to_str().expect("utf-8"))],
        SourceKind::Profile,
    )
    .await
    .expect("federation");
    assert_eq!(c.source, "profile");
    assert!(c.detail.contains("https://iam.example.com"), "{}", c.detail);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn id_tokens_never_go_to_plain_http_without_the_flag() {
    use chain::env::*;
    let vars = [
        (IDP_ID, "idp"),
        (ID_TOKEN_FILE, "/t"),
        (IAM_ENDPOINT, "http://iam.example.com"),
    ];
    let err = chosen(&vars, SourceKind::Federation)
        .await
        .expect_err("http");
    assert_eq!(err.category(), "source_misconfigured");
    assert!(err.to_string().contains("plain http"), "{err}");
}
