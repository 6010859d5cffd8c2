//! What a job has done and what state that puts it in: pure data and functions of the time, so
//! every transition is tested with a manual clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::schedule::Schedule;

/// A job's state (Healthchecks.io's, with `running` and `failed` of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum JobState {
    /// Never checked in since qiflow began watching it, and not due yet.
    #[default]
    New,
    /// Its last run succeeded, and the next one is not overdue.
    Up,
    /// A run started and has not ended (within `max_runtime`).
    Running,
    /// The next start is overdue: past its scheduled time plus `grace`.
    Late,
    /// A whole run was missed: the start after the overdue one is past its time plus `grace`
    /// too.
    Down,
    /// The last run failed: it said so, ran past `max_runtime`, was dropped unfinished, or left
    /// no good file (`expect_file`).
    Failed,
}

impl JobState {
    /// Every state, in the order of the `qiflow_job_state` series.
    pub const ALL: [JobState; 6] = [
        Self::New,
        Self::Up,
        Self::Running,
        Self::Late,
        Self::Down,
        Self::Failed,
    ];

    /// The state's name (`up`, `late`, …), the `state` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Up => "up",
            Self::Running => "running",
            Self::Late => "late",
            Self::Down => "down",
            Self::Failed => "failed",
        }
    }

    /// Whether the state raises an alert (`late`, `down`, `failed`).
    pub fn is_bad(self) -> bool {
        matches!(self, Self::Late | Self::Down | Self::Failed)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Ending {
    Success,
    Failure,
    /// Past `max_runtime`.
    Timeout,
}

impl Ending {
    /// The `outcome` label of `qiflow_job_runs_total`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Timeout => "timeout",
        }
    }
}

/// Milliseconds since the Unix epoch (what the state file keeps).
pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time `ms` milliseconds after the epoch.
pub(crate) fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// What qiflow knows of a job: kept in the state file, times in ms since the epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Record {
    /// When qiflow began watching it, or last restarted its clock (see `resume`).
    pub(crate) since: u64,
    /// The start of the run in progress.
    pub(crate) running_since: Option<u64>,
    pub(crate) last_start: Option<u64>,
    pub(crate) last_end: Option<u64>,
    pub(crate) last_success: Option<u64>,
    pub(crate) last_ending: Option<Ending>,
    /// Why the last run failed.
    pub(crate) last_error: Option<String>,
    /// The last run's duration.
    pub(crate) last_duration_ms: Option<u64>,
    /// What the last run reported: a size (a backup's bytes), a message, an exit code.
    pub(crate) last_size: Option<u64>,
    pub(crate) last_message: Option<String>,
    pub(crate) last_exit_code: Option<i32>,
    /// The state last evaluated (so a restart neither re-alerts nor forgets an incident).
    pub(crate) state: JobState,
}

/// The rules a record is evaluated with.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) schedule: Option<Schedule>,
    pub(crate) grace: Duration,
    pub(crate) max_runtime: Option<Duration>,
}

impl Rules {
    /// The longest the job may go between two successes at `now` before it is overdue: the gap
    /// between its next two scheduled starts, plus grace and `max_runtime` (seconds). What
    /// the shipped Prometheus rule compares the time since the last success with.
    pub(crate) fn max_interval(&self, now: SystemTime) -> Option<f64> {
        let schedule = self.schedule.as_ref()?;
        let next = schedule.next_after(now)?;
        let after = schedule.next_after(next)?;
        let gap = after.duration_since(next).unwrap_or_default();
        Some((gap + self.grace + self.max_runtime.unwrap_or_default()).as_secs_f64())
    }
}

impl Record {
    /// A record for a job first watched at `now`.
    pub(crate) fn new(now: SystemTime) -> Self {
        Self {
            since: millis(now),
            ..Self::default()
        }
    }

    /// A run starts at `now`. A run already in progress is taken as abandoned: it failed.
    /// Returns the ending recorded for that earlier run, if any.
    pub(crate) fn start(&mut self, now: SystemTime) -> Option<Ending> {
        let abandoned = self.running_since.map(|_| {
            self.end(
                now,
                Ending::Failure,
                Some("a new run started before this one ended".into()),
            );
            Ending::Failure
        });
        let at = millis(now);
        self.running_since = Some(at);
        self.last_start = Some(at);
        abandoned
    }

    /// The run ends at `now` with `ending` (a check-in without a start is a run of no length).
    pub(crate) fn end(&mut self, now: SystemTime, ending: Ending, error: Option<String>) {
        let at = millis(now);
        let started = self.running_since.take().unwrap_or(at);
        if self.last_start.is_none_or(|s| s < started) {
            self.last_start = Some(started);
        }
        self.last_end = Some(at);
        self.last_duration_ms = Some(at.saturating_sub(started));
        self.last_ending = Some(ending);
        if ending == Ending::Success {
            self.last_success = Some(at);
            self.last_error = None;
        } else {
            self.last_error = error;
        }
    }

    /// The start the schedule expects next: the first scheduled time after the last start
    /// (or after `since`, before the first one). `None` without a schedule.
    pub(crate) fn next_due(&self, rules: &Rules) -> Option<SystemTime> {
        let schedule = rules.schedule.as_ref()?;
        let anchor = self.last_start.unwrap_or(self.since).max(self.since);
        schedule.next_after(time(anchor))
    }

    /// The state at `now`. A run past `max_runtime` is ended as a timeout first (the returned
    /// flag says so, for the caller to count it).
    pub(crate) fn evaluate(&mut self, now: SystemTime, rules: &Rules) -> (JobState, bool) {
        let mut timed_out = false;
        if let (Some(started), Some(max)) = (self.running_since, rules.max_runtime)
            && now > time(started) + max
        {
            let limit = crate::config::units::format_duration(max);
            self.end(
                time(started) + max,
                Ending::Timeout,
                Some(format!("still running after max_runtime ({limit})")),
            );
            timed_out = true;
        }
        let state = if self.running_since.is_some() {
            JobState::Running
        } else {
            match self.overdue(now, rules) {
                Some(state) => state,
                None => match self.last_ending {
                    None => JobState::New,
                    Some(Ending::Success) => JobState::Up,
                    Some(Ending::Failure | Ending::Timeout) => JobState::Failed,
                },
            }
        };
        self.state = state;
        (state, timed_out)
    }

    /// `Late` when the next start is past its time plus grace, `Down` when the one after it
    /// is too; `None` when nothing is overdue.
    fn overdue(&self, now: SystemTime, rules: &Rules) -> Option<JobState> {
        let due = self.next_due(rules)?;
        if now <= due + rules.grace {
            return None;
        }
        let schedule = rules.schedule.as_ref()?;
        match schedule.next_after(due) {
            Some(after) if now > after + rules.grace => Some(JobState::Down),
            _ => Some(JobState::Late),
        }
    }

    /// After a restart at `now`, with the record as it was saved: when the job's next start
    /// fell due while the service was down and `alert_missed_while_down` is off, its clock
    /// starts again at `now` (the runs missed meanwhile are not alerted; an incident already
    /// open before the stop stays open).
    pub(crate) fn resume(&mut self, now: SystemTime, rules: &Rules, alert_missed: bool) {
        if alert_missed || self.state.is_bad() || self.running_since.is_some() {
            return;
        }
        if self.overdue(now, rules).is_some() {
            self.since = millis(now);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    fn t0() -> SystemTime {
        SystemTime::from("2026-12-07T00:00:00Z".parse::<jiff::Timestamp>().unwrap())
    }

    fn hourly(grace: Duration, max_runtime: Option<Duration>) -> Rules {
        Rules {
            schedule: Some(Schedule::Every(HOUR)),
            grace,
            max_runtime,
        }
    }

    #[test]
    fn a_job_goes_new_running_up_late_down_and_back_up() {
        let rules = hourly(5 * MIN, None);
        let mut r = Record::new(t0());
        assert_eq!(r.evaluate(t0() + 30 * MIN, &rules).0, JobState::New);
        r.start(t0() + 40 * MIN);
        assert_eq!(r.evaluate(t0() + 41 * MIN, &rules).0, JobState::Running);
        r.end(t0() + 42 * MIN, Ending::Success, None);
        assert_eq!(r.last_duration_ms, Some(2 * 60_000));
        assert_eq!(r.evaluate(t0() + 43 * MIN, &rules).0, JobState::Up);
        // Next start due at 1h40 (an hour after the last start); within grace it is still up.
        assert_eq!(r.evaluate(t0() + 104 * MIN, &rules).0, JobState::Up);
        assert_eq!(r.evaluate(t0() + 106 * MIN, &rules).0, JobState::Late);
        // The start after that (2h40) passes too: a whole run missed.
        assert_eq!(r.evaluate(t0() + 166 * MIN, &rules).0, JobState::Down);
        r.start(t0() + 170 * MIN);
        r.end(t0() + 171 * MIN, Ending::Success, None);
        assert_eq!(r.evaluate(t0() + 172 * MIN, &rules).0, JobState::Up);
    }

    #[test]
    fn a_declared_job_that_never_starts_goes_late_after_its_first_due_time() {
        let rules = hourly(5 * MIN, None);
        let mut r = Record::new(t0());
        assert_eq!(r.evaluate(t0() + 65 * MIN, &rules).0, JobState::New);
        assert_eq!(r.evaluate(t0() + 66 * MIN, &rules).0, JobState::Late);
    }

    #[test]
    fn a_failed_run_is_failed_until_a_success() {
        let rules = hourly(5 * MIN, None);
        let mut r = Record::new(t0());
        r.start(t0() + MIN);
        r.end(
            t0() + 2 * MIN,
            Ending::Failure,
            Some("pg_dump: exit 1".into()),
        );
        assert_eq!(r.evaluate(t0() + 3 * MIN, &rules).0, JobState::Failed);
        assert_eq!(r.last_error.as_deref(), Some("pg_dump: exit 1"));
        r.start(t0() + 61 * MIN);
        assert_eq!(r.evaluate(t0() + 62 * MIN, &rules).0, JobState::Running);
        r.end(t0() + 63 * MIN, Ending::Success, None);
        assert_eq!(r.evaluate(t0() + 64 * MIN, &rules).0, JobState::Up);
        assert_eq!(r.last_error, None);
    }

    #[test]
    fn a_run_past_max_runtime_fails_as_a_timeout_at_the_limit() {
        let rules = hourly(5 * MIN, Some(10 * MIN));
        let mut r = Record::new(t0());
        r.start(t0());
        assert_eq!(
            r.evaluate(t0() + 10 * MIN, &rules),
            (JobState::Running, false)
        );
        assert_eq!(
            r.evaluate(t0() + 11 * MIN, &rules),
            (JobState::Failed, true)
        );
        assert_eq!(r.last_ending, Some(Ending::Timeout));
        assert_eq!(r.last_duration_ms, Some(10 * 60_000));
        assert!(r.last_error.as_deref().unwrap().contains("10m"), "{r:?}");
        // Counted once.
        assert_eq!(
            r.evaluate(t0() + 12 * MIN, &rules),
            (JobState::Failed, false)
        );
    }

    #[test]
    fn a_start_while_a_run_is_in_progress_fails_the_earlier_run() {
        let mut r = Record::new(t0());
        r.start(t0());
        assert_eq!(r.start(t0() + MIN), Some(Ending::Failure));
        assert_eq!(r.running_since, Some(millis(t0() + MIN)));
        assert!(r.last_error.as_deref().unwrap().contains("new run started"));
    }

    #[test]
    fn a_restart_forgives_runs_missed_while_down_unless_asked_not_to() {
        let rules = hourly(5 * MIN, None);
        let mut saved = Record::new(t0());
        saved.start(t0());
        saved.end(t0() + MIN, Ending::Success, None);
        assert_eq!(saved.evaluate(t0() + 2 * MIN, &rules).0, JobState::Up);
        // The service was down from 0h02 to 3h: the 1h and 2h runs were missed meanwhile.
        let restart = t0() + 3 * HOUR;
        let mut forgiving = saved.clone();
        forgiving.resume(restart, &rules, false);
        assert_eq!(forgiving.evaluate(restart, &rules).0, JobState::Up);
        // Its clock starts at the restart: an hour and grace later it is late.
        assert_eq!(
            forgiving.evaluate(restart + HOUR + 6 * MIN, &rules).0,
            JobState::Late
        );
        let mut strict = saved.clone();
        strict.resume(restart, &rules, true);
        assert_eq!(strict.evaluate(restart, &rules).0, JobState::Down);
        // An incident open before the stop stays open.
        let mut late = saved.clone();
        late.evaluate(t0() + 66 * MIN, &rules);
        assert_eq!(late.state, JobState::Late);
        late.resume(restart, &rules, false);
        assert_eq!(late.evaluate(restart, &rules).0, JobState::Down);
    }

    #[test]
    fn a_cron_job_is_late_by_its_wall_clock_time_across_the_spring_dst_change() {
        let config = crate::config::JobConfig {
            name: "backup".into(),
            schedule: Some("30 2 * * *".into()),
            timezone: "Europe/Berlin".into(),
            ..crate::config::JobConfig::default()
        };
        let rules = Rules {
            schedule: Schedule::of(&config).unwrap(),
            grace: 5 * MIN,
            max_runtime: None,
        };
        let at = |text: &str| SystemTime::from(text.parse::<jiff::Timestamp>().unwrap());
        // The 28 March run, at 02:30 CET (01:30 UTC).
        let mut r = Record::new(at("2026-03-27T12:00:00Z"));
        r.start(at("2026-03-28T01:30:00Z"));
        r.end(at("2026-03-28T01:40:00Z"), Ending::Success, None);
        // 29 March has no 02:30: the run is due at 03:00 CEST (01:00 UTC), late 5 minutes on.
        assert_eq!(r.next_due(&rules), Some(at("2026-03-29T01:00:00Z")));
        assert_eq!(
            r.evaluate(at("2026-03-29T01:05:00Z"), &rules).0,
            JobState::Up
        );
        assert_eq!(
            r.evaluate(at("2026-03-29T01:06:00Z"), &rules).0,
            JobState::Late
        );
        r.start(at("2026-03-29T01:07:00Z"));
        r.end(at("2026-03-29T01:10:00Z"), Ending::Success, None);
        // From then on, 02:30 CEST is 00:30 UTC.
        assert_eq!(r.next_due(&rules), Some(at("2026-03-30T00:30:00Z")));
        assert_eq!(
            r.evaluate(at("2026-03-30T00:36:00Z"), &rules).0,
            JobState::Late
        );
    }

    #[test]
    fn the_max_interval_is_the_scheduled_gap_plus_grace_and_max_runtime() {
        assert_eq!(
            hourly(5 * MIN, Some(10 * MIN)).max_interval(t0()),
            Some(75.0 * 60.0)
        );
        let none = Rules {
            schedule: None,
            grace: MIN,
            max_runtime: None,
        };
        assert_eq!(none.max_interval(t0()), None);
    }

    #[test]
    fn without_a_schedule_a_job_is_never_late() {
        let rules = Rules {
            schedule: None,
            grace: MIN,
            max_runtime: None,
        };
        let mut r = Record::new(t0());
        r.start(t0());
        r.end(t0() + MIN, Ending::Success, None);
        assert_eq!(r.evaluate(t0() + 1000 * HOUR, &rules).0, JobState::Up);
    }
}
