//! The engine the `rpc` and `config` targets call methods on.
//!
//! One engine per process (started on first use, one reactor, small pools), and a
//! fresh [`RpcServer`] per input: each server has its own NVMe-oF target, so
//! transports, subsystems and listeners never leak from one input into the next.
//! Bdevs live in the engine's registry; [`RpcEnv::reset`] removes them, after shutting
//! the input's target down. An input therefore sees the same empty engine whatever
//! ran before it, and a crash reproduces from its input alone.

use pollux_engine::dma::IobufOpts;
use pollux_engine::reactor::Engine;
use pollux_engine::rpc::RpcServer;
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long the server may take to answer everything and close after the client
/// half-closed; longer is a hang.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The process's engine, a runtime for the socket server, and a scratch directory.
pub struct RpcEnv {
    engine: Engine,
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
    file: PathBuf,
    seq: AtomicU64,
}

static ENV: OnceLock<RpcEnv> = OnceLock::new();

/// The process's environment, started on first use.
pub fn env() -> &'static RpcEnv {
    ENV.get_or_init(RpcEnv::start)
}

extern "C" fn remove_scratch() {
    if let Some(e) = ENV.get() {
        let _ = std::fs::remove_dir_all(&e.dir);
    }
}

impl RpcEnv {
    fn start() -> RpcEnv {
        let engine = Engine::builder()
            .core_mask("[0]")
            .iobuf(IobufOpts::small())
            .start()
            .expect("the engine starts");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = std::env::temp_dir().join(format!("pollux-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        // The only file bdev_uring_create is given: sparse, 1 MiB.
        let file = dir.join("uring.img");
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(1 << 20))
            .expect("the uring bdev's file");
        // SAFETY: registers a plain function with no captured state; it runs at exit,
        // when libFuzzer ends the process.
        unsafe { libc::atexit(remove_scratch) };
        RpcEnv {
            engine,
            rt,
            dir,
            file,
            seq: AtomicU64::new(0),
        }
    }

    /// A server with its own, empty target on the process's engine.
    pub fn server(&self) -> Arc<RpcServer> {
        Arc::new(RpcServer::new(self.engine.handle()))
    }

    /// The file a `bdev_uring_create` may open (inputs never name others).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Undoes what an input did with `rpc`: its target stops (listeners, poll groups),
    /// and every bdev goes.
    pub fn reset(&self, rpc: &RpcServer) {
        // Remote controllers an input attached (to this target's own listeners).
        pollux_engine::bdev::fabric::shutdown_all();
        rpc.nvmf().shutdown(Duration::from_secs(5));
        for b in self.engine.bdevs().list() {
            self.engine.bdevs().remove(b.name());
        }
        // Stacked bdevs still waiting for a base go too (found by fuzzing: one left
        // behind made the next input's config clash with it).
        for n in self.engine.bdevs().waiting() {
            self.engine.bdevs().remove(&n);
        }
        assert!(
            self.engine.bdevs().list().is_empty() && self.engine.bdevs().waiting().is_empty(),
            "bdevs left after removing them all"
        );
    }

    /// Serves `rpc` on a fresh socket, sends `chunks` one write each (reading the
    /// answers meanwhile), half-closes, and returns everything the server sent until it
    /// closed. Panics when the server does not close within [`EXCHANGE_TIMEOUT`].
    pub fn exchange(&self, rpc: Arc<RpcServer>, chunks: &[&[u8]]) -> Vec<u8> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("rpc-{n}.sock"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let at = path.clone();
        let task = self.rt.spawn(async move {
            rpc.serve(&at, async {
                let _ = stopped.await;
            })
            .await
        });
        let deadline = Instant::now() + EXCHANGE_TIMEOUT;
        let mut s = loop {
            match UnixStream::connect(&path) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the RPC server never listened: {e}"
                    );
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        };
        s.set_nonblocking(true).expect("non-blocking");
        let mut got = Vec::new();
        let mut closed = false;
        for c in chunks {
            let mut c: &[u8] = c;
            while !c.is_empty() && !closed {
                match s.write(c) {
                    Ok(n) => c = &c[n..],
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        closed = read_some(&mut s, &mut got);
                        assert!(Instant::now() < deadline, "the RPC server stopped reading");
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    // The server closes on input that is not JSON.
                    Err(_) => closed = true,
                }
            }
            if !closed {
                closed = read_some(&mut s, &mut got);
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        while !closed {
            closed = read_some(&mut s, &mut got);
            if !closed {
                assert!(
                    Instant::now() < deadline,
                    "the RPC server neither answered nor closed within {EXCHANGE_TIMEOUT:?} of the client's half-close; it sent {:?}",
                    String::from_utf8_lossy(&got)
                );
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let _ = stop.send(());
        let served = self.rt.block_on(task).expect("the server task ends");
        served.expect("the RPC server served its socket");
        let _ = std::fs::remove_file(&path);
        got
    }
}

/// Reads what is there; returns whether the peer closed.
fn read_some(s: &mut UnixStream, got: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 16 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Checks the server's output: JSON-RPC 2.0 responses, one per line (an object, or a
/// non-empty array of them answering a batch), each with an `id` and exactly one of
/// `result` and `error` (whose code is an integer).
pub fn check_responses(out: &[u8]) {
    let text = std::str::from_utf8(out).expect("responses are UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a response without its newline: {text:?}"
    );
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a response that is not JSON ({e}): {line:?}"));
        match &v {
            Value::Array(batch) => {
                assert!(!batch.is_empty(), "an empty batch answer: {line}");
                for r in batch {
                    check_response(r, line);
                }
            }
            v => check_response(v, line),
        }
    }
}

fn check_response(v: &Value, line: &str) {
    let o = v.as_object().expect("a response is an object");
    assert_eq!(o.get("jsonrpc"), Some(&Value::from("2.0")), "{line}");
    assert!(o.contains_key("id"), "a response without id: {line}");
    match (o.get("result"), o.get("error")) {
        (Some(_), None) => {}
        (None, Some(e)) => {
            assert!(e["code"].is_i64(), "an error without a code: {line}");
            assert!(
                e["message"].is_string(),
                "an error without a message: {line}"
            );
        }
        _ => panic!("a response needs exactly one of result and error: {line}"),
    }
}

/// Points every `filename` parameter anywhere in `v` at the environment's own file, so
/// that no input opens another file (bdev_uring_create opens it read-write).
pub fn sandbox(v: &mut Value, file: &Path) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "filename" {
                    *x = Value::from(file.display().to_string());
                } else {
                    sandbox(x, file);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| sandbox(x, file)),
        _ => {}
    }
}

/// What `save_config` wrote, loaded into a fresh target, loads and saves back the same:
/// the daemon's own configuration always restarts it. `rpc` is reset on the way.
pub fn check_saved_config_reloads(env: &RpcEnv, rpc: &RpcServer) {
    let saved = rpc.call("save_config", None).expect("save_config");
    env.reset(rpc);
    let fresh = env.server();
    let loaded = fresh.load_config(&saved);
    let again = fresh.call("save_config", None).expect("save_config");
    env.reset(&fresh);
    if let Err(e) = loaded {
        // A listener whose port another process took meanwhile is no fault of ours.
        if e.message.contains("in use") {
            return;
        }
        panic!("save_config wrote a config that load_config refuses: {e}\n{saved:#}");
    }
    assert_eq!(
        again, saved,
        "a config loaded and saved again differs from what was saved"
    );
}
