//! When a job is due: a cron expression read in a time zone (croner on jiff's zoned times, so a
//! daylight-saving change moves the wall-clock run, never skips or doubles the day), or a fixed
//! period after the last start.

use std::time::{Duration, SystemTime};

use crate::config::JobConfig;

/// A job's schedule.
#[derive(Debug, Clone)]
pub(crate) enum Schedule {
    /// A cron expression in a time zone.
    Cron {
        /// Boxed: a parsed pattern is large next to a period.
        cron: Box<croner::Cron>,
        zone: jiff::tz::TimeZone,
        /// The expression as configured, for views.
        text: String,
    },
    /// Every this long after the last start.
    Every(Duration),
}

impl Schedule {
    /// The schedule of `job`, or the key (under `jobs.<name>`) and what is wrong with it.
    pub(crate) fn of(job: &JobConfig) -> Result<Option<Self>, (&'static str, String)> {
        match (&job.schedule, job.every) {
            (Some(_), Some(_)) => Err((
                "schedule",
                "set either schedule (a cron expression) or every (a period), not both".into(),
            )),
            (None, None) => Ok(None),
            (None, Some(every)) if every < Duration::from_secs(1) => {
                Err(("every", "must be at least \"1s\"".into()))
            }
            (None, Some(every)) => Ok(Some(Self::Every(every))),
            (Some(text), None) => {
                let zone = jiff::tz::TimeZone::get(&job.timezone).map_err(|e| {
                    (
                        "timezone",
                        format!(
                            "{:?} is not a time zone ({e}); use an IANA name like \"Europe/Berlin\" or \"UTC\"",
                            job.timezone
                        ),
                    )
                })?;
                let cron = croner::parser::CronParser::builder()
                    .seconds(croner::parser::Seconds::Optional)
                    .build()
                    .parse(text)
                    .map_err(|e| {
                        (
                            "schedule",
                            format!(
                                "{text:?} is not a cron expression ({e}); five fields, minute first, like \"0 3 * * *\" (03:00 every day)"
                            ),
                        )
                    })?;
                let schedule = Self::Cron {
                    cron: Box::new(cron),
                    zone,
                    text: text.clone(),
                };
                // A pattern that never matches (30 February) is refused now, not at 3 am.
                if schedule.next_after(SystemTime::now()).is_none() {
                    return Err((
                        "schedule",
                        format!("{text:?} never matches a date; check the day and month fields"),
                    ));
                }
                Ok(Some(schedule))
            }
        }
    }

    /// The first start due strictly after `t` (for `every`: `t` plus the period, `t` being the
    /// last start). `None` when the expression has no further match.
    pub(crate) fn next_after(&self, t: SystemTime) -> Option<SystemTime> {
        match self {
            Self::Every(every) => t.checked_add(*every),
            Self::Cron { cron, zone, .. } => {
                let at = jiff::Timestamp::try_from(t).ok()?.to_zoned(zone.clone());
                let next = cron.find_next_occurrence(&at, false).ok()?;
                Some(SystemTime::from(next.timestamp()))
            }
        }
    }

    /// How the schedule reads in views: the cron expression with its zone, or `every 1h`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Every(every) => {
                format!("every {}", crate::config::units::format_duration(*every))
            }
            Self::Cron { text, zone, .. } => {
                format!("{text} ({})", zone.iana_name().unwrap_or("UTC"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn job(schedule: &str, zone: &str) -> JobConfig {
        JobConfig {
            name: "backup".into(),
            schedule: Some(schedule.into()),
            timezone: zone.into(),
            ..JobConfig::default()
        }
    }

    fn at(text: &str) -> SystemTime {
        SystemTime::from(text.parse::<jiff::Timestamp>().unwrap())
    }

    fn show(t: SystemTime) -> String {
        jiff::Timestamp::try_from(t).unwrap().to_string()
    }

    #[test]
    fn a_daily_run_in_berlin_keeps_its_wall_clock_hour_across_the_dst_changes() {
        let s = Schedule::of(&job("30 2 * * *", "Europe/Berlin"))
            .unwrap()
            .unwrap();
        // 29 March 2026: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that day: the
        // run is at the first instant after the gap (03:00 CEST = 01:00 UTC).
        let before_spring = at("2026-03-28T01:30:00Z");
        let spring = s.next_after(before_spring).unwrap();
        assert_eq!(show(spring), "2026-03-29T01:00:00Z");
        // The day after: 02:30 CEST = 00:30 UTC.
        assert_eq!(show(s.next_after(spring).unwrap()), "2026-03-30T00:30:00Z");
        // 25 October 2026: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice; the job
        // runs once that day, and the next day at 02:30 CET = 01:30 UTC.
        let first = s.next_after(at("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(show(first), "2026-10-25T00:30:00Z");
        let after = s.next_after(first).unwrap();
        // Not again at the repeated 02:30 (01:30 UTC): the next run is the next day's.
        assert_eq!(show(after), "2026-10-26T01:30:00Z");
    }

    #[test]
    fn every_is_a_period_after_the_last_start() {
        let s = Schedule::of(&JobConfig {
            every: Some(Duration::from_secs(3600)),
            ..JobConfig::default()
        })
        .unwrap()
        .unwrap();
        let t = at("2026-01-01T00:00:00Z");
        assert_eq!(show(s.next_after(t).unwrap()), "2026-01-01T01:00:00Z");
        assert_eq!(s.describe(), "every 1h");
    }

    #[test]
    fn a_bad_expression_or_zone_names_its_key() {
        let (key, message) = Schedule::of(&job("61 * * * *", "UTC")).unwrap_err();
        assert_eq!(key, "schedule");
        assert!(message.contains("\"61 * * * *\""), "{message}");
        let (key, message) = Schedule::of(&job("0 3 * * *", "Mars/Olympus")).unwrap_err();
        assert_eq!(key, "timezone");
        assert!(message.contains("Mars/Olympus"), "{message}");
        let (key, _) = Schedule::of(&job("0 0 30 2 *", "UTC")).unwrap_err();
        assert_eq!(key, "schedule");
        let both = JobConfig {
            every: Some(Duration::from_secs(60)),
            ..job("0 3 * * *", "UTC")
        };
        assert_eq!(Schedule::of(&both).unwrap_err().0, "schedule");
    }
}
