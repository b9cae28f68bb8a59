//! pollux-rpc: calls any JSON-RPC method of polluxd (like SPDK's rpc.py).
//!
//! `pollux-rpc bdev_malloc_create num_blocks=2048 block_size=512 name=Malloc0`
//! `pollux-rpc bdev_get_bdevs`
//! `pollux-rpc nvmf_create_subsystem --json '{"nqn": "nqn.2016-06.io.spdk:cnode1"}'`
//!
//! A `key=value` value is taken as JSON when it parses as JSON (numbers, true/false,
//! arrays, objects) and as a string otherwise; `--json` gives all parameters at once.

use clap::Parser;
use pollux_engine::rpc::RPC_SOCKET_DEFAULT;
use serde_json::{Map, Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "pollux-rpc",
    version,
    about = "Call a JSON-RPC method of polluxd"
)]
struct Args {
    /// The daemon's RPC socket.
    #[arg(short = 's', long = "server", default_value = RPC_SOCKET_DEFAULT)]
    socket: PathBuf,
    /// Seconds to wait for the answer.
    #[arg(short = 't', long = "timeout", default_value_t = 60.0)]
    timeout: f64,
    /// All parameters as one JSON object (or array).
    #[arg(long = "json")]
    json: Option<String>,
    /// The method.
    method: String,
    /// Parameters as key=value.
    params: Vec<String>,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(v) => println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("a Value serialises")
        ),
        Err(e) => {
            eprintln!("pollux-rpc: {e}");
            std::process::exit(1);
        }
    }
}

fn params(args: &Args) -> Result<Option<Value>, String> {
    if let Some(j) = &args.json {
        if !args.params.is_empty() {
            return Err("give parameters either as key=value or with --json, not both".into());
        }
        return serde_json::from_str(j)
            .map(Some)
            .map_err(|e| format!("--json is not JSON: {e}"));
    }
    if args.params.is_empty() {
        return Ok(None);
    }
    let mut m = Map::new();
    for p in &args.params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("parameter {p:?} is not key=value"))?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        m.insert(k.to_owned(), v);
    }
    Ok(Some(Value::Object(m)))
}

fn run(args: &Args) -> Result<Value, String> {
    let mut req = json!({"jsonrpc": "2.0", "id": 1, "method": args.method});
    if let Some(p) = params(args)? {
        req["params"] = p;
    }
    let mut s = UnixStream::connect(&args.socket).map_err(|e| {
        format!(
            "cannot connect to {} ({e}); is polluxd running? (-s names its socket)",
            args.socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs_f64(args.timeout.max(0.001))))
        .map_err(|e| e.to_string())?;
    s.write_all(req.to_string().as_bytes())
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("no answer within {} s: {e}", args.timeout))?;
    let v: Value =
        serde_json::from_str(&line).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if let Some(err) = v.get("error") {
        return Err(format!(
            "{} failed: {} (code {})",
            args.method,
            err["message"].as_str().unwrap_or("?"),
            err["code"]
        ));
    }
    Ok(v.get("result").cloned().unwrap_or(Value::Null))
}
