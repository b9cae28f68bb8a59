use super::*;
use crate::dma::HugepagePolicy;
use crate::thread::PollStatus;
use std::cell::RefCell;
use std::sync::mpsc;
use std::time::Instant;

fn small_engine(mask: &str, sleep: Option<Duration>) -> Engine {
    Engine::builder()
        .core_mask(mask)
        .sleep_after_idle(sleep)
        .iobuf(IobufOpts {
            hugepages: HugepagePolicy::Never,
            ..IobufOpts::small()
        })
        .start()
        .unwrap()
}

fn all_cores_mask() -> String {
    let cores = sys::allowed_cores().unwrap();
    let list: Vec<String> = cores.iter().take(2).map(|c| c.to_string()).collect();
    list.join(",")
}

#[test]
fn threads_run_pinned_on_their_reactor_and_messages_cross() {
    let engine = small_engine(&all_cores_mask(), Some(Duration::from_millis(1)));
    let cores = engine.cores();
    let threads: Vec<_> = cores
        .iter()
        .map(|&c| engine.spawn_thread(&format!("t{c}"), Some(c)).unwrap())
        .collect();
    for (t, &c) in threads.iter().zip(&cores) {
        // SAFETY: sched_getcpu has no preconditions.
        let cpu = t.call(|| unsafe { libc::sched_getcpu() }).unwrap();
        assert_eq!(
            cpu as usize,
            c,
            "thread {} runs on its reactor's core",
            t.name()
        );
    }
    // A message from the first thread to the last and back.
    let (tx, rx) = mpsc::channel();
    let last = threads.last().unwrap().clone();
    threads[0]
        .send_msg(move || {
            let origin = Thread::current().unwrap().handle();
            last.send_msg(move || {
                let on = Thread::current().unwrap().name().to_owned();
                origin
                    .send_msg(move || {
                        tx.send((on, Thread::current().unwrap().name().to_owned()))
                            .unwrap();
                    })
                    .unwrap();
            })
            .unwrap();
        })
        .unwrap();
    let (there, back) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(there, threads.last().unwrap().name());
    assert_eq!(back, threads[0].name());
    let report = engine.shutdown();
    assert!(report.pools_full, "{report:?}");
}

#[test]
fn an_idle_reactor_sleeps_and_a_message_wakes_it() {
    let engine = small_engine("0x1", Some(Duration::from_millis(1)));
    let t = engine.spawn_thread("app", None).unwrap();
    t.call(|| ()).unwrap();
    // Give it time to go to sleep.
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.reactor_stats()[0].sleeps == 0 {
        assert!(Instant::now() < deadline, "the reactor never slept");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    let before = engine.reactor_stats()[0];
    let start = Instant::now();
    t.call(|| ()).unwrap();
    let latency = start.elapsed();
    // Functional bound only: the message got through while the reactor slept.
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    let after = engine.reactor_stats()[0];
    assert!(after.sleep_ns > before.sleep_ns);
    assert!(after.loops > before.loops);
    engine.shutdown();
}

#[test]
fn a_timed_poller_wakes_a_sleeping_reactor() {
    let engine = small_engine("0x1", Some(Duration::from_millis(1)));
    let t = engine.spawn_thread("app", None).unwrap();
    let (tx, rx) = mpsc::channel();
    t.send_msg(move || {
        let th = Thread::current().unwrap();
        let slot: Rc<RefCell<Option<crate::thread::Poller>>> = Rc::new(RefCell::new(None));
        let s = slot.clone();
        let mut n = 0;
        let p = th.register_timed_poller("tick", Duration::from_millis(20), move || {
            n += 1;
            tx.send(n).unwrap();
            if n == 5 {
                s.borrow_mut().take();
            }
            PollStatus::Busy
        });
        *slot.borrow_mut() = Some(p);
    })
    .unwrap();
    for i in 1..=5 {
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), i);
    }
    let stats = engine.reactor_stats()[0];
    // A reactor woken late finds its next tick already due and need not sleep again.
    assert!(stats.sleeps >= 1, "slept between ticks: {stats:?}");
    engine.shutdown();
}

#[test]
fn a_registered_fd_wakes_a_sleeping_reactor() {
    let engine = small_engine("0x1", Some(Duration::from_millis(1)));
    let t = engine.spawn_thread("app", None).unwrap();
    let efd = Arc::new(EventFd::new().unwrap());
    let (tx, rx) = mpsc::channel();
    let e2 = efd.clone();
    t.call(move || {
        let th = Thread::current().unwrap();
        let mut watch = Some(th.register_fd(e2.raw()).unwrap());
        let slot: Rc<RefCell<Option<crate::thread::Poller>>> = Rc::new(RefCell::new(None));
        let s = slot.clone();
        let p = th.register_poller("fd", move || {
            if !e2.drain() {
                return PollStatus::Idle;
            }
            tx.send(()).unwrap();
            watch.take();
            s.borrow_mut().take();
            PollStatus::Busy
        });
        *slot.borrow_mut() = Some(p);
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.reactor_stats()[0].sleeps == 0 {
        assert!(Instant::now() < deadline, "the reactor never slept");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(20));
    let sleeps = engine.reactor_stats()[0].sleeps;
    efd.signal();
    rx.recv_timeout(Duration::from_secs(30))
        .expect("woken by the fd");
    assert!(engine.reactor_stats()[0].sleeps >= sleeps);
    assert!(engine.shutdown().pools_full);
}

#[test]
fn polling_mode_never_sleeps_and_counts_busy_and_idle() {
    let engine = small_engine("0x1", None);
    let t = engine.spawn_thread("app", None).unwrap();
    t.call(|| ()).unwrap();
    // A core shared with other tests' threads may give the reactor few slices: wait for
    // the loops rather than for a fixed time.
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = engine.reactor_stats()[0];
        if s.loops > 100 && s.idle_ns > 0 && s.busy_ns > 0 {
            break s;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(s.sleeps, 0);
    assert!(s.idle_ns > 0 && s.busy_ns > 0, "{s:?}");
    assert_eq!(s.threads, 1);
    engine.shutdown();
}

#[test]
fn unavailable_cores_are_refused_with_a_reason() {
    let err = Engine::builder()
        .core_mask("0x8000000000")
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("not available"), "{err}");
}

#[test]
fn shutdown_waits_for_channels_and_reports_pools() {
    let engine = small_engine("0x1", Some(Duration::from_millis(1)));
    let iobuf = engine.iobuf().clone();
    let t = engine.spawn_thread("app", None).unwrap();
    // The thread holds buffers and a cache until it is asked to exit.
    t.send_msg(move || {
        let ch = iobuf.channel().unwrap();
        let held: Vec<_> = (0..10).map(|_| ch.get(4096).unwrap()).collect();
        let th = Thread::current().unwrap();
        let mut state = Some((ch, held));
        let slot: Rc<RefCell<Option<crate::thread::Poller>>> = Rc::new(RefCell::new(None));
        let s = slot.clone();
        let p = th.register_poller("holder", move || {
            if Thread::current().unwrap().is_exiting() {
                state.take();
                s.borrow_mut().take();
            }
            PollStatus::Idle
        });
        *slot.borrow_mut() = Some(p);
    })
    .unwrap();
    t.call(|| ()).unwrap();
    assert!(!engine.iobuf().is_full());
    let report = engine.shutdown();
    assert!(report.pools_full, "{report:?}");
    assert!(t.has_exited());
}
