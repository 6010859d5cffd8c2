//! `SIGHUP` re-reads `[authz]` from the configuration's file: the new policy decides the next
//! check, the change is audited (`authz.changed`, `how = "SIGHUP"`), and a file that no longer
//! loads changes nothing. (Its own test binary: `init` installs process-wide pieces, and the
//! signal goes to the whole process.)

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::{Duration, Instant};

use qiflow_core::authz::{Permission, Principal};
use qiflow_core::request::RequestInfo;

fn config_text(dir: &std::path::Path, demo_roles: &str) -> String {
    format!(
        "[logging]\ndir = \"\"\nstdout = false\n\
         [service]\nname = \"shop\"\nstate_dir = \"{state}\"\n\
         [admin]\ntoken_file = \"\"\n\
         [baseline]\nstate_file = \"\"\n\
         [alerts]\nstate_file = \"\"\n\
         [audit]\nenabled = true\ndir = \"{audit}\"\n\
         [authz.roles.viewer]\npermissions = [\"orders:read\"]\n\
         [authz.roles.admin]\ninherits = [\"viewer\"]\npermissions = [\"orders:*\"]\n\
         [authz.users]\ndemo = {demo_roles}\n",
        state = dir.join("state").display(),
        audit = dir.join("audit").display(),
    )
}

fn hangup() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn sighup_reloads_the_policy_from_the_file_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qiflow.toml");
    std::fs::write(&file, config_text(dir.path(), "[\"viewer\"]")).unwrap();
    let config = qiflow_core::config::Loader::new()
        .file(&file)
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap();
    assert_eq!(config.source(), Some(file.as_path()));
    let (observer, guard) = qiflow_core::init(&config).unwrap();
    let write = Permission::parse("orders:write").unwrap();
    let demo = Principal::new("demo");
    let post = RequestInfo::new("POST", "/orders");
    assert!(!observer.authorize(&demo, &write, &post).is_granted());

    // demo becomes an admin in the file; the signal puts it in force.
    std::fs::write(&file, config_text(dir.path(), "[\"admin\"]")).unwrap();
    hangup();
    assert!(
        wait_until(|| observer.authorize(&demo, &write, &post).is_granted()),
        "SIGHUP did not reload [authz]"
    );

    // A file that no longer loads (a cycle) changes nothing, and the process lives on.
    std::fs::write(
        &file,
        config_text(dir.path(), "[\"viewer\"]")
            + "[authz.roles.x]\ninherits = [\"y\"]\n[authz.roles.y]\ninherits = [\"x\"]\n",
    )
    .unwrap();
    hangup();
    std::thread::sleep(Duration::from_millis(500));
    assert!(observer.authorize(&demo, &write, &post).is_granted());

    // The reload is on the record.
    assert!(observer.flush(Duration::from_secs(10)));
    let mut query = qiflow_core::audit::AuditQuery::new();
    query.action = Some("authz.changed".into());
    let page = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(observer.audit_query(&query))
        .unwrap();
    assert_eq!(page.records.len(), 1, "{:?}", page.records);
    let record = &page.records[0];
    assert_eq!(record.actor, "qiflow");
    let metadata = serde_json::to_value(&record.metadata).unwrap();
    assert_eq!(metadata["how"], "SIGHUP");
    assert_eq!(
        metadata["after"]["users"]["demo"],
        serde_json::json!(["admin"])
    );
    drop(guard);
}
