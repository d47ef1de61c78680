//! The Huawei Cloud HSS v5 client: nothing in here knows about Kubernetes, and no HTTP server
//! is in its dependency tree (`cargo tree -p hss-client`).
//!
//! - [`signer`]: SDK-HMAC-SHA256, exactly as the official SDKs sign.
//! - [`credentials`]: permanent AK/SK, temporary AK/SK + security token, IAM tokens.
//! - [`sources`]: the SDK's credential sources without long-lived keys, refreshed;
//!   [`chain`]: which source the environment names, in the SDK's order.
//! - [`endpoint`]: region table and explicit overrides; [`allow`]: where credentials may go.
//! - [`text`]: bounds on what servers say; [`limits`]: the bounds this client keeps.
//! - [`model`]: request and response bodies; [`wire`]: the SDK's JSON and query encodings.
//! - [`results`]: the result APIs a finished cluster scan is read with, and the Kubernetes
//!   resources each cluster risk affects.
//! - [`budget`]: the per-(credential, project, API) rate budget every call draws from;
//!   [`adaptive`]: the rate a source allows itself after 429s; [`clock`]: HSS's clock offset.
//! - [`client`]: the HTTP client; [`Error`] and [`Outcome`]: what a call's failure was, and
//!   whether it may have executed.
//! - [`guard`]: one refused signature guards its access key for every holder.
//! - [`resolve`]: finding the task an ambiguous CreateTask may have created.
//!
//! Each type has one public path: its module's. Only [`Api`], [`Error`] and [`Outcome`],
//! which every module uses, sit at the root.

pub mod adaptive;
pub mod allow;
pub mod budget;
pub mod chain;
pub mod client;
pub mod clock;
pub mod credentials;
pub mod endpoint;
mod error;
pub mod guard;
pub mod limits;
pub mod model;
pub mod resolve;
pub mod results;
pub mod signer;
pub mod sources;
pub mod text;
pub mod transport;
pub mod wire;

pub use error::{Error, Outcome};

/// The HSS APIs this operator calls. Each has its own rate budget at HSS (5 calls per minute
/// per user), so each has its own bucket here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    CreateTask,
    ListTasks,
    ListTaskResources,
    RetryTask,
    ShowTaskStatistics,
    ListClusters,
    ListClusterRisks,
    ListClusterReports,
    ListIacFileRisks,
    ListClusterRiskAffectResources,
    IamToken,
}

impl Api {
    pub const ALL: [Api; 11] = [
        Api::CreateTask,
        Api::ListTasks,
        Api::ListTaskResources,
        Api::RetryTask,
        Api::ShowTaskStatistics,
        Api::ListClusters,
        Api::ListClusterRisks,
        Api::ListClusterReports,
        Api::ListIacFileRisks,
        Api::ListClusterRiskAffectResources,
        Api::IamToken,
    ];

    /// Bounded name, used in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::CreateTask => "CreateTask",
            Api::ListTasks => "ListTasks",
            Api::ListTaskResources => "ListTaskResources",
            Api::RetryTask => "RetryTask",
            Api::ShowTaskStatistics => "ShowTaskStatistics",
            Api::ListClusters => "ListKubernetesClusterDetails",
            Api::ListClusterRisks => "ListClusterRisks",
            Api::ListClusterReports => "ListSecurityCheckClusterReports",
            Api::ListIacFileRisks => "ListIacFileRisks",
            Api::ListClusterRiskAffectResources => "ListClusterRiskAffectResources",
            Api::IamToken => "KeystoneCreateUserTokenByPassword",
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
