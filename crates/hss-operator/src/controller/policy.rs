//! Where a ClusterScanTask may send credentials: the tenant boundary.
//!
//! A user who may create ClusterScanTasks in one namespace must never make the operator use
//! its own credentials (or another tenant's) against a place or project the user chose. The
//! rule, checked before anything is sent:
//!
//! - With the operator's own credentials (no `spec.credentialsSecretRef`) the object may not
//!   move them: its endpoint and region must resolve to the operator's configured endpoint,
//!   and its project (and enterprise project) must be the operator's, or listed in
//!   `--allowed-project`.
//! - With its own Secret it may choose its project, and its endpoint: the operator's
//!   configured one, or one on the allow-list
//!   (`--allowed-endpoint`, default: the official HSS endpoint of every known region), and
//!   only over https unless `--allow-insecure-endpoints` is given (for tests and the
//!   simulator).
//!
//! A refusal sends nothing anywhere; the object ends `Failed` with the refusal's reason and a
//! Warning Event.

use crate::config::HssArgs;
use hss_client::{allow::AllowList, client::ClientConfig};

/// The operator's flags for this policy (part of `hss-operator run`; the endpoint allow-list
/// and `--allow-insecure-endpoints` are [`HssArgs`]', shared with `submit`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PolicyArgs {
    /// A project a ClusterScanTask may name while using the operator's own credentials
    /// (repeatable; default: none besides the operator's own).
    #[arg(
        long = "allowed-project",
        env = "HSS_ALLOWED_PROJECTS",
        value_delimiter = ','
    )]
    pub allowed_projects: Vec<String>,
}

impl PolicyArgs {
    /// The policy these flags and the HSS settings make.
    pub fn with<'a>(&'a self, hss: &'a HssArgs) -> Policy<'a> {
        Policy {
            endpoints: hss.allow_list(),
            projects: &self.allowed_projects,
            insecure_ok: hss.allow_insecure_endpoints,
        }
    }
}

/// The decision's inputs from the operator's configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy<'a> {
    /// Where an object's own Secret may go besides the operator's endpoint.
    pub endpoints: AllowList<'a>,
    /// Projects the operator's own credentials may be used with besides its own.
    pub projects: &'a [String],
    /// Plain http endpoints (tests and the simulator).
    pub insecure_ok: bool,
}

/// Why a ClusterScanTask's settings are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// PascalCase, for the condition and the Event.
    pub reason: &'static str,
    pub message: String,
}

/// What the object asked for, beside the operator's defaults.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// It names its own credentials Secret.
    pub own_secret: bool,
    /// The configuration its spec resolves to.
    pub config: &'a ClientConfig,
    /// The operator's configuration without the object's overrides (None: the operator has
    /// no usable default, e.g. no region or project configured).
    pub operator: Option<&'a ClientConfig>,
}

impl Policy<'_> {
    /// Decides. Pure.
    pub fn check(&self, req: Request<'_>) -> Result<(), Refusal> {
        let config = req.config;
        let operators_endpoint = req.operator.is_some_and(|o| o.endpoint == config.endpoint);
        if req.own_secret {
            // The operator's configured endpoint is the administrator's choice, not the
            // tenant's: the object's own credentials may always go there.
            if operators_endpoint {
                return Ok(());
            }
            if !self.endpoints.allows(&config.endpoint) {
                return Err(Refusal {
                    reason: "EndpointNotAllowed",
                    message: format!(
                        "endpoint {} is not on the operator's allow-list (--allowed-endpoint)",
                        config.endpoint
                    ),
                });
            }
            if !config.endpoint.is_https() && !self.insecure_ok {
                return Err(Refusal {
                    reason: "InsecureEndpoint",
                    message: format!(
                        "endpoint {} is not https; credentials would travel in clear",
                        config.endpoint
                    ),
                });
            }
            return Ok(());
        }
        let moved = |what: &str, value: &str| Refusal {
            reason: if what == "endpoint" {
                "EndpointNotAllowed"
            } else {
                "ProjectNotAllowed"
            },
            message: format!(
                "spec names {what} {value:?} but no credentialsSecretRef: the operator's own credentials are used only with its own {what}; name a Secret of your own to choose"
            ),
        };
        let Some(operator) = req.operator else {
            return Err(moved("endpoint", &config.endpoint.to_string()));
        };
        if !operators_endpoint {
            return Err(moved("endpoint", &config.endpoint.to_string()));
        }
        let project_ok = |p: &str, own: &str| p == own || self.projects.iter().any(|a| a == p);
        if !project_ok(&config.project_id, &operator.project_id) {
            return Err(moved("project", &config.project_id));
        }
        let eps = |c: &ClientConfig| c.enterprise_project_id.clone().unwrap_or_default();
        if eps(config) != eps(operator) {
            return Err(moved("enterpriseProjectId", &eps(config)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hss_client::endpoint::Endpoint;

    fn config(url: &str, project: &str) -> ClientConfig {
        ClientConfig::new(Endpoint::parse(url).expect("url"), project)
    }

    #[test]
    fn the_operators_credentials_never_move_to_a_place_the_object_chose() {
        let operator = config("https://hss.cn-north-4.myhuaweicloud.com", "p-own");
        let shared = ["p-shared".to_string()];
        let policy = Policy {
            projects: &shared,
            ..Default::default()
        };
        // (object's endpoint, project, allowed, reason)
        let cases = [
            (
                "https://hss.cn-north-4.myhuaweicloud.com",
                "p-own",
                None,
                "the operator's own place",
            ),
            (
                "https://hss.cn-north-4.myhuaweicloud.com",
                "p-shared",
                None,
                "an allowed project",
            ),
            (
                "http://attacker.example",
                "p-own",
                Some("EndpointNotAllowed"),
                "a chosen host",
            ),
            (
                "https://hss.ap-southeast-1.myhuaweicloud.com",
                "p-own",
                Some("EndpointNotAllowed"),
                "another region",
            ),
            (
                "https://hss.cn-north-4.myhuaweicloud.com",
                "p-victim",
                Some("ProjectNotAllowed"),
                "another project",
            ),
        ];
        for (url, project, refused, why) in cases {
            let got = policy.check(Request {
                own_secret: false,
                config: &config(url, project),
                operator: Some(&operator),
            });
            assert_eq!(got.err().map(|r| r.reason), refused, "{why}");
        }
        let mut eps = config("https://hss.cn-north-4.myhuaweicloud.com", "p-own");
        eps.enterprise_project_id = Some("all_granted_eps".into());
        assert_eq!(
            policy
                .check(Request {
                    own_secret: false,
                    config: &eps,
                    operator: Some(&operator),
                })
                .err()
                .map(|r| r.reason),
            Some("ProjectNotAllowed"),
            "another enterprise project"
        );
    }

    #[test]
    fn own_credentials_go_only_to_allowed_https_endpoints() {
        let default = Policy::default();
        let listed = [Endpoint::parse("http://127.0.0.1:8443").expect("valid")];
        let custom = Policy {
            endpoints: AllowList::new(&listed),
            ..Default::default()
        };
        let insecure_ok = Policy {
            insecure_ok: true,
            ..custom
        };
        // (policy, endpoint, refusal, reason)
        let cases = [
            (
                &default,
                "https://hss.eu-west-101.myhuaweicloud.eu",
                None,
                "official endpoint",
            ),
            (
                &default,
                "https://hss.example.internal",
                Some("EndpointNotAllowed"),
                "not listed",
            ),
            (
                &custom,
                "https://hss.cn-north-4.myhuaweicloud.com",
                Some("EndpointNotAllowed"),
                "a custom list replaces the default",
            ),
            (
                &custom,
                "http://127.0.0.1:8443",
                Some("InsecureEndpoint"),
                "listed, but plain http",
            ),
            (
                &insecure_ok,
                "http://127.0.0.1:8443",
                None,
                "plain http behind the test flag",
            ),
        ];
        for (policy, url, refused, why) in cases {
            let got = policy.check(Request {
                own_secret: true,
                config: &config(url, "p"),
                operator: None,
            });
            assert_eq!(got.err().map(|r| r.reason), refused, "{why}");
        }
        let operator = config("http://127.0.0.1:9000", "p-own");
        assert_eq!(
            default.check(Request {
                own_secret: true,
                config: &config("http://127.0.0.1:9000", "p-tenant"),
                operator: Some(&operator),
            }),
            Ok(()),
            "the operator's configured endpoint, with the object's own credentials and project"
        );
    }
}
