//! Interrupt mode: the CPU an idle two-reactor engine burns, and how fast a message
//! still gets through to a sleeping reactor; polling mode beside it for contrast.
//!
//! `cargo bench -p pollux-benches --bench idle_cpu`

use pollux_benches::process_cpu_time;
use pollux_engine::dma::IobufOpts;
use pollux_engine::reactor::Engine;
use std::time::{Duration, Instant};

fn measure(label: &str, sleep_after_idle: Option<Duration>) {
    let n = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    let engine = Engine::builder()
        .core_mask(if n == 2 { "0x3" } else { "0x1" })
        .sleep_after_idle(sleep_after_idle)
        .iobuf(IobufOpts::small())
        .start()
        .unwrap();
    let threads: Vec<_> = engine
        .cores()
        .iter()
        .map(|&c| engine.spawn_thread(&format!("idle{c}"), Some(c)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (cpu0, wall0) = (process_cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let cpu = (process_cpu_time() - cpu0).as_secs_f64() / wall0.elapsed().as_secs_f64() * 100.0;

    // Round trips to a reactor that has had 20 ms to fall asleep.
    let mut lat: Vec<Duration> = (0..100)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(20));
            let t = &threads[i % threads.len()];
            let start = Instant::now();
            t.call(|| ()).unwrap();
            start.elapsed()
        })
        .collect();
    lat.sort();
    let stats = engine.reactor_stats();
    let sleeps: u64 = stats.iter().map(|s| s.sleeps).sum();
    engine.shutdown();
    println!(
        "{label:<34} idle CPU {cpu:>6.2}% of one core ({} reactors, {sleeps} sleeps); message round trip p50 {:>7.1} us, p99 {:>7.1} us, max {:>7.1} us",
        threads.len(),
        lat[49].as_secs_f64() * 1e6,
        lat[98].as_secs_f64() * 1e6,
        lat[99].as_secs_f64() * 1e6,
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    measure(
        "interrupt mode (sleep after 1 ms)",
        Some(Duration::from_millis(1)),
    );
    measure("polling mode", None);
}
