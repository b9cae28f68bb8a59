//! pollux-rdma on a real RDMA device: run in the lab (`tests/lab/run rdma-verbs`), where
//! Soft-RoCE (rxe0) sits on the guest's NIC. `POLLUX_RDMA_ADDR` is the device's IP
//! address; without it the test fails and says so (hence `#[ignore]` in a plain
//! `cargo test`).
//!
//! A server and a client in one process, each with its own rdma_cm channel: connect
//! with private data both ways, SEND/RECV through a shared receive queue, RDMA READ and
//! RDMA WRITE with registered memory, completions polled in batches, disconnect, and
//! every object freed.

use pollux_rdma::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);
const LEN: usize = 64 << 10;

fn addr() -> SocketAddr {
    let ip = std::env::var("POLLUX_RDMA_ADDR").unwrap_or_else(|_| {
        panic!(
            "POLLUX_RDMA_ADDR is not set: this test needs an RDMA device; run tests/lab/run rdma-verbs"
        )
    });
    format!("{ip}:18515").parse().unwrap()
}

struct Buf(Vec<u8>);

impl Buf {
    fn sge(&self, mr: &Mr, off: usize, len: usize) -> Sge {
        Sge {
            addr: self.0.as_ptr() as u64 + off as u64,
            len: len as u32,
            lkey: mr.lkey(),
        }
    }
}

fn wait_wc(cq: &Cq, what: &str) -> Wc {
    let t0 = Instant::now();
    let mut wc = [Wc::default(); 8];
    loop {
        let n = cq.poll(&mut wc[..1]).unwrap();
        if n == 1 {
            assert!(wc[0].ok(), "{what}: completion status {}", wc[0].status());
            return wc[0];
        }
        assert!(t0.elapsed() < T, "{what}: no completion in {T:?}");
        std::thread::yield_now();
    }
}

const CAPS: QpCaps = QpCaps {
    max_send_wr: 16,
    max_recv_wr: 16,
    max_send_sge: 1,
    max_recv_sge: 1,
};

fn server(lch: std::sync::Arc<EventChannel>, listener: CmId<Listening>) {
    let ev = lch.wait_for(listener.id(), T).unwrap();
    assert_eq!(ev.kind, CmEventKind::ConnectRequest);
    assert_eq!(ev.private_data[..5], *b"hello");
    let mut inc = listener.incoming(&ev).unwrap();
    let ctx = inc.context().unwrap();
    let attr = ctx.query().unwrap();
    println!("DEVICE {attr:?}");
    let pd = Pd::new(&ctx).unwrap();
    let cq = Cq::new(&ctx, 64).unwrap();
    let srq = Srq::new(&pd, 16, 1).unwrap();
    let mut mem = Buf(vec![0u8; LEN]);
    // SAFETY: `mem` outlives the region (dropped after it below).
    let mr = unsafe { pd.reg_mr(mem.0.as_mut_ptr(), LEN, Access::REMOTE) }.unwrap();
    for i in 0..8u64 {
        srq.post_recv(100 + i, &[mem.sge(&mr, i as usize * 64, 64)])
            .unwrap();
    }
    inc.create_qp(&pd, &cq, &cq, Some(&srq), CAPS).unwrap();
    let conn = inc.accept(b"welcome", 16, 16).unwrap();
    let ev = lch.wait_for(conn.id(), T).unwrap();
    assert_eq!(ev.kind, CmEventKind::Established);
    let qp = conn.qp().unwrap();
    // The client's SEND: its buffer's address and rkey.
    let wc = wait_wc(&cq, "receive");
    assert_eq!(wc.byte_len(), 12);
    let slot = (wc.wr_id() - 100) as usize * 64;
    let raddr = u64::from_le_bytes(mem.0[slot..slot + 8].try_into().unwrap());
    let rkey = u32::from_le_bytes(mem.0[slot + 8..slot + 12].try_into().unwrap());
    // RDMA READ the client's 32 KiB into our second half, check, invert, WRITE back.
    let half = LEN / 2;
    let read = SendOp::Read {
        remote_addr: raddr,
        rkey,
    };
    qp.post_send(1, read, &[mem.sge(&mr, half, half)], true)
        .unwrap();
    assert_eq!(wait_wc(&cq, "RDMA READ").wr_id(), 1);
    assert!(
        mem.0[half..]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 251) as u8),
        "RDMA READ data"
    );
    for b in &mut mem.0[half..] {
        *b = !*b;
    }
    let write = SendOp::Write {
        remote_addr: raddr,
        rkey,
    };
    qp.post_send(2, write, &[mem.sge(&mr, half, half)], false)
        .unwrap();
    mem.0[1024..1028].copy_from_slice(b"done");
    qp.post_send(3, SendOp::Send, &[mem.sge(&mr, 1024, 4)], true)
        .unwrap();
    assert_eq!(wait_wc(&cq, "SEND").wr_id(), 3);
    let ev = lch.wait_for(conn.id(), T).unwrap();
    assert_eq!(ev.kind, CmEventKind::Disconnected);
    drop(conn);
    drop(mr);
    drop(mem);
    println!(
        "CHECK server: connect request with private data, SRQ receive, RDMA READ 32 KiB, RDMA WRITE 32 KiB, SEND, disconnect"
    );
}

#[test]
#[ignore = "needs an RDMA device: tests/lab/run rdma-verbs"]
fn connect_send_recv_read_write_over_rdma_cm() {
    let a = addr();
    let devs = devices().unwrap();
    println!("DEVICES {devs:?}");
    assert!(!devs.is_empty());
    let lch = EventChannel::new().unwrap();
    let listener = CmId::listen(&lch, a, 16).unwrap();
    let srv = std::thread::spawn(move || server(lch, listener));
    std::thread::sleep(Duration::from_millis(200));
    let ch = EventChannel::new().unwrap();
    let mut made = None;
    let (conn, ev) = CmId::connect(&ch, a, b"hello", T, |id, ctx| {
        let pd = Pd::new(ctx)?;
        let cq = Cq::new(ctx, 64)?;
        id.create_qp(&pd, &cq, &cq, None, CAPS)?;
        made = Some((pd, cq));
        Ok((16, 16))
    })
    .unwrap();
    assert_eq!(ev.private_data[..7], *b"welcome");
    let (pd, cq) = made.unwrap();
    let qp = conn.qp().unwrap();
    let mut mem = Buf(vec![0u8; LEN]);
    // SAFETY: `mem` outlives the region.
    let mr = unsafe { pd.reg_mr(mem.0.as_mut_ptr(), LEN, Access::REMOTE) }.unwrap();
    for (i, b) in mem.0[..LEN / 2].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    qp.post_recv(9, &[mem.sge(&mr, LEN - 64, 64)]).unwrap();
    let desc_off = LEN / 2;
    let base = mem.0.as_ptr() as u64;
    mem.0[desc_off..desc_off + 8].copy_from_slice(&base.to_le_bytes());
    mem.0[desc_off + 8..desc_off + 12].copy_from_slice(&mr.rkey().to_le_bytes());
    qp.post_send(7, SendOp::Send, &[mem.sge(&mr, desc_off, 12)], true)
        .unwrap();
    let (mut got_send, mut got_recv) = (false, false);
    while !(got_send && got_recv) {
        let wc = wait_wc(&cq, "client");
        match wc.wr_id() {
            7 => got_send = true,
            9 => {
                assert_eq!(&mem.0[LEN - 64..LEN - 60], b"done");
                got_recv = true;
            }
            x => panic!("unexpected completion {x}"),
        }
    }
    // The server's RDMA WRITE landed before its SEND (RC ordering).
    assert!(
        mem.0[..LEN / 2]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == !((i % 251) as u8)),
        "RDMA WRITE data"
    );
    conn.disconnect().unwrap();
    let ev = ch.wait_for(conn.id(), T).unwrap();
    assert_eq!(ev.kind, CmEventKind::Disconnected);
    drop(conn);
    drop(mr);
    srv.join().unwrap();
    println!(
        "CHECK client: connect with private data both ways, SEND, RECV, the peer's RDMA WRITE seen, disconnect"
    );
}
