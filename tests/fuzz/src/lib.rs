//! # pollux-fuzz
//!
//! What Pollux's fuzz targets (`fuzz_targets/*.rs`, built by cargo-fuzz) share, and
//! the input formats that `make-seeds` writes the committed seed corpora in:
//!
//! - [`input`]: reading structured values out of the fuzzer's bytes (never failing:
//!   bytes past the end read as zero).
//! - [`json`]: a `serde_json::Value` built from bytes, with strings and keys drawn
//!   from what the RPC methods know, so that most inputs reach past "missing field";
//!   and its inverse for seeds.
//! - [`rpc_env`]: one engine per process; a fresh `RpcServer` (a fresh NVMe-oF target)
//!   per input, torn down after it with every bdev it made; the socket exchange.
//! - [`tcp`]: the NVMe/TCP connection harness: a target on loopback started once, a
//!   host-side client that frames PDUs (digests included) and follows R2Ts, and the
//!   "no leak, no hang" check after every connection.
//! - [`perf`]: the pollux-perf input format (command line, then a job file).
//!
//! See README.md for running them.

pub mod input;
pub mod json;
pub mod perf;
pub mod rpc_env;
pub mod tcp;
