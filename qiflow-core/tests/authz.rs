//! `[authz]` at load: a cycle of inherits, an unknown role and a permission that does not parse
//! are refused naming their key paths; a role that grants nothing is advice.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use qiflow_core::authz::{Permission, Policy, Principal};

fn load(toml: &str) -> Result<qiflow_core::Config, String> {
    qiflow_core::config::Loader::new()
        .toml_str(toml)
        .env(Vec::<(String, String)>::new())
        .load()
        .map_err(|e| e.to_string())
}

#[test]
fn a_bad_policy_is_refused_at_load_naming_the_key_and_the_roles() {
    for (toml, wanted) in [
        (
            "[authz.roles.a]\ninherits = [\"b\"]\n[authz.roles.b]\ninherits = [\"a\"]\n",
            "authz.roles.a.inherits: roles inherit in a cycle: a → b → a",
        ),
        (
            "[authz.roles.a]\ninherits = [\"ghost\"]\n",
            "authz.roles.a.inherits: \"ghost\" is not a role",
        ),
        (
            "[authz.roles.a]\npermissions = [\"orders\"]\n",
            "authz.roles.a.permissions: \"orders\" is not a permission",
        ),
        (
            "[authz.roles.a]\npermissions = [\"x:y\"]\n[authz.users]\nbob = [\"b\"]\n",
            "authz.users.bob: \"b\" is not a role",
        ),
    ] {
        let error = load(toml).unwrap_err();
        assert!(error.contains(wanted), "{wanted} in: {error}");
    }
}

#[test]
fn a_role_that_grants_nothing_is_advice_and_the_policy_decides() {
    let config = load(
        "[authz.roles.viewer]\npermissions = [\"orders:read\"]\n\
         [authz.roles.admin]\ninherits = [\"viewer\"]\npermissions = [\"orders:*\"]\n\
         [authz.roles.idle]\n\
         [authz.users]\ndemo = [\"viewer\"]\nadmin = [\"admin\"]\n",
    )
    .unwrap();
    let advice: Vec<String> = config.warnings().iter().map(|w| w.to_string()).collect();
    assert!(
        advice
            .iter()
            .any(|w| w.contains("authz.roles.idle") && w.contains("grants no permission")),
        "{advice:?}"
    );
    let policy = Policy::new(&config.authz).unwrap();
    let read = Permission::parse("orders:read").unwrap();
    let write = Permission::parse("orders:write").unwrap();
    assert!(policy.allows(&Principal::new("demo"), &read));
    assert!(!policy.allows(&Principal::new("demo"), &write));
    assert!(policy.allows(&Principal::new("admin"), &write));
    assert!(!policy.allows(&Principal::new("stranger"), &read));
    assert!(policy.allows(&Principal::new("stranger").role("viewer"), &read));
    assert!(Permission::parse("orders:*").is_err());
}
