//! Scheduled jobs watched from inside the service (`[[jobs]]`): a job checks in when it starts
//! and when it ends, a schedule and a grace time say when a check-in is late, and silence itself
//! raises the alert, through the service's own alert channels. Healthchecks.io and Sentry Crons
//! do this as separate services; here it needs none.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut config = qiflow_core::test::quiet_config();
//! config.jobs = qiflow_core::config::Loader::new()
//!     .toml_str("[[jobs]]\nname = \"nightly-backup\"\nschedule = \"0 3 * * *\"\ngrace = \"30m\"")
//!     .load()
//!     .unwrap()
//!     .jobs;
//! let (observer, _guard) = qiflow_core::Observer::builder(config)
//!     .install_global(false)
//!     .build()
//!     .unwrap();
//! let backup = observer.job("nightly-backup");
//! let run = backup.start();
//! // … the dump …
//! run.size(48_213_004).success();
//! assert_eq!(backup.state(), qiflow_core::jobs::JobState::Up);
//! // Or around a future: a `Err` fails the run.
//! let bytes: Result<u64, std::io::Error> = backup.run(async { Ok(1024) }).await;
//! # assert_eq!(bytes.unwrap(), 1024);
//! # });
//! ```
//!
//! # When things happen
//!
//! - [`Job::start`] records a start and returns a [`Run`]; [`Run::success`] and [`Run::fail`]
//!   end it; a `Run` dropped without either is a failed run ("dropped unfinished"). A check-in
//!   takes one short lock and updates a few counters: no I/O on the caller's thread.
//! - With `expect_file`, a success is checked on qiflow's worker (the newest match exists, is
//!   readable to its end, large and recent enough) before it counts; a bad file fails the run.
//! - Every second, on the worker, each job's state is evaluated at the clock's time
//!   ([`JobState`]): a run past `max_runtime` fails as a timeout, a start past its due time
//!   plus `grace` makes the job `late`, a missed run `down`. Entering `late`, `down` or
//!   `failed` raises an alert (fingerprint `job:<name>`, label `job`, plus the job's `labels`);
//!   the next success resolves it. Then the state file (`<[service] state_dir>/jobs.json`,
//!   `0600`, written atomically) is saved when something changed.
//! - At start, the state file is read back. A job whose next start fell due while the service
//!   was down starts its clock again (no alert for the runs missed meanwhile), unless its
//!   `alert_missed_while_down` is set; an incident open at the stop stays open.
//! - Jobs not declared in `[[jobs]]` are tracked from their first check-in, without a schedule
//!   (never late), up to [`MAX_JOBS`] jobs in all.
//!
//! Metrics: `qiflow_job_runs_total{job,outcome}` (`success`, `failure`, `timeout`),
//! `qiflow_job_duration_seconds{job}`, `qiflow_job_last_success_timestamp_seconds{job}`,
//! `qiflow_job_state{job,state}` (1 for the current state).

pub(crate) mod check;
mod schedule;
mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::alert::{Alert, AlertLevel, Alerts};
use crate::clock::Clock;
use crate::config::JobConfig;
use crate::metrics::Metrics;
use schedule::Schedule;
pub use state::JobState;
use state::{Ending, Record, Rules};

/// The most jobs tracked at once (declared and from check-ins): every job has a few series.
pub const MAX_JOBS: usize = 256;
/// The longest job name.
pub const MAX_NAME_LEN: usize = 128;
/// How often the worker evaluates every job.
pub const EVALUATE_EVERY: Duration = Duration::from_secs(1);

/// Whether `name` may name a job: letters, digits, `-`, `_` and `.`, at most [`MAX_NAME_LEN`].
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Every job qiflow watches: built by `init` from `[[jobs]]`, evaluated on the worker.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Registry>,
}

struct Registry {
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    alerts: Option<Alerts>,
    state_file: Option<PathBuf>,
    runtime: tokio::runtime::Handle,
    jobs: RwLock<BTreeMap<String, Arc<Entry>>>,
    /// Something changed since the state file was last written.
    dirty: AtomicBool,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("jobs", &self.names())
            .finish_non_exhaustive()
    }
}

/// One job: its rules, what it has done, and its metric handles.
struct Entry {
    name: String,
    declared: bool,
    rules: Rules,
    labels: BTreeMap<String, String>,
    /// `alert_channels`: empty for every channel.
    channels: Vec<String>,
    artifact: Option<Artifact>,
    record: Mutex<Record>,
    runs: [metrics::Counter; 3],
    duration: metrics::Histogram,
    last_success: metrics::Gauge,
    /// `qiflow_job_max_interval_seconds` (declared jobs only).
    max_interval: Option<metrics::Gauge>,
    states: [metrics::Gauge; 6],
}

/// What a successful run must leave behind (`expect_file`, `min_size`, `max_age`).
#[derive(Debug, Clone)]
struct Artifact {
    pattern: String,
    min_size: u64,
    max_age: Option<Duration>,
}

/// The state file's content.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
struct StateFile {
    jobs: BTreeMap<String, Record>,
}

impl Jobs {
    /// The jobs of `configs` (checked at load), their records read back from `state_dir`.
    pub(crate) fn new(
        configs: &[JobConfig],
        state_dir: &std::path::Path,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        alerts: Option<Alerts>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, String> {
        let state_file = (!state_dir.as_os_str().is_empty()).then(|| state_dir.join("jobs.json"));
        let mut saved = match &state_file {
            Some(path) => read_state(path)?,
            None => StateFile::default(),
        };
        let now = clock.now();
        let registry = Registry {
            clock,
            metrics,
            alerts,
            state_file,
            runtime,
            jobs: RwLock::new(BTreeMap::new()),
            dirty: AtomicBool::new(false),
        };
        let this = Self {
            inner: Arc::new(registry),
        };
        for config in configs {
            let schedule = Schedule::of(config)
                .map_err(|(key, message)| format!("jobs.{}.{key}: {message}", config.name))?;
            let rules = Rules {
                schedule,
                grace: config.grace,
                max_runtime: config.max_runtime,
            };
            let mut record = saved
                .jobs
                .remove(&config.name)
                .unwrap_or_else(|| Record::new(now));
            record.resume(now, &rules, config.alert_missed_while_down);
            let artifact = config.expect_file.as_ref().map(|pattern| Artifact {
                pattern: pattern.clone(),
                min_size: config.min_size,
                max_age: config.max_age,
            });
            this.insert(
                &config.name,
                true,
                rules,
                (config.labels.clone(), config.alert_channels.clone()),
                artifact,
                record,
            );
        }
        // Jobs known only from check-ins come back without a schedule.
        for (name, mut record) in saved.jobs {
            if is_valid_name(&name) && this.len() < MAX_JOBS {
                let rules = undeclared_rules();
                record.resume(now, &rules, false);
                this.insert(&name, false, rules, Default::default(), None, record);
            }
        }
        Ok(this)
    }

    fn len(&self) -> usize {
        self.inner
            .jobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn names(&self) -> Vec<String> {
        self.inner
            .jobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    fn insert(
        &self,
        name: &str,
        declared: bool,
        rules: Rules,
        (labels, channels): (BTreeMap<String, String>, Vec<String>),
        artifact: Option<Artifact>,
        record: Record,
    ) -> Arc<Entry> {
        let metrics = &self.inner.metrics;
        let job = || metrics::Label::new("job", name.to_owned());
        let runs = [Ending::Success, Ending::Failure, Ending::Timeout].map(|ending| {
            metrics.counter(
                "qiflow_job_runs_total",
                vec![job(), metrics::Label::new("outcome", ending.as_str())],
            )
        });
        let states = JobState::ALL.map(|state| {
            metrics.gauge(
                "qiflow_job_state",
                vec![job(), metrics::Label::new("state", state.as_str())],
            )
        });
        let last_success = metrics.gauge("qiflow_job_last_success_timestamp_seconds", vec![job()]);
        if let Some(at) = record.last_success {
            last_success.set(at as f64 / 1000.0);
        }
        for (gauge, state) in states.iter().zip(JobState::ALL) {
            gauge.set(if state == record.state { 1.0 } else { 0.0 });
        }
        let max_interval = rules
            .schedule
            .is_some()
            .then(|| metrics.gauge("qiflow_job_max_interval_seconds", vec![job()]));
        let entry = Arc::new(Entry {
            max_interval,
            name: name.to_owned(),
            declared,
            rules,
            labels,
            channels,
            artifact,
            record: Mutex::new(record),
            runs,
            duration: metrics.histogram("qiflow_job_duration_seconds", vec![job()]),
            last_success,
            states,
        });
        self.inner
            .jobs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), entry.clone());
        entry
    }

    /// The job `name`, tracked from now on when it is not declared. `Err` says why not: a name
    /// that is not valid ([`is_valid_name`]), or [`MAX_JOBS`] reached.
    fn entry(&self, name: &str) -> Result<Arc<Entry>, String> {
        if let Some(known) = self
            .inner
            .jobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return Ok(known.clone());
        }
        if !is_valid_name(name) {
            return Err(format!(
                "{name:?} is not a job name: use letters, digits, '-', '_' and '.', at most {MAX_NAME_LEN} characters"
            ));
        }
        let jobs = self
            .inner
            .jobs
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = jobs.get(name) {
            return Ok(known.clone());
        }
        if jobs.len() >= MAX_JOBS {
            return Err(format!(
                "qiflow already tracks {MAX_JOBS} jobs; declare the jobs you need in [[jobs]] and check the names of the others"
            ));
        }
        drop(jobs);
        self.inner.dirty.store(true, Ordering::Relaxed);
        Ok(self.insert(
            name,
            false,
            undeclared_rules(),
            Default::default(),
            None,
            Record::new(self.inner.clock.now()),
        ))
    }

    /// A handle on the job `name` (see [`crate::Observer::job`]).
    pub(crate) fn job(&self, name: &str) -> Job {
        match self.entry(name) {
            Ok(entry) => Job {
                jobs: self.clone(),
                entry: Some(entry),
            },
            Err(why) => {
                tracing::warn!(target: "qiflow::jobs", job = name, "check-ins of this job are not tracked: {why}");
                Job {
                    jobs: self.clone(),
                    entry: None,
                }
            }
        }
    }

    /// A check-in of `kind` for `name` (the HTTP check-ins): the job's view after it.
    pub(crate) fn check_in(
        &self,
        name: &str,
        kind: CheckIn,
        report: Report,
    ) -> Result<JobView, String> {
        let entry = self.entry(name)?;
        match kind {
            CheckIn::Start => self.start(&entry),
            CheckIn::Success => self.finish(&entry, Ending::Success, None, report),
            CheckIn::Fail => {
                let why = report
                    .message
                    .clone()
                    .or_else(|| report.exit_code.map(|c| format!("exit code {c}")))
                    .unwrap_or_else(|| "the job reported a failure".into());
                self.finish(&entry, Ending::Failure, Some(why), report);
            }
        }
        Ok(self.view_of(&entry, self.inner.clock.now()))
    }

    /// The state of `entry` at `now`, evaluated on a copy of its record.
    fn state_of(&self, entry: &Entry, now: SystemTime) -> JobState {
        let mut record = entry
            .record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        record.evaluate(now, &entry.rules).0
    }

    fn start(&self, entry: &Entry) {
        let now = self.inner.clock.now();
        let abandoned = entry
            .record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .start(now);
        if let Some(ending) = abandoned {
            self.count(entry, ending, None);
        }
        self.inner.dirty.store(true, Ordering::Relaxed);
    }

    /// Ends the run in progress: a success with `expect_file` is checked on the worker first.
    fn finish(&self, entry: &Arc<Entry>, ending: Ending, error: Option<String>, report: Report) {
        if ending == Ending::Success
            && let Some(artifact) = entry.artifact.clone()
        {
            let jobs = self.clone();
            let entry = entry.clone();
            let clock_now = self.inner.clock.now();
            self.inner.runtime.spawn(async move {
                let checked = tokio::task::spawn_blocking(move || artifact.check(clock_now)).await;
                let verdict = match checked {
                    Ok(verdict) => verdict,
                    Err(e) => Err(format!("the expect_file check did not finish: {e}")),
                };
                match verdict {
                    Ok(()) => jobs.record_end(&entry, Ending::Success, None, report),
                    Err(why) => jobs.record_end(&entry, Ending::Failure, Some(why), report),
                }
            });
            return;
        }
        self.record_end(entry, ending, error, report);
    }

    fn record_end(&self, entry: &Entry, ending: Ending, error: Option<String>, report: Report) {
        let now = self.inner.clock.now();
        let duration = {
            let mut record = entry.record.lock().unwrap_or_else(PoisonError::into_inner);
            record.end(now, ending, error);
            record.last_size = report.size;
            record.last_message = report.message;
            record.last_exit_code = report.exit_code;
            record.last_duration_ms
        };
        self.count(entry, ending, duration);
        if ending == Ending::Success {
            entry.last_success.set(state::millis(now) as f64 / 1000.0);
        }
        self.inner.dirty.store(true, Ordering::Relaxed);
    }

    fn count(&self, entry: &Entry, ending: Ending, duration_ms: Option<u64>) {
        let slot = match ending {
            Ending::Success => 0,
            Ending::Failure => 1,
            Ending::Timeout => 2,
        };
        entry.runs[slot].increment(1);
        if let Some(ms) = duration_ms {
            entry.duration.record(ms as f64 / 1000.0);
        }
    }

    /// Evaluates every job at the clock's time: states, timeouts, alerts and resolves, the
    /// state gauges, then the state file when something changed. The worker calls it every
    /// [`EVALUATE_EVERY`]; tests call it after moving a manual clock.
    pub fn evaluate(&self) {
        let now = self.inner.clock.now();
        let entries: Vec<Arc<Entry>> = self
            .inner
            .jobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for entry in &entries {
            if let Some(gauge) = &entry.max_interval
                && let Some(seconds) = entry.rules.max_interval(now)
            {
                gauge.set(seconds);
            }
            let (before, after, timed_out, record) = {
                let mut record = entry.record.lock().unwrap_or_else(PoisonError::into_inner);
                let before = record.state;
                let (after, timed_out) = record.evaluate(now, &entry.rules);
                (before, after, timed_out, record.clone())
            };
            if timed_out {
                self.count(entry, Ending::Timeout, record.last_duration_ms);
            }
            if before == after && !timed_out {
                continue;
            }
            self.inner.dirty.store(true, Ordering::Relaxed);
            for (gauge, state) in entry.states.iter().zip(JobState::ALL) {
                gauge.set(if state == after { 1.0 } else { 0.0 });
            }
            self.transition(entry, before, after, &record, now);
        }
        if self.inner.dirty.swap(false, Ordering::Relaxed) {
            self.save(&entries);
        }
    }

    /// The alert of a transition: raised when entering `late`, `down` or `failed` (a timeout
    /// counts as entering `failed` again), resolved on the way back to `up`.
    fn transition(
        &self,
        entry: &Entry,
        before: JobState,
        after: JobState,
        record: &Record,
        now: SystemTime,
    ) {
        let fingerprint = format!("job:{}", entry.name);
        let level_line = |level| match level {
            JobState::Late | JobState::Down | JobState::Failed => tracing::Level::WARN,
            _ => tracing::Level::INFO,
        };
        if level_line(after) == tracing::Level::WARN {
            tracing::warn!(target: "qiflow::jobs", job = %entry.name, from = before.as_str(), to = after.as_str(), error = record.last_error.as_deref().unwrap_or(""), "job {}", after.as_str());
        } else {
            tracing::info!(target: "qiflow::jobs", job = %entry.name, from = before.as_str(), to = after.as_str(), "job {}", after.as_str());
        }
        let Some(alerts) = &self.inner.alerts else {
            return;
        };
        let alert = if after.is_bad() {
            let (name, level, what) = match after {
                JobState::Late => ("job_late", AlertLevel::Error, "is late".to_owned()),
                JobState::Down => ("job_down", AlertLevel::Critical, "missed a run".to_owned()),
                _ => (
                    "job_failed",
                    AlertLevel::Error,
                    format!(
                        "failed: {}",
                        record.last_error.as_deref().unwrap_or("no reason given")
                    ),
                ),
            };
            let mut alert = Alert::new(name, level)
                .summary(format!("job {} {what}", entry.name))
                .description(self.describe(entry, record, now))
                .label("job", entry.name.clone())
                .source("jobs")
                .fingerprint(fingerprint);
            for (key, value) in &entry.labels {
                alert = alert.label(key.clone(), value.clone());
            }
            for channel in &entry.channels {
                alert = alert.channel(channel.clone());
            }
            alert
        } else if after == JobState::Up && before.is_bad() {
            Alert::resolve(fingerprint)
        } else {
            return;
        };
        let _ = alerts.raise(alert);
    }

    /// The description of a job's alert: its schedule, when it was due, its last runs.
    fn describe(&self, entry: &Entry, record: &Record, now: SystemTime) -> String {
        let at = |ms: Option<u64>| {
            ms.map_or_else(
                || "never".to_owned(),
                |ms| crate::alert::rfc3339(state::time(ms)),
            )
        };
        let mut text = String::new();
        if let Some(schedule) = &entry.rules.schedule {
            text.push_str(&format!(
                "schedule {}, grace {}; ",
                schedule.describe(),
                crate::config::units::format_duration(entry.rules.grace)
            ));
        }
        if let Some(due) = record.next_due(&entry.rules).filter(|due| *due <= now) {
            text.push_str(&format!("due at {}; ", crate::alert::rfc3339(due)));
        }
        text.push_str(&format!(
            "last start {}, last success {}",
            at(record.last_start),
            at(record.last_success)
        ));
        if let Some(error) = &record.last_error {
            text.push_str(&format!("; last error: {error}"));
        }
        text
    }

    fn save(&self, entries: &[Arc<Entry>]) {
        let Some(path) = &self.inner.state_file else {
            return;
        };
        let state = StateFile {
            jobs: entries
                .iter()
                .map(|e| {
                    let record = e
                        .record
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    (e.name.clone(), record)
                })
                .collect(),
        };
        let written = serde_json::to_vec_pretty(&state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                crate::files::write_atomic(path, &bytes, 0o600)
            });
        if let Err(e) = written {
            // Kept dirty: the next evaluation tries again.
            self.inner.dirty.store(true, Ordering::Relaxed);
            tracing::warn!(target: "qiflow::jobs", file = %path.display(), "cannot write the jobs' state file: {e}");
        }
    }

    /// Every job, by name: what `GET /qiflow/api/jobs` serves.
    pub fn view(&self) -> Vec<JobView> {
        let now = self.inner.clock.now();
        self.inner
            .jobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|entry| self.view_of(entry, now))
            .collect()
    }

    fn view_of(&self, entry: &Entry, now: SystemTime) -> JobView {
        let mut record = entry
            .record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let state = record.evaluate(now, &entry.rules).0;
        let at = |ms: Option<u64>| ms.map(|ms| crate::alert::rfc3339(state::time(ms)));
        JobView {
            name: entry.name.clone(),
            state,
            declared: entry.declared,
            schedule: entry.rules.schedule.as_ref().map(Schedule::describe),
            grace_seconds: entry.rules.grace.as_secs(),
            max_runtime_seconds: entry.rules.max_runtime.map(|d| d.as_secs()),
            next_due: record.next_due(&entry.rules).map(crate::alert::rfc3339),
            running_since: at(record.running_since),
            last_start: at(record.last_start),
            last_success: at(record.last_success),
            last_outcome: record.last_ending.map(|e| e.as_str()),
            last_duration_seconds: record.last_duration_ms.map(|ms| ms as f64 / 1000.0),
            last_error: record.last_error.clone(),
            last_size: record.last_size,
            last_message: record.last_message.clone(),
            last_exit_code: record.last_exit_code,
            expect_file: entry.artifact.as_ref().map(|a| a.pattern.clone()),
            checked_at: crate::alert::rfc3339(now),
        }
    }
}

fn undeclared_rules() -> Rules {
    Rules {
        schedule: None,
        grace: Duration::ZERO,
        max_runtime: None,
    }
}

fn read_state(path: &std::path::Path) -> Result<StateFile, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "service.state_dir: cannot parse {} ({e}); move it away to start the jobs' records anew",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
        Err(e) => Err(format!(
            "service.state_dir: cannot read {}: {e}",
            path.display()
        )),
    }
}

impl Artifact {
    /// Checks the newest file matching the pattern: it exists, is at least `min_size` bytes,
    /// is younger than `max_age` at `now`, and reads to its end (a `.gz` one decompresses to
    /// its end). `Err` says what is wrong, naming the file.
    fn check(&self, now: SystemTime) -> Result<(), String> {
        let matches = glob::glob(&self.pattern)
            .map_err(|e| format!("expect_file {:?} is not a pattern: {e}", self.pattern))?;
        let newest = matches
            .flatten()
            .filter_map(|path| {
                let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
                Some((modified, path))
            })
            .max_by_key(|(modified, _)| *modified);
        let Some((modified, path)) = newest else {
            return Err(format!("expect_file: no file matches {:?}", self.pattern));
        };
        let shown = path.display();
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("expect_file: cannot read {shown}: {e}"))?
            .len();
        if size < self.min_size {
            return Err(format!(
                "expect_file: {shown} holds {size} bytes, less than min_size ({})",
                crate::config::units::format_size(self.min_size)
            ));
        }
        if let Some(max_age) = self.max_age {
            let age = now.duration_since(modified).unwrap_or_default();
            if age > max_age {
                return Err(format!(
                    "expect_file: the newest match, {shown}, was written {} ago, more than max_age ({})",
                    crate::config::units::format_duration(Duration::from_secs(age.as_secs())),
                    crate::config::units::format_duration(max_age)
                ));
            }
        }
        let file = std::fs::File::open(&path)
            .map_err(|e| format!("expect_file: cannot open {shown}: {e}"))?;
        let mut reader: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
                file,
            )))
        } else {
            Box::new(std::io::BufReader::new(file))
        };
        std::io::copy(&mut reader, &mut std::io::sink())
            .map_err(|e| format!("expect_file: {shown} does not read to its end: {e}"))?;
        Ok(())
    }
}

/// A check-in's kind (`POST /qiflow/api/jobs/{name}/start|success|fail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckIn {
    Start,
    Success,
    Fail,
}

impl CheckIn {
    /// The kind a path's last segment names.
    pub(crate) fn parse(segment: &str) -> Option<Self> {
        match segment {
            "start" => Some(Self::Start),
            "success" => Some(Self::Success),
            "fail" => Some(Self::Fail),
            _ => None,
        }
    }

    /// The audit action of the check-in.
    pub(crate) fn action(self) -> &'static str {
        match self {
            Self::Start => "qiflow.job.start",
            Self::Success => "qiflow.job.success",
            Self::Fail => "qiflow.job.fail",
        }
    }
}

/// Parses the body of an HTTP check-in: empty, or JSON with `message`, `exit_code`, `size`.
pub(crate) fn parse_report(body: &[u8]) -> Result<Report, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Report::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body must be empty or JSON like {{\"message\":\"dumped 3 tables\",\"exit_code\":0,\"size\":48213004}}: {e}"
        )
    })
}

/// What a run may report with its end: a size (a backup's bytes), a message, an exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Report {
    pub(crate) message: Option<String>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) size: Option<u64>,
}

/// One job in `GET /qiflow/api/jobs`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct JobView {
    /// The job's name.
    pub name: String,
    /// Its state now.
    pub state: JobState,
    /// Whether it is declared in `[[jobs]]` (else known from its check-ins).
    pub declared: bool,
    /// Its schedule (`0 3 * * * (Europe/Berlin)`, `every 1h`), when declared with one.
    pub schedule: Option<String>,
    /// Its grace, seconds.
    pub grace_seconds: u64,
    /// Its `max_runtime`, seconds.
    pub max_runtime_seconds: Option<u64>,
    /// When its next start is due (RFC 3339).
    pub next_due: Option<String>,
    /// When the run in progress started.
    pub running_since: Option<String>,
    /// Its last start.
    pub last_start: Option<String>,
    /// Its last success.
    pub last_success: Option<String>,
    /// How its last run ended: `success`, `failure` or `timeout`.
    pub last_outcome: Option<&'static str>,
    /// Its last run's duration, seconds.
    pub last_duration_seconds: Option<f64>,
    /// Why its last run failed.
    pub last_error: Option<String>,
    /// The size its last run reported (bytes).
    pub last_size: Option<u64>,
    /// The message its last run reported.
    pub last_message: Option<String>,
    /// The exit code its last run reported.
    pub last_exit_code: Option<i32>,
    /// The file its successes must leave.
    pub expect_file: Option<String>,
    /// When this view was taken.
    pub checked_at: String,
}

/// A handle on one job ([`crate::Observer::job`]): cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Job {
    jobs: Jobs,
    /// `None`: the name was refused (logged once when the handle was made); check-ins do
    /// nothing.
    entry: Option<Arc<Entry>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.entry.as_ref().map(|e| e.name.as_str()))
            .finish_non_exhaustive()
    }
}

impl Job {
    /// Records a start and returns the run: end it with [`Run::success`] or [`Run::fail`]
    /// (dropping it unfinished fails it).
    pub fn start(&self) -> Run {
        if let Some(entry) = &self.entry {
            self.jobs.start(entry);
        }
        Run {
            job: self.clone(),
            report: Report::default(),
            ended: false,
        }
    }

    /// Runs `work` as one run of the job: a start now, then a success when it returns `Ok`, a
    /// failure (with the error's text) when it returns `Err`, a failure when it is dropped
    /// unfinished.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: std::future::Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let run = self.start();
        let result = work.await;
        match &result {
            Ok(_) => run.success(),
            Err(e) => run.fail(e),
        }
        result
    }

    /// The job's state now (evaluated at the clock's time; nothing is recorded or alerted
    /// here: the worker does that).
    pub fn state(&self) -> JobState {
        self.entry.as_ref().map_or(JobState::New, |entry| {
            self.jobs.state_of(entry, self.jobs.inner.clock.now())
        })
    }

    /// The job's name (`None` when it was refused: see [`crate::Observer::job`]).
    pub fn name(&self) -> Option<&str> {
        self.entry.as_ref().map(|e| e.name.as_str())
    }
}

/// One run of a job, from [`Job::start`]: end it with [`Run::success`] or [`Run::fail`].
#[must_use = "a run dropped without success() or fail() counts as failed"]
pub struct Run {
    job: Job,
    report: Report,
    ended: bool,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

impl Run {
    /// The size the run produced (a backup's bytes), shown with the job.
    pub fn size(mut self, bytes: u64) -> Self {
        self.report.size = Some(bytes);
        self
    }

    /// A message about the run, shown with the job.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.report.message = Some(message.into());
        self
    }

    /// The run succeeded (with `expect_file`, once the file is checked).
    pub fn success(mut self) {
        self.end(Ending::Success, None);
    }

    /// The run failed, because of `error`.
    pub fn fail(mut self, error: impl std::fmt::Display) {
        self.end(Ending::Failure, Some(error.to_string()));
    }

    fn end(&mut self, ending: Ending, error: Option<String>) {
        self.ended = true;
        if let Some(entry) = &self.job.entry {
            let report = std::mem::take(&mut self.report);
            self.job.jobs.finish(entry, ending, error, report);
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.ended {
            self.end(
                Ending::Failure,
                Some("the run was dropped without success() or fail()".into()),
            );
        }
    }
}
