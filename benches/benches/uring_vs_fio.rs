//! The uring bdev against fio's io_uring engine on the same tmpfs file, in the same run:
//! 4 KiB random reads at queue depth 32 on one core, O_DIRECT. On tmpfs the kernel
//! copies in the kernel, so this is the CPU-bound case. tmpfs cannot issue a read
//! without blocking, so io_uring hands every read to its io-wq workers, which run on
//! the submitter's core; both sides therefore sleep while waiting (fio in
//! `io_uring_enter`, the reactor in interrupt mode with no idle spin). fio runs twice a
//! round, as it comes and with `force_async=1` (what the uring bdev does on tmpfs), and
//! the better of the two is the peer.
//!
//! `cargo bench -p pollux-benches --bench uring_vs_fio` (POLLUX_BENCH_SECS sets the
//! measured seconds of each side, default 10).

use pollux_benches::{LoadSpec, bench_secs, fio_iops, fio_timed_job, random_load};
use pollux_engine::bdev::{IoKind, uring};
use pollux_engine::dma::IobufOpts;
use pollux_engine::reactor::Engine;
use std::io::Write;
use std::time::Duration;

const FILE_BYTES: u64 = 1 << 30;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` runs nothing here.
    }
    let secs = bench_secs(10);
    let direct = std::env::var("POLLUX_BENCH_DIRECT").map_or(true, |v| v != "0");
    let core = std::thread::available_parallelism().map_or(0, |n| n.get() - 1);
    let path = format!("/dev/shm/pollux-bench-{}.img", std::process::id());
    {
        let mut f = std::fs::File::create(&path).expect("create the tmpfs file");
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
        for _ in 0..FILE_BYTES >> 20 {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    let fio_specific: Vec<String> = vec![
        "--name=randread".to_string(),
        format!("--filename={path}"),
        "--ioengine=io_uring".to_string(),
        format!("--direct={}", direct as u8),
        "--rw=randread".to_string(),
        "--bs=4k".to_string(),
        "--iodepth=32".to_string(),
        "--fixedbufs".to_string(),
        "--registerfiles".to_string(),
    ];
    let fio_args = fio_timed_job(fio_specific, core, 2, secs);
    let rounds: usize = std::env::var("POLLUX_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mode = if direct { "O_DIRECT" } else { "buffered" };
    println!(
        "4 KiB randread, QD32, one core ({core}), {mode}, 1 GiB tmpfs file, {secs} s per side, {rounds} rounds"
    );
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        // The two sides alternate so that drift in the machine's speed hits both.
        // fio twice: as it comes, and with force_async=1, the same choice the uring
        // bdev makes on tmpfs; the better of the two is the peer.
        let mut fio_async_args = fio_args.clone();
        fio_async_args.push("--force_async=1".into());
        let run_fio = |args: &[String]| match fio_iops(args) {
            Ok((read, _)) => read,
            Err(e) => {
                eprintln!("fio: {e}");
                std::process::exit(1);
            }
        };
        let fio_plain = run_fio(&fio_args);
        let fio_async = run_fio(&fio_async_args);
        let fio = fio_plain.max(fio_async);
        let engine = Engine::builder()
            .core_mask(&format!("[{core}]"))
            // Sleep as soon as there is nothing to do: the kernel's io-wq workers that
            // do the copying share this core, as fio's share its core.
            .sleep_after_idle(Some(Duration::ZERO))
            .iobuf(IobufOpts::small())
            .start()
            .unwrap();
        let bdev = uring::create(uring::UringOpts {
            direct,
            ..uring::UringOpts::new("Uring0", &path)
        })
        .unwrap();
        let t = engine.spawn_thread("load", Some(core)).unwrap();
        let spec = LoadSpec {
            kind: IoKind::Read,
            qd: 32,
            bs: 4096,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(secs),
        };
        let r = random_load(&t, &bdev, engine.iobuf(), spec);
        engine.shutdown();
        assert_eq!(r.errors, 0, "I/O errors during the run");
        let ratio = r.iops() / fio;
        println!(
            "  round {round}: pollux uring bdev {:>8.0} IOPS | fio io_uring {fio_plain:>8.0}, with force_async=1 {fio_async:>8.0} IOPS | ratio to the better fio {ratio:.2}",
            r.iops()
        );
        ratios.push(ratio);
    }
    std::fs::remove_file(&path).unwrap();
    ratios.sort_by(f64::total_cmp);
    println!(
        "  median ratio pollux / best fio: {:.2}",
        ratios[ratios.len() / 2]
    );
}
