//! The shared conformance suite (`examples/conformance/cases.rs`) against the `tower-hyper` binary
//! (hyper + tower, no framework): request ids, route-template metrics, access lines, panics, health and graceful
//! shutdown, checked exactly as for the axum and actix-web examples.

#![allow(clippy::unwrap_used)]

#[path = "../../conformance/cases.rs"]
mod cases;

#[test]
fn tower_hyper_conforms() {
    cases::run_all(env!("CARGO_BIN_EXE_tower-hyper"));
}
