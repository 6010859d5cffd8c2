//! qiflow beside the host's own `tracing_subscriber::registry()`, with its `EnvFilter` and its
//! fmt layer on stdout (docs/composition.md, set-up 2).

use std::process::ExitCode;

use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> ExitCode {
    let mut config = match composition::load_config("beside_subscriber") {
        Ok(config) => config,
        Err(code) => return code,
    };
    // The host's fmt layer owns stdout; qiflow writes its JSON lines to its file only.
    config.logging.stdout = false;
    let (observer, guard) = match qiflow_core::Observer::builder(config.clone())
        .install_global(false)
        .build()
    {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("beside_subscriber: {e}");
            return ExitCode::FAILURE;
        }
    };

    // The host's subscriber, as it was: its fmt layer under its own EnvFilter. qiflow's log and
    // capture layers sit beside it under qiflow's filter, which `PUT /qiflow/api/loggers` and
    // `observer.set_log_level` change without touching the host's.
    let host_filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(host_filter))
        .with(
            observer
                .log_layer()
                .and_then(observer.capture_layer())
                .with_filter(observer.log_filter()),
        )
        .init();

    // The rest of what `init` would have installed, each piece by hand.
    if let Err(e) = metrics::set_global_recorder(observer.metrics_recorder()) {
        eprintln!("beside_subscriber: {e}");
        return ExitCode::FAILURE;
    }
    observer.install_panic_hook();
    sentry::Hub::main().bind_client(observer.sentry_client());

    let code = composition::serve(observer, config.server.addr);
    drop(guard);
    code
}
