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

/// Publishes `ev` about `obj`; a failure to publish is logged, never fatal.
pub async fn publish<K: Resource<DynamicType = ()>>(recorder: &Recorder, obj: &K, ev: &Event) {
    if let Err(e) = recorder.publish(ev, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, reason = %ev.reason, "failed to publish an Event");
    }
}

pub fn normal(reason: &str, action: &str, note: &str) -> Event {
    event(EventType::Normal, reason, action, note)
}

pub fn warning(reason: &str, action: &str, note: &str) -> Event {
    event(EventType::Warning, reason, action, note)
}

fn event(type_: EventType, reason: &str, action: &str, note: &str) -> Event {
    Event {
        type_,
        reason: reason.to_string(),
        // The API server caps notes at 1 KiB.
        note: Some(note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
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
