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
pub(crate) mod policy;

use std::sync::Arc;

use crate::config::AuthzConfig;
use policy::{Compiled, NAMES, Wanted};

/// A permission a check asks for (`orders:write`): parsed once, decided without a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Permission {
    wanted: Wanted,
    text: Arc<str>,
}

impl Permission {
    /// Parses `resource:action` (letters, digits, `_`, `-`, `.`, `/`; no `*`: a check names one
    /// permission). The error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, PermissionError> {
        let wanted = Wanted::parse(&NAMES, text).map_err(PermissionError)?;
        Ok(Self {
            wanted,
            text: text.into(),
        })
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

/// The compiled `[authz]` policy: roles, their inheritance and the configuration's users.
#[derive(Debug)]
pub struct Policy {
    compiled: Compiled,
}

/// A policy that does not compile: each problem with its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    problems: Vec<(String, String)>,
}

impl PolicyError {
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
        Compiled::new(&NAMES, &config.roles, &config.users)
            .map(|compiled| Self { compiled })
            .map_err(|problems| PolicyError { problems })
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
