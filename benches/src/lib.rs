//! qiflow benchmarks. The benches live in `benches/`; this library only holds [`load`], the shared
//! pieces of the load-test servers in `src/bin/` that `load/run.sh` drives with wrk (see
//! `docs/performance.md`).
//!
//! `benches/config.rs` measures encrypted configuration values: one `ENC:` decryption, one
//! encryption, and a full `Loader::load` of a realistic `qiflow.toml` with 10 encrypted secrets
//! beside the same load with the 10 values plain. Run it with:
//!
//! ```text
//! cargo bench -p qiflow-benches --bench config
//! ```
//!
//! Criterion writes its reports under `target/criterion/`. Pass a filter to run one bench, e.g.
//! `cargo bench -p qiflow-benches --bench config -- secret/decrypt_one`, and
//! `-- --warm-up-time 1 --measurement-time 3` for a quicker, noisier run. See `benches/README.md`
//! for what each bench measures and figures from one machine.
//!
//! `benches/logging.rs` measures JSON log lines per second written to a file from 1 and 4 threads,
//! qiflow (`overflow` drop and block) side by side with tracing-subscriber's JSON layer through
//! tracing-appender's non-blocking daily appender, and the p99 of one `info!` call while the file
//! rotates and compresses. It is a plain binary (`harness = false`):
//!
//! ```text
//! cargo bench -p qiflow-benches --bench logging
//! ```

pub mod load;
