//! What a finished scan found: read from HSS's result APIs within the budget, and summarised
//! for `status.findings`, metrics, an Event and `submit`'s exit code.
//!
//! # Protocol
//! For each risk scan type of the task (risk_assessment, benchmark) ListClusterRisks, and for
//! cluster_vul ListSecurityCheckClusterReports, each paged at 200 rows:
//! for the clusters of the task's own results ([`own_clusters`]), whatever its range type:
//! - none: no call;
//! - one cluster: that cluster's rows only (`cluster_id` filter);
//! - several: one unfiltered listing serves them all, unless its first page shows that
//!   reading it whole takes more calls than one filtered listing per cluster, in which case the
//!   rest is read per cluster. The rows of every other cluster (of the project, however it
//!   came to have findings), and of (cluster, scan type) pairs whose scan failed in this task,
//!   are dropped.
//! - iac_scan: ListIacFileRisks per file (its rows do not name the file, so one listing cannot
//!   serve several), for the files of the task's results whose scan succeeded ([`own_files`]).
//!
//! Guarantees: at most [`MAX_PAGES`] calls per API per read (past that the summary says
//! `incomplete`); every call draws from the shared budget like every other HSS call; nothing
//! unbounded from the server reaches the summary (strings cut by `hss_client::text`).
//!
//! Assumptions: HSS keeps the latest findings per cluster, not per task; read right after the
//! task finished, they are this task's (a scan of the same cluster finishing in between would
//! show instead). Risk levels other than high, medium, low and tips are not counted.
//!
//! Caveats: the controller knows a task's results from its status, which keeps at most
//! [`crate::crd::cluster_scan_task::MAX_RESULTS`] of them (failed first); for a task over more
//! resources the others' findings are not read and the summary says `incomplete`. `submit`
//! pages through every result.
//!
//! Errors: [`Error::Hss`], with the HSS error's outcome deciding retry (the controller retries
//! transient ones with backoff; a rejection, e.g. missing IAM permissions for the result APIs,
//! is recorded once and not retried).

pub mod cache;
pub mod gate;
pub mod gauges;
mod summary;

use std::collections::BTreeSet;
use std::future::Future;

use cache::PageCache;
use hss_client::{
    self,
    client::HssClient,
    limits::MAX_PAGE,
    model::ScanType,
    results::{
        ClusterReport, ClusterRisk, IacRisk, ListClusterReportsResponse, ListClusterRisksResponse,
        ListIacFileRisksResponse, RiskType,
    },
};

pub use summary::{Summary, summarize, summarize_files};

/// Calls per API in one read (5,000 rows at 200 a page; a minute of budget per 5 calls).
pub const MAX_PAGES: u32 = 25;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the findings from HSS")]
    Hss(#[source] hss_client::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Hss(e) => e.category(),
        }
    }

    pub fn hss(&self) -> &hss_client::Error {
        match self {
            Error::Hss(e) => e,
        }
    }
}

/// The clusters whose findings are a task's own: those its results list and, for a
/// specific_cluster scan (`requested`), asked for. Pure.
///
/// HSS keeps findings per cluster, not per task, and an unfiltered listing has the rows of
/// every cluster of the project, among them clusters added after this task was created and
/// scanned by another task. Only the task's own results say which clusters it scanned, so
/// every read path (unfiltered, per cluster, shared pages, `submit`) keeps to this set.
pub fn own_clusters<'a>(
    requested: Option<&BTreeSet<String>>,
    results: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    results
        .into_iter()
        .filter(|id| requested.is_none_or(|r| r.contains(*id)))
        .map(str::to_owned)
        .collect()
}

/// The IaC files whose findings are a task's own: asked for, in its results, and not failed.
/// Pure.
pub fn own_files<'a>(
    requested: &BTreeSet<String>,
    results: impl IntoIterator<Item = &'a str>,
    failed: &BTreeSet<String>,
) -> BTreeSet<String> {
    results
        .into_iter()
        .filter(|id| requested.contains(*id) && !failed.contains(*id))
        .map(str::to_owned)
        .collect()
}

/// What was read, before summarising.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Read {
    pub risks: Vec<(RiskType, ClusterRisk)>,
    pub reports: Vec<ClusterReport>,
    /// IaC risks by file id.
    pub files: Vec<(String, IacRisk)>,
    /// Some listing was cut at [`MAX_PAGES`].
    pub incomplete: bool,
    /// Pages read (calls made, unless shared pages served them).
    pub calls: u32,
}

/// The risk type a scan type's findings are listed under, if any.
pub fn risk_type(scan_type: ScanType) -> Option<RiskType> {
    match scan_type {
        ScanType::RiskAssessment => Some(RiskType::RiskAssessment),
        ScanType::Benchmark => Some(RiskType::Benchmark),
        ScanType::ClusterVul => None,
    }
}

trait Row {
    fn cluster(&self) -> &str;
}

impl Row for ClusterRisk {
    fn cluster(&self) -> &str {
        &self.cluster_id
    }
}

impl Row for ClusterReport {
    fn cluster(&self) -> &str {
        &self.cluster_id
    }
}

/// Result pages shared between readers ([`cache`]): one per process.
#[derive(Debug, Default)]
pub struct Caches {
    pub risks: PageCache<ListClusterRisksResponse>,
    pub reports: PageCache<ListClusterReportsResponse>,
    pub files: PageCache<ListIacFileRisksResponse>,
}

/// Where a read may take pages from: the shared pages, fetched no earlier than `not_before`
/// (when the reader's task was seen finished).
#[derive(Debug, Clone, Copy)]
pub struct Shared<'a> {
    pub caches: &'a Caches,
    pub not_before: jiff::Timestamp,
}

fn page_key(
    hss: &HssClient,
    api: hss_client::Api,
    what: &str,
    cluster: Option<&str>,
    offset: u32,
) -> String {
    let b = hss.budget_key(api);
    let c = hss.config();
    format!(
        "{}|{}|{}|{}|{api}|{what}|{}|{offset}",
        b.endpoint,
        b.identity,
        c.project_id,
        c.enterprise_project_id.as_deref().unwrap_or(""),
        cluster.unwrap_or("")
    )
}

/// Reads the findings of `scan_types` for `clusters` (see the module's protocol), through
/// `shared` pages when given.
pub async fn read(
    hss: &HssClient,
    scan_types: &[ScanType],
    clusters: &BTreeSet<String>,
    shared: Option<Shared<'_>>,
) -> Result<Read, Error> {
    let mut out = Read::default();
    let wanted: BTreeSet<ScanType> = scan_types.iter().copied().collect();
    for rt in wanted.iter().filter_map(|s| risk_type(*s)) {
        let (rows, calls, cut) = read_rows(clusters, |cluster, offset| async move {
            let fetch = || hss.list_cluster_risks(rt, cluster.as_deref(), offset, MAX_PAGE);
            let page = match shared {
                Some(s) => {
                    let key = page_key(
                        hss,
                        hss_client::Api::ListClusterRisks,
                        rt.as_str(),
                        cluster.as_deref(),
                        offset,
                    );
                    s.caches.risks.get(&key, s.not_before, fetch).await?
                }
                None => fetch().await?,
            };
            Ok((page.total_num, page.data_list))
        })
        .await
        .map_err(Error::Hss)?;
        out.risks.extend(rows.into_iter().map(|r| (rt, r)));
        out.calls += calls;
        out.incomplete |= cut;
    }
    if wanted.contains(&ScanType::ClusterVul) {
        let (rows, calls, cut) = read_rows(clusters, |cluster, offset| async move {
            let fetch = || hss.list_cluster_reports(cluster.as_deref(), offset, MAX_PAGE);
            let page = match shared {
                Some(s) => {
                    let key = page_key(
                        hss,
                        hss_client::Api::ListClusterReports,
                        "",
                        cluster.as_deref(),
                        offset,
                    );
                    s.caches.reports.get(&key, s.not_before, fetch).await?
                }
                None => fetch().await?,
            };
            Ok((page.total_num, page.data_list))
        })
        .await
        .map_err(Error::Hss)?;
        out.reports = rows;
        out.calls += calls;
        out.incomplete |= cut;
    }
    Ok(out)
}

/// Reads the risks of each IaC file in `file_ids` (one filtered listing per file, at most
/// [`MAX_PAGES`] calls in all), through `shared` pages when given.
pub async fn read_files(
    hss: &HssClient,
    file_ids: &BTreeSet<String>,
    shared: Option<Shared<'_>>,
) -> Result<Read, Error> {
    let mut out = Read::default();
    for file in file_ids {
        let mut offset = 0u32;
        loop {
            if out.calls >= MAX_PAGES {
                out.incomplete = true;
                return Ok(out);
            }
            let fetch = || hss.list_iac_file_risks(file, offset, MAX_PAGE);
            let page = match shared {
                Some(s) => {
                    let key = page_key(
                        hss,
                        hss_client::Api::ListIacFileRisks,
                        "",
                        Some(file),
                        offset,
                    );
                    s.caches.files.get(&key, s.not_before, fetch).await
                }
                None => fetch().await,
            }
            .map_err(Error::Hss)?;
            out.calls += 1;
            let n = page.data_list.len();
            out.files
                .extend(page.data_list.into_iter().map(|r| (file.clone(), r)));
            offset = offset.saturating_add(MAX_PAGE);
            if n == 0 || i64::from(offset) >= page.total_num {
                break;
            }
        }
    }
    Ok(out)
}

fn pages_for(total: i64) -> u64 {
    u64::try_from(total.max(0))
        .unwrap_or(0)
        .div_ceil(u64::from(MAX_PAGE))
}

/// Pages through one listing for `clusters`: returns their rows, the pages read, and whether
/// the listing was cut at [`MAX_PAGES`].
async fn read_rows<T, F, Fut>(
    clusters: &BTreeSet<String>,
    mut page: F,
) -> Result<(Vec<T>, u32, bool), hss_client::Error>
where
    T: Row,
    F: FnMut(Option<String>, u32) -> Fut,
    Fut: Future<Output = Result<(i64, Vec<T>), hss_client::Error>>,
{
    let mut calls = 0u32;
    let mut rows = Vec::new();
    let ours = |r: &T| clusters.contains(r.cluster());
    if clusters.len() > 1 {
        let (total, first) = page(None, 0).await?;
        calls += 1;
        if pages_for(total) <= clusters.len() as u64 + 1 {
            let mut got = first.len();
            rows.extend(first.into_iter().filter(ours));
            let mut offset = MAX_PAGE;
            while (got as i64) < total {
                if calls >= MAX_PAGES {
                    return Ok((rows, calls, true));
                }
                let (_, more) = page(None, offset).await?;
                calls += 1;
                if more.is_empty() {
                    break;
                }
                got += more.len();
                rows.extend(more.into_iter().filter(ours));
                offset = offset.saturating_add(MAX_PAGE);
            }
            return Ok((rows, calls, false));
        }
    }
    for id in clusters {
        let mut offset = 0u32;
        loop {
            if calls >= MAX_PAGES {
                return Ok((rows, calls, true));
            }
            let (total, more) = page(Some(id.clone()), offset).await?;
            calls += 1;
            let n = more.len();
            rows.extend(more.into_iter().filter(|r| r.cluster() == id));
            offset = offset.saturating_add(MAX_PAGE);
            if n == 0 || i64::from(offset) >= total {
                break;
            }
        }
    }
    Ok((rows, calls, false))
}

#[cfg(test)]
mod tests;
