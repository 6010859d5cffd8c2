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
    if !(400..=499).contains(&authz.deny_status) || authz.deny_status == 401 {
        f.bad(
            "authz.deny_status",
            format!(
                "{} is not a refusal status: use a 4xx other than 401 (401 is for a request without a principal), like 403 or 404",
                authz.deny_status
            ),
        );
    }
    if authz.denial_alert.count > 0 && authz.denial_alert.window.is_zero() {
        f.bad(
            "authz.denial_alert.window",
            "must be longer than 0s (or set count = 0 to turn the alert off)",
        );
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
