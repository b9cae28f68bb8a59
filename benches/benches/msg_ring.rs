//! Message throughput: the raw bounded queue between two OS threads, and
//! `ThreadHandle::send_msg` into a polling reactor.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pollux_engine::dma::IobufOpts;
use pollux_engine::msg::{Msg, MsgQueue};
use pollux_engine::reactor::Engine;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn queue_between_two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("msg");
    g.throughput(Throughput::Elements(1));
    g.bench_function("queue_push_pop_cross_thread", |b| {
        b.iter_custom(|iters| {
            let q = Arc::new(MsgQueue::new(4096));
            let ran = Arc::new(AtomicU64::new(0));
            let consumer = {
                let (q, ran) = (q.clone(), ran.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while n < iters {
                        if let Some(m) = q.pop() {
                            m();
                            n += 1;
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                    ran.store(n, Ordering::Release);
                })
            };
            let start = Instant::now();
            for _ in 0..iters {
                let mut m: Msg = Box::new(|| {});
                loop {
                    match q.push(m) {
                        Ok(()) => break,
                        Err(e) => {
                            m = e.into_msg();
                            std::hint::spin_loop();
                        }
                    }
                }
            }
            consumer.join().unwrap();
            start.elapsed()
        })
    });

    let engine = Engine::builder()
        .core_mask("0x1")
        .sleep_after_idle(None)
        .iobuf(IobufOpts::small())
        .start()
        .unwrap();
    let t = engine.spawn_thread("sink", None).unwrap();
    let count = Arc::new(AtomicU64::new(0));
    g.bench_function("send_msg_to_polling_reactor", |b| {
        b.iter_custom(|iters| {
            count.store(0, Ordering::Relaxed);
            let start = Instant::now();
            for _ in 0..iters {
                let c = count.clone();
                let mut m: Msg = Box::new(move || {
                    c.fetch_add(1, Ordering::Relaxed);
                });
                loop {
                    match t.send(m) {
                        Ok(()) => break,
                        Err(e) => {
                            m = e.into_msg();
                            std::hint::spin_loop();
                        }
                    }
                }
            }
            while count.load(Ordering::Relaxed) < iters {
                std::hint::spin_loop();
            }
            start.elapsed()
        })
    });
    g.finish();
    engine.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = queue_between_two_threads
}
criterion_main!(benches);
