//! The network half of each source: one fetch of temporary credentials, with the SDK's
//! requests byte for byte where the server could tell (paths, headers, JSON bodies with
//! Python's `json.dumps` separators), and the SDK's rules for the metadata service's
//! 401/404/405/503.

use std::{path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Error, Temporary};
use crate::{endpoint::Endpoint, text, wire::sdk_json};

/// The SDK's timeouts: 5 s for pod identity, 3 s for the metadata service.
const POD_IDENTITY_TIMEOUT: Duration = Duration::from_secs(5);
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);
/// `X-Metadata-Token-Ttl-Seconds` the SDK asks for (6 h).
const METADATA_TOKEN_TTL: u64 = 6 * 3600;
/// How long the SDK goes on without a metadata session token before trying for one again.
const METADATA_TOKEN_RETRY: Duration = Duration::from_secs(24 * 3600);
/// What the metadata service says when the ECS has no agency: not a token problem.
const NO_AGENCY: &str = "Please configure Cloud Service Agency first";
/// Federation asks IAM for credentials of this lifetime (the SDK's 6 h).
pub const FEDERATION_DURATION_SECONDS: u64 = 6 * 3600;
/// Credential documents are small; a larger reply is not one.
const MAX_REPLY: usize = 64 * 1024;

/// Where an ID token comes from: a file read on every fetch, or a fixed value.
pub enum IdToken {
    File(PathBuf),
    Value(SecretString),
}

impl IdToken {
    fn read(&self, source_name: &'static str) -> Result<SecretString, Error> {
        match self {
            IdToken::Value(v) => Ok(v.clone()),
            IdToken::File(path) => read_token_file(source_name, path),
        }
    }
}

/// The SDK's `_get_content`: the file's content, trimmed; missing or empty is an error.
pub fn read_token_file(source_name: &'static str, path: &PathBuf) -> Result<SecretString, Error> {
    let content = std::fs::read_to_string(path).map_err(|e| Error::Misconfigured {
        source_name,
        reason: format!("failed to read token file {}: {e}", path.display()),
    })?;
    let content = content.trim();
    if content.is_empty() {
        return Err(Error::Misconfigured {
            source_name,
            reason: format!("token file {} is empty", path.display()),
        });
    }
    Ok(SecretString::from(content.to_string()))
}

/// One source's fetch.
pub enum Fetcher {
    /// CCE Pod Identity: `POST uri` with the token file's content as `Authorization`.
    PodIdentity { uri: String, token_file: PathBuf },
    /// ECS agency: the metadata service, with its session token (IMDSv2-like) when offered.
    Metadata {
        endpoint: String,
        session: tokio::sync::Mutex<MetadataSession>,
    },
    /// IAM federation with an ID token.
    Federation {
        iam: Endpoint,
        idp_id: String,
        id_token: IdToken,
    },
    /// STS assume-agency-with-OIDC.
    Oidc(Box<OidcRequest>),
    /// Unit tests' source: what the closure returns, no network.
    #[cfg(test)]
    Scripted(Box<dyn Fn() -> Result<Temporary, Error> + Send + Sync>),
}

/// What `assume-with-oidc` is asked for.
pub struct OidcRequest {
    pub sts: Endpoint,
    pub provider_urn: String,
    pub agency_urn: String,
    pub id_token: IdToken,
    pub session_name: String,
    pub duration_seconds: u64,
    pub policy: Option<String>,
    pub policy_ids: Option<Vec<String>>,
}

/// The metadata service's session token, and when the last try for one was.
#[derive(Default)]
pub struct MetadataSession {
    token: Option<SecretString>,
    last_try: Option<tokio::time::Instant>,
}

impl Fetcher {
    pub fn metadata(endpoint: &str) -> Self {
        Fetcher::Metadata {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            session: tokio::sync::Mutex::new(MetadataSession::default()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Fetcher::PodIdentity { .. } => "pod-identity",
            Fetcher::Metadata { .. } => "metadata",
            Fetcher::Federation { .. } => "federation",
            Fetcher::Oidc(_) => "oidc",
            #[cfg(test)]
            Fetcher::Scripted(_) => "scripted",
        }
    }

    /// The metadata service and Pod Identity: link-local, plain http, reached without a proxy
    /// (see [`crate::chain::Setup::direct`]).
    pub fn is_link_local(&self) -> bool {
        matches!(self, Fetcher::PodIdentity { .. } | Fetcher::Metadata { .. })
    }

    /// Endpoints, paths and ids; never a token.
    pub fn describe(&self) -> String {
        match self {
            Fetcher::PodIdentity { uri, token_file } => format!(
                "CCE Pod Identity at {} with token file {}",
                crate::endpoint::redacted(uri),
                token_file.display()
            ),
            Fetcher::Metadata { endpoint, .. } => format!("ECS agency via {endpoint}"),
            Fetcher::Federation { iam, idp_id, .. } => {
                format!("IAM federation at {iam} with identity provider {idp_id}")
            }
            Fetcher::Oidc(r) => format!(
                "STS assume-with-oidc at {} for agency {}",
                r.sts, r.agency_urn
            ),
            #[cfg(test)]
            Fetcher::Scripted(_) => "scripted".into(),
        }
    }

    pub(super) async fn fetch(&self, http: &reqwest::Client) -> Result<Temporary, Error> {
        let name = self.name();
        match self {
            Fetcher::PodIdentity { uri, token_file } => {
                let token = read_token_file(name, token_file)?;
                let req = http
                    .post(uri)
                    .header("Authorization", token.expose_secret())
                    .header("Content-Type", "application/json")
                    .body("{}")
                    .timeout(POD_IDENTITY_TIMEOUT);
                credential(name, uri, req).await
            }
            Fetcher::Metadata { endpoint, session } => {
                fetch_metadata(http, endpoint, &mut *session.lock().await).await
            }
            Fetcher::Federation {
                iam,
                idp_id,
                id_token,
            } => {
                let id_token = id_token.read(name)?;
                let url = iam.url("/v3.0/OS-AUTH/id-token/tokens", "");
                let body = sdk_json(&bodies::IdTokenAuth::new(id_token.expose_secret()));
                let req = http
                    .post(&url)
                    .header("X-Idp-Id", idp_id)
                    .header("Content-Type", "application/json;charset=UTF-8")
                    .body(body);
                let reply = send(name, &url, req).await?;
                check(name, reply.status, &reply.body)?;
                let unscoped = reply.subject_token.ok_or_else(|| Error::BadReply {
                    source_name: name,
                    reason: "IAM gave no X-Subject-Token for the ID token".into(),
                })?;
                let url = iam.url("/v3.0/OS-CREDENTIAL/securitytokens", "");
                let body = sdk_json(&bodies::TokenAuth::new(
                    unscoped.expose_secret(),
                    FEDERATION_DURATION_SECONDS,
                ));
                let req = http
                    .post(&url)
                    .header("Content-Type", "application/json;charset=UTF-8")
                    .body(body);
                credential(name, &url, req).await
            }
            Fetcher::Oidc(r) => {
                let id_token = r.id_token.read(name)?;
                let payload = bodies::AssumeWithOidc {
                    provider_urn: &r.provider_urn,
                    agency_urn: &r.agency_urn,
                    agency_session_name: &r.session_name,
                    id_token: id_token.expose_secret(),
                    duration_seconds: r.duration_seconds,
                    policy: r.policy.as_deref(),
                    policy_ids: r.policy_ids.as_deref(),
                };
                let url = r.sts.url("/v5/agencies/assume-with-oidc", "");
                let req = http
                    .post(&url)
                    .header("Content-Type", "application/json;charset=UTF-8")
                    .body(sdk_json(&payload));
                credential(name, &url, req).await
            }
            #[cfg(test)]
            Fetcher::Scripted(f) => {
                tokio::task::yield_now().await;
                f()
            }
        }
    }
}

/// The SDK's metadata accessor: a session token when the service offers one (404/405/503 mean
/// it does not), the security key with it, and one new session token after a 401 that is not
/// about a missing agency.
async fn fetch_metadata(
    http: &reqwest::Client,
    endpoint: &str,
    session: &mut MetadataSession,
) -> Result<Temporary, Error> {
    const NAME: &str = "metadata";
    if session.token.is_none()
        && session
            .last_try
            .is_none_or(|at| at.elapsed() > METADATA_TOKEN_RETRY)
    {
        update_session(http, endpoint, session, false).await?;
    }
    let url = format!("{endpoint}/openstack/latest/securitykey");
    let get = |token: Option<&SecretString>| {
        let mut req = http.get(&url).timeout(METADATA_TIMEOUT);
        if let Some(t) = token {
            req = req.header("X-Metadata-Token", t.expose_secret());
        }
        req
    };
    let mut reply = send(NAME, &url, get(session.token.as_ref())).await?;
    if reply.status == 401 && !String::from_utf8_lossy(&reply.body).contains(NO_AGENCY) {
        update_session(http, endpoint, session, true).await?;
        reply = send(NAME, &url, get(session.token.as_ref())).await?;
    }
    check(NAME, reply.status, &reply.body)?;
    parse_credential(NAME, &reply.body)
}

async fn update_session(
    http: &reqwest::Client,
    endpoint: &str,
    session: &mut MetadataSession,
    must: bool,
) -> Result<(), Error> {
    const NAME: &str = "metadata";
    session.last_try = Some(tokio::time::Instant::now());
    let url = format!("{endpoint}/meta-data/latest/api/token");
    let req = http
        .put(&url)
        .header(
            "X-Metadata-Token-Ttl-Seconds",
            METADATA_TOKEN_TTL.to_string(),
        )
        .timeout(METADATA_TIMEOUT);
    let reply = send(NAME, &url, req).await?;
    match reply.status {
        200 => {
            session.token = Some(SecretString::from(
                String::from_utf8_lossy(&reply.body).into_owned(),
            ))
        }
        404 | 405 | 503 if !must => session.token = None,
        _ => check(NAME, reply.status.max(400), &reply.body)?,
    }
    Ok(())
}

/// What a source answered: its status, IAM's `X-Subject-Token` if any, the bounded body.
struct Reply {
    status: u16,
    subject_token: Option<SecretString>,
    body: Vec<u8>,
}

/// Temporary credentials from `req`: sent, checked, parsed.
async fn credential(
    source_name: &'static str,
    url: &str,
    req: reqwest::RequestBuilder,
) -> Result<Temporary, Error> {
    let reply = send(source_name, url, req).await?;
    check(source_name, reply.status, &reply.body)?;
    parse_credential(source_name, &reply.body)
}

async fn send(
    source_name: &'static str,
    url: &str,
    req: reqwest::RequestBuilder,
) -> Result<Reply, Error> {
    let transport = |source| Error::Transport {
        source_name,
        url: crate::endpoint::redacted(url),
        source,
    };
    let mut resp = req.send().await.map_err(transport)?;
    let status = resp.status().as_u16();
    let subject_token = resp
        .headers()
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(|v| SecretString::from(v.to_string()));
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_REPLY {
            return Err(Error::BadReply {
                source_name,
                reason: format!("reply larger than {MAX_REPLY} bytes"),
            });
        }
    }
    Ok(Reply {
        status,
        subject_token,
        body,
    })
}

/// 401 and 403 refuse the identity; other errors are the source's trouble.
fn check(source_name: &'static str, status: u16, body: &[u8]) -> Result<(), Error> {
    match status {
        200..=299 => Ok(()),
        400 | 401 | 403 => Err(Error::Refused {
            source_name,
            status,
            detail: error_detail(body),
        }),
        _ => Err(Error::Unavailable {
            source_name,
            status,
        }),
    }
}

/// A bounded error code or message from an error body, if it has one.
fn error_detail(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        error_code: Option<String>,
        error_msg: Option<String>,
        error: Option<serde_json::Value>,
    }
    let b: Body = serde_json::from_slice(body).ok()?;
    let text = b.error_code.or(b.error_msg).or_else(|| {
        b.error
            .as_ref()
            .and_then(|e| e.get("message").or_else(|| e.get("code")))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
    })?;
    Some(text::bounded(&text, text::CODE))
}

/// The SDK's request bodies, fields in its order (Python dicts keep insertion order).
mod bodies {
    use serde::Serialize;

    #[derive(Serialize)]
    pub struct IdTokenAuth<'a> {
        auth: IdTokenInner<'a>,
    }
    #[derive(Serialize)]
    struct IdTokenInner<'a> {
        id_token: Id<'a>,
    }
    #[derive(Serialize)]
    struct Id<'a> {
        id: &'a str,
    }
    impl<'a> IdTokenAuth<'a> {
        pub fn new(token: &'a str) -> Self {
            Self {
                auth: IdTokenInner {
                    id_token: Id { id: token },
                },
            }
        }
    }

    #[derive(Serialize)]
    pub struct TokenAuth<'a> {
        auth: TokenIdentity<'a>,
    }
    #[derive(Serialize)]
    struct TokenIdentity<'a> {
        identity: TokenMethod<'a>,
    }
    #[derive(Serialize)]
    struct TokenMethod<'a> {
        methods: [&'static str; 1],
        token: TokenWithDuration<'a>,
    }
    #[derive(Serialize)]
    struct TokenWithDuration<'a> {
        id: &'a str,
        duration_seconds: u64,
    }
    impl<'a> TokenAuth<'a> {
        pub fn new(token: &'a str, duration_seconds: u64) -> Self {
            Self {
                auth: TokenIdentity {
                    identity: TokenMethod {
                        methods: ["token"],
                        token: TokenWithDuration {
                            id: token,
                            duration_seconds,
                        },
                    },
                },
            }
        }
    }

    #[derive(Serialize)]
    pub struct AssumeWithOidc<'a> {
        pub provider_urn: &'a str,
        pub agency_urn: &'a str,
        pub agency_session_name: &'a str,
        pub id_token: &'a str,
        pub duration_seconds: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub policy: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub policy_ids: Option<&'a [String]>,
    }
}

/// The SDK's `_process_credential`: an optional `credential`/`credentials` wrapper, three
/// spellings of each field, `expires_at` or `expiration`.
pub fn parse_credential(source_name: &'static str, body: &[u8]) -> Result<Temporary, Error> {
    let bad = |reason: &str| Error::BadReply {
        source_name,
        reason: reason.to_string(),
    };
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| bad("the reply is not JSON"))?;
    let map = doc
        .get("credential")
        .or_else(|| doc.get("credentials"))
        .unwrap_or(&doc);
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| map.get(*n).and_then(|v| v.as_str()))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let ak =
        field(&["access", "accessKeyId", "access_key_id"]).ok_or_else(|| bad("no access key"))?;
    let sk = field(&["secret", "secretAccessKey", "secret_access_key"])
        .ok_or_else(|| bad("no secret key"))?;
    let token = field(&["securitytoken", "securityToken", "security_token"])
        .ok_or_else(|| bad("no security token"))?;
    let expires = field(&["expires_at", "expiration"]).ok_or_else(|| bad("no expires_at"))?;
    let expires: jiff::Timestamp = expires
        .parse()
        .map_err(|_| bad("expires_at is not an RFC 3339 time"))?;
    let left = expires.as_second() - jiff::Timestamp::now().as_second();
    let lifetime = u64::try_from(left)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| bad("the credentials have already expired"))?;
    if [ak, sk, token]
        .iter()
        .any(|v| v.chars().any(char::is_control))
    {
        return Err(bad("control characters in the credentials"));
    }
    Ok(Temporary {
        ak: text::bounded(ak, text::NAME),
        sk: SecretString::from(sk.to_string()),
        security_token: SecretString::from(token.to_string()),
        lifetime,
    })
}
