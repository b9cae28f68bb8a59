//! The cost of one null-bdev I/O, submit to completion callback, on one thread at
//! queue depth 32: the floor under every bdev module.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pollux_engine::bdev::{BdevIo, IoCallback, IoKind, null};
use pollux_engine::dma::{Iobuf, IobufOpts};
use pollux_engine::thread::Harness;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

fn null_io(c: &mut Criterion) {
    let iobuf = Iobuf::new(&IobufOpts::small()).unwrap();
    let bdev = null::create(null::NullOpts::new("Null0", 1 << 30)).unwrap();
    let mut g = c.benchmark_group("null_bdev");
    g.throughput(Throughput::Elements(1));
    for (name, kind) in [
        ("write_4k_qd32", IoKind::Write),
        ("flush_qd32", IoKind::Flush),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let h = Harness::new(1);
                let left = Rc::new(Cell::new(iters));
                let slot: Rc<RefCell<Option<IoCallback>>> = Rc::new(RefCell::new(None));
                let (l, s) = (left.clone(), slot.clone());
                let start = h.run_on(0, || {
                    let ch = bdev.channel().unwrap();
                    let bufs = iobuf.channel().unwrap();
                    let ch2 = ch.clone();
                    let cb: IoCallback = Rc::new(move |io: Box<BdevIo>| {
                        if l.get() == 0 {
                            return;
                        }
                        l.set(l.get() - 1);
                        let me = s.borrow().clone().unwrap();
                        ch2.submit(io, &me).unwrap();
                    });
                    *slot.borrow_mut() = Some(cb.clone());
                    let start = Instant::now();
                    for _ in 0..32.min(iters) {
                        let mut io = BdevIo::new();
                        if kind == IoKind::Write {
                            io.push_buf(bufs.get(4096).unwrap()).unwrap();
                            io.prepare(kind, 0, 8);
                        } else {
                            io.prepare(kind, 0, 0);
                        }
                        left.set(left.get() - 1);
                        ch.submit(io, &cb).unwrap();
                    }
                    start
                });
                // Poll until idle (poll_threads caps its rounds; a long run needs more).
                while h.poll_thread(0).is_busy() {}
                let t = start.elapsed();
                slot.borrow_mut().take();
                h.shutdown().unwrap();
                t
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = null_io
}
criterion_main!(benches);
