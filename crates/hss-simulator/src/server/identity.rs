//! Identity without long-lived keys, as the official SDK's credential providers reach it:
//! CCE Pod Identity, the ECS metadata service, IAM federation with an ID token, and STS
//! assume-with-OIDC. Each hands out temporary AK/SK + security token that live
//! `temporary_credential_ttl` (Tokio time); HSS calls signed with them must carry the matching
//! `X-Security-Token`, and get HSS's 401 once they have expired.
//!
//! | source | route | accepts |
//! |---|---|---|
//! | pod identity | `POST /v1/pod-identity/credentials` | `Authorization`: an accepted token |
//! | metadata | `PUT /meta-data/latest/api/token`, `GET /openstack/latest/securitykey` | `X-Metadata-Token` from the PUT |
//! | federation | `POST /v3.0/OS-AUTH/id-token/tokens`, `POST /v3.0/OS-CREDENTIAL/securitytokens` | `X-Idp-Id: sim-idp`, an accepted ID token |
//! | OIDC STS | `POST /v5/agencies/assume-with-oidc` | provider and agency URNs, an accepted ID token |
//!
//! Each source answers in a different one of the shapes the SDK's `_process_credential`
//! reads. Revoking the identity ([`super::Simulator::revoke_identity`], or
//! `POST /__sim/identity/revoke`) refuses every source and forgets every credential issued.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use rand::Rng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use super::{Reply, Shared, lock, read};
use crate::Secret;

pub const POD_IDENTITY_PATH: &str = "/v1/pod-identity/credentials";
/// The identity provider federation accepts.
pub const IDP_ID: &str = "sim-idp";
/// What the metadata service says when the ECS has no agency (the SDK does not retry it).
const NO_AGENCY: &str = "Please configure Cloud Service Agency first";
/// The user HSS budgets temporary credentials under (HSS limits per user, not per key).
pub(super) const AGENCY_USER: &str = "agency-user";

/// Temporary credentials handed out, by access key.
pub(super) struct Issued {
    pub(super) sk: String,
    pub(super) token: String,
    pub(super) expires: Instant,
}

pub(super) struct Identity {
    accepted: Vec<Secret>,
    ttl: Duration,
    revoked: AtomicBool,
    state: std::sync::Mutex<IdentityState>,
}

struct IdentityState {
    rng: StdRng,
    metadata_tokens: HashSet<String>,
    unscoped: HashMap<String, Instant>,
    issued: HashMap<String, Issued>,
    counts: BTreeMap<&'static str, u64>,
}

/// Why an HSS call's temporary credentials were refused.
pub(super) enum TemporaryRefusal {
    Expired,
    WrongToken,
}

impl Identity {
    pub(super) fn new(accepted: Vec<Secret>, ttl: Duration, rng: StdRng) -> Self {
        Self {
            accepted,
            ttl,
            revoked: AtomicBool::new(false),
            state: std::sync::Mutex::new(IdentityState {
                rng,
                metadata_tokens: HashSet::new(),
                unscoped: HashMap::new(),
                issued: HashMap::new(),
                counts: BTreeMap::new(),
            }),
        }
    }

    fn accepts(&self, token: &str) -> bool {
        !self.revoked.load(Ordering::Relaxed)
            && self.accepted.iter().any(|t| t.expose() == token.trim())
    }

    pub(super) fn revoke(&self, revoked: bool) {
        self.revoked.store(revoked, Ordering::Relaxed);
        if revoked {
            let mut st = lock(&self.state);
            st.issued.clear();
            st.unscoped.clear();
            st.metadata_tokens.clear();
        }
    }

    /// Credentials issued so far, per source.
    pub(super) fn counts(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.state).counts.clone()
    }

    /// The secret key of issued temporary credentials `ak`, if `security_token` is theirs and
    /// they have not expired; `None` if `ak` was never issued.
    pub(super) fn secret_for(
        &self,
        ak: &str,
        security_token: Option<&str>,
    ) -> Option<Result<String, TemporaryRefusal>> {
        let st = lock(&self.state);
        let issued = st.issued.get(ak)?;
        Some(if security_token != Some(issued.token.as_str()) {
            Err(TemporaryRefusal::WrongToken)
        } else if Instant::now() >= issued.expires {
            Err(TemporaryRefusal::Expired)
        } else {
            Ok(issued.sk.clone())
        })
    }

    fn random(st: &mut IdentityState, prefix: &str, bytes: usize) -> String {
        let mut b = vec![0u8; bytes];
        st.rng.fill(&mut b[..]);
        format!("{prefix}{}", hex::encode(b))
    }

    /// New temporary credentials for `source`: (ak, sk, token, expiry).
    fn issue(&self, source: &'static str) -> (String, String, String, Instant) {
        let mut st = lock(&self.state);
        let ak = Self::random(&mut st, "TMPAK", 8).to_uppercase();
        let sk = Self::random(&mut st, "", 20);
        let token = Self::random(&mut st, "gQpzim", 48);
        let expires = Instant::now() + self.ttl;
        st.issued.insert(
            ak.clone(),
            Issued {
                sk: sk.clone(),
                token: token.clone(),
                expires,
            },
        );
        *st.counts.entry(source).or_default() += 1;
        (ak, sk, token, expires)
    }
}

fn iam_error(status: StatusCode, message: &str) -> Reply {
    Reply::json(
        status,
        &serde_json::json!({"error": {"code": status.as_u16(), "message": message, "title": status.canonical_reason().unwrap_or_default()}}),
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Shared {
    fn expires_at(&self, at: Instant) -> String {
        super::auth::rfc3339_micros(read(&self.store).clock.epoch_ms(at))
    }

    /// CCE Pod Identity.
    pub(super) fn pod_identity(&self, headers: &HeaderMap) -> Reply {
        if !header(headers, "authorization").is_some_and(|t| self.identity.accepts(t)) {
            return iam_error(
                StatusCode::FORBIDDEN,
                "the pod identity token is not accepted",
            );
        }
        let (ak, sk, token, expires) = self.identity.issue("pod-identity");
        Reply::json(
            StatusCode::OK,
            &serde_json::json!({"credentials": {"accessKeyId": ak, "secretAccessKey": sk, "securityToken": token, "expiration": self.expires_at(expires)}}),
        )
    }

    /// `PUT /meta-data/latest/api/token`.
    pub(super) fn metadata_token(&self, headers: &HeaderMap) -> Reply {
        if header(headers, "x-metadata-token-ttl-seconds").is_none() {
            return Reply::raw(StatusCode::BAD_REQUEST, b"ttl header required".to_vec());
        }
        let mut st = lock(&self.identity.state);
        let token = Identity::random(&mut st, "mdt", 16);
        st.metadata_tokens.insert(token.clone());
        Reply::raw(StatusCode::OK, token.into_bytes())
    }

    /// `GET /openstack/latest/securitykey`.
    pub(super) fn metadata_securitykey(&self, headers: &HeaderMap) -> Reply {
        if self.identity.revoked.load(Ordering::Relaxed) {
            return Reply::raw(StatusCode::UNAUTHORIZED, NO_AGENCY.as_bytes().to_vec());
        }
        let valid = header(headers, "x-metadata-token")
            .is_some_and(|t| lock(&self.identity.state).metadata_tokens.contains(t));
        if !valid {
            return Reply::raw(StatusCode::UNAUTHORIZED, b"invalid metadata token".to_vec());
        }
        let (ak, sk, token, expires) = self.identity.issue("metadata");
        Reply::json(
            StatusCode::OK,
            &serde_json::json!({"credential": {"access": ak, "secret": sk, "securitytoken": token, "expires_at": self.expires_at(expires)}}),
        )
    }

    /// `POST /v3.0/OS-AUTH/id-token/tokens`: an unscoped token for an accepted ID token.
    pub(super) fn federation_token(&self, headers: &HeaderMap, body: &[u8]) -> Reply {
        if header(headers, "x-idp-id") != Some(IDP_ID) {
            return iam_error(
                StatusCode::NOT_FOUND,
                "the identity provider does not exist",
            );
        }
        let doc: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let Some(id_token) = doc["auth"]["id_token"]["id"].as_str() else {
            return iam_error(StatusCode::BAD_REQUEST, "The request body is invalid.");
        };
        if !self.identity.accepts(id_token) {
            return iam_error(StatusCode::UNAUTHORIZED, "The ID token is invalid.");
        }
        let expires = Instant::now() + Duration::from_secs(600);
        let token = {
            let mut st = lock(&self.identity.state);
            let token = Identity::random(&mut st, "MIIfed", 48);
            st.unscoped.insert(token.clone(), expires);
            token
        };
        let mut reply = Reply::json(
            StatusCode::CREATED,
            &serde_json::json!({"token": {"methods": ["mapped"], "expires_at": self.expires_at(expires), "user": {"name": "federated", "OS-FEDERATION": {"identity_provider": {"id": IDP_ID}}}}}),
        );
        reply.subject_token = Some(token);
        reply
    }

    /// `POST /v3.0/OS-CREDENTIAL/securitytokens` with a token identity.
    pub(super) fn federation_securitytokens(&self, body: &[u8]) -> Reply {
        let doc: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let identity = &doc["auth"]["identity"];
        let token_method = identity["methods"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x == "token"));
        let Some(token) = identity["token"]["id"].as_str().filter(|_| token_method) else {
            return iam_error(StatusCode::BAD_REQUEST, "The request body is invalid.");
        };
        let valid = lock(&self.identity.state)
            .unscoped
            .get(token)
            .is_some_and(|exp| Instant::now() < *exp);
        if !valid || self.identity.revoked.load(Ordering::Relaxed) {
            return iam_error(StatusCode::UNAUTHORIZED, "The token is invalid.");
        }
        let (ak, sk, token, expires) = self.identity.issue("federation");
        Reply::json(
            StatusCode::CREATED,
            &serde_json::json!({"credential": {"access": ak, "secret": sk, "securitytoken": token, "expires_at": self.expires_at(expires)}}),
        )
    }

    /// `POST /v5/agencies/assume-with-oidc`.
    pub(super) fn assume_with_oidc(&self, body: &[u8]) -> Reply {
        let doc: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let field = |k: &str| doc[k].as_str().filter(|v| !v.is_empty());
        let (Some(_), Some(_), Some(id_token)) = (
            field("provider_urn"),
            field("agency_urn"),
            field("id_token"),
        ) else {
            return Reply::json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error_code": "STS.0001", "error_msg": "provider_urn, agency_urn and id_token are required"}),
            );
        };
        if !self.identity.accepts(id_token) {
            return Reply::json(
                StatusCode::FORBIDDEN,
                &serde_json::json!({"error_code": "STS.0403", "error_msg": "the ID token is not accepted"}),
            );
        }
        let (ak, sk, token, expires) = self.identity.issue("oidc");
        Reply::json(
            StatusCode::OK,
            &serde_json::json!({"credentials": {"access_key_id": ak, "secret_access_key": sk, "security_token": token, "expiration": self.expires_at(expires)}}),
        )
    }
}
