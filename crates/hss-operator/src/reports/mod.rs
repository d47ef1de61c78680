//! A finished scan's findings as the reports Kubernetes' security tools share: OpenReports
//! `Report`s (`openreports.io/v1alpha1`) or, where only the older API is served, the Policy
//! WG's `PolicyReport`s (`wgpolicyk8s.io/v1alpha2`), in the ClusterScanTask's namespace and
//! owned by it. Policy Reporter, Rancher and Open Cluster Management read them beside
//! Kyverno's, Falco's and Trivy's.
//!
//! # Protocol
//! After a findings read ([`crate::findings`]) the controller keeps, per cluster (cluster_scan)
//! or per IaC file (iac_scan), the full counts by level and the worst `--report-max-results`
//! rows ([`Rows`]). Right after the read it writes one report per cluster or file
//! ([`build`]), named `hss-<task>-<cluster or file>` ([`report_name`]), by server-side apply
//! with the operator's field manager: a re-run replaces, never duplicates; a report the process
//! already wrote with the same content is not written again.
//!
//! Which kind is written ([`Mode`]): `auto` takes OpenReports when the API server serves it,
//! else PolicyReport when served, else none; the answer is kept for [`writer::RECHECK`] and a
//! write answered 404 (the CRD went away) forgets it, so CRDs installed later are found.
//!
//! Guarantees: every report is owned by its ClusterScanTask (deleted with it); `summary`
//! counts every finding of its cluster or file, cut results or not; at most
//! `--report-max-results` results, worst first, and at most [`MAX_BYTES`] of JSON whatever the
//! server's strings hold; each string HSS sent is cut to a bound ([`build`]).
//!
//! With `--self-cluster-id`, a scan of the operator's own cluster also names the resources its
//! worst risks affect and writes one report per affected watched namespace, labelled with the
//! scan's uid instead of owned ([`affected`]); those are replaced at each write of the scan's
//! reports (a namespace no longer affected loses its report) and deleted by its finalizer.
//!
//! Assumptions: the report CRDs are the consumers' to install (Kyverno's or Policy Reporter's
//! charts, or the reports-api release); the operator never installs or changes them.
//!
//! Caveats: reports are written once, when the findings are read; a write that fails is
//! recorded in condition `ReportsWritten` and not retried (the findings in status stay right).
//! A ClusterScanTask's reports describe its own scan; HSS keeps only the latest findings per
//! cluster, as `status.findings` says.
//!
//! Errors: [`Error::Discover`] (asking the API server which kinds it serves),
//! [`Error::Write`] (the apply) and [`Error::Prune`] (listing or deleting a scan's namespaced
//! reports).

pub mod affected;
mod build;
pub mod writer;

pub use build::{
    Group, MAX_BYTES, Owner, Row, Rows, Subject, build, build_namespaced, namespaced, report_name,
    result_of, severity_of,
};
pub use writer::{Writer, Written};

/// Which report kind is written (`--reports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Mode {
    /// OpenReports when served, else PolicyReport when served, else none.
    #[default]
    Auto,
    /// OpenReports `Report` only.
    Openreports,
    /// wgpolicyk8s.io `PolicyReport` only.
    Policyreport,
    /// No reports.
    Off,
}

impl Mode {
    /// The kinds this mode may write, preferred first.
    pub fn kinds(self) -> &'static [Kind] {
        match self {
            Mode::Auto => &[Kind::OpenReports, Kind::PolicyReport],
            Mode::Openreports => &[Kind::OpenReports],
            Mode::Policyreport => &[Kind::PolicyReport],
            Mode::Off => &[],
        }
    }
}

/// A report kind the operator can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `openreports.io/v1alpha1` `Report`.
    OpenReports,
    /// `wgpolicyk8s.io/v1alpha2` `PolicyReport`.
    PolicyReport,
}

impl Kind {
    pub fn group(self) -> &'static str {
        match self {
            Kind::OpenReports => "openreports.io",
            Kind::PolicyReport => "wgpolicyk8s.io",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            Kind::OpenReports => "v1alpha1",
            Kind::PolicyReport => "v1alpha2",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Kind::OpenReports => "Report",
            Kind::PolicyReport => "PolicyReport",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::OpenReports => "reports",
            Kind::PolicyReport => "policyreports",
        }
    }

    pub fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.version())
    }
}

/// The flags of the reports (part of `hss-operator run`).
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Reports written for each finished scan's findings: `auto` (OpenReports when the API
    /// server serves it, else wgpolicyk8s.io PolicyReport when served, else none), `openreports`,
    /// `policyreport`, `off`.
    #[arg(id = "reports", long = "reports", env = "HSS_REPORTS", value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,

    /// Most results in one report (the worst first; its summary still counts every finding).
    #[arg(long, env = "HSS_REPORT_MAX_RESULTS", default_value_t = 200,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub report_max_results: u16,

    /// The HSS id of the cluster the operator runs in. A finished scan of it has the
    /// resources its worst risks affect looked up: named in its results, and one Report per
    /// affected namespace in that namespace (see `reports::affected`).
    #[arg(long, env = "HSS_SELF_CLUSTER_ID")]
    pub self_cluster_id: Option<String>,

    /// Most risks of the self cluster looked up per scan, the worst first (one
    /// ListClusterRiskAffectResources call each). 0: none.
    #[arg(long, env = "HSS_AFFECTED_MAX_RISKS", default_value_t = 20,
          value_parser = clap::value_parser!(u16).range(0..=200))]
    pub affected_max_risks: u16,
}

impl Default for ReportArgs {
    fn default() -> Self {
        Self {
            mode: Mode::Auto,
            report_max_results: 200,
            self_cluster_id: None,
            affected_max_risks: 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to ask the API server which report kinds it serves")]
    Discover(#[source] kube::Error),
    #[error("failed to write a report")]
    Write(#[source] kube::Error),
    #[error("failed to delete a scan's namespaced reports")]
    Prune(#[source] kube::Error),
}

impl Error {
    /// Bounded label for metrics and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Discover(_) => "discover_reports",
            Error::Write(_) => "write_report",
            Error::Prune(_) => "prune_reports",
        }
    }
}

#[cfg(test)]
mod tests;
