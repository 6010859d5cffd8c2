//! qiflow beside the host's own OpenTelemetry pipeline: an SDK tracer provider and
//! tracing-opentelemetry's layer in the host's registry (docs/composition.md, set-up 3).

use std::process::ExitCode;

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> ExitCode {
    let config = match composition::load_config("beside_opentelemetry") {
        Ok(config) => config,
        Err(code) => return code,
    };
    let (observer, guard) = match qiflow_core::Observer::builder(config.clone())
        .install_global(false)
        .build()
    {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("beside_opentelemetry: {e}");
            return ExitCode::FAILURE;
        }
    };

    // The host's pipeline: spans batched to its exporter (`PrintExporter` stands in for
    // opentelemetry-otlp's), under its own service name.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(composition::PrintExporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(config.service.name.clone())
                .build(),
        )
        .build();
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("composition"))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    // qiflow's `request` span is a tracing span like the handler's: the host's layer exports
    // both, the handler's as a child of the request's.
    tracing_subscriber::registry()
        .with(otel)
        .with(
            observer
                .log_layer()
                .and_then(observer.capture_layer())
                .with_filter(observer.log_filter()),
        )
        .init();
    if let Err(e) = metrics::set_global_recorder(observer.metrics_recorder()) {
        eprintln!("beside_opentelemetry: {e}");
        return ExitCode::FAILURE;
    }
    observer.install_panic_hook();
    sentry::Hub::main().bind_client(observer.sentry_client());

    let code = composition::serve(observer, config.server.addr);
    drop(guard);
    // Exports what is still batched; bounded by the SDK's own timeout.
    if let Err(e) = provider.shutdown() {
        eprintln!("beside_opentelemetry: the tracer provider did not shut down cleanly: {e}");
    }
    code
}
