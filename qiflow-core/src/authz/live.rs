//! The policy in force, swapped atomically when it changes, and what decisions leave behind:
//! the decision counters, the recent denials, and each actor's window for
//! `[authz.denial_alert]`.
//!
//! A decision reads the policy through an [`ArcSwap`] (no lock, no allocation) and adds one to
//! an atomic counter. Only a denial takes a lock: it is rare, and it writes an audit record
//! anyway.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::{Decision, MAX_PERMISSION_LABELS, Permission, Policy, PolicyError};
use crate::config::{AuditGrants, AuthzConfig, DenialAlertConfig, RoleConfig};

/// How many denials `GET /qiflow/api/authz` and the dashboard keep (the newest).
pub const RECENT_DENIALS: usize = 50;

/// The most actors whose denials are counted for `[authz.denial_alert]` at once; past it, the
/// denials of a new actor are not counted (`qiflow_authz_untracked_denials_total`).
pub const MAX_TRACKED_ACTORS: usize = 10_000;

/// The file, under `[service] state_dir`, that keeps the roles operators set through
/// `PUT /qiflow/api/authz/users/{id}` across restarts.
pub const STATE_FILE: &str = "authz-users.json";

/// One refused check, as `GET /qiflow/api/authz` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Denial {
    /// When (RFC 3339).
    pub at: String,
    /// Who (the principal's id).
    pub actor: String,
    /// The permission missing.
    pub permission: String,
    /// The request's method.
    pub method: String,
    /// The route template (or the path, when the framework gave none).
    pub route: String,
    /// The request id, inside a request.
    pub request_id: Option<String>,
}

/// A change of the policy: the roles before and after, for the audit record `authz.changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Change {
    pub(crate) before: serde_json::Value,
    pub(crate) after: serde_json::Value,
}

/// Where the policy comes from: the configuration's roles and users, and the operators'
/// changes on top (a user's roles replaced; kept in [`STATE_FILE`]).
#[derive(Debug, Default)]
struct Sources {
    roles: BTreeMap<String, RoleConfig>,
    users: BTreeMap<String, Vec<String>>,
    overrides: BTreeMap<String, Vec<String>>,
}

impl Sources {
    /// The users' roles in force: the configuration's, with the overrides replacing theirs.
    fn users(&self) -> BTreeMap<String, Vec<String>> {
        let mut users = self.users.clone();
        for (user, roles) in &self.overrides {
            users.insert(user.clone(), roles.clone());
        }
        users
    }

    fn compile(&self) -> Result<Policy, PolicyError> {
        Policy::compile(&self.roles, &self.users())
    }
}

/// The configuration's roles and users, as [`Live::reload`] replaced them.
pub(crate) type ConfigSources = (BTreeMap<String, RoleConfig>, BTreeMap<String, Vec<String>>);

/// One actor's recent denials.
#[derive(Debug, Default)]
struct Burst {
    times: VecDeque<SystemTime>,
    /// The alert fired and is not resolved yet.
    alerted: bool,
}

/// The policy in force and its bookkeeping; one per observer.
pub(crate) struct Live {
    policy: ArcSwap<Policy>,
    sources: Mutex<Sources>,
    /// `None` with an empty `[service] state_dir`: operators' changes last until the restart.
    state_file: Option<PathBuf>,
    audit_grants: AuditGrants,
    deny_status: u16,
    denial_alert: DenialAlertConfig,
    /// Decisions by label index, one array per decision (the last slot is `other`).
    granted: Box<[AtomicU64]>,
    denied: Box<[AtomicU64]>,
    unauthenticated: Box<[AtomicU64]>,
    untracked: AtomicU64,
    recent: Mutex<VecDeque<Denial>>,
    bursts: Mutex<HashMap<String, Burst>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn counters() -> Box<[AtomicU64]> {
    (0..=MAX_PERMISSION_LABELS)
        .map(|_| AtomicU64::new(0))
        .collect()
}

impl Live {
    /// The policy of `config`, with the operators' changes kept in `state_dir` on top (none
    /// kept when `state_dir` is empty). A state file that does not parse, or names a role that
    /// no longer exists, is an error naming it.
    pub(crate) fn new(config: &AuthzConfig, state_dir: &Path) -> Result<Self, String> {
        let state_file = (!state_dir.as_os_str().is_empty()).then(|| state_dir.join(STATE_FILE));
        let overrides = match state_file.as_ref().map(std::fs::read) {
            None => BTreeMap::new(),
            Some(Ok(bytes)) => serde_json::from_slice::<BTreeMap<String, Vec<String>>>(&bytes)
                .map_err(|e| {
                    format!(
                        "service.state_dir: {} is not the roles operators set ({e}); fix or remove the file (the users then have their [authz.users] roles)",
                        state_dir.join(STATE_FILE).display()
                    )
                })?,
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Some(Err(e)) => {
                return Err(format!(
                    "service.state_dir: cannot read {}: {e}",
                    state_dir.join(STATE_FILE).display()
                ));
            }
        };
        let sources = Sources {
            roles: config.roles.clone(),
            users: config.users.clone(),
            overrides,
        };
        let policy = sources.compile().map_err(|e| {
            format!(
                "[authz] with the roles operators set in {}: {e}",
                state_dir.join(STATE_FILE).display()
            )
        })?;
        Ok(Self {
            policy: ArcSwap::from_pointee(policy),
            sources: Mutex::new(sources),
            state_file,
            audit_grants: config.audit_grants,
            deny_status: config.deny_status,
            denial_alert: config.denial_alert,
            granted: counters(),
            denied: counters(),
            unauthenticated: counters(),
            untracked: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_DENIALS)),
            bursts: Mutex::new(HashMap::new()),
        })
    }

    /// The policy in force (no lock: an atomic load).
    pub(crate) fn decide(&self, principal: &super::Principal, permission: &Permission) -> Decision {
        let decision = if self.policy.load().allows(principal, permission) {
            Decision::Granted
        } else {
            Decision::Denied
        };
        let counters = match decision {
            Decision::Granted => &self.granted,
            Decision::Denied => &self.denied,
        };
        counters[permission.label()].fetch_add(1, Ordering::Relaxed);
        decision
    }

    /// Counts a check refused for want of a principal.
    pub(crate) fn count_unauthenticated(&self, permission: &Permission) {
        self.unauthenticated[permission.label()].fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot of the policy in force.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// `[authz] deny_status`.
    pub(crate) fn deny_status(&self) -> u16 {
        self.deny_status
    }

    /// Whether a grant to a request with `method` is audited (`[authz] audit_grants`).
    pub(crate) fn audits_grant(&self, method: &str) -> bool {
        match self.audit_grants {
            AuditGrants::None => false,
            AuditGrants::All => true,
            AuditGrants::Writes => !matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE"),
        }
    }

    /// Keeps `denial` among the recent ones and counts it in its actor's window. Returns the
    /// number of denials in the window when this one makes the actor reach
    /// `[authz.denial_alert] count` (the caller raises the alert, once per burst).
    pub(crate) fn denied(&self, denial: Denial, now: SystemTime) -> Option<u32> {
        let actor = denial.actor.clone();
        {
            let mut recent = lock(&self.recent);
            if recent.len() == RECENT_DENIALS {
                recent.pop_front();
            }
            recent.push_back(denial);
        }
        let DenialAlertConfig { count, window } = self.denial_alert;
        if count == 0 {
            return None;
        }
        let mut bursts = lock(&self.bursts);
        if !bursts.contains_key(&actor) && bursts.len() >= MAX_TRACKED_ACTORS {
            prune(&mut bursts, now, window);
            if bursts.len() >= MAX_TRACKED_ACTORS {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        let burst = bursts.entry(actor).or_default();
        burst.times.push_back(now);
        expire(&mut burst.times, now, window);
        // Never more than `count` kept: enough to know the threshold is reached.
        while burst.times.len() > count as usize {
            burst.times.pop_front();
        }
        let seen = burst.times.len() as u32;
        if seen >= count && !burst.alerted {
            burst.alerted = true;
            return Some(seen);
        }
        None
    }

    /// Forgets the windows that emptied; returns the actors whose alert fired and whose window
    /// has since dropped below the threshold (the caller resolves their alerts).
    pub(crate) fn sweep(&self, now: SystemTime) -> Vec<String> {
        let DenialAlertConfig { count, window } = self.denial_alert;
        let mut resolved = Vec::new();
        let mut bursts = lock(&self.bursts);
        bursts.retain(|actor, burst| {
            expire(&mut burst.times, now, window);
            if burst.alerted && (burst.times.len() as u32) < count {
                burst.alerted = false;
                resolved.push(actor.clone());
            }
            burst.alerted || !burst.times.is_empty()
        });
        resolved
    }

    /// The recent denials, newest first.
    pub(crate) fn recent(&self) -> Vec<Denial> {
        lock(&self.recent).iter().rev().cloned().collect()
    }

    /// Sets the roles of `user` (an operator's change; `None` gives back the configuration's),
    /// swaps the policy and saves the change. Returns the user's roles before and after, and
    /// the previous overrides (to undo with [`Live::restore`]).
    pub(crate) fn set_user(
        &self,
        user: &str,
        roles: Option<Vec<String>>,
    ) -> Result<(Change, BTreeMap<String, Vec<String>>), String> {
        let mut sources = lock(&self.sources);
        let before = sources.users().get(user).cloned().unwrap_or_default();
        let previous = sources.overrides.clone();
        match roles {
            Some(roles) => {
                let unknown: Vec<&String> = roles
                    .iter()
                    .filter(|r| !sources.roles.contains_key(*r))
                    .collect();
                if !unknown.is_empty() {
                    return Err(format!(
                        "no role {unknown:?}; the roles are {:?}",
                        sources.roles.keys().collect::<Vec<_>>()
                    ));
                }
                sources.overrides.insert(user.to_owned(), roles);
            }
            None => {
                if sources.overrides.remove(user).is_none() {
                    return Err(format!("no operator change for user {user:?} to remove"));
                }
            }
        }
        let policy = match sources.compile() {
            Ok(policy) => policy,
            Err(e) => {
                sources.overrides = previous;
                return Err(e.to_string());
            }
        };
        if let Err(e) = self.save(&sources.overrides) {
            sources.overrides = previous;
            return Err(e);
        }
        let after = sources.users().get(user).cloned().unwrap_or_default();
        self.policy.store(Arc::new(policy));
        Ok((
            Change {
                before: serde_json::json!({ "user": user, "roles": before }),
                after: serde_json::json!({ "user": user, "roles": after }),
            },
            previous,
        ))
    }

    /// Puts `overrides` back (a change the audit trail could not record).
    pub(crate) fn restore(&self, overrides: BTreeMap<String, Vec<String>>) {
        let mut sources = lock(&self.sources);
        sources.overrides = overrides;
        if let Ok(policy) = sources.compile() {
            self.policy.store(Arc::new(policy));
        }
        if let Err(e) = self.save(&sources.overrides) {
            tracing::error!(target: "qiflow::authz", "{e}");
        }
    }

    /// Replaces the configuration's roles and users with `config`'s (the operators' changes stay
    /// on top), swapping the policy. Nothing changes when it does not compile. Returns what
    /// changed, and the sources it replaced (to undo with [`Live::restore_config`]).
    pub(crate) fn reload(
        &self,
        config: &AuthzConfig,
    ) -> Result<(Change, ConfigSources), PolicyError> {
        let mut sources = lock(&self.sources);
        let next = Sources {
            roles: config.roles.clone(),
            users: config.users.clone(),
            overrides: sources.overrides.clone(),
        };
        let policy = next.compile()?;
        let change = Change {
            before: summary(&sources),
            after: summary(&next),
        };
        let previous = (
            std::mem::replace(&mut sources.roles, next.roles),
            std::mem::replace(&mut sources.users, next.users),
        );
        self.policy.store(Arc::new(policy));
        Ok((change, previous))
    }

    /// Puts back the configuration's roles and users that [`Live::reload`] replaced.
    pub(crate) fn restore_config(&self, (roles, users): ConfigSources) {
        let mut sources = lock(&self.sources);
        sources.roles = roles;
        sources.users = users;
        if let Ok(policy) = sources.compile() {
            self.policy.store(Arc::new(policy));
        }
    }

    /// The operators' changes: users whose roles were set through the API.
    pub(crate) fn overrides(&self) -> BTreeMap<String, Vec<String>> {
        lock(&self.sources).overrides.clone()
    }

    /// Writes the overrides to the state file (0600, atomically); removes it when there are none.
    fn save(&self, overrides: &BTreeMap<String, Vec<String>>) -> Result<(), String> {
        let Some(state_file) = &self.state_file else {
            return Ok(());
        };
        let failed = |e: std::io::Error| {
            format!(
                "cannot save the roles operators set in {}: {e}",
                state_file.display()
            )
        };
        if overrides.is_empty() {
            return match std::fs::remove_file(state_file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(failed(e)),
                _ => Ok(()),
            };
        }
        if let Some(dir) = state_file.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let bytes = serde_json::to_vec_pretty(overrides).map_err(|e| e.to_string())?;
        crate::files::write_atomic(state_file, &bytes, 0o600).map_err(failed)
    }

    /// Brings `qiflow_authz_decisions_total{decision,permission}` and
    /// `qiflow_authz_untracked_denials_total` up to date.
    pub(crate) fn render(&self, metrics: &crate::metrics::Metrics) {
        for (decision, counts) in [
            ("granted", &self.granted),
            ("denied", &self.denied),
            ("unauthenticated", &self.unauthenticated),
        ] {
            for (i, count) in counts.iter().enumerate() {
                let n = count.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let Some(label) = super::label_text(i) else {
                    continue;
                };
                metrics
                    .counter(
                        "qiflow_authz_decisions_total",
                        vec![
                            metrics::Label::new("decision", decision),
                            metrics::Label::new("permission", label.to_string()),
                        ],
                    )
                    .absolute(n);
            }
        }
        metrics
            .counter("qiflow_authz_untracked_denials_total", Vec::new())
            .absolute(self.untracked.load(Ordering::Relaxed));
    }
}

/// What `authz.changed` records of a reload: every role with its grants and inheritance, and
/// the configuration's users.
fn summary(sources: &Sources) -> serde_json::Value {
    serde_json::json!({ "roles": sources.roles, "users": sources.users })
}

/// Drops the times older than `window` before `now`.
fn expire(times: &mut VecDeque<SystemTime>, now: SystemTime, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t).unwrap_or_default() >= window)
    {
        times.pop_front();
    }
}

/// Forgets the actors with no denial in the window and no open alert.
fn prune(bursts: &mut HashMap<String, Burst>, now: SystemTime, window: Duration) {
    bursts.retain(|_, burst| {
        expire(&mut burst.times, now, window);
        burst.alerted || !burst.times.is_empty()
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn live(count: u32) -> (tempfile::TempDir, Live) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AuthzConfig::default();
        config.denial_alert.count = count;
        config.denial_alert.window = Duration::from_secs(300);
        let viewer = RoleConfig {
            permissions: vec!["orders:read".into()],
            ..RoleConfig::default()
        };
        config.roles.insert("viewer".into(), viewer);
        let live = Live::new(&config, dir.path()).unwrap();
        (dir, live)
    }

    fn denial(actor: &str) -> Denial {
        Denial {
            at: String::new(),
            actor: actor.into(),
            permission: "orders:write".into(),
            method: "POST".into(),
            route: "/orders".into(),
            request_id: None,
        }
    }

    #[test]
    fn a_burst_fires_once_a_trickle_never_and_the_alert_resolves_when_the_window_empties() {
        let (_dir, live) = live(3);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // A trickle: one denial every 200 s never has 3 within 300 s.
        for i in 0..10 {
            assert_eq!(live.denied(denial("slow"), at(i * 200)), None);
        }
        // A burst: the third within the window fires, the ones after it do not.
        assert_eq!(live.denied(denial("fast"), at(0)), None);
        assert_eq!(live.denied(denial("fast"), at(1)), None);
        assert_eq!(live.denied(denial("fast"), at(2)), Some(3));
        for s in 3..20 {
            assert_eq!(live.denied(denial("fast"), at(s)), None);
        }
        // Still inside the window: nothing resolves; after it, `fast` resolves once.
        assert!(live.sweep(at(100)).is_empty());
        assert_eq!(live.sweep(at(400)), ["fast"]);
        assert!(live.sweep(at(500)).is_empty());
        // A new burst fires again.
        for s in 600..602 {
            assert_eq!(live.denied(denial("fast"), at(s)), None);
        }
        assert_eq!(live.denied(denial("fast"), at(602)), Some(3));
        assert_eq!(live.recent().len(), RECENT_DENIALS.min(10 + 20 + 3));
    }

    #[test]
    fn count_zero_turns_the_alert_off_and_the_recent_list_is_bounded() {
        let (_dir, live) = live(0);
        let t = SystemTime::UNIX_EPOCH;
        for _ in 0..(RECENT_DENIALS + 10) {
            assert_eq!(live.denied(denial("x"), t), None);
        }
        assert_eq!(live.recent().len(), RECENT_DENIALS);
        assert!(lock(&live.bursts).is_empty());
    }

    #[test]
    fn operator_changes_swap_the_policy_are_saved_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AuthzConfig::default();
        let viewer = RoleConfig {
            permissions: vec!["orders:read".into()],
            ..RoleConfig::default()
        };
        config.roles.insert("viewer".into(), viewer);
        let read = Permission::parse("orders:read").unwrap();
        let ada = super::super::Principal::new("ada");
        let live = Live::new(&config, dir.path()).unwrap();
        assert_eq!(live.decide(&ada, &read), Decision::Denied);
        let (change, _) = live.set_user("ada", Some(vec!["viewer".into()])).unwrap();
        assert_eq!(change.before["roles"], serde_json::json!([]));
        assert_eq!(change.after["roles"], serde_json::json!(["viewer"]));
        assert_eq!(live.decide(&ada, &read), Decision::Granted);
        // An unknown role changes nothing.
        let error = live.set_user("ada", Some(vec!["root".into()])).unwrap_err();
        assert!(error.contains("\"root\""), "{error}");
        assert_eq!(live.decide(&ada, &read), Decision::Granted);
        // Saved, 0600, and read back by the next start.
        let file = dir.path().join(STATE_FILE);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = Live::new(&config, dir.path()).unwrap();
        assert_eq!(again.decide(&ada, &read), Decision::Granted);
        // Removing the change gives back the configuration's roles and removes the file.
        live.set_user("ada", None).unwrap();
        assert_eq!(live.decide(&ada, &read), Decision::Denied);
        assert!(!file.exists());
        // A broken state file names itself.
        std::fs::write(&file, "{").unwrap();
        let error = Live::new(&config, dir.path()).unwrap_err();
        assert!(error.contains(STATE_FILE), "{error}");
    }
}
