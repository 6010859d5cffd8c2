//! The one retry and backoff policy, shared by every sender that retries: the alert router (a
//! notification, `[alerts] retry_*`), the audit writer (a failed batch,
//! [`audit::RETRY_FOR`](crate::audit::RETRY_FOR)) and the Sentry transport (a report, and the
//! pause after the endpoint failed). Each keeps its parameters where it lives; a `Retry-After`
//! is read by [`crate::retry_after`] and waited for in place of a step, within the same limits.
//!
//! The policy is a pure function of the retry's number and the time spent so far, so it is
//! tested without sleeping and works with any clock: the router counts with the system clock, the
//! audit writer with tokio's (paused in its tests).
//!
//! Why not a crate such as `backon`: its backoff is an iterator that drives the loop and keeps
//! its own state, with no "pause for retry n, given the time spent"; its time limit adds up the
//! sleeps, not the attempts' own time (an alert attempt can take its whole channel `timeout`);
//! its jitter adds up to a step on top instead of drawing within the step; its arithmetic is in
//! `f32`. Adapting all that would take more code than this module.

use std::time::Duration;

/// When to retry: exponential backoff with optional jitter, bounded by a deadline or a number
/// of retries.
///
/// - **Steps**: the pause before retry `n` (1 for the first, made after the first attempt
///   failed) is `initial × multiplier^(n−1)`, at most `max`.
/// - **Jitter** (off unless [`with_jitter`](Self::with_jitter)): each pause is a random value
///   between half of its step and all of it ("equal jitter"), so senders that failed together
///   do not retry together; the pause never exceeds the step.
/// - **Limits** (none unless set): no more than [`with_max_retries`](Self::with_max_retries)
///   retries, and no retry whose pause would end at or after
///   [`with_deadline`](Self::with_deadline), counted from the start of the first attempt (so
///   the attempts' own time counts too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: u32,
    jitter: bool,
    deadline: Option<Duration>,
    max_retries: Option<u32>,
}

impl Backoff {
    /// Pauses doubling from `initial` up to `max` (a `max` below `initial` is `initial`); no
    /// jitter, no limit.
    pub(crate) const fn exponential(initial: Duration, max: Duration) -> Self {
        let max = if max.as_nanos() < initial.as_nanos() {
            initial
        } else {
            max
        };
        Self {
            initial,
            max,
            multiplier: 2,
            jitter: false,
            deadline: None,
            max_retries: None,
        }
    }

    /// The same pause before every retry; no jitter, no limit.
    #[cfg_attr(not(feature = "sentry"), allow(dead_code))] // for the Sentry transport
    pub(crate) const fn constant(pause: Duration) -> Self {
        Self {
            initial: pause,
            max: pause,
            multiplier: 1,
            jitter: false,
            deadline: None,
            max_retries: None,
        }
    }

    /// Each pause a random value between half of its step and all of it.
    pub(crate) const fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// No retry whose pause would end `deadline` or later after the first attempt began.
    pub(crate) const fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// At most `retries` retries (attempts: one more).
    #[cfg_attr(not(feature = "sentry"), allow(dead_code))] // for the Sentry transport
    pub(crate) const fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// The step before retry `retry` (1 for the first): `initial × multiplier^(retry−1)`, at
    /// most `max`, without jitter.
    pub(crate) fn step(&self, retry: u32) -> Duration {
        let factor = self.multiplier.checked_pow(retry.saturating_sub(1));
        factor
            .and_then(|f| self.initial.checked_mul(f))
            .map_or(self.max, |step| step.min(self.max))
    }

    /// The pause before retry `retry`, jittered if set, whatever the limits: for a sender that
    /// keeps its own count of consecutive failures, such as the pause after a failing endpoint.
    #[cfg_attr(not(feature = "sentry"), allow(dead_code))] // for the Sentry transport
    pub(crate) fn pause(&self, retry: u32) -> Duration {
        self.pause_at(retry, fastrand::f64())
    }

    /// The pause before retry `retry` when `elapsed` has passed since the first attempt began,
    /// or `None` when the policy gives up.
    pub(crate) fn delay(&self, retry: u32, elapsed: Duration) -> Option<Duration> {
        self.delay_or(retry, elapsed, None)
    }

    /// As [`delay`](Self::delay), but the receiver's `hint` (a 429's `Retry-After`) replaces
    /// the step when there is one; the limits still apply.
    pub(crate) fn delay_or(
        &self,
        retry: u32,
        elapsed: Duration,
        hint: Option<Duration>,
    ) -> Option<Duration> {
        self.decide(retry, elapsed, hint, fastrand::f64())
    }

    /// `pause` with the random draw given: `unit` in `[0, 1)`, 0 for half the step.
    fn pause_at(&self, retry: u32, unit: f64) -> Duration {
        let step = self.step(retry);
        if !self.jitter {
            return step;
        }
        let half = step / 2;
        half + (step - half).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// `delay_or` with the random draw given.
    fn decide(
        &self,
        retry: u32,
        elapsed: Duration,
        hint: Option<Duration>,
        unit: f64,
    ) -> Option<Duration> {
        if retry == 0 || self.max_retries.is_some_and(|max| retry > max) {
            return None;
        }
        let wait = hint.unwrap_or_else(|| self.pause_at(retry, unit));
        match self.deadline {
            Some(deadline) if elapsed.saturating_add(wait) >= deadline => None,
            _ => Some(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn steps_double_from_initial_up_to_max() {
        let backoff = Backoff::exponential(50 * MS, 2000 * MS);
        let steps: Vec<_> = (1..=8).map(|n| backoff.step(n).as_millis()).collect();
        assert_eq!(steps, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        // Far past any overflow of the multiplication: still the maximum.
        assert_eq!(backoff.step(40), 2000 * MS);
        assert_eq!(backoff.step(u32::MAX), 2000 * MS);
        // Without jitter or limits, every retry is allowed and waits its step.
        assert_eq!(backoff.delay(7, Duration::from_secs(3600)), Some(2000 * MS));
        assert_eq!(backoff.pause(3), 200 * MS);
    }

    #[test]
    fn a_max_below_initial_is_initial_and_constant_never_grows() {
        let backoff = Backoff::exponential(MS * 300, MS * 100);
        assert_eq!(backoff.step(1), MS * 300);
        assert_eq!(backoff.step(5), MS * 300);
        let constant = Backoff::constant(MS * 200);
        assert_eq!(
            (1..=4).map(|n| constant.step(n)).collect::<Vec<_>>(),
            [MS * 200; 4]
        );
    }

    #[test]
    fn jitter_draws_between_half_the_step_and_the_step() {
        let backoff = Backoff::exponential(MS * 1000, MS * 30_000).with_jitter();
        assert_eq!(backoff.pause_at(1, 0.0), MS * 500);
        assert_eq!(backoff.pause_at(1, 0.5), MS * 750);
        assert_eq!(backoff.pause_at(3, 0.0), MS * 2000);
        assert!(backoff.pause_at(3, 0.999_999) <= MS * 4000);
        assert!(backoff.pause_at(3, 0.999_999) > MS * 3999);
        assert_eq!(
            backoff.pause_at(9, 0.0),
            MS * 15_000,
            "the maximum is jittered too"
        );

        // Seeded: the same seed draws the same pauses, each within its range, not all alike.
        let draw = |seed| {
            fastrand::seed(seed);
            (1..=64)
                .map(|n| backoff.pause(n.min(6)))
                .collect::<Vec<_>>()
        };
        let pauses = draw(7);
        assert_eq!(pauses, draw(7));
        for (n, pause) in (1..=64u32).zip(&pauses) {
            let step = backoff.step(n.min(6));
            assert!(step / 2 <= *pause && *pause <= step, "retry {n}: {pause:?}");
        }
        // Retries 6 to 64 share one step; their pauses still differ.
        let distinct: std::collections::HashSet<_> = pauses[5..].iter().collect();
        assert!(distinct.len() > 1, "jitter varies: {pauses:?}");
    }

    #[test]
    fn the_deadline_stops_a_retry_that_would_end_at_or_after_it() {
        let backoff = Backoff::exponential(MS * 100, MS * 1000).with_deadline(MS * 1000);
        assert_eq!(backoff.delay(1, Duration::ZERO), Some(MS * 100));
        assert_eq!(backoff.delay(1, MS * 899), Some(MS * 100));
        assert_eq!(backoff.delay(1, MS * 900), None, "ends at the deadline");
        // The fourth step is 800 ms: it fits until 200 ms have passed.
        assert_eq!(backoff.delay(4, MS * 199), Some(MS * 800));
        assert_eq!(backoff.delay(4, MS * 200), None);
        // A deadline of (almost) nothing allows no retry at all.
        let none = Backoff::exponential(MS * 5, MS * 20).with_deadline(MS);
        assert_eq!(none.delay(1, Duration::ZERO), None);
    }

    #[test]
    fn a_hint_replaces_the_step_within_the_limits() {
        let backoff = Backoff::exponential(MS * 100, MS * 1000)
            .with_jitter()
            .with_deadline(Duration::from_secs(60));
        let hint = Some(Duration::from_secs(30));
        assert_eq!(
            backoff.delay_or(1, Duration::ZERO, hint),
            Some(Duration::from_secs(30))
        );
        assert_eq!(backoff.delay_or(1, Duration::from_secs(30), hint), None);
        // A hint too large to add to anything gives up rather than overflowing.
        assert_eq!(backoff.delay_or(1, MS, Some(Duration::MAX)), None);
        // Without a deadline a hint is waited as given.
        let unbounded = Backoff::exponential(MS, MS);
        assert_eq!(
            unbounded.delay_or(1, Duration::from_secs(5), hint),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn max_retries_counts_retries_not_attempts() {
        let once = Backoff::constant(MS * 200).with_max_retries(1);
        assert_eq!(once.delay(1, Duration::ZERO), Some(MS * 200));
        assert_eq!(once.delay(2, Duration::ZERO), None);
        assert_eq!(
            once.delay(0, Duration::ZERO),
            None,
            "retry numbers start at 1"
        );
    }
}
