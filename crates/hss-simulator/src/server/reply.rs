//! What a simulated call answers, before it becomes HTTP: HSS and gateway error bodies,
//! throttling with `Retry-After`, faults (a dropped connection, a malformed body).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Serialize;

use crate::state::Rejection;

/// The response a call produces, before it becomes HTTP.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
    pub(super) retry_after: Option<u64>,
    pub(super) subject_token: Option<String>,
    pub(super) drop_connection: bool,
}

impl Reply {
    pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::raw(status, body),
            Err(_) => Self::server_error(),
        }
    }

    pub(super) fn raw(status: StatusCode, body: Vec<u8>) -> Self {
        Self {
            status,
            body,
            retry_after: None,
            subject_token: None,
            drop_connection: false,
        }
    }

    /// HSS errors: always 400, no request id in the body.
    pub(super) fn hss(code: &str, msg: impl Into<String>) -> Self {
        Self::json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error_code": code, "error_msg": msg.into()}),
        )
    }

    pub(super) fn rejection(r: Rejection) -> Self {
        match r {
            Rejection::Invalid(msg) => Self::hss("HSS.0001", msg),
            Rejection::NotFound(msg) => Self::hss("HSS.0011", msg),
        }
    }

    pub(super) fn gateway(
        status: StatusCode,
        code: &str,
        msg: impl Into<String>,
        request_id: &str,
    ) -> Self {
        Self::json(
            status,
            &serde_json::json!({"error_code": code, "error_msg": msg.into(), "request_id": request_id}),
        )
    }

    pub(super) fn throttled(request_id: &str, limit: u32, retry_after: u64) -> Self {
        let mut r = Self::gateway(
            StatusCode::TOO_MANY_REQUESTS,
            "APIGW.0308",
            format!(
                "The throttling threshold has been reached: policy user over ratelimit,limit:{limit},time:1 minute"
            ),
            request_id,
        );
        r.retry_after = Some(retry_after);
        r
    }

    pub(super) fn server_error() -> Self {
        Self::raw(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error_code":"HSS.0500","error_msg":"Internal server error (simulated)"}"#
                .to_vec(),
        )
    }

    pub(super) fn dropped() -> Self {
        let mut r = Self::raw(StatusCode::OK, Vec::new());
        r.drop_connection = true;
        r
    }

    /// Same status, but the body cut in half: never valid JSON.
    pub(super) fn malformed(mut self) -> Self {
        if self.body.len() >= 2 {
            self.body.truncate(self.body.len() / 2);
        } else {
            self.body = b"{\"".to_vec();
        }
        self
    }

    /// The status the call counters see: 0 for a dropped connection.
    pub(super) fn counted_status(&self) -> u16 {
        if self.drop_connection {
            0
        } else {
            self.status.as_u16()
        }
    }

    pub(super) fn into_response(self, request_id: &str) -> Response {
        let has_body = !self.body.is_empty();
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", v);
        }
        if has_body {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json;charset=UTF-8"),
            );
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(token) = self.subject_token.as_deref()
            && let Ok(v) = HeaderValue::from_str(token)
        {
            headers.insert("x-subject-token", v);
        }
        if self.drop_connection {
            response.extensions_mut().insert(DropConnection);
        }
        response
    }
}

/// Marks a response that must not be written: the accept loop closes the connection instead.
#[derive(Debug, Clone, Copy)]
pub(super) struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by a commit-then-drop fault")
    }
}

impl std::error::Error for DropConnection {}
