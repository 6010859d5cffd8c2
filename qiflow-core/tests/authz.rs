//! `[authz]` at load: a cycle of inherits, an unknown role and a permission that does not parse
//! are refused naming their key paths; a role that grants nothing is advice. Then
//! `Observer::authorize`: every denial audited, counted and listed, grants audited per
//! `audit_grants`; the denial alert through a real webhook receiver, once per burst, resolved when
//! the window empties; policy changes through `reload_authz` and the operator API, audited, with
//! the API closed to strangers; `GET /qiflow/api/audit/stats`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use qiflow_core::Observer;
use qiflow_core::admin::{AdminRequest, AdminResponse};
use qiflow_core::authz::{Decision, Permission, Policy, Principal};
use qiflow_core::request::RequestInfo;
use qiflow_core::test::{ADMIN_TOKEN, ManualClock};
use support::{Receiver, wait_until};

const POLICY: &str = "[authz.roles.viewer]\npermissions = [\"orders:read\"]\n\
     [authz.roles.admin]\ninherits = [\"viewer\"]\npermissions = [\"orders:*\"]\n\
     [authz.users]\ndemo = [\"viewer\"]\nadmin = [\"admin\"]\n";
const READ_TOKEN: &str = "viewer-token-0123456789abcdef";

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
    // What guards warn about when built: a permission no role grants.
    assert!(policy.grantable(&write));
    assert!(!policy.grantable(&Permission::parse("ordres:write").unwrap()));
}

/// An observer with the demo policy plus `extra` TOML, the audit trail and the state directory
/// in `dir`, a write token (`ops`) and a read token (`viewer`), alerts to `receiver`.
fn observer(
    dir: &std::path::Path,
    extra: &str,
    receiver: Option<&Receiver>,
    clock: Arc<ManualClock>,
) -> (Observer, qiflow_core::Guard) {
    let alerts = match receiver {
        Some(r) => format!(
            "[alerts]\ngroup_wait = \"0s\"\ncooldown = \"24h\"\n[[alerts.channels]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\n",
            r.url("/hook")
        ),
        None => String::new(),
    };
    let mut config = support::config(&format!("{alerts}{POLICY}{extra}"));
    config.audit.enabled = true;
    config.audit.dir = dir.join("audit");
    config.service.state_dir = dir.join("state");
    config.admin.tokens = vec![
        qiflow_core::config::AdminToken::new(
            "ops",
            ADMIN_TOKEN,
            qiflow_core::config::TokenScope::Write,
        ),
        qiflow_core::config::AdminToken::new(
            "viewer",
            READ_TOKEN,
            qiflow_core::config::TokenScope::Read,
        ),
    ];
    Observer::builder(config)
        .install_global(false)
        .clock(clock)
        .build()
        .unwrap()
}

fn json(response: &AdminResponse) -> serde_json::Value {
    serde_json::from_slice(response.body()).unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ))
}

fn ask(
    observer: &Observer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> AdminResponse {
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let mut request = AdminRequest::new(method, path)
        .query(query)
        .body(body.as_bytes().to_vec());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(observer.admin(request))
}

/// The trail's records with `action`, newest first (after the queue is written).
fn records(observer: &Observer, action: &str) -> Vec<serde_json::Value> {
    assert!(observer.flush(Duration::from_secs(10)));
    let response = ask(
        observer,
        "GET",
        &format!("/qiflow/api/audit?action={action}"),
        Some(ADMIN_TOKEN),
        "",
    );
    assert_eq!(response.status(), 200, "{}", response.text());
    json(&response)["records"].as_array().unwrap().clone()
}

#[test]
fn a_denial_is_audited_logged_counted_and_listed_and_grants_follow_audit_grants() {
    let dir = tempfile::tempdir().unwrap();
    let (observer, _guard) = observer(
        dir.path(),
        "[authz]\naudit_grants = \"writes\"\n",
        None,
        clock(),
    );
    let read = Permission::parse("orders:read").unwrap();
    let write = Permission::parse("orders:write").unwrap();
    let mut post = RequestInfo::new("POST", "/orders/7");
    post.route = Some("/orders/{id}".into());
    post.request_id = Some("req-42".into());
    let get = RequestInfo::new("GET", "/orders");
    let demo = Principal::new("demo");
    // Inheritance (admin → viewer) and the wildcard (orders:*).
    let admin = Principal::new("admin");
    assert_eq!(observer.authorize(&admin, &read, &get), Decision::Granted);
    assert_eq!(observer.authorize(&admin, &write, &post), Decision::Granted);
    assert_eq!(observer.authorize(&demo, &read, &get), Decision::Granted);
    assert_eq!(observer.authorize(&demo, &write, &post), Decision::Denied);
    // A role from the host's authentication counts too.
    let host = Principal::new("carol").role("admin");
    assert_eq!(observer.authorize(&host, &write, &post), Decision::Granted);

    let denied = records(&observer, "authz.denied");
    assert_eq!(denied.len(), 1, "{denied:?}");
    let record = &denied[0];
    assert_eq!(record["actor"], "demo");
    assert_eq!(record["resource"], "orders:write");
    assert_eq!(record["outcome"], "denied");
    assert_eq!(record["request_id"], "req-42");
    assert_eq!(record["metadata"]["route"], "/orders/{id}");
    assert_eq!(record["metadata"]["method"], "POST");
    assert_eq!(record["metadata"]["path"], "/orders/7");
    // `writes`: the two POST grants are audited, the GET grants are not.
    let granted = records(&observer, "authz.granted");
    let actors: Vec<&str> = granted
        .iter()
        .map(|r| r["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["carol", "admin"]);
    assert!(granted.iter().all(|r| r["outcome"] == "success"));

    let listed = observer.authz_denials();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].actor.as_str(),
            listed[0].permission.as_str(),
            listed[0].route.as_str()
        ),
        ("demo", "orders:write", "/orders/{id}")
    );
    assert_eq!(listed[0].request_id.as_deref(), Some("req-42"));

    let metrics = observer.render_metrics();
    for line in [
        r#"qiflow_authz_decisions_total{decision="granted",permission="orders:read"} 2"#,
        r#"qiflow_authz_decisions_total{decision="granted",permission="orders:write"} 2"#,
        r#"qiflow_authz_decisions_total{decision="denied",permission="orders:write"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    observer.authorize_unauthenticated(&write, &post);
    assert!(observer.render_metrics().contains(
        r#"qiflow_authz_decisions_total{decision="unauthenticated",permission="orders:write"} 1"#
    ));
    // Not audited: it names no one.
    assert_eq!(records(&observer, "authz.denied").len(), 1);
}

#[test]
fn a_burst_of_denials_alerts_once_a_trickle_never_and_the_alert_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![]);
    let clock = clock();
    let (observer, _guard) = observer(
        dir.path(),
        "[authz.denial_alert]\ncount = 4\nwindow = \"1m\"\n",
        Some(&receiver),
        clock.clone(),
    );
    let write = Permission::parse("orders:write").unwrap();
    let post = RequestInfo::new("POST", "/orders");
    // A trickle: three denials a minute apart never make four within a minute.
    for _ in 0..3 {
        assert!(
            !observer
                .authorize(&Principal::new("trickle"), &write, &post)
                .is_granted()
        );
        clock.advance(Duration::from_secs(61));
    }
    // A burst: ten denials within seconds.
    for _ in 0..10 {
        observer.authorize(&Principal::new("probe"), &write, &post);
        clock.advance(Duration::from_secs(1));
    }
    assert!(wait_until(Duration::from_secs(10), || receiver.count() >= 1));
    std::thread::sleep(Duration::from_millis(300));
    let fired = receiver.received();
    assert_eq!(fired.len(), 1, "one notification for the burst");
    let body = fired[0].json();
    let text = body.to_string();
    assert!(
        text.contains("authz_denials") && text.contains("probe"),
        "{text}"
    );
    assert!(!text.contains("trickle"), "{text}");
    // The window empties: the next sweep (every 5 s) resolves it, once.
    clock.advance(Duration::from_secs(120));
    assert!(wait_until(Duration::from_secs(12), || receiver.count() >= 2));
    let resolved = receiver.received()[1].json().to_string();
    assert!(
        resolved.contains("resolved") && resolved.contains("probe"),
        "{resolved}"
    );
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(receiver.count(), 2);
}

#[test]
fn policy_changes_are_audited_effective_at_once_and_the_api_is_closed_to_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let (observer, guard) = observer(dir.path(), "", None, clock());
    let write = Permission::parse("orders:write").unwrap();
    let post = RequestInfo::new("POST", "/orders");
    let demo = Principal::new("demo");
    assert!(!observer.authorize(&demo, &write, &post).is_granted());

    // Strangers and read tokens change nothing.
    let path = "/qiflow/api/authz/users/demo";
    let body = r#"{"roles":["admin"]}"#;
    for token in [None, Some("wrong-token-0123456789abcdef0123")] {
        assert_eq!(ask(&observer, "PUT", path, token, body).status(), 401);
        assert_eq!(
            ask(&observer, "GET", "/qiflow/api/authz", token, "").status(),
            401
        );
        assert_eq!(
            ask(&observer, "GET", "/qiflow/api/audit/stats", token, "").status(),
            401
        );
    }
    assert_eq!(
        ask(&observer, "PUT", path, Some(READ_TOKEN), body).status(),
        403
    );
    assert_eq!(
        ask(&observer, "GET", path, Some(ADMIN_TOKEN), "").status(),
        405
    );
    assert!(!observer.authorize(&demo, &write, &post).is_granted());
    // Bad bodies and unknown roles are 400, audited as failures, and change nothing.
    let bad = ask(
        &observer,
        "PUT",
        path,
        Some(ADMIN_TOKEN),
        r#"{"role":"admin"}"#,
    );
    assert_eq!(bad.status(), 400, "{}", bad.text());
    let unknown = ask(
        &observer,
        "PUT",
        path,
        Some(ADMIN_TOKEN),
        r#"{"roles":["root"]}"#,
    );
    assert_eq!(unknown.status(), 400);
    assert!(unknown.text().contains("root"), "{}", unknown.text());
    assert!(!observer.authorize(&demo, &write, &post).is_granted());

    // The write token's change is in force for the next check, without a restart.
    let changed = ask(&observer, "PUT", path, Some(ADMIN_TOKEN), body);
    assert_eq!(changed.status(), 200, "{}", changed.text());
    assert!(observer.authorize(&demo, &write, &post).is_granted());
    let view = json(&ask(
        &observer,
        "GET",
        "/qiflow/api/authz",
        Some(READ_TOKEN),
        "",
    ));
    assert_eq!(view["users"]["demo"], serde_json::json!(["admin"]));
    assert_eq!(view["changed_users"]["demo"], serde_json::json!(["admin"]));
    let effective = view["roles"]["admin"]["effective"].to_string();
    assert!(
        effective.contains("orders:read") && effective.contains("orders:*"),
        "{effective}"
    );
    assert_eq!(view["recent_denials"][0]["actor"], "demo");

    let changes = records(&observer, "authz.changed");
    let outcomes: Vec<(&str, &str)> = changes
        .iter()
        .map(|r| (r["actor"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    // Newest first: the change, the unknown role, the bad body, the read token's refusal.
    assert_eq!(
        outcomes,
        [
            ("ops", "success"),
            ("ops", "failure"),
            ("ops", "failure"),
            ("viewer", "denied")
        ]
    );
    assert_eq!(changes[0]["resource"], "authz/users/demo");
    assert_eq!(
        changes[0]["metadata"]["before"]["roles"],
        serde_json::json!(["viewer"])
    );
    assert_eq!(
        changes[0]["metadata"]["after"]["roles"],
        serde_json::json!(["admin"])
    );

    // Kept across a restart.
    drop(guard);
    drop(observer);
    let (observer, guard) = self::observer(dir.path(), "", None, clock());
    assert!(observer.authorize(&demo, &write, &post).is_granted());
    // DELETE gives the configuration's roles back.
    assert_eq!(
        ask(&observer, "DELETE", path, Some(ADMIN_TOKEN), "").status(),
        200
    );
    assert!(!observer.authorize(&demo, &write, &post).is_granted());
    assert_eq!(
        ask(&observer, "DELETE", path, Some(ADMIN_TOKEN), "").status(),
        400
    );

    // A reload: a cycle changes nothing; a good policy is in force at once, audited.
    let viewer_only = qiflow_core::config::Loader::new()
        .toml_str("[authz.roles.viewer]\npermissions = [\"orders:read\"]\n")
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap()
        .authz;
    let mut cyclic = viewer_only.clone();
    for (name, parent) in [("x", "y"), ("y", "x")] {
        let mut role = qiflow_core::config::RoleConfig::default();
        role.inherits = vec![parent.into()];
        cyclic.roles.insert(name.into(), role);
    }
    let error = observer.reload_authz(&cyclic).unwrap_err().to_string();
    assert!(
        error.contains("authz.roles.x.inherits") && error.contains("cycle"),
        "{error}"
    );
    let admin = Principal::new("admin");
    assert!(observer.authorize(&admin, &write, &post).is_granted());
    let mut smaller = viewer_only;
    smaller.users.insert("admin".into(), vec!["viewer".into()]);
    observer.reload_authz(&smaller).unwrap();
    assert!(!observer.authorize(&admin, &write, &post).is_granted());
    let reloads = records(&observer, "authz.changed");
    assert_eq!(reloads[0]["actor"], "qiflow");
    assert_eq!(reloads[0]["metadata"]["how"], "reload");
    assert!(reloads[0]["metadata"]["before"]["roles"]["admin"].is_object());
    assert!(reloads[0]["metadata"]["after"]["roles"]["admin"].is_null());

    // The counts by action and actor, from the trail.
    let stats = ask(
        &observer,
        "GET",
        "/qiflow/api/audit/stats",
        Some(READ_TOKEN),
        "",
    );
    assert_eq!(stats.status(), 200, "{}", stats.text());
    let stats = json(&stats);
    assert!(
        stats["by_action"]["authz.changed"].as_u64().unwrap() >= 6,
        "{stats}"
    );
    assert!(
        stats["by_action"]["authz.denied"].as_u64().unwrap() >= 2,
        "{stats}"
    );
    let ops = stats["by_actor"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["actor"] == "ops")
        .unwrap();
    assert!(ops["count"].as_u64().unwrap() >= 5, "{stats}");
    assert_eq!(stats["truncated"], false);
    drop(guard);
}
