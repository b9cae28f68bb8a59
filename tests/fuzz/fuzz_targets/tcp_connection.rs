//! A whole NVMe/TCP connection through the target's real transport code
//! (engine/src/nvmf/{tcp,queue,ctrlr,poll_group}.rs), fed arbitrary byte streams in
//! arbitrary chunks; the input format, the preambles that reach deep states and the
//! "no leak, no hang" check are in [`pollux_fuzz::tcp`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pollux_fuzz::tcp::harness().run(data);
});
