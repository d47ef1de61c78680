//! The Huawei Cloud HSS v5 client. Nothing in here knows about Kubernetes.
//!
//! - [`signer`]: SDK-HMAC-SHA256, exactly as the official SDKs sign.
//! - [`credentials`]: permanent AK/SK, temporary AK/SK + security token, IAM tokens.
//! - [`sources`]: the SDK's credential sources without long-lived keys, refreshed.
//! - [`endpoint`]: region table and explicit overrides; [`allow`]: where credentials may go.
//! - [`text`]: bounds on what servers say.
//! - [`model`]: request and response bodies.
//! - [`results`]: the result APIs a finished cluster scan is read with.
//! - [`budget`]: the per-(credential, project, API) rate budget every call draws from.
//! - [`client`]: the HTTP client, error decoding and outcome classification.

pub mod adaptive;
pub mod allow;
pub mod budget;
pub mod client;
pub mod clock;
pub mod credentials;
pub mod endpoint;
pub mod error;
pub mod model;
pub mod resolve;
pub mod results;
pub mod signer;
pub mod sources;
pub mod text;
pub mod wire;

pub use budget::{Budget, BudgetKey, Permit};
pub use client::{Error, HssClient, Outcome};
pub use credentials::Credentials;
pub use endpoint::Endpoint;

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
    IamToken,
}

impl Api {
    pub const ALL: [Api; 10] = [
        Api::CreateTask,
        Api::ListTasks,
        Api::ListTaskResources,
        Api::RetryTask,
        Api::ShowTaskStatistics,
        Api::ListClusters,
        Api::ListClusterRisks,
        Api::ListClusterReports,
        Api::ListIacFileRisks,
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
            Api::IamToken => "KeystoneCreateUserTokenByPassword",
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
