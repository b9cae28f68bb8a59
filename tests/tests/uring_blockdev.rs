//! The uring bdev on a real block device (a loop device over a file): geometry from
//! BLKGETSIZE64/BLKSSZGET, O_DIRECT data round trips, write-zeroes and unmap through
//! fallocate on the block device, and SQ polling. Needs root and losetup.

use pollux_engine::bdev::{BdevClient, IoKind, uring};
use pollux_engine::dma::IobufOpts;
use pollux_engine::reactor::Engine;
use std::process::Command;
use std::time::Duration;

struct LoopDev {
    dev: String,
    _backing: tempfile::NamedTempFile,
}

impl LoopDev {
    fn new(bytes: u64, sector: u32) -> LoopDev {
        // Two tests attaching at once could both be handed the same free loop device.
        static ATTACH: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = ATTACH.lock().unwrap_or_else(|e| e.into_inner());
        let backing = tempfile::NamedTempFile::new().unwrap();
        backing.as_file().set_len(bytes).unwrap();
        let out = Command::new("losetup")
            .args([
                "--find",
                "--show",
                "--direct-io=on",
                &format!("--sector-size={sector}"),
            ])
            .arg(backing.path())
            .output()
            .expect("losetup (util-linux) is needed for the block-device test");
        assert!(
            out.status.success(),
            "cannot attach a loop device (this test needs root and /dev/loop-control): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        LoopDev {
            dev: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
            _backing: backing,
        }
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn exercise(opts: uring::UringOpts, expect_block_size: u32) {
    let engine = Engine::builder()
        .core_mask("0x1")
        .iobuf(IobufOpts::small())
        .start()
        .unwrap();
    let bdev = uring::create(opts).unwrap();
    assert_eq!(bdev.block_size(), expect_block_size);
    assert_eq!(bdev.num_blocks() * expect_block_size as u64, 32 << 20);
    let c = BdevClient::new(
        engine.spawn_thread("t", None).unwrap(),
        engine.iobuf().clone(),
    );
    let per_64k = 65536 / expect_block_size as u64;
    for i in 0..32u64 {
        let data: Vec<u8> = (0..65536).map(|b| (b as u64 * 3 + i) as u8).collect();
        c.write(&bdev, i * per_64k, &data).unwrap();
    }
    c.no_data(&bdev, IoKind::Flush, 0, 0).unwrap();
    for i in 0..32u64 {
        let data: Vec<u8> = (0..65536).map(|b| (b as u64 * 3 + i) as u8).collect();
        assert_eq!(
            c.read(&bdev, i * per_64k, per_64k).unwrap(),
            data,
            "chunk {i}"
        );
    }
    for (kind, chunk) in [(IoKind::WriteZeroes, 3u64), (IoKind::Unmap, 7)] {
        c.no_data(&bdev, kind, chunk * per_64k, per_64k).unwrap();
        assert!(
            c.read(&bdev, chunk * per_64k, per_64k)
                .unwrap()
                .iter()
                .all(|&b| b == 0),
            "{kind:?}"
        );
    }
    // Beyond the end is refused before it reaches the device.
    assert!(c.read(&bdev, bdev.num_blocks(), 1).is_err());
    assert!(engine.shutdown().pools_full);
}

#[test]
fn uring_bdev_on_a_4k_block_device() {
    let dev = LoopDev::new(32 << 20, 4096);
    exercise(uring::UringOpts::new("Loop4k", &dev.dev), 4096);
}

#[test]
fn uring_bdev_on_a_512_byte_block_device_with_sq_polling() {
    let dev = LoopDev::new(32 << 20, 512);
    exercise(
        uring::UringOpts {
            sqpoll_idle: Some(Duration::from_millis(10)),
            ..uring::UringOpts::new("Loop512", &dev.dev)
        },
        512,
    );
}
