//! qiflow benchmarks: see `benches/`.
