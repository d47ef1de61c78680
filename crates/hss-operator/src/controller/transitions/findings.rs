//! Transitions after a cluster scan finished: its findings read, or why they are not.

use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::controller::Action;

use super::{Transition, current, hss_error, set};
use crate::{
    controller::{findings::REFUSED, status},
    controller_runtime::{conditions, events},
    crd::{ClusterScanTask, findings::Findings},
    findings,
};
use hss_client::Outcome;

/// The findings were read: `status.findings`, `FindingsRead=True`, one Event that sums them
/// up (a Warning when any high risk was found).
pub fn findings_read(obj: &ClusterScanTask, found: Findings, now: Timestamp) -> Transition {
    let mut st = current(obj);
    let message = found.describe();
    let high = found.total.high > 0;
    st.findings = Some(found);
    st.last_error = None;
    set(
        &mut st,
        obj,
        status::FINDINGS_READ,
        true,
        "Read",
        &message,
        now,
    );
    let note = if high {
        events::warning("Findings", "ReadFindings", &message)
    } else {
        events::normal("Findings", "ReadFindings", &message)
    };
    Transition {
        status: st,
        events: vec![note],
        action: Action::await_change(),
    }
}

/// Reading failed. Refused by HSS (permissions, say): `FindingsRead=False` (`FindingsRefused`)
/// with what to do, a Warning, no retry. Otherwise `FindingsRead=False` (`FindingsPending`)
/// and a retry that waits as long again as the reads have been failing (10 s to 5 min), or
/// HSS's Retry-After.
pub fn findings_unavailable(
    obj: &ClusterScanTask,
    err: &findings::Error,
    now: Timestamp,
) -> Transition {
    let mut st = current(obj);
    st.last_error = Some(hss_error(err.hss(), now));
    let detail = crate::report_error(err);
    if err.hss().outcome() == Outcome::Rejected {
        let message = format!(
            "HSS refused to list the findings ({detail}). The scan itself finished; its \
             findings are in the HSS console. To have them here, allow the operator's IAM \
             identity ListClusterRisks and ListSecurityCheckClusterReports, then create a new \
             ClusterScanTask."
        );
        set(
            &mut st,
            obj,
            status::FINDINGS_READ,
            false,
            REFUSED,
            &message,
            now,
        );
        return Transition {
            status: st,
            events: vec![events::warning(REFUSED, "ReadFindings", &message)],
            action: Action::await_change(),
        };
    }
    let failing_for = obj
        .status
        .as_ref()
        .and_then(|s| conditions::get(&s.conditions, status::FINDINGS_READ))
        .filter(|c| c.status == "False")
        .and_then(|c| now.duration_since(c.last_transition_time.0).try_into().ok())
        .unwrap_or(Duration::ZERO);
    let wait = err
        .hss()
        .retry_after()
        .unwrap_or_else(|| failing_for.clamp(Duration::from_secs(10), Duration::from_secs(300)));
    set(
        &mut st,
        obj,
        status::FINDINGS_READ,
        false,
        "FindingsPending",
        &format!("reading the findings failed ({detail}); trying again"),
        now,
    );
    Transition {
        status: st,
        events: vec![],
        action: Action::requeue(wait),
    }
}
