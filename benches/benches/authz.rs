//! One permission decision with the demo policy (2 users, 2 roles), with 1,000 users and 100
//! roles, and with 10,000 users and 1,000 roles, roles inheriting in chains of depth 5. Users get
//! their roles from `[authz.users]`; each decision is for a user asking a permission one of
//! their roles grants through its chain (the longest path), and one none grants.
//!
//! Side by side, at each size: qiflow's `Policy::allows` (`allows/{size}/granted|denied`) and the
//! `casbin` crate's `Enforcer::enforce` on the same RBAC data (`casbin/{size}/granted|denied`):
//! the standard RBAC model (`g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act`), a
//! `MemoryAdapter`, a `p` rule per role and action, and `g` rules for user to role and role to
//! inherited role, with casbin's default role manager (10 levels, more than the 5 needed). Both
//! are asserted to grant and deny the same requests before they are measured.
//!
//! And the whole granted path a guard takes, `Observer::authorize` (`authorize/{size}/granted`):
//! the policy in force loaded from its atomic pointer, the decision, and the decision counter.
//!
//! And the guard as a tower service (`guard/*`), each call with a request carrying a `Principal`
//! (made per call in every case, as authentication does): the service alone (`guard/none`), the
//! least a guard does (`guard/floor`: find the principal in the extensions, then call the
//! service), and `RequireLayer` granting and denying (an observer without an audit trail:
//! the denial's record is the audit pipeline's cost, measured in the audit benches).
//!
//! `cargo bench -p qiflow-benches --bench authz`

use std::collections::BTreeMap;

use casbin::{CoreApi, DefaultModel, Enforcer, MemoryAdapter, MgmtApi};
use criterion::Criterion;
use qiflow_core::authz::{Permission, Policy, Principal};
use qiflow_core::config::{AuthzConfig, RoleConfig};

/// An observer that writes nothing: no log files, no audit trail, no state files.
const QUIET: &str = "[logging]\ndir = \"\"\nstdout = false\n[audit]\nenabled = false\n\
    [metrics]\nsystem = false\n[admin]\ntoken_file = \"\"\n[baseline]\nstate_file = \"\"\n\
    [alerts]\nstate_file = \"\"\n";

/// `users` users and `roles` roles: role `r{i}` inherits `r{i+1}` unless `i+1` is a multiple
/// of 5 (chains of depth 5), and grants `res{i}:read` and `res{i}:write`; user `u{k}` holds
/// `r{k % roles}`.
fn policy_config(users: usize, roles: usize) -> AuthzConfig {
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

/// The standard RBAC model: a request's subject holds (directly or through inherited roles) the
/// subject of a rule for the same object and action.
const CASBIN_MODEL: &str = "
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act
";

/// The same policy as [`policy`] for casbin: `p, r{i}, res{i}, read|write` for each role,
/// `g, r{i}, r{i+1}` for each inheritance, and `g, u{k}, r{k % roles}` for each user, added
/// through the management API to an enforcer over an empty `MemoryAdapter`.
async fn casbin_enforcer(users: usize, roles: usize) -> Enforcer {
    let model = DefaultModel::from_str(CASBIN_MODEL)
        .await
        .expect("the RBAC model parses");
    let mut enforcer = Enforcer::new(model, MemoryAdapter::default())
        .await
        .expect("an enforcer over an empty memory adapter");
    let rules = (0..roles)
        .flat_map(|i| {
            ["read", "write"].map(|act| vec![format!("r{i}"), format!("res{i}"), act.to_owned()])
        })
        .collect::<Vec<_>>();
    assert!(
        enforcer
            .add_policies(rules)
            .await
            .expect("the p rules are added")
    );
    let inherits = (0..roles)
        .filter(|i| (i + 1) % 5 != 0 && i + 1 < roles)
        .map(|i| vec![format!("r{i}"), format!("r{}", i + 1)]);
    let holds = (0..users).map(|k| vec![format!("u{k}"), format!("r{}", k % roles)]);
    let groupings = inherits.chain(holds).collect::<Vec<_>>();
    assert!(
        enforcer
            .add_grouping_policies(groupings)
            .await
            .expect("the g rules are added")
    );
    enforcer
}

fn main() {
    // casbin's management API is async (its adapters may do I/O): the enforcers are built on
    // this runtime, and `enforce` itself is synchronous.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let mut c = Criterion::default().configure_from_args();
    for (name, users, roles) in [
        ("demo", 2, 2),
        ("1k-users-100-roles", 1_000, 100),
        ("10k-users-1k-roles", 10_000, 1_000),
    ] {
        let policy =
            Policy::new(&policy_config(users, roles)).expect("the bench's policy compiles");
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

        // The guard's whole granted path: an observer holding the same policy.
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut config = qiflow_core::config::Loader::new()
            .dotenv(None)
            .env(Vec::<(String, String)>::new())
            .toml_str(QUIET)
            .load()
            .expect("the bench's configuration loads");
        config.service.state_dir = dir.path().into();
        config.authz = policy_config(users, roles);
        let (observer, _guard) = qiflow_core::Observer::builder(config)
            .install_global(false)
            .build()
            .expect("the bench's observer starts");
        let request = qiflow_core::request::RequestInfo::new("GET", "/res");
        assert!(observer.authorize(&user, &granted, &request).is_granted());
        c.bench_function(&format!("authorize/{name}/granted"), |b| {
            b.iter(|| {
                observer.authorize(
                    std::hint::black_box(&user),
                    std::hint::black_box(&granted),
                    &request,
                )
            });
        });

        let enforcer = runtime.block_on(casbin_enforcer(users, roles));
        let far_object = format!("res{far}");
        let casbin_granted = ("u0", far_object.as_str(), "write");
        let casbin_denied = ("u0", "res999999", "write");
        // The same answers as qiflow's, so both decide the same question.
        assert!(enforcer.enforce(casbin_granted).expect("casbin decides"));
        assert!(!enforcer.enforce(casbin_denied).expect("casbin decides"));
        c.bench_function(&format!("casbin/{name}/granted"), |b| {
            b.iter(|| enforcer.enforce(std::hint::black_box(casbin_granted)));
        });
        c.bench_function(&format!("casbin/{name}/denied"), |b| {
            b.iter(|| enforcer.enforce(std::hint::black_box(casbin_denied)));
        });
    }
    guards(&mut c);
    c.final_summary();
}

/// Polls a future that is ready at once (the services below never wait).
fn ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("the bench's services answer at once"),
    }
}

type Response = axum::http::Response<String>;

/// A request for `/users/7` from the principal `u0`.
fn request() -> axum::http::Request<String> {
    let mut request = axum::http::Request::new(String::new());
    request.extensions_mut().insert(Principal::new("u0"));
    request
}

/// Calls `service` once with a fresh [`request`].
fn call<S>(service: &mut S) -> Response
where
    S: tower::Service<axum::http::Request<String>, Response = Response>,
    S::Error: std::fmt::Debug,
{
    ready(service.call(request())).expect("the bench's services answer")
}

/// The guard per request: none, the floor, granted, denied.
fn guards(c: &mut Criterion) {
    use tower::Layer as _;
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut config = qiflow_core::config::Loader::new()
        .dotenv(None)
        .env(Vec::<(String, String)>::new())
        .toml_str(format!(
            "{QUIET}[authz.roles.reader]\npermissions = [\"users:read\"]\n[authz.users]\nu0 = [\"reader\"]\n[authz.denial_alert]\ncount = 0\n"
        ))
        .load()
        .expect("the bench's configuration loads");
    config.service.state_dir = dir.path().into();
    let (observer, _guard) = qiflow_core::Observer::builder(config)
        .install_global(false)
        .build()
        .expect("the bench's observer starts");
    let handler = tower::service_fn(|_request: axum::http::Request<String>| async {
        Ok::<_, std::convert::Infallible>(Response::new(String::from("{}")))
    });
    let mut none = handler;
    c.bench_function("guard/none", |b| b.iter(|| call(&mut none)));
    // The least a guard does: look for the principal, then call the service.
    let mut floor = tower::service_fn(move |request: axum::http::Request<String>| {
        let found = request.extensions().get::<Principal>().is_some();
        let mut inner = handler;
        async move {
            assert!(found);
            tower::Service::call(&mut inner, request).await
        }
    });
    c.bench_function("guard/floor", |b| b.iter(|| call(&mut floor)));
    let mut granted = qiflow_axum::RequireLayer::new(&observer, "users:read").layer(handler);
    assert_eq!(call(&mut granted).status(), 200);
    c.bench_function("guard/require/granted", |b| b.iter(|| call(&mut granted)));
    let mut denied = qiflow_axum::RequireLayer::new(&observer, "users:write").layer(handler);
    assert_eq!(call(&mut denied).status(), 403);
    c.bench_function("guard/require/denied", |b| b.iter(|| call(&mut denied)));
}
