//! qiflow alone: `init` installs every process-wide piece (docs/composition.md, set-up 1).

use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match composition::load_config("alone") {
        Ok(config) => config,
        Err(code) => return code,
    };
    // The tracing subscriber (qiflow's filter from RUST_LOG or [logging] level, its log and
    // capture layers, `log` records too), the global metrics recorder, the panic hook, and with
    // [errors] sentry_dsn qiflow's Sentry client on sentry's main hub.
    let (observer, guard) = match qiflow_core::init(&config) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("alone: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = composition::serve(observer, config.server.addr);
    // Flushes every pipeline (logs last) within the guard's budget.
    drop(guard);
    code
}
