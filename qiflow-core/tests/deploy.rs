//! Deployments: each start is recorded in the state directory, served at
//! `GET /qiflow/api/deployments`, audited as `service.deployed`, and marked on `/metrics`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use qiflow_core::Observer;
use qiflow_core::admin::AdminRequest;
use qiflow_core::test::ADMIN_TOKEN;

#[test]
fn each_start_is_recorded_served_audited_and_marked_on_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let start = |version: &str| {
        let mut config = qiflow_core::test::quiet_config();
        config.service.name = "shop".into();
        config.service.version = version.into();
        config.service.commit = "3f9c2e1".into();
        config.service.state_dir = dir.path().join("state");
        config.audit.enabled = true;
        config.audit.dir = dir.path().join("audit");
        Observer::builder(config)
            .install_global(false)
            .build()
            .unwrap()
    };
    drop(start("1.4.1"));
    let (observer, _guard) = start("1.4.2");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stranger = rt.block_on(observer.admin(AdminRequest::new("GET", "/qiflow/api/deployments")));
    assert_eq!(stranger.status(), 401);
    let answer = rt.block_on(
        observer.admin(
            AdminRequest::new("GET", "/qiflow/api/deployments")
                .header("authorization", format!("Bearer {ADMIN_TOKEN}")),
        ),
    );
    assert_eq!(answer.status(), 200);
    let list: serde_json::Value = serde_json::from_slice(answer.body()).unwrap();
    assert_eq!(list[0]["version"], "1.4.2");
    assert_eq!(list[1]["version"], "1.4.1");
    assert_eq!(list[0]["commit"], "3f9c2e1");
    assert_eq!(list[0]["service"], "shop");
    assert_eq!(list[0]["config_hash"].as_str().unwrap().len(), 16);
    // The version alone differs, and the version is part of the effective configuration.
    assert_ne!(list[0]["config_hash"], list[1]["config_hash"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let file = dir.path().join("state/deployments.json");
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // The instance id was generated at the first start, kept in the state directory, and is
    // the same at the second: on both deployment records and on qiflow_build_info.
    let instance = std::fs::read_to_string(dir.path().join("state/instance")).unwrap();
    let instance = instance.trim();
    assert!(!instance.is_empty());
    assert_eq!(observer.config().service.instance, instance);
    assert_eq!(list[0]["instance"], instance);
    assert_eq!(list[1]["instance"], instance);
    let metrics = observer.render_metrics();
    assert!(
        metrics.contains(&format!("qiflow_build_info{{service=\"shop\",environment=\"development\",version=\"1.4.2\",commit=\"3f9c2e1\",service_instance_id=\"{instance}\"}} 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains("qiflow_deployment_timestamp_seconds "),
        "{metrics}"
    );
    assert!(observer.flush(Duration::from_secs(5)));
    let mut query = qiflow_core::audit::AuditQuery::new();
    query.action = Some("service.deployed".into());
    let page = rt.block_on(observer.audit_query(&query)).unwrap();
    assert_eq!(page.records.len(), 2);
    assert_eq!(page.records[0].actor, "qiflow");
    assert_eq!(page.records[0].resource, "service/shop");
    assert_eq!(page.records[0].metadata["version"], "1.4.2");
    assert_eq!(page.records[0].metadata["commit"], "3f9c2e1");
}

/// Two instances never share a directory by accident: a second observer on the state, log or
/// audit directory of a running one fails at start, naming the setting, the directory and the
/// process that holds it; once the first has shut down, the directory is free.
#[test]
fn a_second_instance_on_the_same_directories_fails_at_start_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = |state: &str, logs: &str, audit: &str| {
        let mut config = qiflow_core::test::quiet_config();
        config.service.state_dir = dir.path().join(state);
        config.logging.dir = dir.path().join(logs);
        config.audit.enabled = true;
        config.audit.dir = dir.path().join(audit);
        config
    };
    let build = |config| Observer::builder(config).install_global(false).build();
    let (first, guard) = build(config("state", "logs", "audit")).unwrap();
    for (second, key, shared) in [
        (
            config("state", "logs-2", "audit-2"),
            "service.state_dir",
            "state",
        ),
        (config("state-2", "logs", "audit-2"), "logging.dir", "logs"),
        (config("state-2", "logs-2", "audit"), "audit.dir", "audit"),
    ] {
        let error = build(second).unwrap_err().to_string();
        let pid = std::process::id().to_string();
        assert!(
            error.contains(key)
                && error.contains(&dir.path().join(shared).display().to_string())
                && error.contains(&format!("in use by process {pid}")),
            "{error}"
        );
    }
    // One directory for two settings is locked once, not refused by itself.
    let mut same = config("one", "one", "one-audit");
    same.service.name = "solo".into();
    drop(build(same).unwrap());
    // Shut down, the first frees its directories.
    drop(guard);
    drop(first);
    let (_again, _guard) = build(config("state", "logs", "audit")).unwrap();
}
