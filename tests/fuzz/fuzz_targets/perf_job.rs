//! pollux-perf's fio job-file and option parser (tools/src/perf/options.rs) and the
//! workload generator it configures (tools/src/perf/workload.rs); the input format and
//! the checks are in [`pollux_fuzz::perf`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pollux_fuzz::perf::run(data);
});
