//! What a failed HSS call says about its effect: the error type of [`super::client`], its
//! outcome class (see the table there), a bounded category, and `Retry-After`.

use std::time::Duration;

use super::{
    Api, credentials, guard,
    limits::{MAX_RESPONSE_BYTES, MAX_RETRY_AFTER},
};

/// What a failed call says about its effect; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Rejected,
    Retryable,
    Ambiguous,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Rejected => "rejected",
            Outcome::Retryable => "retryable",
            Outcome::Ambiguous => "ambiguous",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// HSS or its gateway answered with an error status.
    #[error("failed to call {api}: HSS answered HTTP {status} {}", code.as_deref().unwrap_or("(no error code)"))]
    Service {
        api: Api,
        status: u16,
        code: Option<String>,
        message: Option<String>,
        request_id: Option<String>,
        retry_after: Option<Duration>,
        /// Whether a retry can help after a 401: temporary credentials whose cached or
        /// fixed copy was refused (see `credentials`); never for permanent AK/SK.
        refreshable: bool,
    },
    /// The request never left: connection refused, DNS, TLS handshake, connect timeout.
    #[error("failed to connect to HSS for {api}")]
    Connect {
        api: Api,
        #[source]
        source: reqwest::Error,
    },
    /// Sent, but no complete answer in time.
    #[error("failed to get an answer from HSS for {api} within the timeout")]
    Timeout {
        api: Api,
        #[source]
        source: reqwest::Error,
    },
    /// Sent, but the connection broke before a complete answer.
    #[error("failed to get a complete answer from HSS for {api}")]
    Transport {
        api: Api,
        #[source]
        source: reqwest::Error,
    },
    /// A success status with a body that is not what the API promises.
    #[error("failed to decode HSS's answer to {api} (HTTP {status})")]
    Decode {
        api: Api,
        status: u16,
        request_id: Option<String>,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to read HSS's answer to {api}: larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge { api: Api },
    #[error("failed to obtain credentials for {api}")]
    Credentials {
        api: Api,
        #[source]
        source: credentials::Error,
    },
    /// Not sent: HSS refused a signature with this access key before ([`guard`]).
    #[error("failed to sign {api}: the access key is guarded")]
    KeyGuarded {
        api: Api,
        #[source]
        source: guard::Guarded,
    },
    #[error("failed to build the request for {api}: {reason}")]
    InvalidRequest { api: Api, reason: String },
    #[error("failed to build the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl Error {
    /// The effect class of the failed call.
    pub fn outcome(&self) -> Outcome {
        match self {
            Error::Service {
                status,
                refreshable,
                ..
            } => match *status {
                429 => Outcome::Retryable,
                401 if *refreshable => Outcome::Retryable,
                s if s >= 500 => Outcome::Ambiguous,
                _ => Outcome::Rejected,
            },
            // Nothing was sent; the holder learns why when it asks for its client again.
            Error::Connect { .. } | Error::KeyGuarded { .. } => Outcome::Retryable,
            Error::Credentials { source, .. } => match source {
                credentials::Error::Invalid(_) | credentials::Error::IamRejected { .. } => {
                    Outcome::Rejected
                }
                _ => Outcome::Retryable,
            },
            Error::Timeout { .. }
            | Error::Transport { .. }
            | Error::Decode { .. }
            | Error::TooLarge { .. } => Outcome::Ambiguous,
            Error::InvalidRequest { .. } | Error::Client(_) => Outcome::Rejected,
        }
    }

    /// Bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Service { status, code, .. } => match (*status, code.as_deref()) {
                (429, _) => "throttled",
                (401, _) => "unauthenticated",
                (403, _) | (_, Some("HSS.0010" | "HSS.0013")) => "forbidden",
                (_, Some("HSS.1002")) => "quota_exceeded",
                (_, Some("HSS.0011")) | (404, _) => "not_found",
                (s, _) if s >= 500 => "server_error",
                _ => "invalid_request",
            },
            Error::Connect { .. } => "connect",
            Error::Timeout { .. } => "timeout",
            Error::Transport { .. } => "transport",
            Error::Decode { .. } | Error::TooLarge { .. } => "bad_response",
            Error::Credentials { source, .. } => source.category(),
            Error::KeyGuarded { source, .. } => source.category(),
            Error::InvalidRequest { .. } => "invalid_request",
            Error::Client(_) => "client_setup",
        }
    }

    pub fn api(&self) -> Option<Api> {
        match self {
            Error::Service { api, .. }
            | Error::Connect { api, .. }
            | Error::Timeout { api, .. }
            | Error::Transport { api, .. }
            | Error::Decode { api, .. }
            | Error::TooLarge { api }
            | Error::Credentials { api, .. }
            | Error::KeyGuarded { api, .. }
            | Error::InvalidRequest { api, .. } => Some(*api),
            Error::Client(_) => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Service { status, .. } | Error::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// HSS or gateway error code, e.g. `HSS.0001` or `APIGW.0308`.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Error::Service { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub fn error_msg(&self) -> Option<&str> {
        match self {
            Error::Service { message, .. } => message.as_deref(),
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Service { request_id, .. } | Error::Decode { request_id, .. } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Service { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A signature (or other authentication) failure on AK/SK: must not be retried blindly.
    pub fn is_signature_failure(&self) -> bool {
        matches!(
            self,
            Error::Service {
                status: 401,
                refreshable: false,
                ..
            }
        )
    }
}

pub(super) fn classify_send(api: Api, source: reqwest::Error) -> Error {
    if source.is_connect() {
        // Refused, DNS, TLS handshake or a connect timeout: nothing was sent.
        Error::Connect { api, source }
    } else if source.is_timeout() {
        Error::Timeout { api, source }
    } else {
        Error::Transport { api, source }
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date in any of RFC 9110's three formats, capped
/// at [`MAX_RETRY_AFTER`]; `None` when it is neither. A date in the past is no wait; digits too
/// many for any clock are the cap. Pure: nothing here adds to an `Instant`, so no value can
/// overflow one.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value
            .parse::<u64>()
            .map_or(MAX_RETRY_AFTER, Duration::from_secs)
    } else {
        let at = jiff::Timestamp::try_from(httpdate::parse_http_date(value).ok()?).ok()?;
        Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date_and_never_longer_than_the_cap() {
        let now = jiff::Timestamp::from_second(784_111_777).expect("valid"); // 1994-11-06T08:49:37Z
        // (header, wait, reason)
        let cases = [
            ("12", Some(12), "delay-seconds"),
            (" 0 ", Some(0), "zero, padded"),
            (
                "Sun, 06 Nov 1994 08:50:07 GMT",
                Some(30),
                "an HTTP-date 30 s ahead",
            ),
            (
                "Sun, 06 Nov 1994 08:00:00 GMT",
                Some(0),
                "a date in the past is no wait",
            ),
            (
                "99999999999999999999",
                Some(600),
                "more digits than a u64: the cap",
            ),
            (
                "Sunday, 06-Nov-94 08:50:07 GMT",
                Some(30),
                "RFC 850 date (obsolete, still to be accepted)",
            ),
            (
                "Sun Nov  6 08:50:07 1994",
                Some(30),
                "asctime date (obsolete, still to be accepted)",
            ),
            ("-5", None, "negative: neither"),
            ("1.5", None, "fractional: neither"),
            ("", None, "empty"),
            (
                "18446744073709551615",
                Some(600),
                "u64::MAX seconds: capped, no overflow",
            ),
            (
                "Thu, 31 Dec 2099 23:59:59 GMT",
                Some(600),
                "a far date: capped",
            ),
            ("soon", None, "neither"),
        ];
        for (header, wait, why) in cases {
            assert_eq!(
                parse_retry_after(header, now),
                wait.map(Duration::from_secs),
                "{why}"
            );
        }
    }

    fn service(status: u16, code: &str, refreshable: bool) -> Error {
        Error::Service {
            api: Api::CreateTask,
            status,
            code: Some(code.into()),
            message: None,
            request_id: None,
            retry_after: None,
            refreshable,
        }
    }

    #[test]
    fn classification_table() {
        // (error, outcome, category, reason)
        let cases = [
            (
                service(400, "HSS.0001", false),
                Outcome::Rejected,
                "invalid_request",
                "bad input is final",
            ),
            (
                service(400, "HSS.1002", false),
                Outcome::Rejected,
                "quota_exceeded",
                "quota is final",
            ),
            (
                service(401, "APIGW.0301", false),
                Outcome::Rejected,
                "unauthenticated",
                "signature failures are never retried",
            ),
            (
                service(401, "APIGW.0301", true),
                Outcome::Retryable,
                "unauthenticated",
                "an IAM token can be refreshed",
            ),
            (
                service(403, "HSS.0013", false),
                Outcome::Rejected,
                "forbidden",
                "permissions",
            ),
            (
                service(429, "APIGW.0308", false),
                Outcome::Retryable,
                "throttled",
                "throttled calls did nothing",
            ),
            (
                service(500, "HSS.9999", false),
                Outcome::Ambiguous,
                "server_error",
                "a 5xx may have executed",
            ),
            (
                service(503, "APIGW.0201", false),
                Outcome::Ambiguous,
                "server_error",
                "gateway 5xx too",
            ),
        ];
        for (err, outcome, category, reason) in cases {
            assert_eq!(err.outcome(), outcome, "{reason}");
            assert_eq!(err.category(), category, "{reason}");
        }
        assert!(service(401, "APIGW.0301", false).is_signature_failure());
    }

    #[test]
    fn a_guarded_key_was_not_sent_and_is_not_a_signature_failure() {
        let err = Error::KeyGuarded {
            api: Api::CreateTask,
            source: guard::Guarded::Refused {
                key: "AKTE...".into(),
            },
        };
        assert_eq!(err.outcome(), Outcome::Retryable, "nothing was sent");
        assert_eq!(err.category(), "key_guarded");
        assert!(!err.is_signature_failure(), "not this object's refusal");
    }
}
