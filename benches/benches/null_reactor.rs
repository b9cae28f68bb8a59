//! The null bdev on one polling reactor: 4 KiB random writes at queue depth 32 for a few
//! seconds, as IOPS and nanoseconds per I/O, beside fio's `null` engine on the same core
//! (fio's cheapest path: no device, no bdev layer, just its own job loop).
//!
//! `cargo bench -p pollux-benches --bench null_reactor` (POLLUX_BENCH_SECS, default 5)

use pollux_benches::{LoadSpec, bench_secs, fio_iops, fio_timed_job, random_load};
use pollux_engine::bdev::{IoKind, null};
use pollux_engine::dma::IobufOpts;
use pollux_engine::reactor::Engine;
use std::time::Duration;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let secs = bench_secs(5);
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
    let fio_specific: Vec<String> = vec![
        "--name=null".to_string(),
        "--ioengine=null".to_string(),
        "--rw=randwrite".to_string(),
        "--bs=4k".to_string(),
        "--iodepth=32".to_string(),
        "--size=1g".to_string(),
    ];
    let fio_args = fio_timed_job(fio_specific, core, 1, secs);
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
