//! Crash durability: polluxd exports a uring bdev on a real file; pollux-perf writes
//! with a flush every 32 writes and saves, as fio's `verify_state_save` does, the writes
//! acknowledged before a completed flush; polluxd is killed with SIGKILL at a random
//! moment; after a restart on the same config, a `verify_only` pass over the saved state
//! must find every one of those writes intact. Twenty rounds.

use pollux_tests::{KillOnDrop, daemon};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const NQN: &str = "nqn.2016-06.io.pollux:durable";

fn start(dir: &Path, cfg: &Path) -> KillOnDrop {
    let sock = dir.join("pollux.sock");
    daemon::start(
        env!("CARGO_BIN_EXE_polluxd"),
        &["-m", "0x1", "--small-pools"],
        cfg,
        &sock,
        true,
    )
}

fn perf(dir: &Path, port: u16, extra: &[&str]) -> std::process::Child {
    let target = format!(
        "--target=trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{NQN} ns:1"
    );
    Command::new(env!("CARGO_BIN_EXE_pollux-perf"))
        .current_dir(dir)
        .args([
            "--name=dur",
            "--ioengine=nvmf",
            &target,
            "--rw=randwrite",
            "--bs=16k",
            "--iodepth=16",
            "--size=32m",
            "--verify=crc32c",
            "--output-format=json",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits at most 60 s for `c`; (success, stderr).
fn wait(c: std::process::Child) -> (bool, String) {
    let pid = c.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(c.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(o) => {
            let o = o.unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        }
        Err(_) => {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("pollux-perf did not end within 60 s of its target's death");
        }
    }
}

#[test]
fn every_write_acknowledged_before_a_completed_flush_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backing.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let port = pollux_tests::free_port();
    let bdevs = json!([{"method": "bdev_uring_create", "params": {"name": "U0", "filename": file, "block_size": 4096}}]);
    let cfg = daemon::nvmf_config(bdevs, json!({}), NQN, &["U0"], port);
    let cfgp = dir.path().join("config.json");
    std::fs::write(&cfgp, cfg.to_string()).unwrap();
    let state = dir.path().join("local-dur-0-verify.state");
    // A seed of this run's own for the kill moments, printed so a failure can be replayed.
    let mut x = std::env::var("POLLUX_DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| (std::process::id() as u64 * 0x9e37_79b9) | 1);
    println!("kill moments from seed {x}");
    let mut total = 0;
    for round in 0..20 {
        let _ = std::fs::remove_file(&state);
        let mut d = start(dir.path(), &cfgp);
        // 2,048 writes at 2,000 IOPS: about a second of writing to die in.
        let w = perf(
            dir.path(),
            port,
            &[
                "--fsync=32",
                "--verify_state_save=1",
                "--do_verify=0",
                "--rate_iops=2000",
            ],
        );
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let after = Duration::from_millis(100 + x % 1000);
        std::thread::sleep(after);
        let mut c = d.take();
        c.kill().unwrap();
        c.wait().unwrap();
        // A killed daemon leaves its socket file: the next start must not be taken for
        // ready before it listens.
        std::fs::remove_file(dir.path().join("pollux.sock")).unwrap();
        let (_ok, err) = wait(w);
        let text = std::fs::read_to_string(&state)
            .unwrap_or_else(|e| panic!("round {round}: no state file ({e}): {err}"));
        let durable = text.lines().count() - 2;
        total += durable;
        // Restarted on the same config: every durable write reads back intact.
        d = start(dir.path(), &cfgp);
        let v = perf(
            dir.path(),
            port,
            &["--verify_only=1", "--verify_state_load=1"],
        );
        let (ok, err) = wait(v);
        assert!(
            ok,
            "round {round} (killed after {after:?}, {durable} durable writes): {err}"
        );
        println!("round {round}: killed after {after:?}; {durable} durable writes verified");
        daemon::stop(d);
    }
    assert!(total > 0, "no round made a write durable before the kill");
    println!("{total} durable writes verified over 20 rounds");

    // The check bites: one durable block changed behind the target's back fails verify.
    let text = std::fs::read_to_string(&state).unwrap();
    let off: u64 = text
        .lines()
        .nth(2)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(&[0xa5; 16], off + 100).unwrap();
    }
    let d = start(dir.path(), &cfgp);
    let (ok, err) = wait(perf(
        dir.path(),
        port,
        &["--verify_only=1", "--verify_state_load=1"],
    ));
    assert!(!ok, "a changed durable block must fail verify");
    assert!(
        err.contains(&format!("{off}")),
        "the offset is named: {err}"
    );
    daemon::stop(d);
}
