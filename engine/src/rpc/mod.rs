//! JSON-RPC 2.0 on a UNIX socket, with SPDK's method names and parameters, so scripts
//! and JSON configs written for SPDK work.
//!
//! The server runs on tokio, on a control thread that is not a reactor. A method never
//! touches I/O state directly: it works through the engine's control-path registries
//! and sends messages to reactor threads, waiting for their replies. Handlers run on
//! tokio's blocking pool, so a slow one never stalls the accept loop.
//!
//! Requests may arrive back to back without separators (SPDK's `rpc.py` writes bare
//! JSON objects); each response is a JSON object followed by a newline. Input that is not
//! JSON gets a parse error and the connection is closed (there is no way to find the
//! next request in it); a request that is JSON but not a valid request gets an
//! "invalid request" error and the connection stays open. The socket is owner-only.

mod fabric;
pub mod log;
mod methods;
mod nvmf;
mod vbdev;

use crate::reactor::EngineHandle;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// Where the RPC socket is unless told otherwise (SPDK uses /var/tmp/spdk.sock).
pub const RPC_SOCKET_DEFAULT: &str = "/var/tmp/pollux.sock";
/// The longest request accepted, in bytes.
pub const RPC_REQUEST_LEN_MAX: usize = 4 << 20;
/// Connections served at once.
pub const RPC_CONNECTIONS_MAX: usize = 64;

/// JSON-RPC 2.0 error codes (JSON-RPC 2.0 specification, section 5.1).
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i32 = -32700;
    /// Not a valid request object.
    pub const INVALID_REQUEST: i32 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// Wrong parameters.
    pub const INVALID_PARAMS: i32 = -32602;
    /// The method failed.
    pub const INTERNAL_ERROR: i32 = -32603;
}

/// A JSON-RPC error: a code and a message that says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    /// The code (see [`code`]).
    pub code: i32,
    /// What went wrong, for a person.
    pub message: String,
}

impl RpcError {
    /// Wrong parameters.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        RpcError {
            code: code::INVALID_PARAMS,
            message: message.into(),
        }
    }

    /// The method could not do what was asked.
    pub fn failed(message: impl Into<String>) -> Self {
        RpcError {
            code: code::INTERNAL_ERROR,
            message: message.into(),
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

impl From<crate::Error> for RpcError {
    fn from(e: crate::Error) -> Self {
        RpcError::failed(e.to_string())
    }
}

/// What a method sees: the engine and its NVMe-oF target.
#[derive(Clone, Debug)]
pub struct RpcContext {
    /// The running engine.
    pub engine: EngineHandle,
    /// The NVMe-oF target.
    pub nvmf: Arc<crate::nvmf::Target>,
}

/// A method: parameters in (absent, an object or an array), a result or an error out.
pub type Handler = Arc<dyn Fn(&RpcContext, Option<Value>) -> Result<Value, RpcError> + Send + Sync>;

/// Which methods can be called now.
type MethodFilter = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// The methods and the context they run in.
pub struct RpcServer {
    ctx: RpcContext,
    methods: BTreeMap<String, Handler>,
    /// Whether a method can be called now (`rpc_get_methods current`): all, unless
    /// told otherwise ([`RpcServer::set_callable_now`]).
    callable_now: Option<MethodFilter>,
}

impl fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcServer")
            .field("methods", &self.methods.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RpcServer {
    /// A server with the engine's own methods registered.
    pub fn new(engine: EngineHandle) -> Self {
        let nvmf = crate::nvmf::Target::new(engine.clone());
        let mut s = RpcServer {
            ctx: RpcContext { engine, nvmf },
            methods: BTreeMap::new(),
            callable_now: None,
        };
        methods::register(&mut s);
        nvmf::register(&mut s);
        vbdev::register(&mut s);
        log::register(&mut s);
        s
    }

    /// The NVMe-oF target the methods configure.
    pub fn nvmf(&self) -> &Arc<crate::nvmf::Target> {
        &self.ctx.nvmf
    }

    /// The engine the methods configure.
    pub fn engine(&self) -> &EngineHandle {
        &self.ctx.engine
    }

    /// Adds (or replaces) a method.
    pub fn register(
        &mut self,
        name: &str,
        f: impl Fn(&RpcContext, Option<Value>) -> Result<Value, RpcError> + Send + Sync + 'static,
    ) {
        self.methods.insert(name.to_owned(), Arc::new(f));
    }

    /// Says which methods can be called in the current state, for `rpc_get_methods`
    /// with `current` (SPDK's: `framework_start_init` only before the framework
    /// started; SPDK's `rpc.py load_config` calls it when listed).
    pub fn set_callable_now(&mut self, f: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.callable_now = Some(Box::new(f));
    }

    /// The names of every method.
    pub fn method_names(&self) -> Vec<String> {
        self.methods.keys().cloned().collect()
    }

    /// Calls a method directly (configuration files use this).
    pub fn call(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
        if method == "rpc_get_methods" {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                #[serde(default)]
                current: bool,
                // No method has an alias.
                #[allow(dead_code)]
                include_aliases: Option<bool>,
            }
            let p: P = methods::parse(params)?;
            let mut names = self.method_names();
            if let (true, Some(f)) = (p.current, &self.callable_now) {
                names.retain(|n| f(n));
            }
            names.push("rpc_get_methods".into());
            names.sort();
            return Ok(json!(names));
        }
        let f = self.methods.get(method).ok_or_else(|| RpcError {
            code: code::METHOD_NOT_FOUND,
            message: format!("method {method:?} does not exist; rpc_get_methods lists them"),
        })?;
        f(&self.ctx, params)
    }

    /// Answers one parsed request; `None` for a notification (no id).
    fn answer(self: &Arc<Self>, req: Value) -> Option<Value> {
        // A batch (JSON-RPC 2.0 section 6, SPDK's rpc.py -b): the answers in order,
        // none for notifications.
        if let Value::Array(reqs) = req {
            if reqs.is_empty() {
                return Some(
                    json!({"jsonrpc": "2.0", "id": null, "error": {"code": code::INVALID_REQUEST, "message": "an empty batch"}}),
                );
            }
            let out: Vec<Value> = reqs
                .into_iter()
                .filter_map(|r| self.answer_one(r))
                .collect();
            return (!out.is_empty()).then_some(Value::Array(out));
        }
        self.answer_one(req)
    }

    fn answer_one(self: &Arc<Self>, req: Value) -> Option<Value> {
        let id = req.get("id").cloned();
        let err = |code, message: String, id: Option<Value>| {
            Some(
                json!({"jsonrpc": "2.0", "id": id.unwrap_or(Value::Null), "error": {"code": code, "message": message}}),
            )
        };
        let Value::Object(obj) = &req else {
            return err(
                code::INVALID_REQUEST,
                "a request must be a JSON object".into(),
                None,
            );
        };
        // SPDK checks the version only when it is given.
        if obj.get("jsonrpc").is_some_and(|v| v != "2.0") {
            return err(
                code::INVALID_REQUEST,
                "\"jsonrpc\" must be \"2.0\"".into(),
                id,
            );
        }
        if let Some(i) = &id {
            if !(i.is_string() || i.is_number() || i.is_null()) {
                return err(
                    code::INVALID_REQUEST,
                    "\"id\" must be a string, a number or null".into(),
                    None,
                );
            }
        }
        let Some(method) = obj.get("method").and_then(Value::as_str) else {
            return err(
                code::INVALID_REQUEST,
                "\"method\" must be a string".into(),
                id,
            );
        };
        // `null` is no parameters, as in SPDK.
        let params = obj.get("params").filter(|p| !p.is_null()).cloned();
        if let Some(p) = &params {
            if !(p.is_object() || p.is_array()) {
                return err(
                    code::INVALID_REQUEST,
                    "\"params\" must be an object or an array".into(),
                    id,
                );
            }
        }
        let t0 = std::time::Instant::now();
        let result = self.call(method, params);
        match &result {
            Err(e) => tracing::warn!(method, "RPC failed: {}", e.message),
            Ok(_) => tracing::debug!(method, id = ?id, took = ?t0.elapsed(), "RPC answered"),
        }
        id.as_ref()?;
        Some(match result {
            Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
            Err(e) => {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
            }
        })
    }

    /// Serves the socket at `path` until `shutdown` resolves. The socket is created
    /// owner-only; a stale socket file from an earlier run is replaced.
    pub async fn serve(
        self: Arc<Self>,
        path: &Path,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), crate::Error> {
        let io_err = |what: String| move |source| crate::Error::Io { what, source };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(crate::Error::InvalidParam {
                    what: "rpc socket".into(),
                    why: format!("{} exists and is not a socket", path.display()),
                });
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(crate::Error::InvalidParam {
                    what: "rpc socket".into(),
                    why: format!(
                        "{} is in use by another process; pick another with -r",
                        path.display()
                    ),
                });
            }
            std::fs::remove_file(path).map_err(io_err(format!(
                "remove the stale socket {}",
                path.display()
            )))?;
        }
        // The socket is bound, listening and owner-only under a temporary name and then
        // linked into place (a link never replaces what another daemon made meanwhile):
        // whoever sees the path can connect at once, as scripts that wait for the file
        // expect. A path too long for the temporary name is bound in place.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let direct = tmp.as_os_str().len() >= 108;
        let at = if direct { path } else { tmp.as_path() };
        if !direct {
            let _ = std::fs::remove_file(at);
        }
        let listener =
            UnixListener::bind(at).map_err(io_err(format!("listen on {}", at.display())))?;
        let at_cleanup = RemoveOnDrop(at.to_owned());
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(format!("make {} owner-only", at.display())))?;
        }
        if !direct {
            std::fs::hard_link(at, path).map_err(io_err(format!(
                "put the socket in place at {} (is another daemon starting there?)",
                path.display()
            )))?;
            drop(at_cleanup);
        } else {
            std::mem::forget(at_cleanup);
        }
        let _cleanup = RemoveOnDrop(path.to_owned());
        tracing::info!(socket = %path.display(), "RPC server listening");
        let slots = Arc::new(Semaphore::new(RPC_CONNECTIONS_MAX));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        tracing::warn!("RPC connection refused: {RPC_CONNECTIONS_MAX} already open");
                        continue;
                    };
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.connection(stream).await;
                        drop(permit);
                    });
                }
            }
        }
    }

    async fn connection(self: Arc<Self>, mut stream: UnixStream) {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = [0u8; 16 << 10];
        // Whether new bytes could complete a request: only a closing bracket can, so a
        // long request arriving in pieces is parsed once, not once per piece.
        let mut maybe_complete = false;
        loop {
            // Answer every complete request in the buffer.
            while maybe_complete {
                let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
                match it.next() {
                    Some(Ok(req)) => {
                        let used = it.byte_offset();
                        buf.drain(..used);
                        let me = self.clone();
                        let reply = tokio::task::spawn_blocking(move || me.answer(req))
                            .await
                            .ok()
                            .flatten();
                        if let Some(r) = reply {
                            let mut out = serde_json::to_vec(&r).expect("a Value serialises");
                            out.push(b'\n');
                            if stream.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(Err(e)) if e.is_eof() => maybe_complete = false,
                    Some(Err(e)) => {
                        tracing::warn!("RPC input is not JSON ({e}); closing the connection");
                        let r = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code::PARSE_ERROR, "message": format!("parse error: {e}")}});
                        let _ = stream.write_all(format!("{r}\n").as_bytes()).await;
                        return;
                    }
                    None => {
                        buf.clear();
                        maybe_complete = false;
                    }
                }
            }
            if buf.len() > RPC_REQUEST_LEN_MAX {
                tracing::warn!(
                    "RPC request over {RPC_REQUEST_LEN_MAX} bytes; closing the connection"
                );
                let r = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code::INVALID_REQUEST, "message": format!("request longer than {RPC_REQUEST_LEN_MAX} bytes")}});
                let _ = stream.write_all(format!("{r}\n").as_bytes()).await;
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    maybe_complete = chunk[..n].iter().any(|&b| b == b'}' || b == b']');
                }
            }
        }
    }

    /// Runs the `method`/`params` entries of an SPDK JSON config
    /// (`{"subsystems": [{"subsystem": ..., "config": [{"method", "params"}]}]}`), in
    /// order; stops at the first failure and says which entry failed.
    pub fn load_config(&self, config: &Value) -> Result<usize, RpcError> {
        let subsystems = config
            .get("subsystems")
            .and_then(Value::as_array)
            .ok_or_else(|| RpcError::invalid_params("a config needs a \"subsystems\" array"))?;
        let mut n = 0;
        for sub in subsystems {
            let name = sub.get("subsystem").and_then(Value::as_str).unwrap_or("?");
            let Some(entries) = sub.get("config") else {
                continue;
            };
            let Some(entries) = entries.as_array() else {
                if entries.is_null() {
                    continue;
                }
                return Err(RpcError::invalid_params(format!(
                    "subsystem {name}: \"config\" must be an array"
                )));
            };
            // A batch (`save_config --with-batches`) is its entries in order.
            let flat = entries.iter().enumerate().flat_map(|(i, e)| match e {
                Value::Array(batch) => batch.iter().map(|b| (i, b)).collect::<Vec<_>>(),
                e => vec![(i, e)],
            });
            for (i, e) in flat {
                let method = e.get("method").and_then(Value::as_str).ok_or_else(|| {
                    RpcError::invalid_params(format!("subsystem {name}, entry {i}: no \"method\""))
                })?;
                match self.call(method, e.get("params").cloned()) {
                    Ok(_) => n += 1,
                    // As SPDK's loader: the methods of a subsystem this program does not
                    // have are skipped (a config from another application), not those of
                    // one it has.
                    Err(err)
                        if err.code == code::METHOD_NOT_FOUND
                            && !CONFIG_SUBSYSTEMS.contains(&name) =>
                    {
                        tracing::info!(
                            method,
                            subsystem = name,
                            "skipped: Pollux has no such subsystem"
                        );
                    }
                    Err(err) => {
                        return Err(RpcError {
                            code: err.code,
                            message: format!(
                                "subsystem {name}, entry {i} ({method}): {}",
                                err.message
                            ),
                        });
                    }
                }
            }
        }
        Ok(n)
    }
}

/// The subsystems of SPDK configs Pollux takes: an unknown method in one of these is an
/// error when loading a config; in any other subsystem it is skipped.
const CONFIG_SUBSYSTEMS: [&str; 8] = [
    "bdev",
    "nvmf",
    "iobuf",
    "sock",
    "accel",
    "scheduler",
    "vmd",
    "keyring",
];

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests;
