//! pollux-rpc: calls any JSON-RPC method of polluxd (like SPDK's rpc.py).
//!
//! `pollux-rpc bdev_malloc_create num_blocks=2048 block_size=512 name=Malloc0`
//! `pollux-rpc bdev_get_bdevs`
//! `pollux-rpc nvmf_create_subsystem --json '{"nqn": "nqn.2016-06.io.spdk:cnode1"}'`
//!
//! `pollux-rpc nvmf_subsystem_add_listener --nqn nqn.2016-06.io.spdk:cnode1 --trtype tcp --traddr 127.0.0.1 --trsvcid 4420`
//! `pollux-rpc nvmf_subsystem_add_ns nqn=nqn.2016-06.io.spdk:cnode1 namespace.bdev_name=Malloc0`
//!
//! A `key=value` value is taken as JSON when it parses as JSON (numbers, true/false,
//! arrays, objects) and as a string otherwise; a dotted key (`a.b=1`) sets a field of a
//! nested object; `--json` gives all parameters at once. The flags for the common NVMe-oF
//! parameters put them where SPDK's methods expect them (`--traddr` goes into
//! `listen_address`, `--bdev-name` into `namespace`).

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
    /// Subsystem NQN (`nqn`).
    #[arg(long)]
    nqn: Option<String>,
    /// Transport type (`trtype`; in `listen_address` for listener methods).
    #[arg(long)]
    trtype: Option<String>,
    /// Address family: IPv4 or IPv6 (`adrfam`).
    #[arg(long)]
    adrfam: Option<String>,
    /// Transport address (`traddr`).
    #[arg(long)]
    traddr: Option<String>,
    /// Transport service ID, the port (`trsvcid`).
    #[arg(long)]
    trsvcid: Option<String>,
    /// Bdev name (`namespace.bdev_name` for nvmf_subsystem_add_ns, else `name`).
    #[arg(long = "bdev-name")]
    bdev_name: Option<String>,
    /// Host NQN (`host`).
    #[arg(long)]
    host: Option<String>,
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

fn set_path(m: &mut Map<String, Value>, key: &str, v: Value) -> Result<(), String> {
    match key.split_once('.') {
        None => {
            m.insert(key.to_owned(), v);
            Ok(())
        }
        Some((head, rest)) => {
            let e = m
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            match e {
                Value::Object(inner) => set_path(inner, rest, v),
                _ => Err(format!("{head} is already set to a non-object value")),
            }
        }
    }
}

fn params(args: &Args) -> Result<Option<Value>, String> {
    let mut m = Map::new();
    if let Some(j) = &args.json {
        if !args.params.is_empty() {
            return Err("give parameters either as key=value or with --json, not both".into());
        }
        match serde_json::from_str(j).map_err(|e| format!("--json is not JSON: {e}"))? {
            Value::Object(o) => m = o,
            other => return Ok(Some(other)),
        }
    }
    for p in &args.params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("parameter {p:?} is not key=value"))?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        set_path(&mut m, k, v)?;
    }
    let listener = args.method.contains("listener") || args.method.contains("referral");
    let la = if listener { "listen_address." } else { "" };
    let flags = [
        ("nqn".to_owned(), &args.nqn),
        (format!("{la}trtype"), &args.trtype),
        (format!("{la}adrfam"), &args.adrfam),
        (format!("{la}traddr"), &args.traddr),
        (format!("{la}trsvcid"), &args.trsvcid),
        ("host".to_owned(), &args.host),
        (
            if args.method == "nvmf_subsystem_add_ns" {
                "namespace.bdev_name".to_owned()
            } else {
                "name".to_owned()
            },
            &args.bdev_name,
        ),
    ];
    for (k, v) in flags {
        if let Some(v) = v {
            set_path(&mut m, &k, Value::String(v.clone()))?;
        }
    }
    if m.is_empty() && args.json.is_none() {
        return Ok(None);
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
