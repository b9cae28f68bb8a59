//! In steady state an I/O allocates nothing on the heap: a counting global allocator
//! watches this thread across a million null-bdev I/Os at queue depth 32.

use pollux_engine::bdev::{BdevIo, IoCallback, IoKind, null};
use pollux_engine::dma::{HugepagePolicy, Iobuf, IobufOpts};
use pollux_engine::thread::Harness;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every operation to the system allocator; counting touches only a
// const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

const QUEUE_DEPTH: usize = 32;
const IOS: u64 = 1_000_000;
const WARM_UP: u64 = 10_000;

#[test]
fn a_million_null_ios_allocate_nothing() {
    let h = Harness::new(1);
    let iobuf = Iobuf::new(&IobufOpts {
        hugepages: HugepagePolicy::Prefer,
        ..IobufOpts::small()
    })
    .unwrap();
    let bdev = null::create(null::NullOpts::new("Null0", 1 << 30)).unwrap();
    let blocks = bdev.num_blocks();

    let submitted = Rc::new(Cell::new(0u64));
    let completed = Rc::new(Cell::new(0u64));
    let failed = Rc::new(Cell::new(0u64));
    let mark = Rc::new(Cell::new(None::<u64>));
    let cb_slot: Rc<RefCell<Option<IoCallback>>> = Rc::new(RefCell::new(None));

    h.run_on(0, || {
        let ch = bdev.channel().unwrap();
        let bufs = iobuf.channel().unwrap();
        let (s, c, f, m, slot) = (
            submitted.clone(),
            completed.clone(),
            failed.clone(),
            mark.clone(),
            cb_slot.clone(),
        );
        let ch2 = ch.clone();
        let lba = Cell::new(0u64);
        let cb: IoCallback = Rc::new(move |mut io: Box<BdevIo>| {
            c.set(c.get() + 1);
            if !io.status().is_success() {
                f.set(f.get() + 1);
            }
            if c.get() == WARM_UP {
                m.set(Some(allocs()));
            }
            if s.get() < IOS + WARM_UP {
                s.set(s.get() + 1);
                lba.set((lba.get() + 7919) % (blocks - 8));
                let kind = if s.get() % 2 == 0 {
                    IoKind::Read
                } else {
                    IoKind::Write
                };
                io.prepare(kind, lba.get(), 1);
                let me = slot.borrow().clone().unwrap();
                ch2.submit(io, &me).unwrap();
            }
        });
        *cb_slot.borrow_mut() = Some(cb.clone());
        for _ in 0..QUEUE_DEPTH {
            let mut io = BdevIo::new();
            io.push_buf(bufs.get(512).unwrap()).unwrap();
            io.prepare(IoKind::Write, 0, 1);
            submitted.set(submitted.get() + 1);
            ch.submit(io, &cb).unwrap();
        }
    });
    h.poll_threads();
    let start = mark.get().expect("warm-up finished");
    let during = allocs() - start;
    assert_eq!(completed.get(), IOS + WARM_UP);
    assert_eq!(failed.get(), 0);
    assert_eq!(during, 0, "{during} heap allocations across {IOS} I/Os");

    cb_slot.borrow_mut().take();
    h.shutdown().unwrap();
    assert!(iobuf.is_full());
}
