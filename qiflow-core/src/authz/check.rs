//! The checks of `[authz]`, run when a configuration is loaded.

use super::policy::{Compiled, Names};
use crate::config::{AuthzConfig, Findings};

/// Adds the problems of `[authz]` to `f`: the policy must compile (permissions parse, roles
/// exist, no cycle of `inherits`); a role that grants nothing is a warning.
pub(crate) fn check(authz: &AuthzConfig, f: &mut Findings) {
    for name in authz.roles.keys() {
        if !super::policy::split(&format!("{name}:x")).is_ok_and(|(r, _)| r != "*") {
            f.bad(
                format!("authz.roles.{name}"),
                "a role name is letters, digits, '_', '-', '.' and '/'",
            );
        }
    }
    match Compiled::new(&Names::default(), &authz.roles, &authz.users) {
        Err(problems) => {
            for (path, message) in problems {
                f.bad(path, message);
            }
        }
        Ok(compiled) => {
            for role in compiled.empty_roles() {
                f.advise(
                    format!("authz.roles.{role}"),
                    "grants no permission, itself or through inherits: a principal holding only this role may do nothing",
                );
            }
        }
    }
}
