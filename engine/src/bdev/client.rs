//! A blocking client for code that is not on a reactor: `main`, the control plane,
//! tests. Each call runs one I/O on a chosen lightweight thread and waits for it.
//!
//! It allocates per call and blocks its caller, so it is for set-up, checks and
//! examples; the data path submits [`BdevIo`]s from reactor threads with callbacks.

use super::{Bdev, BdevIo, IoCallback, IoKind, IoStatus, SGL_SEGMENTS_MAX};
use crate::dma::Iobuf;
use crate::msg::SendError;
use crate::thread::ThreadHandle;
use std::rc::Rc;
use std::sync::Arc;

/// Runs I/Os on `thread` on behalf of a caller that is not a reactor.
#[derive(Clone, Debug)]
pub struct BdevClient {
    thread: ThreadHandle,
    iobuf: Arc<Iobuf>,
}

/// Why a blocking I/O failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The I/O completed, or was refused, with this status.
    #[error("I/O failed with status {0:?}")]
    Status(IoStatus),
    /// No DMA buffer was free.
    #[error("no DMA buffer free for the I/O; retry, or enlarge the iobuf pools")]
    NoBuffers,
    /// The thread could not take the request.
    #[error("the I/O thread did not take the request: {0}")]
    Thread(#[from] SendError),
}

impl BdevClient {
    /// A client whose I/Os run on `thread`, with buffers from `iobuf`.
    pub fn new(thread: ThreadHandle, iobuf: Arc<Iobuf>) -> Self {
        BdevClient { thread, iobuf }
    }

    /// Writes `data` (whole blocks) at block `offset_blocks`.
    pub fn write(
        &self,
        bdev: &Arc<Bdev>,
        offset_blocks: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let bs = bdev.block_size() as usize;
        if data.is_empty() || data.len() % bs != 0 {
            return Err(ClientError::Status(IoStatus::InvalidField));
        }
        let num = (data.len() / bs) as u64;
        self.run(bdev, IoKind::Write, offset_blocks, num, Some(data.to_vec()))
            .map(|_| ())
    }

    /// Reads `num_blocks` blocks at `offset_blocks`.
    pub fn read(
        &self,
        bdev: &Arc<Bdev>,
        offset_blocks: u64,
        num_blocks: u64,
    ) -> Result<Vec<u8>, ClientError> {
        // Checked before allocating: one I/O carries at most SGL_SEGMENTS_MAX buffers.
        let max = self.iobuf.large_bufsize() * SGL_SEGMENTS_MAX;
        let len = (num_blocks as usize)
            .checked_mul(bdev.block_size() as usize)
            .filter(|&l| l > 0 && l <= max)
            .ok_or(ClientError::Status(IoStatus::InvalidField))?;
        self.run(
            bdev,
            IoKind::Read,
            offset_blocks,
            num_blocks,
            Some(vec![0; len]),
        )
    }

    /// Runs an I/O without data: flush, write-zeroes or unmap.
    pub fn no_data(
        &self,
        bdev: &Arc<Bdev>,
        kind: IoKind,
        offset_blocks: u64,
        num_blocks: u64,
    ) -> Result<(), ClientError> {
        assert!(
            !matches!(kind, IoKind::Read | IoKind::Write),
            "reads and writes carry data"
        );
        self.run(bdev, kind, offset_blocks, num_blocks, None)
            .map(|_| ())
    }

    fn run(
        &self,
        bdev: &Arc<Bdev>,
        kind: IoKind,
        offset_blocks: u64,
        num_blocks: u64,
        data: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, ClientError> {
        let (tx, rx) = crossbeam::channel::bounded::<Result<Vec<u8>, ClientError>>(1);
        let (bdev, iobuf) = (bdev.clone(), self.iobuf.clone());
        self.thread.send_msg(move || {
            let fail = |e| {
                let _ = tx.send(Err(e));
            };
            let (ch, bufs) = match (bdev.channel(), iobuf.channel()) {
                (Ok(c), Ok(b)) => (c, b),
                _ => return fail(ClientError::Status(IoStatus::InternalError)),
            };
            let mut io = BdevIo::new();
            let chunk = iobuf.large_bufsize();
            if let Some(data) = &data {
                if data.len() > chunk * SGL_SEGMENTS_MAX {
                    return fail(ClientError::Status(IoStatus::InvalidField));
                }
                for part in data.chunks(chunk) {
                    let Some(mut b) = bufs.get(part.len()) else {
                        return fail(ClientError::NoBuffers);
                    };
                    b.as_mut_slice().copy_from_slice(part);
                    io.push_buf(b).expect("sized for SGL_SEGMENTS_MAX");
                }
            }
            io.prepare(kind, offset_blocks, num_blocks);
            let tx2 = tx.clone();
            let cb: IoCallback = Rc::new(move |io: Box<BdevIo>| {
                let out = if io.status().is_success() {
                    Ok(io
                        .bufs()
                        .iter()
                        .flat_map(|b| b.as_slice().iter().copied())
                        .collect())
                } else {
                    Err(ClientError::Status(io.status()))
                };
                let _ = tx2.send(out);
            });
            if let Err(e) = ch.submit(io, &cb) {
                fail(ClientError::Status(e.status));
            }
        })?;
        rx.recv()
            .unwrap_or(Err(ClientError::Status(IoStatus::Aborted)))
    }
}
