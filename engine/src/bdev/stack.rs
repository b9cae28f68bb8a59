//! A bdev stacked on another (SPDK's virtual bdevs: [`super::error`], [`super::delay`]).
//!
//! The stacked bdev's channel gets each I/O from its submitter, passes it down to its
//! base's channel on the same thread ([`BaseChannel::submit`]), and gets it back in its own
//! callback when the base completes it, with its submitter's callback and channel restored
//! and the word it left with the I/O; it then completes it (at once, later, or with another
//! status). The I/O itself goes down: no copy, no allocation, its buffers untouched unless
//! the module means to.

use super::{
    BackendChannel, Bdev, BdevBackend, BdevIo, Frame, IoCallback, IoKind, STACK_DEPTH_MAX,
};
use crate::Error;
use crate::thread::{IoChannel, Thread};
use std::any::Any;
use std::rc::Rc;
use std::sync::Arc;

impl BdevIo {
    /// Saves the submitter's callback and channel (and `word`) before the I/O goes down.
    fn push_frame(&mut self, word: u64) {
        let cb = self.cb.take().expect("a submitted I/O has a callback");
        let ch = self.ch.take().expect("a submitted I/O has a channel");
        // The depth is checked when a stacked bdev is made (`check_depth`).
        let start = self.start;
        if self
            .frames
            .try_push(Frame {
                cb,
                ch,
                word,
                start,
            })
            .is_err()
        {
            unreachable!("bdevs stacked deeper than STACK_DEPTH_MAX");
        }
    }

    /// Restores the submitter's callback and channel; returns the word.
    fn pop_frame(&mut self) -> u64 {
        let f = self.frames.pop().expect("an I/O coming up has a frame");
        self.cb = Some(f.cb);
        self.ch = Some(f.ch);
        self.start = f.start;
        f.word
    }
}

/// What a stacked module gives; [`Stacked`] makes it a bdev backend that answers for its
/// base everything but its channels.
pub(crate) trait StackedModule: Send + Sync + 'static {
    /// The bdev below.
    fn base_bdev(&self) -> &Arc<Bdev>;
    /// This thread's channel of the stacked bdev.
    fn open(self: &Arc<Self>, thread: &Thread) -> Result<Box<dyn BackendChannel>, Error>;
}

/// A stacked module's backend: what I/O it does, its preferred buffers and device memory
/// are its base's; [`Bdev::module`] reaches the module's state.
pub(crate) struct Stacked<M>(pub(crate) Arc<M>);

impl<M: StackedModule> BdevBackend for Stacked<M> {
    fn open_channel(&self, thread: &Thread) -> Result<Box<dyn BackendChannel>, Error> {
        self.0.open(thread)
    }

    fn supports(&self, kind: IoKind) -> bool {
        self.0.base_bdev().supports(kind)
    }

    fn preferred_iobuf(&self) -> Option<Arc<crate::dma::Iobuf>> {
        self.0.base_bdev().preferred_iobuf()
    }

    fn device_memory_owner(&self) -> Option<u64> {
        self.0.base_bdev().device_memory_owner()
    }

    fn stack_depth(&self) -> usize {
        self.0.base_bdev().stack_depth() + 1
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(&*self.0)
    }
}

/// Refuses a bdev on `base` when the stack would be too deep.
pub(crate) fn check_depth(base: &Bdev) -> Result<(), Error> {
    if base.stack_depth() + 1 >= STACK_DEPTH_MAX {
        return Err(Error::InvalidParam {
            what: "base bdev".into(),
            why: format!(
                "{} already has {} bdevs below it; at most {} can be stacked",
                base.name(),
                base.stack_depth(),
                STACK_DEPTH_MAX - 1
            ),
        });
    }
    Ok(())
}

/// A stacked bdev's channel to its base, on one thread.
pub(crate) struct BaseChannel {
    ch: IoChannel<Bdev>,
    cb: IoCallback,
}

impl BaseChannel {
    /// Opens `base`'s channel on `thread`. `done` gets every I/O back from the base (its
    /// status is the base's) with the word given to [`BaseChannel::submit`]; it must
    /// complete the I/O, now or later.
    pub(crate) fn open(
        base: &Arc<Bdev>,
        thread: &Thread,
        done: impl Fn(Box<BdevIo>, u64) + 'static,
    ) -> Result<BaseChannel, Error> {
        let ch = thread.get_io_channel(base)?;
        let cb: IoCallback = Rc::new(move |mut io: Box<BdevIo>| {
            let word = io.pop_frame();
            done(io, word)
        });
        Ok(BaseChannel { ch, cb })
    }

    /// Asks the base to abort I/O `id`.
    pub(crate) fn abort(&self, id: usize) -> bool {
        self.ch.abort(id)
    }

    /// Passes `io`, as the stacked channel's `submit` got it, down to the base; hands it
    /// back as it came when the base's queue is full.
    pub(crate) fn submit(&self, mut io: Box<BdevIo>, word: u64) -> Result<(), Box<BdevIo>> {
        io.push_frame(word);
        self.ch.submit(io, &self.cb).map_err(|e| {
            let mut io = e.io;
            io.pop_frame();
            io
        })
    }
}
