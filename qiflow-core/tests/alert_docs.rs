//! Every TOML example of docs/alerts.md loads, passes the checks, and builds its channels.
// The guide has a channel of every kind: the `email` and `http-channels` features.
#![cfg(all(feature = "email", feature = "http-channels"))]
#![allow(clippy::unwrap_used)]

#[test]
fn every_toml_example_in_the_alerts_guide_works() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/alerts.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), l) => {
                block.push_str(l);
                block.push('\n');
            }
            _ => {}
        }
    }
    assert!(blocks.len() >= 8, "found {} TOML blocks", blocks.len());
    let kinds = [
        "slack",
        "dingtalk",
        "email",
        "sms",
        "webhook",
        "alertmanager",
        "log",
    ];
    for kind in kinds {
        assert!(
            blocks
                .iter()
                .any(|b| b.contains(&format!("kind = \"{kind}\""))),
            "no example for {kind}"
        );
    }
    for block in &blocks {
        let mut config = qiflow_core::config::Loader::new()
            .toml_str(format!(
                "[logging]\ndir = \"\"\nstdout = false\n[audit]\nenabled = false\n{block}"
            ))
            .env(Vec::<(String, String)>::new())
            .load()
            .unwrap_or_else(|e| panic!("{e}\nin\n{block}"));
        // No state or token file in the crate's directory, the tests' working directory.
        config.alerts.state_file = std::path::PathBuf::new();
        config.baseline.state_file = std::path::PathBuf::new();
        config.service.state_dir = std::path::PathBuf::new();
        config.admin.token_file = std::path::PathBuf::new();
        let (observer, guard) = qiflow_core::Observer::builder(config)
            .install_global(false)
            .build()
            .unwrap_or_else(|e| panic!("{e}\nin\n{block}"));
        assert!(!observer.alerts().view().channels.is_empty());
        drop(guard);
    }
}
