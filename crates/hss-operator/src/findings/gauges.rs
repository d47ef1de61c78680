//! Findings as Prometheus gauges: the latest finished scan per cluster, per namespace of the
//! ClusterScanTasks that read them. [`Gauges::register`] defines the families; the controller,
//! which records them, registers them.
//!
//! - `hss_operator_findings{namespace, cluster_id, scan_type, level}`: risk items (scan_type
//!   risk_assessment or benchmark; level high, medium, low or tips).
//! - `hss_operator_cluster_check_findings{namespace, cluster_id, check}`: security-check counts
//!   (check image_vulnerabilities, risky_configs or privileged_containers; scan type
//!   cluster_vul).
//! - `hss_operator_cluster_last_scan_timestamp_seconds{namespace, cluster_id}`.
//! - `hss_operator_iac_findings{namespace, file_id, level}`: an IaC file's risks.
//!
//! `namespace` is the namespace of the ClusterScanTask whose read wrote the series. Behind the
//! chart's ServiceMonitor (`honorLabels` off) Prometheus keeps it as `exported_namespace`, its
//! own `namespace` label being the operator's; the chart's `HssClusterHighRisks` puts it back.
//!
//! # Guarantees
//! - Findings stay with their owners: series are kept per (namespace, cluster) and
//!   (namespace, file). A read recorded for one namespace never removes, overwrites or evicts
//!   series written for another, also when both read the same cluster.
//! - Within a namespace, a cluster's series are replaced as a whole by a newer read (the scan
//!   types it did not read go), never by an older one.
//! - Cardinality: per (namespace, cluster) at most 2 x 4 + 3 + 1 = 12 series, per
//!   (namespace, file) 4; each namespace keeps at most [`MAX_CLUSTERS`] clusters and as many
//!   files (its least recently read are dropped), so at most 80,000 series per namespace and
//!   80,000 x (namespaces with findings) in all. With `--tenancy policy` a namespace reads only
//!   the clusters its policies grant, so in practice the bound is the sum of the granted
//!   clusters (x 12) plus the files read.
//!
//! # Assumptions
//! Namespaces are created by cluster administrators, not by tenants: the number of
//! namespaces bounds the total, as it bounds every other per-namespace resource.
//!
//! # Caveats
//! After a restart, series come back from the objects' `status.findings`, which lists at most
//! 50 clusters per object. Series of a namespace that was deleted stay until the process
//! restarts (as those of a cluster no longer scanned do).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{family::Family, gauge::Gauge};
use prometheus_client::registry::{Registry, Unit};

use crate::crd::findings::{ClusterFindings, FileFindings};
use hss_client::results::{RiskLevel, RiskType};

/// Clusters (and, separately, files) kept in the gauges per namespace.
pub const MAX_CLUSTERS: usize = 5_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FindingLabels {
    namespace: String,
    cluster_id: String,
    scan_type: &'static str,
    level: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    namespace: String,
    cluster_id: String,
    check: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    namespace: String,
    file_id: String,
    level: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    namespace: String,
    cluster_id: String,
}

const CHECKS: [&str; 3] = [
    "image_vulnerabilities",
    "risky_configs",
    "privileged_containers",
];

/// Read time (epoch ms) per id, per namespace.
type Seen = HashMap<String, HashMap<String, i64>>;

/// The findings gauge families.
#[derive(Default)]
pub struct Gauges {
    findings: Family<FindingLabels, Gauge>,
    checks: Family<CheckLabels, Gauge>,
    last_scan: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    files: Family<FileLabels, Gauge>,
    /// The read time each (namespace, cluster)'s series come from.
    seen: Mutex<Seen>,
    /// The same for (namespace, file).
    seen_files: Mutex<Seen>,
}

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gauges").finish_non_exhaustive()
    }
}

fn static_scan_type(name: &str) -> Option<&'static str> {
    RiskType::ALL
        .iter()
        .map(|t| t.as_str())
        .find(|t| *t == name)
}

impl Gauges {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "findings",
            "Risk items of the latest finished scan per namespace and cluster, by scan type and level",
            self.findings.clone(),
        );
        registry.register(
            "cluster_check_findings",
            "Security-check counts (cluster_vul) of the latest finished scan per namespace and cluster",
            self.checks.clone(),
        );
        registry.register(
            "iac_findings",
            "Risks of the latest finished IaC scan per namespace and file, by level",
            self.files.clone(),
        );
        registry.register_with_unit(
            "cluster_last_scan_timestamp",
            "When HSS last scanned the cluster, as read with its findings from the namespace (Unix time)",
            Unit::Seconds,
            self.last_scan.clone(),
        );
    }

    fn remove(&self, namespace: &str, id: &str) {
        for st in RiskType::ALL {
            for level in RiskLevel::ALL {
                self.findings.remove(&FindingLabels {
                    namespace: namespace.to_string(),
                    cluster_id: id.to_string(),
                    scan_type: st.as_str(),
                    level: level.as_str(),
                });
            }
        }
        for check in CHECKS {
            self.checks.remove(&CheckLabels {
                namespace: namespace.to_string(),
                cluster_id: id.to_string(),
                check,
            });
        }
        self.last_scan.remove(&ClusterLabels {
            namespace: namespace.to_string(),
            cluster_id: id.to_string(),
        });
    }

    fn remove_file(&self, namespace: &str, id: &str) {
        for level in RiskLevel::ALL {
            self.files.remove(&FileLabels {
                namespace: namespace.to_string(),
                file_id: id.to_string(),
                level: level.as_str(),
            });
        }
    }

    /// Records the clusters of one read made at `read_at_ms` by an object in `namespace`;
    /// clusters that namespace already recorded from a later read keep theirs. Other
    /// namespaces' series are not touched.
    pub fn record(&self, namespace: &str, clusters: &[ClusterFindings], read_at_ms: i64) {
        let mut all = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let seen = all.entry(namespace.to_string()).or_default();
        for c in clusters {
            if seen.get(&c.cluster_id).is_some_and(|at| *at > read_at_ms) {
                continue;
            }
            self.remove(namespace, &c.cluster_id);
            seen.insert(c.cluster_id.clone(), read_at_ms);
            let mut scanned_ms = None;
            for s in &c.scans {
                let Some(scan_type) = static_scan_type(&s.scan_type) else {
                    continue;
                };
                for level in RiskLevel::ALL {
                    self.findings
                        .get_or_create(&FindingLabels {
                            namespace: namespace.to_string(),
                            cluster_id: c.cluster_id.clone(),
                            scan_type,
                            level: level.as_str(),
                        })
                        .set(i64::from(s.counts.get(level.as_str())));
                }
                scanned_ms = scanned_ms.max(s.scanned_at.as_ref().map(|t| t.0.as_millisecond()));
            }
            if let Some(check) = &c.security_check {
                for (name, value) in CHECKS.iter().zip([
                    check.image_vulnerabilities,
                    check.risky_configs,
                    check.privileged_containers,
                ]) {
                    self.checks
                        .get_or_create(&CheckLabels {
                            namespace: namespace.to_string(),
                            cluster_id: c.cluster_id.clone(),
                            check: name,
                        })
                        .set(value);
                }
                scanned_ms =
                    scanned_ms.max(check.scanned_at.as_ref().map(|t| t.0.as_millisecond()));
            }
            self.last_scan
                .get_or_create(&ClusterLabels {
                    namespace: namespace.to_string(),
                    cluster_id: c.cluster_id.clone(),
                })
                .set(scanned_ms.unwrap_or(read_at_ms) as f64 / 1000.0);
        }
        for oldest in evict_oldest(seen) {
            self.remove(namespace, &oldest);
        }
    }

    /// Records the files of one IaC read made at `read_at_ms` by an object in `namespace`,
    /// like [`Gauges::record`].
    pub fn record_files(&self, namespace: &str, files: &[FileFindings], read_at_ms: i64) {
        let mut all = self.seen_files.lock().unwrap_or_else(|e| e.into_inner());
        let seen = all.entry(namespace.to_string()).or_default();
        for f in files {
            if seen.get(&f.file_id).is_some_and(|at| *at > read_at_ms) {
                continue;
            }
            seen.insert(f.file_id.clone(), read_at_ms);
            for level in RiskLevel::ALL {
                self.files
                    .get_or_create(&FileLabels {
                        namespace: namespace.to_string(),
                        file_id: f.file_id.clone(),
                        level: level.as_str(),
                    })
                    .set(i64::from(f.counts.get(level.as_str())));
            }
        }
        for oldest in evict_oldest(seen) {
            self.remove_file(namespace, &oldest);
        }
    }

    /// Clusters currently in the gauges, over every namespace.
    pub fn clusters(&self) -> usize {
        let all = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        all.values().map(HashMap::len).sum()
    }

    /// Clusters currently in the gauges for `namespace`.
    pub fn clusters_in(&self, namespace: &str) -> usize {
        let all = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        all.get(namespace).map_or(0, HashMap::len)
    }
}

/// Forgets the entries read longest ago (ties by id) until at most [`MAX_CLUSTERS`] remain,
/// and returns their ids, so their series can go too.
fn evict_oldest(seen: &mut HashMap<String, i64>) -> Vec<String> {
    let mut evicted = Vec::new();
    while seen.len() > MAX_CLUSTERS {
        let Some(oldest) = seen
            .iter()
            .min_by_key(|(id, at)| (**at, (*id).clone()))
            .map(|(id, _)| id.clone())
        else {
            break;
        };
        seen.remove(&oldest);
        evicted.push(oldest);
    }
    evicted
}
