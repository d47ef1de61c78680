//! Conditions as Kubernetes defines them (`metav1.Condition`): one type once, `status` True or
//! False, a PascalCase `reason`, a message for people, the generation it was computed for,
//! and `lastTransitionTime` that moves only when the status flips.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Longest message kept, in characters (the API server allows 32 KiB; people read one line).
pub const MAX_MESSAGE: usize = 1024;

/// Sets condition `type_`, keeping `lastTransitionTime` unless the status flips. An empty
/// message becomes the reason: some API servers refuse an empty message in a server-side apply
/// ("must be of type string"). Returns whether status, reason or message changed: what
/// deserves an Event (a generation-only change is applied but is not news).
pub fn set(
    conditions: &mut Vec<Condition>,
    generation: Option<i64>,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let value = if value { "True" } else { "False" };
    let message = if message.is_empty() { reason } else { message };
    let message: String = message.chars().take(MAX_MESSAGE).collect();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        let notable = c.status != value || c.reason != reason || c.message != message;
        if c.status != value {
            c.last_transition_time = Time(now);
        }
        c.status = value.to_string();
        c.reason = reason.to_string();
        c.message = message;
        c.observed_generation = generation;
        return notable;
    }
    conditions.push(Condition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: Time(now),
    });
    true
}

/// Removes condition `type_`. Returns whether it was there.
pub fn clear(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    before != conditions.len()
}

/// Condition `type_`, if set.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether condition `type_` is set and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let mut c = Vec::new();
        assert!(set(&mut c, Some(1), "Ready", true, "Ok", "a", at(1)));
        assert!(
            !set(&mut c, Some(1), "Ready", true, "Ok", "a", at(2)),
            "no change"
        );
        assert!(
            set(&mut c, Some(1), "Ready", true, "Ok", "b", at(3)),
            "message is news"
        );
        assert_eq!(
            get(&c, "Ready").expect("set").last_transition_time,
            Time(at(1))
        );
        assert!(set(&mut c, Some(1), "Ready", false, "Broken", "c", at(4)));
        assert_eq!(
            get(&c, "Ready").expect("set").last_transition_time,
            Time(at(4))
        );
        assert!(!is_true(&c, "Ready"));
    }

    #[test]
    fn a_generation_change_is_applied_but_is_not_news() {
        let mut c = Vec::new();
        set(&mut c, Some(1), "Ready", true, "Ok", "a", at(1));
        assert!(!set(&mut c, Some(2), "Ready", true, "Ok", "a", at(2)));
        assert_eq!(get(&c, "Ready").expect("set").observed_generation, Some(2));
    }

    #[test]
    fn messages_are_never_empty_and_never_longer_than_the_cap() {
        let mut c = Vec::new();
        set(&mut c, None, "Ready", true, "Ok", "", at(1));
        assert_eq!(get(&c, "Ready").expect("set").message, "Ok");
        set(&mut c, None, "Ready", true, "Ok", &"x".repeat(5000), at(1));
        assert_eq!(get(&c, "Ready").expect("set").message.len(), MAX_MESSAGE);
        assert!(clear(&mut c, "Ready"));
        assert!(!clear(&mut c, "Ready"));
    }
}
