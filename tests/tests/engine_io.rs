//! The engine end to end on real reactors: I/O from threads on every reactor to a
//! malloc and a uring bdev, verified, then a clean shutdown with every buffer back.

use pollux_engine::bdev::{BdevClient, ClientError, IoKind, IoStatus, malloc, null, uring};
use pollux_engine::dma::{HugepagePolicy, IobufOpts};
use pollux_engine::reactor::Engine;

fn engine() -> Engine {
    let n = std::thread::available_parallelism().unwrap().get().min(2);
    Engine::builder()
        .core_mask(if n == 2 { "0-1" } else { "[0]" })
        .iobuf(IobufOpts {
            hugepages: HugepagePolicy::Prefer,
            ..IobufOpts::small()
        })
        .start()
        .unwrap()
}

#[test]
fn every_reactor_writes_and_verifies_on_malloc_and_uring() {
    let engine = engine();
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(16 << 20).unwrap();
    let bdevs = [
        malloc::create(malloc::MallocOpts::new("Malloc0", 16 << 20)).unwrap(),
        uring::create(uring::UringOpts::new("Uring0", file.path())).unwrap(),
    ];
    std::thread::scope(|s| {
        for (i, core) in engine.cores().into_iter().enumerate() {
            let client = BdevClient::new(
                engine
                    .spawn_thread(&format!("w{core}"), Some(core))
                    .unwrap(),
                engine.iobuf().clone(),
            );
            let bdevs = &bdevs;
            s.spawn(move || {
                for bdev in bdevs {
                    let bs = bdev.block_size() as u64;
                    // Sizes from one 4 KiB block to 1 MiB.
                    let mut off = i as u64 * (8 << 20) / bs;
                    for len in [4096usize, 8192, 65536, 131072, 1 << 20] {
                        let data: Vec<u8> = (0..len).map(|b| (b * 13 + len + i) as u8).collect();
                        client.write(bdev, off, &data).unwrap();
                        assert_eq!(
                            client.read(bdev, off, len as u64 / bs).unwrap(),
                            data,
                            "{} {len}",
                            bdev.name()
                        );
                        off += len as u64 / bs;
                    }
                    client.no_data(bdev, IoKind::Flush, 0, 0).unwrap();
                }
            });
        }
    });
    let report = engine.shutdown();
    assert!(report.pools_full, "{report:?}");
}

#[test]
fn errors_come_back_as_statuses() {
    let engine = engine();
    let bdev = null::create(null::NullOpts::new("Null0", 1 << 20)).unwrap();
    let client = BdevClient::new(
        engine.spawn_thread("t", None).unwrap(),
        engine.iobuf().clone(),
    );
    let err = client.read(&bdev, bdev.num_blocks(), 1).unwrap_err();
    assert!(
        matches!(err, ClientError::Status(IoStatus::LbaOutOfRange)),
        "{err}"
    );
    let err = client.write(&bdev, 0, &[0u8; 100]).unwrap_err();
    assert!(
        matches!(err, ClientError::Status(IoStatus::InvalidField)),
        "{err}"
    );
    assert!(client.read(&bdev, 0, 1).unwrap().iter().all(|&b| b == 0));
    // Sizes that would not fit one I/O (or the address space) are refused up front.
    for n in [u64::MAX, 1 << 40] {
        let err = client.read(&bdev, 0, n).unwrap_err();
        assert!(
            matches!(err, ClientError::Status(IoStatus::InvalidField)),
            "{err}"
        );
    }
    assert!(engine.shutdown().pools_full);
}
