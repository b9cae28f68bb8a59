//! polluxd as the tools' tests start it: from a JSON config, with its RPC socket, killed
//! if the test panics.

use crate::KillOnDrop;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An SPDK config: `bdevs` (config entries), then an NVMe/TCP transport with `transport`
/// params, subsystem `nqn` open to any host with `namespaces` (bdev names, in order),
/// listening on 127.0.0.1:`port`.
pub fn nvmf_config(
    bdevs: Value,
    transport: Value,
    nqn: &str,
    namespaces: &[&str],
    port: u16,
) -> Value {
    let la = json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()});
    let mut t = json!({"trtype": "TCP"});
    if let (Some(t), Some(extra)) = (t.as_object_mut(), transport.as_object()) {
        t.extend(extra.clone());
    }
    let mut nvmf = vec![
        json!({"method": "nvmf_create_transport", "params": t}),
        json!({"method": "nvmf_create_subsystem", "params": {"nqn": nqn, "allow_any_host": true}}),
    ];
    for ns in namespaces {
        nvmf.push(json!({"method": "nvmf_subsystem_add_ns", "params": {"nqn": nqn, "namespace": {"bdev_name": ns}}}));
    }
    nvmf.push(json!({"method": "nvmf_subsystem_add_listener", "params": {"nqn": nqn, "listen_address": la}}));
    json!({"subsystems": [
        {"subsystem": "bdev", "config": bdevs},
        {"subsystem": "nvmf", "config": nvmf},
    ]})
}

/// Starts `polluxd` (the binary at `bin`) with `args`, config `cfg` and RPC socket
/// `sock`; returns once the socket is there (a stale one from a killed daemon must be
/// removed first). Its log goes to the test's output, or nowhere when `quiet`.
pub fn start(bin: &str, args: &[&str], cfg: &Path, sock: &Path, quiet: bool) -> KillOnDrop {
    let mut c = Command::new(bin);
    c.args(args).arg("-r").arg(sock).arg("-c").arg(cfg);
    if quiet {
        c.stderr(Stdio::null());
    }
    let child = KillOnDrop::new(c.spawn().expect("polluxd starts"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "polluxd did not open its socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// Stops `child` with SIGTERM; it must exit with status 0 (a clean stop, every pool full).
pub fn stop(child: KillOnDrop) {
    let mut c = child.take();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    assert!(c.wait().unwrap().success(), "polluxd stops cleanly");
}
