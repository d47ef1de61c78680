//! Events: one Recorder with the fixed reporter name, Event builders, PascalCase reasons.

use kube::{
    Client, Resource,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

/// The reporting controller of every Event the operator publishes.
pub const REPORTER: &str = "hss-operator";

/// The Recorder: reporter [`REPORTER`], instance the pod's name (`POD_NAME`) when set.
pub fn recorder(kube: Client) -> Recorder {
    Recorder::new(
        kube,
        Reporter {
            controller: REPORTER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    )
}

/// An Event to publish: what a decision says, compared and printed in tests, turned into the
/// API's Event only when published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    /// PascalCase.
    pub reason: String,
    /// What the operator was doing (PascalCase).
    pub action: String,
    /// For people; at most 1,000 characters (the API server caps notes at 1 KiB).
    pub note: String,
}

impl Note {
    fn to_event(&self) -> Event {
        Event {
            type_: if self.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: self.reason.clone(),
            note: Some(self.note.clone()),
            action: self.action.clone(),
            secondary: None,
        }
    }
}

/// Publishes `note` about `obj`; a failure to publish is logged, never fatal.
pub async fn publish<K: Resource<DynamicType = ()>>(recorder: &Recorder, obj: &K, note: &Note) {
    if let Err(e) = recorder
        .publish(&note.to_event(), &obj.object_ref(&()))
        .await
    {
        tracing::warn!(error = %e, reason = %note.reason, "failed to publish an Event");
    }
}

pub fn normal(reason: &str, action: &str, note: &str) -> Note {
    event(false, reason, action, note)
}

pub fn warning(reason: &str, action: &str, note: &str) -> Note {
    event(true, reason, action, note)
}

fn event(warning: bool, reason: &str, action: &str, note: &str) -> Note {
    Note {
        warning,
        reason: reason.to_string(),
        action: action.to_string(),
        note: note.chars().take(1000).collect(),
    }
}

/// `invalid_request` -> `InvalidRequest`: an error category as an Event or condition reason.
pub fn reason_for(category: &str) -> String {
    category
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn categories_become_pascal_case_reasons() {
        assert_eq!(super::reason_for("invalid_request"), "InvalidRequest");
        assert_eq!(super::reason_for("throttled"), "Throttled");
    }
}
