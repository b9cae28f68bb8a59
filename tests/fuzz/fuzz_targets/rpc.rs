//! The JSON-RPC server (engine/src/rpc/mod.rs) and every method's parameter parsing.
//!
//! Input: byte 0 picks the mode.
//! - Even: the rest is raw bytes sent to a fresh server's UNIX socket, in
//!   `1 + (byte 0 >> 1) % 8` writes, then the client half-closes: the server must answer with
//!   well-formed JSON-RPC responses, one per line, and close (no hang).
//! - Odd: up to [`CALLS_MAX`] calls, each a method (1 byte: an index into the
//!   server's method list), then whether it has parameters (1 byte, 0 of 4: none), then
//!   the parameters as [`pollux_fuzz::json`] values. Afterwards, what `save_config`
//!   writes must load into a fresh target and save back the same.
//!
//! Every input gets a fresh target; the engine's bdevs are removed after it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pollux_fuzz::input::Reader;
use pollux_fuzz::json;
use pollux_fuzz::rpc_env::{self, check_responses, check_saved_config_reloads, sandbox};

/// Calls per structured input at most.
const CALLS_MAX: usize = 6;

fuzz_target!(|data: &[u8]| {
    let env = rpc_env::env();
    let mut r = Reader::new(data);
    let mode = r.u8();
    let rpc = env.server();
    if mode & 1 == 0 {
        let bytes = r.rest();
        let n = 1 + (mode >> 1) as usize % 8;
        let step = bytes.len().div_ceil(n).max(1);
        let chunks: Vec<&[u8]> = bytes.chunks(step).collect();
        let out = env.exchange(rpc.clone(), &chunks);
        check_responses(&out);
        env.reset(&rpc);
        return;
    }
    let mut names = rpc.method_names();
    names.push("rpc_get_methods".into());
    for _ in 0..CALLS_MAX {
        if r.is_empty() {
            break;
        }
        let m = &names[r.u8() as usize % names.len()];
        let params = match r.u8() % 4 {
            0 => None,
            _ => {
                let mut v = json::decode(&mut r);
                sandbox(&mut v, env.file());
                Some(v)
            }
        };
        match rpc.call(m, params) {
            Ok(v) => {
                serde_json::to_vec(&v).expect("a result serialises");
            }
            Err(e) => assert!(!e.message.is_empty(), "{m}: an error without a message"),
        }
    }
    check_saved_config_reloads(env, &rpc);
});
