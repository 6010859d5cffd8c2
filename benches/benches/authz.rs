//! One permission decision (`Policy::allows`) with the demo policy, with 1,000 users and 100
//! roles, and with 10,000 users and 1,000 roles, roles inheriting in chains of depth 5. Users get
//! their roles from `[authz.users]`; each decision is for a user asking a permission one of
//! their roles grants through its chain (the longest path), and one none grants.
//!
//! `cargo bench -p qiflow-benches --bench authz`

use std::collections::BTreeMap;

use criterion::Criterion;
use qiflow_core::authz::{Permission, Policy, Principal};
use qiflow_core::config::{AuthzConfig, RoleConfig};

/// `users` users and `roles` roles: role `r{i}` inherits `r{i+1}` unless `i+1` is a multiple
/// of 5 (chains of depth 5), and grants `res{i}:read` and `res{i}:write`; user `u{k}` holds
/// `r{k % roles}`.
fn policy(users: usize, roles: usize) -> AuthzConfig {
    let mut config = AuthzConfig::default();
    for i in 0..roles {
        let inherits = if (i + 1) % 5 != 0 && i + 1 < roles {
            vec![format!("r{}", i + 1)]
        } else {
            Vec::new()
        };
        let mut role = RoleConfig::default();
        role.inherits = inherits;
        role.permissions = vec![format!("res{i}:read"), format!("res{i}:write")];
        config.roles.insert(format!("r{i}"), role);
    }
    config.users = (0..users)
        .map(|k| (format!("u{k}"), vec![format!("r{}", k % roles)]))
        .collect::<BTreeMap<_, _>>();
    config
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    for (name, users, roles) in [
        ("demo", 2, 2),
        ("1k-users-100-roles", 1_000, 100),
        ("10k-users-1k-roles", 10_000, 1_000),
    ] {
        let policy = Policy::new(&policy(users, roles)).expect("the bench's policy compiles");
        // u0 holds r0, which reaches the end of its chain (r4, or the last role): the
        // permission granted farthest away.
        let user = Principal::new("u0");
        let far = 4.min(roles - 1);
        let granted = Permission::parse(&format!("res{far}:write")).expect("a permission");
        let denied = Permission::parse("res999999:write").expect("a permission");
        assert!(policy.allows(&user, &granted));
        assert!(!policy.allows(&user, &denied));
        c.bench_function(&format!("allows/{name}/granted"), |b| {
            b.iter(|| policy.allows(std::hint::black_box(&user), std::hint::black_box(&granted)));
        });
        c.bench_function(&format!("allows/{name}/denied"), |b| {
            b.iter(|| policy.allows(std::hint::black_box(&user), std::hint::black_box(&denied)));
        });
    }
    c.final_summary();
}
