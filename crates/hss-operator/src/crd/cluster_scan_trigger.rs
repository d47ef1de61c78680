//! `ClusterScanTrigger`: creates ClusterScanTasks on a schedule, when Nodes join, when Kubernetes
//! is upgraded and on demand, like a CronJob creates Jobs, but frugal with HSS's 5 creates a
//! minute. The controller lives in [`crate::triggers`].

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::ObjectReference,
    apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time},
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::cluster_scan_task::ClusterScanTaskSpec;

/// Annotate a trigger with a new value to start one run: `kubectl annotate --overwrite
/// clusterscantrigger/NAME hss.scanops.dev/run-now="$(date +%s)"`.
pub const RUN_NOW_ANNOTATION: &str = "hss.scanops.dev/run-now";
/// Label on every run: the name of the trigger that created it.
pub const TRIGGER_LABEL: &str = "hss.scanops.dev/trigger";
/// Label on every run: why it was created (schedule, nodeJoined, kubernetesUpgraded, onDemand).
pub const RUN_REASON_LABEL: &str = "hss.scanops.dev/run-reason";
/// Annotation on every run: when the trigger decided to run it (trigger clock, RFC 3339).
pub const RUN_TIME_ANNOTATION: &str = "hss.scanops.dev/run-time";
/// Annotation on scheduled runs: the schedule time the run is for (RFC 3339).
pub const SCHEDULED_TIME_ANNOTATION: &str = "hss.scanops.dev/scheduled-time";
/// Longest trigger name: run names are `<trigger>-<10 hex digits>` and must stay label-sized.
pub const MAX_TRIGGER_NAME: usize = 52;

/// Starts HSS scans (ClusterScanTasks) on a cron schedule, when Nodes join, when Kubernetes is
/// upgraded, and on demand (annotation `hss.scanops.dev/run-now=<new value>`). Runs are
/// ClusterScanTasks owned by the trigger; at most one run starts per cooldown.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hss.scanops.dev",
    version = "v1alpha1",
    kind = "ClusterScanTrigger",
    namespaced,
    status = "ClusterScanTriggerStatus",
    shortname = "cstrigger",
    category = "hss",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Last Run","type":"date","jsonPath":".status.lastRunTime"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.lastRunReason"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.active[*].name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    cel,
    validation = Rule::new("size(self.metadata.name) <= 52")
        .message("the name of a ClusterScanTrigger is at most 52 characters (run names add 11)"),
    doc = "Starts HSS scans (ClusterScanTasks) on a schedule, on Node join, on Kubernetes upgrade and on demand."
)]
#[x_kube(
    validation = Rule::new("!has(self.timeZone) || has(self.schedule)")
        .message("timeZone applies to schedule; set schedule too"),
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterScanTriggerSpec {
    /// The ClusterScanTask each run creates: its spec, plus labels and annotations for the
    /// created objects.
    pub template: RunTemplate,

    /// Cron schedule, 5 fields (minute hour day-of-month month day-of-week), e.g.
    /// `0 2 * * *`, or one of @yearly, @monthly, @weekly, @daily, @hourly. Day of month and day
    /// of week match either (as in cron). Unset: no scheduled runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^\\\\s*(@[a-z]+|\\\\S+(\\\\s+\\\\S+){4})\\\\s*$')").message("schedule has 5 fields (minute hour day-of-month month day-of-week) or is a @macro such as @daily"))]
    pub schedule: Option<String>,

    /// IANA time zone the schedule is read in, e.g. `Europe/Berlin` or `Asia/Shanghai`.
    /// Default `UTC`. Requires schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$')").message("timeZone is an IANA name such as UTC or Europe/Berlin"))]
    pub time_zone: Option<String>,

    /// Cluster events that start a run. Unset: none. A trigger with neither schedule nor `on`
    /// is allowed: it runs only on demand (annotation hss.scanops.dev/run-now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<TriggerEvents>,

    /// Minimum time between the starts of two runs, whatever their cause, as a duration such as
    /// `10m`, `1h30m` or `0s`. A scheduled run that falls inside the cooldown is skipped; a
    /// Node join, upgrade or run-now request waits for the cooldown to end. Default `10m`.
    #[serde(default = "default_cooldown")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$')").message("cooldown is a non-negative duration such as 10m, 1h30m or 0s"))]
    pub cooldown: String,

    /// `Forbid` (default): while a run is unfinished, a scheduled run is skipped and other
    /// causes wait for it to finish. `Allow`: runs may overlap. There is no `Replace`: HSS
    /// cannot cancel a scan.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,

    /// Stops new runs from the schedule and cluster events (they are dropped, not replayed
    /// on resume). Run-now requests still start a run, like `kubectl create job --from`.
    /// Unfinished runs continue. Default false.
    #[serde(default)]
    pub suspend: bool,

    /// A scheduled run that could not start within this many seconds of its time (operator
    /// down, for example) is skipped. After downtime at most one missed run is made up, and
    /// only within this deadline. Unset: the latest missed run is always made up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,

    /// How many finished, fully successful runs to keep; older ones are deleted (deleting a
    /// finished run does not touch HSS). Default 3.
    #[serde(default = "default_successful_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_runs_history_limit: u32,

    /// How many finished runs that failed or partially failed to keep. Default 1.
    #[serde(default = "default_failed_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_runs_history_limit: u32,
}

fn default_cooldown() -> String {
    "10m".to_string()
}

fn default_successful_limit() -> u32 {
    3
}

fn default_failed_limit() -> u32 {
    1
}

/// What each run is created from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunTemplate {
    /// Labels and annotations for the created ClusterScanTasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,

    /// The ClusterScanTask spec of every run (see `kubectl explain clusterscantask.spec`).
    /// Editing it affects later runs only.
    #[schemars(schema_with = "template_spec_schema")]
    pub spec: ClusterScanTaskSpec,
}

/// Labels and annotations copied to every run, except the operator's own (prefix
/// `hss.scanops.dev/`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels for the created ClusterScanTasks. Labels with the prefix `hss.scanops.dev/` are
    /// not copied: the operator sets hss.scanops.dev/trigger and hss.scanops.dev/run-reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Annotations for the created ClusterScanTasks. Annotations with the prefix
    /// `hss.scanops.dev/` are not copied: they instruct the operator (adopt-task, resubmit) or
    /// record what it decided (run-time, scheduled-time), and a run must not start with an
    /// instruction its creator never gave for it; annotate the run itself where one is needed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The ClusterScanTask spec schema without its `self == oldSelf` rule: a ClusterScanTask's spec
/// is immutable, but the template a trigger creates them from may be edited.
fn template_spec_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = <ClusterScanTaskSpec as schemars::JsonSchema>::json_schema(generator);
    if let Some(obj) = schema.as_object_mut() {
        let emptied = match obj
            .get_mut("x-kubernetes-validations")
            .and_then(|v| v.as_array_mut())
        {
            Some(rules) => {
                rules.retain(|r| {
                    !r.get("rule")
                        .and_then(|x| x.as_str())
                        .is_some_and(|s| s.contains("oldSelf"))
                });
                rules.is_empty()
            }
            None => false,
        };
        if emptied {
            obj.remove("x-kubernetes-validations");
        }
    }
    schema
}

/// Cluster events that start a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerEvents {
    /// Run when Nodes join the cluster (a Node object created after the newest one the trigger
    /// had seen). A burst of joins gives one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_joined: Option<NodeJoined>,

    /// Run when the API server's version or the set of kubelet versions on the Nodes changes,
    /// once the change has settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_upgraded: Option<KubernetesUpgraded>,
}

/// Node join settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeJoined {
    /// Only Nodes with these labels count. Unset: every Node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// Seconds to wait after the first join is noticed before the run starts, so that Nodes
    /// joining together (a node pool scaling up) are scanned by one run, and new Nodes have
    /// time to become ready. Default 60.
    #[serde(default = "default_join_settle")]
    #[schemars(range(min = 0, max = 86400))]
    pub settle_seconds: u32,
}

fn default_join_settle() -> u32 {
    60
}

/// Kubernetes upgrade settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesUpgraded {
    /// Seconds the new set of versions must stay unchanged before the run starts, so that a
    /// rolling upgrade gives one run at its end rather than one per Node. Default 120.
    #[serde(default = "default_upgrade_settle")]
    #[schemars(range(min = 0, max = 86400))]
    pub settle_seconds: u32,
}

fn default_upgrade_settle() -> u32 {
    120
}

/// Whether runs may overlap.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum ConcurrencyPolicy {
    /// Runs may overlap.
    Allow,
    /// At most one unfinished run.
    #[default]
    Forbid,
}

/// Why a run was created.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RunReason {
    Schedule,
    NodeJoined,
    KubernetesUpgraded,
    OnDemand,
}

impl RunReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RunReason::Schedule => "schedule",
            RunReason::NodeJoined => "nodeJoined",
            RunReason::KubernetesUpgraded => "kubernetesUpgraded",
            RunReason::OnDemand => "onDemand",
        }
    }
}

/// Observed state, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterScanTriggerStatus {
    /// When the last run was created (trigger clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,

    /// Why the last run was created: schedule, nodeJoined, kubernetesUpgraded or onDemand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_reason: Option<RunReason>,

    /// Name of the last ClusterScanTask created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_name: Option<String>,

    /// The latest schedule time that was handled: run, skipped or missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,

    /// When the schedule fires next (absent when suspended or without schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,

    /// Runs that have not finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<ObjectReference>,

    /// When the last fully successful run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,

    /// What the last run whose findings were read found (its status.findings, totals only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_findings: Option<RunFindings>,

    /// The last hss.scanops.dev/run-now value that was acted on; setting the annotation to
    /// this value again does nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_now_acknowledged: Option<String>,

    /// Node join detection (only with on.nodeJoined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<ObservedNodes>,

    /// Version change detection (only with on.kubernetesUpgraded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<ObservedVersions>,

    /// Ready (the spec is usable) and RunPending (a run is due but waits for the cooldown,
    /// an unfinished run, or a change to settle).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The generation the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A run's findings in the trigger's status: totals of its `status.findings`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunFindings {
    /// The ClusterScanTask.
    pub run: String,
    /// When its findings were read.
    pub read_at: Time,
    pub total: crate::crd::findings::LevelCounts,
    pub clusters_read: u32,
    pub clusters_with_findings: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_check: Option<crate::crd::findings::SecurityCheck>,
}

/// What the trigger knows about Nodes matching on.nodeJoined.selector: a creation-time
/// watermark, not a list of Nodes, so its size does not grow with the cluster. Node names are
/// shown only where the trigger's namespace may list Nodes (see `newestNames`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedNodes {
    /// Matching Nodes at the last observation.
    pub count: u32,

    /// creationTimestamp of the newest matching Node seen; Nodes created later have joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_creation_time: Option<Time>,

    /// Names of the matching Nodes created exactly at newestCreationTime (at most 100). Listed
    /// only when the ServiceAccounts of the trigger's namespace may list Nodes (a
    /// SubjectAccessReview for `system:serviceaccount:<namespace>:default` and the groups of
    /// the namespace's ServiceAccounts); otherwise empty, since node names (on CCE often
    /// private IP addresses) are not for everyone who may read triggers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub newest_names: Vec<String>,

    /// The same Nodes as short hashes of their uids (at most 100): how a Node already seen is
    /// told from one that joined in the same second, without naming it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub newest_ids: Vec<String>,

    /// Joins noticed and not yet covered by a run.
    #[serde(default)]
    pub pending_joins: u32,

    /// When the first of the pending joins was noticed (trigger clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<Time>,
}

/// A set of Kubernetes versions: the API server's and the distinct kubelet versions. The
/// version strings are shown only where the trigger's namespace may list Nodes (as for
/// `nodes.newestNames`); otherwise the set is its fingerprint and counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionSet {
    /// The API server's git version, e.g. v1.30.2; only where the namespace may list Nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,

    /// Distinct kubelet versions on the Nodes, sorted (at most 20 listed; the fingerprint
    /// covers all); only where the namespace may list Nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub kubelets: Vec<String>,

    /// How many distinct kubelet versions the Nodes report (all of them, listed or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_versions: Option<u32>,

    /// Short hash of the API server version and all distinct kubelet versions: it changes
    /// when any of them does, which is all the trigger needs. It is a hash of public-looking
    /// strings, so it confirms a guess of them; it is not meant to hide versions from someone
    /// who may list Nodes or read `/version`.
    pub fingerprint: String,
}

/// Version change detection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedVersions {
    /// The versions the last run (or the first observation) covered.
    pub current: VersionSet,

    /// A different set of versions seen since `pendingSince`, waiting to settle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<VersionSet>,

    /// When `pending` was first seen in its present form (trigger clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<Time>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trigger(spec: serde_json::Value) -> ClusterScanTrigger {
        trigger_named("nightly", spec)
    }

    fn trigger_named(name: &str, mut spec: serde_json::Value) -> ClusterScanTrigger {
        if spec.get("template").is_none() {
            spec["template"] = json!({"spec": {"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["benchmark"], "rangeType": "all_cluster"}}});
        }
        serde_json::from_value(json!({
            "apiVersion": "hss.scanops.dev/v1alpha1",
            "kind": "ClusterScanTrigger",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }))
        .expect("spec shape is valid")
    }

    #[test]
    fn cel_rules_table() {
        // (spec, admitted, reason)
        let cases = [
            (json!({}), true, "an on-demand-only trigger is allowed"),
            (json!({"schedule": "*/5 * * * *"}), true, "every 5 minutes"),
            (json!({"schedule": "@daily"}), true, "macro"),
            (
                json!({"schedule": "0 2 * * 1-5", "timeZone": "Europe/Berlin"}),
                true,
                "weekdays in Berlin",
            ),
            (
                json!({"schedule": "0 2 * * *", "timeZone": "America/Argentina/Buenos_Aires"}),
                true,
                "three-part zone",
            ),
            (
                json!({"schedule": "0 2 * * *", "timeZone": "Etc/GMT+5"}),
                true,
                "zone with sign",
            ),
            (json!({"schedule": "0 2 * *"}), false, "four fields"),
            (
                json!({"schedule": "0 0 2 * * *"}),
                false,
                "six fields (seconds)",
            ),
            (
                json!({"timeZone": "UTC"}),
                false,
                "timeZone without schedule",
            ),
            (
                json!({"schedule": "0 2 * * *", "timeZone": "Europe/../etc"}),
                false,
                "path in zone",
            ),
            (
                json!({"schedule": "0 2 * * *", "timeZone": "/etc/localtime"}),
                false,
                "absolute path",
            ),
            (
                json!({"schedule": "0 2 * * *", "timeZone": "Europe Berlin"}),
                false,
                "space in zone",
            ),
            (json!({"cooldown": "0s"}), true, "no cooldown"),
            (json!({"cooldown": "1h30m"}), true, "compound cooldown"),
            (json!({"cooldown": "-5m"}), false, "negative cooldown"),
            (json!({"cooldown": "10"}), false, "cooldown without unit"),
            (
                json!({"cooldown": "10 minutes"}),
                false,
                "cooldown in words",
            ),
            (
                json!({"on": {"nodeJoined": {"selector": {"matchLabels": {"pool": "gpu"}}}, "kubernetesUpgraded": {}}}),
                true,
                "events",
            ),
        ];
        for (spec, admitted, reason) in cases {
            let result = trigger(spec).validate_cel();
            assert_eq!(result.is_ok(), admitted, "{reason}: {result:?}");
        }
    }

    #[test]
    fn long_names_are_refused_because_run_names_add_eleven_characters() {
        let ok = trigger_named(&"a".repeat(52), json!({}));
        assert!(ok.validate_cel().is_ok());
        let long = trigger_named(&"a".repeat(53), json!({}));
        assert!(long.validate_cel().is_err());
    }

    #[test]
    fn template_spec_may_change_while_a_task_spec_may_not() {
        let old = trigger(json!({}));
        let changed = trigger(
            json!({"template": {"spec": {"taskType": "cluster_scan", "clusterScan": {"scanTypes": ["cluster_vul"], "rangeType": "all_cluster"}}}}),
        );
        assert!(changed.validate_cel_update(&old).is_ok());
    }

    #[test]
    fn template_spec_keeps_the_task_rules() {
        let bad = trigger(
            json!({"template": {"spec": {"taskType": "cluster_scan", "iacScan": {"fileType": "dockerfile", "fileIds": ["f"]}}}}),
        );
        assert!(bad.validate_cel().is_err());
    }

    #[test]
    fn defaults_are_cronjob_like_but_forbid_overlap() {
        let t = trigger(json!({}));
        assert_eq!(t.spec.cooldown, "10m");
        assert_eq!(t.spec.concurrency_policy, ConcurrencyPolicy::Forbid);
        assert_eq!(t.spec.successful_runs_history_limit, 3);
        assert_eq!(t.spec.failed_runs_history_limit, 1);
        assert!(!t.spec.suspend);
        let t = trigger(json!({"on": {"nodeJoined": {}, "kubernetesUpgraded": {}}}));
        let on = t.spec.on.expect("on");
        assert_eq!(on.node_joined.expect("nodeJoined").settle_seconds, 60);
        assert_eq!(
            on.kubernetes_upgraded
                .expect("kubernetesUpgraded")
                .settle_seconds,
            120
        );
    }
}
