//! Cron schedules in an IANA time zone (croner + jiff's bundled time zone database, so it works
//! in an image without /usr/share/zoneinfo). Pure.

use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};
use jiff::{Timestamp, tz::TimeZone};

/// A parsed `spec.schedule` + `spec.timeZone`.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
    tz_name: String,
}

/// Why a schedule or time zone cannot be used; becomes a condition reason and an Event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("schedule {0:?} is not a 5-field cron expression: {1}")]
    Cron(String, String),
    #[error("timeZone {0:?} is not a known IANA time zone")]
    TimeZone(String),
    #[error("schedule {0:?} never fires")]
    Never(String),
}

impl ScheduleError {
    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ScheduleError::Cron(..) | ScheduleError::Never(_) => "InvalidSchedule",
            ScheduleError::TimeZone(_) => "InvalidTimeZone",
        }
    }
}

impl Schedule {
    /// Parses a 5-field cron expression (or @daily and friends) read in `time_zone`
    /// (default UTC). Day of month and day of week match either, as in Vixie cron.
    pub fn parse(expr: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let tz_name = time_zone.unwrap_or("UTC").to_string();
        // A path or "Local" would read the operator's own files or settings; only names count.
        if tz_name.starts_with('/')
            || tz_name.contains("..")
            || tz_name.eq_ignore_ascii_case("local")
        {
            return Err(ScheduleError::TimeZone(tz_name));
        }
        let tz = jiff::tz::db()
            .get(&tz_name)
            .map_err(|_| ScheduleError::TimeZone(tz_name.clone()))?;
        let expr = expr.trim();
        let fields = expr.split_whitespace().count();
        if !(expr.starts_with('@') || fields == 5) {
            return Err(ScheduleError::Cron(
                expr.to_string(),
                format!("{fields} fields"),
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Cron(expr.to_string(), e.to_string()))?;
        let schedule = Schedule { cron, tz, tz_name };
        // "0 0 31 2 *" parses but never fires; say so now rather than never running.
        if schedule.next_after(Timestamp::UNIX_EPOCH).is_none() {
            return Err(ScheduleError::Never(expr.to_string()));
        }
        Ok(schedule)
    }

    pub fn time_zone(&self) -> &str {
        &self.tz_name
    }

    /// The latest schedule time at or before `t`.
    pub fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(self.tz.clone());
        self.cron
            .find_previous_occurrence(&zoned, true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The first schedule time after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&zoned, false)
            .ok()
            .map(|z| z.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn every_minute_fires_on_minute_boundaries() {
        let s = Schedule::parse("* * * * *", None).expect("valid");
        assert_eq!(
            s.latest_at_or_before(ts("2030-01-01T10:00:30Z")),
            Some(ts("2030-01-01T10:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(ts("2030-01-01T10:00:00Z")),
            Some(ts("2030-01-01T10:00:00Z")),
            "inclusive"
        );
        assert_eq!(
            s.next_after(ts("2030-01-01T10:00:00Z")),
            Some(ts("2030-01-01T10:01:00Z"))
        );
    }

    #[test]
    fn schedules_are_read_in_their_time_zone() {
        // 02:00 in Berlin is 01:00 UTC in winter and 00:00 UTC in summer.
        let s = Schedule::parse("0 2 * * *", Some("Europe/Berlin")).expect("valid");
        assert_eq!(
            s.next_after(ts("2030-01-15T12:00:00Z")),
            Some(ts("2030-01-16T01:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2030-07-15T12:00:00Z")),
            Some(ts("2030-07-16T00:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_errors_not_panics() {
        // (schedule, zone, reason, why)
        let cases = [
            ("* * * *", None, "InvalidSchedule", "four fields"),
            ("0 * * * * *", None, "InvalidSchedule", "six fields"),
            ("61 * * * *", None, "InvalidSchedule", "minute out of range"),
            ("@fortnightly", None, "InvalidSchedule", "unknown macro"),
            ("0 0 31 2 *", None, "InvalidSchedule", "February 31st"),
            (
                "0 2 * * *",
                Some("Mars/Olympus"),
                "InvalidTimeZone",
                "unknown zone",
            ),
            (
                "0 2 * * *",
                Some("Local"),
                "InvalidTimeZone",
                "host setting",
            ),
            (
                "0 2 * * *",
                Some("/etc/localtime"),
                "InvalidTimeZone",
                "a path",
            ),
        ];
        for (expr, zone, reason, why) in cases {
            let err = Schedule::parse(expr, zone).expect_err(why);
            assert_eq!(err.reason(), reason, "{why}: {err}");
        }
    }

    #[test]
    fn macros_and_names_are_accepted() {
        for expr in ["@daily", "@hourly", "0 2 * * MON-FRI", "*/15 * * JAN *"] {
            Schedule::parse(expr, Some("Asia/Shanghai")).unwrap_or_else(|e| panic!("{expr}: {e}"));
        }
    }
}
