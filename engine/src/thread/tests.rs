use super::*;
use crate::msg::MSG_QUEUE_DEPTH_DEFAULT;
use std::cell::Cell;
use std::sync::atomic::AtomicUsize;

#[test]
fn messages_run_on_their_thread_in_order() {
    let h = Harness::new(2);
    let log = Arc::new(Mutex::new(Vec::new()));
    for i in 0..5 {
        let log = log.clone();
        h.thread(1)
            .handle()
            .send_msg(move || {
                let me = Thread::current().unwrap();
                log.lock().unwrap().push((me.name().to_owned(), i));
            })
            .unwrap();
    }
    // Nothing runs until the thread is polled.
    assert!(log.lock().unwrap().is_empty());
    assert!(h.poll_thread(0) == PollStatus::Idle);
    assert!(log.lock().unwrap().is_empty());
    assert!(h.poll_thread(1).is_busy());
    let got = log.lock().unwrap().clone();
    assert_eq!(
        got,
        (0..5).map(|i| ("ut1".to_owned(), i)).collect::<Vec<_>>()
    );
}

#[test]
fn cross_thread_ping_pong() {
    let h = Harness::new(2);
    let hits = Arc::new(AtomicUsize::new(0));
    let t1 = h.thread(1).handle();
    let t0 = h.thread(0).handle();
    let hh = hits.clone();
    t0.send_msg(move || {
        hh.fetch_add(1, Ordering::Relaxed);
        let back = Thread::current().unwrap().handle();
        t1.send_msg(move || {
            hh.fetch_add(10, Ordering::Relaxed);
            back.send_msg(move || {
                hh.fetch_add(100, Ordering::Relaxed);
            })
            .unwrap();
        })
        .unwrap();
    })
    .unwrap();
    h.poll_threads();
    assert_eq!(hits.load(Ordering::Relaxed), 111);
}

#[test]
fn pollers_are_counted_and_timed_pollers_follow_the_clock() {
    let mut h = Harness::new(1);
    let active_runs = Rc::new(Cell::new(0));
    let timed_runs = Rc::new(Cell::new(0));
    let (a, t) = (active_runs.clone(), timed_runs.clone());
    let (p_active, p_timed) = h.run_on(0, || {
        let th = Thread::current().unwrap();
        let pa = th.register_poller("active", move || {
            a.set(a.get() + 1);
            // Busy for the first three runs, idle after.
            PollStatus::from_busy(a.get() <= 3)
        });
        let pt = th.register_timed_poller("timed", Duration::from_millis(10), move || {
            t.set(t.get() + 1);
            PollStatus::Busy
        });
        (pa, pt)
    });
    h.poll_threads();
    assert_eq!(active_runs.get(), 4, "three busy rounds, then an idle one");
    assert_eq!(p_active.busy_runs(), 3);
    assert_eq!(timed_runs.get(), 0, "not due before 10 ms of virtual time");
    h.advance_time(Duration::from_millis(9));
    assert_eq!(timed_runs.get(), 0);
    h.advance_time(Duration::from_millis(1));
    assert_eq!(timed_runs.get(), 1);
    h.advance_time(Duration::from_millis(35));
    assert_eq!(
        timed_runs.get(),
        2,
        "a late timer runs once, then is due a period later"
    );
    let st = h.thread(0).stats();
    assert!(st.busy_loops >= 3 && st.idle_loops >= 1, "{st:?}");
    assert_eq!(h.thread(0).poller_count(), 2);
    drop(p_timed);
    h.poll_threads();
    assert_eq!(h.thread(0).poller_count(), 1);
    p_active.unregister();
    h.shutdown().unwrap();
}

#[test]
fn a_poller_may_unregister_itself_and_register_others() {
    let h = Harness::new(1);
    let slot: Rc<RefCell<Option<Poller>>> = Rc::new(RefCell::new(None));
    let spawned: Rc<RefCell<Vec<Poller>>> = Rc::new(RefCell::new(Vec::new()));
    let runs = Rc::new(Cell::new(0));
    let (s, sp, r) = (slot.clone(), spawned.clone(), runs.clone());
    h.run_on(0, || {
        let th = Thread::current().unwrap();
        let p = th.register_poller("once", move || {
            let th = Thread::current().unwrap();
            let r2 = r.clone();
            sp.borrow_mut().push(th.register_poller("child", move || {
                r2.set(r2.get() + 1);
                PollStatus::Idle
            }));
            s.borrow_mut().take();
            PollStatus::Busy
        });
        *slot.borrow_mut() = Some(p);
    });
    h.poll_threads();
    assert_eq!(
        spawned.borrow().len(),
        1,
        "the first poller ran exactly once"
    );
    assert!(runs.get() >= 1);
    spawned.borrow_mut().clear();
    h.shutdown().unwrap();
}

struct Counter {
    created: AtomicUsize,
    destroyed: Arc<AtomicUsize>,
}

struct CounterChannel {
    thread: String,
    destroyed: Arc<AtomicUsize>,
}

impl Drop for CounterChannel {
    fn drop(&mut self) {
        self.destroyed.fetch_add(1, Ordering::Relaxed);
    }
}

impl IoDevice for Counter {
    type Channel = CounterChannel;
    fn create_channel(self: &Arc<Self>, thread: &Thread) -> Result<CounterChannel, crate::Error> {
        self.created.fetch_add(1, Ordering::Relaxed);
        Ok(CounterChannel {
            thread: thread.name().to_owned(),
            destroyed: self.destroyed.clone(),
        })
    }
}

#[test]
fn one_channel_per_thread_reference_counted() {
    let h = Harness::new(2);
    let destroyed = Arc::new(AtomicUsize::new(0));
    let dev = Arc::new(Counter {
        created: AtomicUsize::new(0),
        destroyed: destroyed.clone(),
    });
    let (a, b) = h.run_on(0, || {
        let t = Thread::current().unwrap();
        (
            t.get_io_channel(&dev).unwrap(),
            t.get_io_channel(&dev).unwrap(),
        )
    });
    assert_eq!(
        dev.created.load(Ordering::Relaxed),
        1,
        "shared on one thread"
    );
    assert_eq!(a.ref_count(), 2);
    assert_eq!(a.thread, "ut0");
    let c = h.run_on(1, || {
        Thread::current().unwrap().get_io_channel(&dev).unwrap()
    });
    assert_eq!(dev.created.load(Ordering::Relaxed), 2, "one per thread");
    assert_eq!(c.thread, "ut1");
    assert_eq!(h.thread(0).channel_count(), 1);
    drop(a);
    assert_eq!(destroyed.load(Ordering::Relaxed), 0);
    drop(b);
    assert_eq!(
        destroyed.load(Ordering::Relaxed),
        1,
        "destroyed with its last reference"
    );
    assert_eq!(h.thread(0).channel_count(), 0);
    // A new reference after destruction creates a new channel.
    let d = h.run_on(0, || {
        Thread::current().unwrap().get_io_channel(&dev).unwrap()
    });
    assert_eq!(dev.created.load(Ordering::Relaxed), 3);
    drop((c, d));
    h.shutdown().unwrap();
}

#[test]
fn a_thread_exits_only_after_its_pollers_and_channels_are_released() {
    let h = Harness::new(1);
    let dev = Arc::new(Counter {
        created: AtomicUsize::new(0),
        destroyed: Arc::new(AtomicUsize::new(0)),
    });
    let (ch, p) = h.run_on(0, || {
        let t = Thread::current().unwrap();
        (
            t.get_io_channel(&dev).unwrap(),
            t.register_poller("p", || PollStatus::Idle),
        )
    });
    h.thread(0).exit();
    h.poll_threads();
    assert!(!h.thread(0).ready_to_exit());
    drop(p);
    h.poll_threads();
    assert!(!h.thread(0).ready_to_exit(), "the channel still holds it");
    drop(ch);
    assert!(h.thread(0).ready_to_exit());
    h.shutdown().unwrap();
}

#[test]
fn shutdown_names_what_keeps_a_thread() {
    let h = Harness::new(1);
    let p = h.run_on(0, || {
        Thread::current()
            .unwrap()
            .register_poller("stubborn", || PollStatus::Idle)
    });
    let err = h.shutdown().unwrap_err();
    assert!(err[0].contains("stubborn"), "{err:?}");
    drop(p);
}

#[test]
fn for_each_thread_visits_every_thread_then_completes_on_the_caller() {
    let h = Harness::new(3);
    let visited = Arc::new(Mutex::new(Vec::new()));
    let done_on = Arc::new(Mutex::new(None));
    let (v, d) = (visited.clone(), done_on.clone());
    h.run_on(1, || {
        Thread::current().unwrap().for_each_thread(
            move || {
                v.lock()
                    .unwrap()
                    .push(Thread::current().unwrap().name().to_owned());
            },
            move || {
                *d.lock().unwrap() = Some(Thread::current().unwrap().name().to_owned());
            },
        );
    });
    h.poll_threads();
    assert_eq!(*visited.lock().unwrap(), vec!["ut0", "ut1", "ut2"]);
    assert_eq!(done_on.lock().unwrap().as_deref(), Some("ut1"));
}

#[test]
fn a_full_queue_is_retried_from_a_poller_not_lost() {
    let h = Harness::new(2);
    let target = h.thread(1).handle();
    // Fill thread 1's queue.
    let mut n = 0;
    while target.send_msg(|| {}).is_ok() {
        n += 1;
    }
    assert_eq!(n, MSG_QUEUE_DEPTH_DEFAULT);
    let hit = Arc::new(AtomicBool::new(false));
    let hh = hit.clone();
    h.run_on(0, || {
        Thread::current()
            .unwrap()
            .send_msg_retry(&target, Box::new(move || hh.store(true, Ordering::Relaxed)));
    });
    let mut h = h;
    for _ in 0..200 {
        h.advance_time(Duration::from_micros(100));
        if hit.load(Ordering::Relaxed) {
            break;
        }
    }
    assert!(hit.load(Ordering::Relaxed));
    assert_eq!(
        h.thread(0).poller_count(),
        0,
        "the retry poller removed itself"
    );
}

#[test]
fn messages_to_an_exited_thread_come_back() {
    let h = Harness::new(1);
    let handle = h.thread(0).handle();
    h.shutdown().unwrap();
    // The harness released its threads when it was dropped.
    assert!(handle.has_exited());
    assert!(matches!(handle.send_msg(|| {}), Err(SendError::Exited(_))));
}
