//! Who is calling: AK/SK signatures verified as the gateway does (SDK-HMAC-SHA256, a signed
//! `X-Security-Token` when present, 15 minutes of clock skew), configured and issued IAM
//! tokens, and the IAM password-token endpoint that issues them.
//!
//! # Errors
//! A failure is an [`AuthFailure`]: only its category is logged, and its message, which never
//! holds a secret, goes back to the caller.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{StatusCode, header};
use rand::Rng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use super::{Reply, Shared, lock, read};
use hss_client::signer::{self, VerifyError};

/// How long an issued IAM token is valid.
pub(super) const IAM_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Why a call was not authenticated. Only the category is logged; the message goes back to the
/// caller and never contains a secret.
#[derive(Debug)]
pub(super) enum AuthFailure {
    Missing,
    Token,
    UnsignedSecurityToken,
    ExpiredSecurityToken,
    WrongSecurityToken,
    Signature(VerifyError),
}

impl AuthFailure {
    pub(super) fn category(&self) -> &'static str {
        match self {
            Self::Missing => "missing_credentials",
            Self::Token => "invalid_token",
            Self::UnsignedSecurityToken => "unsigned_security_token",
            Self::ExpiredSecurityToken => "expired_security_token",
            Self::WrongSecurityToken => "wrong_security_token",
            Self::Signature(e) => e.category(),
        }
    }

    pub(super) fn message(&self) -> &'static str {
        match self {
            Self::Missing => "Authorization or X-Auth-Token not found",
            Self::Token => "the token is invalid or has expired",
            Self::UnsignedSecurityToken => "X-Security-Token must be a signed header",
            Self::ExpiredSecurityToken => "the security token has expired",
            Self::WrongSecurityToken => "the security token does not belong to the access key",
            Self::Signature(VerifyError::MalformedAuthorization) => {
                "the Authorization header is not SDK-HMAC-SHA256"
            }
            Self::Signature(VerifyError::UnknownAccessKey) => "the access key does not exist",
            Self::Signature(VerifyError::MissingDate) => "X-Sdk-Date is missing or not signed",
            Self::Signature(VerifyError::ClockSkew) => {
                "X-Sdk-Date is more than 15 minutes away from the server time"
            }
            Self::Signature(VerifyError::Mismatch) => "verify aksk signature fail",
        }
    }
}

/// IAM tokens issued by `POST /v3/auth/tokens`: token -> (user, expiry).
pub(super) struct IssuedTokens {
    pub(super) rng: StdRng,
    pub(super) tokens: HashMap<String, (String, Instant)>,
}

impl Shared {
    pub(super) fn authenticate(
        &self,
        parts: &axum::http::request::Parts,
        query: &[(String, String)],
        body: &[u8],
    ) -> Result<String, AuthFailure> {
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if let Some(token) = parts.headers.get("x-auth-token") {
            let token = String::from_utf8_lossy(token.as_bytes());
            if let Some(i) = self.tokens.iter().position(|t| t.expose() == token) {
                return Ok(format!("token#{}", i + 1));
            }
            return match lock(&self.issued).tokens.get(token.as_ref()) {
                Some((user, expires)) if Instant::now() < *expires => Ok(user.clone()),
                _ => Err(AuthFailure::Token),
            };
        }
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthFailure::Missing)?;
        let auth = signer::parse_authorization(&String::from_utf8_lossy(authorization.as_bytes()))
            .map_err(AuthFailure::Signature)?;
        let security_token = parts
            .headers
            .get("x-security-token")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if security_token.is_some() && !auth.signed_headers.iter().any(|h| h == "x-security-token")
        {
            return Err(AuthFailure::UnsignedSecurityToken);
        }
        // Temporary keys the identity endpoints issued: their token, unexpired.
        let temporary = match self
            .identity
            .secret_for(&auth.access, security_token.as_deref())
        {
            None => None,
            Some(Ok(sk)) => Some(sk),
            Some(Err(super::identity::TemporaryRefusal::Expired)) => {
                return Err(AuthFailure::ExpiredSecurityToken);
            }
            Some(Err(super::identity::TemporaryRefusal::WrongToken)) => {
                return Err(AuthFailure::WrongSecurityToken);
            }
        };
        // The client signs with the real clock, so skew is judged against it even when a test
        // has paused Tokio time.
        let now = jiff::Timestamp::now().as_second();
        let user = signer::verify(
            parts.method.as_str(),
            &signer::decode(parts.uri.path()),
            query,
            &headers,
            body,
            now,
            |ak| match &temporary {
                Some(sk) => Some(sk.as_bytes().to_vec()),
                None => self
                    .credentials
                    .get(ak)
                    .map(|sk| sk.expose().as_bytes().to_vec()),
            },
        )
        .map_err(AuthFailure::Signature)?;
        // Temporary keys are budgeted as the user they belong to (HSS limits per user).
        Ok(match temporary {
            Some(_) => super::identity::AGENCY_USER.to_string(),
            None => user,
        })
    }

    /// `POST /v3/auth/tokens` with a password identity.
    pub(super) fn iam_token(&self, body: &[u8]) -> Reply {
        let iam_error = |status: StatusCode, message: &str| {
            Reply::json(
                status,
                &serde_json::json!({"error": {
                    "code": status.as_u16(),
                    "message": message,
                    "title": status.canonical_reason().unwrap_or_default(),
                }}),
            )
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
            return iam_error(StatusCode::BAD_REQUEST, "The request body is invalid.");
        };
        let identity = &doc["auth"]["identity"];
        let password_method = identity["methods"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x == "password"));
        let user = &identity["password"]["user"];
        let (Some(name), Some(password), true) = (
            user["name"].as_str(),
            user["password"].as_str(),
            password_method,
        ) else {
            return iam_error(
                StatusCode::BAD_REQUEST,
                "The request body is invalid: a password identity is required.",
            );
        };
        if !self
            .iam_users
            .iter()
            .any(|u| u.name == name && u.password.expose() == password)
        {
            return iam_error(
                StatusCode::UNAUTHORIZED,
                "The username or password is wrong.",
            );
        }
        let now = Instant::now();
        let token = {
            let mut issued = lock(&self.issued);
            let mut bytes = [0u8; 48];
            issued.rng.fill(&mut bytes[..]);
            let token = format!("MIIsim{}", hex::encode(bytes));
            issued
                .tokens
                .insert(token.clone(), (name.to_string(), now + IAM_TOKEN_TTL));
            token
        };
        let issued_ms = read(&self.store).clock.epoch_ms(now);
        let ttl_ms = i64::try_from(IAM_TOKEN_TTL.as_millis()).unwrap_or(i64::MAX);
        let domain = user["domain"]["name"].as_str().unwrap_or(name);
        let mut reply = Reply::json(
            StatusCode::CREATED,
            &serde_json::json!({"token": {
                "methods": ["password"],
                "issued_at": rfc3339_micros(issued_ms),
                "expires_at": rfc3339_micros(issued_ms.saturating_add(ttl_ms)),
                "user": {"name": name, "id": format!("sim-user-{name}"), "domain": {"name": domain, "id": format!("sim-domain-{domain}")}},
                "project": doc["auth"]["scope"]["project"].clone(),
                "catalog": [],
            }}),
        );
        reply.subject_token = Some(token);
        reply
    }
}

/// IAM's timestamp form: `2024-01-02T03:04:05.123000Z`.
pub(super) fn rfc3339_micros(epoch_ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(epoch_ms) {
        Ok(ts) => format!(
            "{}.{:06}Z",
            ts.strftime("%Y-%m-%dT%H:%M:%S"),
            ts.subsec_microsecond()
        ),
        Err(_) => String::new(),
    }
}
