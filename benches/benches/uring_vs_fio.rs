//! The uring bdev against fio's io_uring engine on the same tmpfs file, in the same run:
//! 4 KiB random reads at queue depth 32 on one core, O_DIRECT. On tmpfs the kernel
//! completes each read inline, so this is the CPU-bound case: it measures the cost of
//! the I/O path itself.
//!
//! `cargo bench -p pollux-benches --bench uring_vs_fio` (POLLUX_BENCH_SECS sets the
//! measured seconds of each side, default 10).

use pollux_benches::{LoadSpec, fio_iops, random_load};
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
    let secs: u64 = std::env::var("POLLUX_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
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
    let fio_args: Vec<String> = [
        "--name=randread",
        &format!("--filename={path}"),
        "--ioengine=io_uring",
        &format!("--direct={}", direct as u8),
        "--rw=randread",
        "--bs=4k",
        "--iodepth=32",
        "--fixedbufs",
        "--registerfiles",
        "--norandommap",
        "--randrepeat=0",
        "--time_based",
        "--ramp_time=2",
        &format!("--runtime={secs}"),
        &format!("--cpus_allowed={core}"),
        "--thread",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
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
        let fio = match fio_iops(&fio_args) {
            Ok((read, _)) => read,
            Err(e) => {
                eprintln!("fio: {e}");
                std::process::exit(1);
            }
        };
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
            "  round {round}: pollux uring bdev {:>9.0} IOPS, fio io_uring {fio:>9.0} IOPS, ratio {ratio:.2}",
            r.iops()
        );
        ratios.push(ratio);
    }
    std::fs::remove_file(&path).unwrap();
    ratios.sort_by(f64::total_cmp);
    println!("  median ratio pollux/fio: {:.2}", ratios[ratios.len() / 2]);
}
