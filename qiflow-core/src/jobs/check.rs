//! The checks of `[[jobs]]`, run when a configuration is loaded.

use std::collections::HashSet;
use std::time::Duration;

use super::schedule::Schedule;
use super::{MAX_JOBS, MAX_NAME_LEN, is_valid_name};
use crate::config::{ChannelConfig, Findings, JobConfig};

/// Adds the problems of `[[jobs]]` to `f`. A job's keys are named `jobs.<name>.<key>` (or
/// `jobs.<index>.<key>` when the name itself is wrong).
pub(crate) fn check(jobs: &[JobConfig], channels: &[ChannelConfig], f: &mut Findings) {
    // Without [[alerts.channels]], alerts go to the one log channel, named "log".
    let channel_names: Vec<String> = if channels.is_empty() {
        vec!["log".to_owned()]
    } else {
        channels
            .iter()
            .map(|c| {
                c.name
                    .clone()
                    .unwrap_or_else(|| crate::alert::channels::kind_name(c.kind).to_owned())
            })
            .collect()
    };
    if jobs.len() > MAX_JOBS {
        f.bad(
            "jobs",
            format!("{} jobs declared; at most {MAX_JOBS}", jobs.len()),
        );
    }
    let mut seen = HashSet::new();
    for (index, job) in jobs.iter().enumerate() {
        let at = if is_valid_name(&job.name) {
            format!("jobs.{}", job.name)
        } else {
            f.bad(
                format!("jobs.{index}.name"),
                format!(
                    "{:?} is not a job name: use letters, digits, '-', '_' and '.', at most {MAX_NAME_LEN} characters",
                    job.name
                ),
            );
            format!("jobs.{index}")
        };
        if !job.name.is_empty() && !seen.insert(job.name.as_str()) {
            f.bad(
                format!("{at}.name"),
                "two jobs have this name; names must be unique",
            );
        }
        match Schedule::of(job) {
            Ok(Some(_)) => {}
            Ok(None) => f.bad(
                format!("{at}.schedule"),
                "a declared job needs a schedule (a cron expression, like \"0 3 * * *\") or every (a period, like \"1h\")",
            ),
            Err((key, message)) => f.bad(format!("{at}.{key}"), message),
        }
        if job.max_runtime.is_some_and(|d| d < Duration::from_secs(1)) {
            f.bad(format!("{at}.max_runtime"), "must be at least \"1s\"");
        }
        if let Some(pattern) = &job.expect_file {
            if let Err(e) = glob::Pattern::new(pattern) {
                f.bad(
                    format!("{at}.expect_file"),
                    format!("{pattern:?} is not a file pattern: {e}"),
                );
            }
        } else if job.max_age.is_some() {
            f.bad(
                format!("{at}.max_age"),
                "applies to expect_file, which is not set",
            );
        }
        for name in &job.alert_channels {
            if !channel_names.contains(name) {
                f.bad(
                    format!("{at}.alert_channels"),
                    format!(
                        "{name:?} names no channel; the [[alerts.channels]] are {channel_names:?}"
                    ),
                );
            }
        }
        for key in job.labels.keys() {
            let valid = key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid || matches!(key.as_str(), "job" | "alertname" | "severity") {
                f.bad(
                    format!("{at}.labels.{key}"),
                    "a label name is letters, digits and '_' (not starting with a digit), and not job, alertname or severity",
                );
            }
        }
    }
}
