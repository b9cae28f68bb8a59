//! The SPDK JSON config loader (`RpcServer::load_config`, engine/src/rpc/mod.rs) on
//! arbitrary JSON.
//!
//! Input: JSON text (a config file, as polluxd reads one with `-c`); or, when byte 0
//! is 0, a [`pollux_fuzz::json`] value built from the rest. The loader must answer
//! (never panic); whatever it loaded must save and load back the same. Every input gets
//! a fresh target; the engine's bdevs are removed after it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pollux_fuzz::input::Reader;
use pollux_fuzz::json;
use pollux_fuzz::rpc_env::{self, check_saved_config_reloads, sandbox};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut v: Value = match data.split_first() {
        Some((0, rest)) => json::decode(&mut Reader::new(rest)),
        _ => match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    let env = rpc_env::env();
    sandbox(&mut v, env.file());
    let rpc = env.server();
    let entries = v["subsystems"].as_array().map_or(0, |s| {
        s.iter()
            .map(|x| x["config"].as_array().map_or(0, Vec::len))
            .sum::<usize>()
    });
    match rpc.load_config(&v) {
        Ok(n) => assert!(n <= entries, "{n} entries loaded of {entries}"),
        Err(e) => assert!(!e.message.is_empty()),
    }
    check_saved_config_reloads(env, &rpc);
});
