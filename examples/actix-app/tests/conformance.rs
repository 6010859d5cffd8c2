//! The shared conformance suite (`examples/conformance/cases.rs`) against the `actix-app` binary:
//! request ids, route-template metrics, access lines, panics, health and graceful shutdown, checked
//! exactly as for the axum and tower-hyper examples.

#![allow(clippy::unwrap_used)]

#[path = "../../conformance/cases.rs"]
mod cases;

#[test]
fn actix_app_conforms() {
    cases::run_all(env!("CARGO_BIN_EXE_actix-app"));
}
