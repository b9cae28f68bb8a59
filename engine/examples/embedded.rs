//! The embedded face of Pollux: an engine on two cores, a RAM-backed and a file-backed
//! bdev, and I/O from a thread on each reactor, every byte read back and checked.
//!
//! Run it with `cargo run --release -p pollux-engine --example embedded`.
//!
//! It uses [`BdevClient`], which blocks its caller and suits `main`; code on the data
//! path submits `BdevIo`s from reactor threads with callbacks (see the crate docs).

use pollux_engine::bdev::{BdevClient, IoKind, malloc, uring};
use pollux_engine::dma::IobufOpts;
use pollux_engine::reactor::Engine;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cores = std::thread::available_parallelism()?.get().min(2);
    let mask = if cores == 2 { "0x3" } else { "0x1" };
    let engine = Engine::builder()
        .core_mask(mask)
        .iobuf(IobufOpts::small())
        .start()?;

    let path = std::env::temp_dir().join(format!("pollux-example-{}.img", std::process::id()));
    std::fs::File::create(&path)?.set_len(64 << 20)?;
    let bdevs = [
        malloc::create(malloc::MallocOpts::new("Malloc0", 64 << 20))?,
        uring::create(uring::UringOpts::new("Uring0", &path))?,
    ];

    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        let mut workers = Vec::new();
        for (i, core) in engine.cores().into_iter().enumerate() {
            let thread = engine.spawn_thread(&format!("worker{core}"), Some(core))?;
            let client = BdevClient::new(thread, engine.iobuf().clone());
            let bdevs = &bdevs;
            workers.push(s.spawn(move || -> Result<(), String> {
                for bdev in bdevs {
                    // Each worker owns 1024 blocks of 4 KiB at its own place.
                    let per_4k = 4096 / bdev.block_size() as u64;
                    let first = i as u64 * 1024;
                    for blk in first..first + 1024 {
                        let data: Vec<u8> =
                            (0..4096).map(|b| (blk as usize * 7 + b) as u8).collect();
                        client
                            .write(bdev, blk * per_4k, &data)
                            .map_err(|e| e.to_string())?;
                    }
                    client
                        .no_data(bdev, IoKind::Flush, 0, 0)
                        .map_err(|e| e.to_string())?;
                    for blk in first..first + 1024 {
                        let back = client
                            .read(bdev, blk * per_4k, per_4k)
                            .map_err(|e| e.to_string())?;
                        if back
                            .iter()
                            .enumerate()
                            .any(|(b, &x)| x != (blk as usize * 7 + b) as u8)
                        {
                            return Err(format!("{}: block {blk} read back wrong", bdev.name()));
                        }
                    }
                    println!(
                        "core {core}: {}: 1024 blocks written, flushed, read back and verified",
                        bdev.name()
                    );
                }
                Ok(())
            }));
        }
        for w in workers {
            w.join().expect("worker")?;
        }
        Ok(())
    })?;

    let report = engine.shutdown();
    std::fs::remove_file(&path)?;
    println!(
        "clean shutdown; every DMA buffer back in its pool: {}",
        report.pools_full
    );
    if !report.pools_full {
        return Err(format!("buffers missing from pools: {:?}", report.pools).into());
    }
    Ok(())
}
