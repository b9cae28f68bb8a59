//! I/O devices and their per-thread channels (SPDK's `io_device` / `io_channel`).
//!
//! A device that is used from many threads registers nothing global: the first
//! [`Thread::get_io_channel`] on a thread creates that thread's channel with
//! [`IoDevice::create_channel`]; later calls on the same thread share it. The channel is
//! reference counted and destroyed (its `Drop` runs) when the last [`IoChannel`] on that
//! thread goes. A channel keeps its device alive.

use super::Thread;
use crate::Error;
use std::any::Any;
use std::fmt;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;

/// A device with one channel per thread.
pub trait IoDevice: Send + Sync + 'static {
    /// The per-thread state.
    type Channel: 'static;

    /// Creates this thread's channel; runs on `thread`.
    fn create_channel(self: &Arc<Self>, thread: &Thread) -> Result<Self::Channel, Error>;
}

struct ChannelInner<D: IoDevice> {
    // Dropped after the channel state: the device outlives its channels.
    ch: D::Channel,
    device: Arc<D>,
}

/// A reference to this thread's channel of device `D`.
pub struct IoChannel<D: IoDevice> {
    inner: Rc<ChannelInner<D>>,
}

impl<D: IoDevice> Clone for IoChannel<D> {
    fn clone(&self) -> Self {
        IoChannel {
            inner: self.inner.clone(),
        }
    }
}

impl<D: IoDevice> fmt::Debug for IoChannel<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoChannel")
            .field("device", &std::any::type_name::<D>())
            .field("refs", &Rc::strong_count(&self.inner))
            .finish()
    }
}

impl<D: IoDevice> Deref for IoChannel<D> {
    type Target = D::Channel;
    fn deref(&self) -> &D::Channel {
        &self.inner.ch
    }
}

impl<D: IoDevice> IoChannel<D> {
    /// The device this channel belongs to.
    pub fn device(&self) -> &Arc<D> {
        &self.inner.device
    }

    /// A channel of the calling thread that is not the thread's shared one: nobody else
    /// gets it from [`Thread::get_io_channel`]. For a module that keeps state of its own
    /// apart from the thread's (a transport's buffer cache).
    pub fn unshared(device: Arc<D>, ch: D::Channel) -> IoChannel<D> {
        IoChannel {
            inner: Rc::new(ChannelInner { ch, device }),
        }
    }

    /// How many references to this channel exist on its thread.
    pub fn ref_count(&self) -> usize {
        Rc::strong_count(&self.inner)
    }
}

impl Thread {
    /// This thread's channel of `device`, created on first use.
    pub fn get_io_channel<D: IoDevice>(&self, device: &Arc<D>) -> Result<IoChannel<D>, Error> {
        let key = Arc::as_ptr(device) as *const () as usize;
        let found = self
            .channels()
            .borrow()
            .iter()
            .find(|(k, w)| *k == key && w.strong_count() > 0)
            .and_then(|(_, w)| w.upgrade());
        if let Some(any) = found {
            // A live channel keeps its device alive, so the address cannot have been
            // reused by another device while the entry is live.
            let inner = any
                .downcast::<ChannelInner<D>>()
                .expect("channel registered under this device's address has its type");
            return Ok(IoChannel { inner });
        }
        // Created without holding the list: creation may open channels of other devices.
        let ch = device.create_channel(self)?;
        let inner = Rc::new(ChannelInner {
            ch,
            device: device.clone(),
        });
        let weak: std::rc::Weak<dyn Any> = Rc::downgrade(&(inner.clone() as Rc<dyn Any>));
        let mut list = self.channels().borrow_mut();
        list.retain(|(_, w)| w.strong_count() > 0);
        list.push((key, weak));
        Ok(IoChannel { inner })
    }
}
