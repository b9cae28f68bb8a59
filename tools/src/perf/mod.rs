//! pollux-perf: a fio-compatible load generator running on Pollux's reactors.
//!
//! - [`model`]: what a job asks for and what it measured, in fio's terms.
//! - [`options`]: fio's command-line options and job files, parsed into [`model::RunSpec`].
//! - [`hist`]: latency histograms with fio's buckets and percentile semantics.
//! - [`report`]: fio's normal, JSON, JSON+ and terse outputs, logs and the SVG plot.
//! - [`workload`]: offsets (random map, zipf, pareto, normal), block sizes, read/write mix.
//! - [`verify`]: verify blocks (header, offset, seed, CRC32C or MD5) and their checks.
//! - [`job`]: one job on one reactor thread, keeping its queue depth full.
//! - [`run`]: everything together: reactors, jobs, groups, status line, reports.

pub mod hist;
pub mod job;
pub mod model;
pub mod options;
pub mod report;
pub mod run;
pub mod verify;
pub mod workload;
