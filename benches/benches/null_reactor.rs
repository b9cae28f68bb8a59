//! The null bdev on one polling reactor: 4 KiB random writes at queue depth 32 for a few
//! seconds, as IOPS and nanoseconds per I/O, beside fio's `null` engine on the same core
//! (fio's cheapest path: no device, no bdev layer, just its own job loop).
//!
//! `cargo bench -p pollux-benches --bench null_reactor` (POLLUX_BENCH_SECS, default 5)

use pollux_benches::{LoadSpec, fio_iops, random_load};
use pollux_engine::bdev::{IoKind, null};
use pollux_engine::dma::IobufOpts;
use pollux_engine::reactor::Engine;
use std::time::Duration;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let secs: u64 = std::env::var("POLLUX_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let core = std::thread::available_parallelism().map_or(0, |n| n.get() - 1);
    let engine = Engine::builder()
        .core_mask(&format!("[{core}]"))
        .sleep_after_idle(None)
        .iobuf(IobufOpts::small())
        .start()
        .unwrap();
    let bdev = null::create(null::NullOpts::new("Null0", 1 << 30)).unwrap();
    let t = engine.spawn_thread("load", Some(core)).unwrap();
    let spec = LoadSpec {
        kind: IoKind::Write,
        qd: 32,
        bs: 4096,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(secs),
    };
    let r = random_load(&t, &bdev, engine.iobuf(), spec);
    engine.shutdown();
    let fio_args: Vec<String> = [
        "--name=null",
        "--ioengine=null",
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=32",
        "--size=1g",
        "--norandommap",
        "--randrepeat=0",
        "--time_based",
        "--ramp_time=1",
        &format!("--runtime={secs}"),
        &format!("--cpus_allowed={core}"),
        "--thread",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    println!("null bdev, 4 KiB randwrite, QD32, one polling reactor on core {core}, {secs} s");
    println!(
        "  pollux null bdev: {:>11.0} IOPS, {:>6.1} ns per I/O",
        r.iops(),
        1e9 / r.iops()
    );
    match fio_iops(&fio_args) {
        Ok((_, w)) => {
            println!(
                "  fio null engine:  {w:>11.0} IOPS, {:>6.1} ns per I/O",
                1e9 / w
            );
            println!("  ratio pollux/fio: {:>11.2}", r.iops() / w);
        }
        Err(e) => {
            eprintln!("fio: {e}");
            std::process::exit(1);
        }
    }
}
