//! Permission checks that audit themselves (`[authz]`): roles with inheritance, permissions as
//! `resource:action` strings with `*` wildcards, users' roles from the configuration and from
//! the host's authentication.
//!
//! ```
//! use qiflow_core::authz::{Permission, Policy, Principal};
//!
//! let config = qiflow_core::config::Loader::new()
//!     .toml_str(
//!         "[authz.roles.viewer]\npermissions = [\"orders:read\"]\n\
//!          [authz.roles.admin]\ninherits = [\"viewer\"]\npermissions = [\"orders:*\"]\n\
//!          [authz.users]\ndemo = [\"viewer\"]\n",
//!     )
//!     .load()
//!     .unwrap();
//! let policy = Policy::new(&config.authz).unwrap();
//! let read = Permission::parse("orders:read").unwrap();
//! let write = Permission::parse("orders:write").unwrap();
//! // `demo` is a viewer by the configuration; `ada` is an admin by her login.
//! let demo = Principal::new("demo");
//! let ada = Principal::new("ada").role("admin");
//! assert!(policy.allows(&demo, &read));
//! assert!(!policy.allows(&demo, &write));
//! assert!(policy.allows(&ada, &write));
//! ```
//!
//! The policy is compiled when it is made ([`Policy::new`]): each role's effective grants,
//! inheritance flattened, names interned, so a decision is a few hash lookups, with no
//! allocation and no lock. A cycle of `inherits`, a permission that does not parse, or a role
//! nobody defined is refused, naming its key path; `qiflow check` advises about a role that
//! grants nothing.

pub(crate) mod check;
pub(crate) mod live;
pub(crate) mod policy;

pub use live::{Denial, MAX_TRACKED_ACTORS, RECENT_DENIALS, STATE_FILE};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};

use crate::config::AuthzConfig;
use policy::{Compiled, NAMES, Wanted};

/// How many distinct permissions get their own `permission` label on
/// `qiflow_authz_decisions_total`; the ones parsed after them share `permission="other"`.
pub const MAX_PERMISSION_LABELS: usize = 256;

/// The permissions with a label of their own, in the order they were first parsed.
static LABELS: std::sync::LazyLock<RwLock<Vec<Arc<str>>>> =
    std::sync::LazyLock::new(|| RwLock::new(Vec::new()));

/// The label index of `text`: its place in [`LABELS`], or [`MAX_PERMISSION_LABELS`] (`other`).
fn label_of(text: &Arc<str>) -> u16 {
    let find = |labels: &Vec<Arc<str>>| labels.iter().position(|l| **l == **text);
    if let Some(i) = find(&LABELS.read().unwrap_or_else(PoisonError::into_inner)) {
        return i as u16;
    }
    let mut labels = LABELS.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(i) = find(&labels) {
        return i as u16;
    }
    if labels.len() >= MAX_PERMISSION_LABELS {
        return MAX_PERMISSION_LABELS as u16;
    }
    labels.push(text.clone());
    (labels.len() - 1) as u16
}

/// The label text of index `i`.
pub(crate) fn label_text(i: usize) -> Option<Arc<str>> {
    if i >= MAX_PERMISSION_LABELS {
        return Some("other".into());
    }
    LABELS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(i)
        .cloned()
}

/// A permission a check asks for (`orders:write`): parsed once, decided without a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Permission {
    wanted: Wanted,
    text: Arc<str>,
    /// Its `permission` label on `qiflow_authz_decisions_total` (an index; see [`label_of`]).
    label: u16,
}

impl Permission {
    /// Parses `resource:action` (letters, digits, `_`, `-`, `.`, `/`; no `*`: a check names one
    /// permission). The error says what is wrong with it.
    ///
    /// Parse a permission once (when a guard is built, or in a `static`), not per request:
    /// parsing interns its names, and the first [`MAX_PERMISSION_LABELS`] permissions parsed in
    /// the process get their own metric label (the rest count as `other`).
    pub fn parse(text: &str) -> Result<Self, PermissionError> {
        let wanted = Wanted::parse(&NAMES, text).map_err(PermissionError)?;
        let text: Arc<str> = text.into();
        Ok(Self {
            wanted,
            label: label_of(&text),
            text,
        })
    }

    /// The index of its metric label (below [`MAX_PERMISSION_LABELS`], or equal to it for
    /// `other`).
    pub(crate) fn label(&self) -> usize {
        usize::from(self.label)
    }

    /// The permission as written (`orders:write`).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A permission string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionError(String);

impl std::fmt::Display for PermissionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PermissionError {}

/// Who asks: the user id and the roles the host's authentication gives them (the
/// configuration's `[authz.users]` may add more).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Principal {
    /// The user's id: the actor of audit records.
    pub id: String,
    /// The roles the host gives the user.
    pub roles: Vec<String>,
}

impl Principal {
    /// The user `id`, with no role of the host's.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            roles: Vec::new(),
        }
    }

    /// Adds the role `role`.
    #[must_use]
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.roles.push(role.into());
        self
    }
}

/// The answer to a permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// The principal holds the permission: the handler runs.
    Granted,
    /// The principal does not hold it: refused, and audited (`authz.denied`).
    Denied,
}

impl Decision {
    /// Whether the permission was granted.
    pub fn is_granted(self) -> bool {
        self == Self::Granted
    }

    /// The `decision` label of `qiflow_authz_decisions_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Denied => "denied",
        }
    }
}

/// What a guard answers a request [`Observer::guard`](crate::Observer::guard) refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusal {
    /// `401` without a principal, `[authz] deny_status` (403) without the permission.
    pub status: u16,
    /// The JSON body ([`refusal_body`]); its content type is `application/json`.
    pub body: String,
}

/// The JSON body of a refusal: `{"error":"forbidden","permission":"orders:write"}` (the
/// missing permission, never the principal's roles), or `{"error":"unauthenticated", …}` when
/// there was no principal at all. What the guards answer.
pub fn refusal_body(permission: &Permission, authenticated: bool) -> String {
    serde_json::json!({
        "error": if authenticated { "forbidden" } else { "unauthenticated" },
        "permission": permission.as_str(),
        "request_id": crate::request::current_request_id().map(|id| id.as_str().to_owned()),
    })
    .to_string()
}

/// One role as the policy compiled it: what `GET /qiflow/api/authz` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RoleView {
    /// The roles it inherits directly.
    pub inherits: Vec<String>,
    /// The permissions it grants itself.
    pub permissions: Vec<String>,
    /// Every permission it grants, through its inheritance too (sorted).
    pub effective: Vec<String>,
}

/// The compiled `[authz]` policy: roles, their inheritance and the configuration's users.
#[derive(Debug)]
pub struct Policy {
    compiled: Compiled,
    roles: BTreeMap<String, RoleView>,
    users: BTreeMap<String, Vec<String>>,
}

/// A policy that does not compile: each problem with its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    problems: Vec<(String, String)>,
}

impl PolicyError {
    /// One problem at `path`.
    pub(crate) fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![(path.into(), message.into())],
        }
    }

    /// Each problem: its key path (`authz.roles.admin.inherits`) and what is wrong.
    pub fn problems(&self) -> &[(String, String)] {
        &self.problems
    }
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (path, message)) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{path}: {message}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// Compiles `[authz]`.
    pub fn new(config: &AuthzConfig) -> Result<Self, PolicyError> {
        Self::compile(&config.roles, &config.users)
    }

    /// Compiles `roles` and `users`.
    pub(crate) fn compile(
        roles: &BTreeMap<String, crate::config::RoleConfig>,
        users: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, PolicyError> {
        let compiled =
            Compiled::new(&NAMES, roles, users).map_err(|problems| PolicyError { problems })?;
        let views = roles
            .iter()
            .map(|(name, role)| {
                let effective: BTreeSet<&str> = policy::reachable(roles, name)
                    .into_iter()
                    .filter_map(|r| roles.get(r))
                    .flat_map(|r| r.permissions.iter().map(String::as_str))
                    .collect();
                let view = RoleView {
                    inherits: role.inherits.clone(),
                    permissions: role.permissions.clone(),
                    effective: effective.into_iter().map(str::to_owned).collect(),
                };
                (name.clone(), view)
            })
            .collect();
        Ok(Self {
            compiled,
            roles: views,
            users: users.clone(),
        })
    }

    /// Whether any role of the policy grants `permission` (to anyone who holds it). A guard
    /// whose permission no role grants refuses every request.
    pub fn grantable(&self, permission: &Permission) -> bool {
        self.compiled.grantable(permission.wanted)
    }

    /// An empty policy: every check is denied.
    pub fn empty() -> Self {
        Self {
            compiled: Compiled::default(),
            roles: BTreeMap::new(),
            users: BTreeMap::new(),
        }
    }

    /// The roles, as compiled.
    pub fn roles(&self) -> &BTreeMap<String, RoleView> {
        &self.roles
    }

    /// The users the policy gives roles to, with those roles.
    pub fn users(&self) -> &BTreeMap<String, Vec<String>> {
        &self.users
    }

    /// Whether `principal` (its roles and those the configuration gives its id) holds
    /// `permission`. A few hash lookups; no allocation, no lock.
    pub fn allows(&self, principal: &Principal, permission: &Permission) -> bool {
        self.compiled.allows(
            &principal.id,
            principal.roles.iter().map(String::as_str),
            permission.wanted,
        )
    }
}
