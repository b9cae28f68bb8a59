//! The NVMe over Fabrics host (initiator).
//!
//! It speaks NVMe/TCP ([`tcp`]) and NVMe/RDMA ([`rdma`]), chosen by
//! [`FabricOptions::transport`]; the queues ([`host`]) and the types here — errors,
//! buffers, completions and submission results — are the same for both, so that a
//! caller moves between transports without rewriting its I/O loop.
//!
//! Two kinds of queue exist:
//!
//! - [`AdminQueue`]: blocking, used from one thread. Connecting it brings the controller
//!   up (Connect, CAP/VS, CC.EN, CSTS.RDY, Identify Controller, Number of Queues); it then
//!   runs admin commands one at a time and creates the I/O queue pairs.
//! - [`FabricQpair`]: an I/O queue pair on its own non-blocking connection. Commands
//!   are submitted with buffers the queue pair owns until their completion hands them
//!   back, and all progress happens in [`FabricQpair::poll`].
//!
//! ```no_run
//! use pollux_nvme::fabrics::{AdminQueue, FabricOptions};
//! use std::time::Duration;
//!
//! // FabricOptions::rdma(...) for NVMe/RDMA; the rest is the same.
//! let opts = FabricOptions::new("127.0.0.1:4420".parse()?, "nqn.2016-06.io.spdk:cnode1");
//! let mut admin = AdminQueue::connect(&opts)?;
//! let nsid = admin.active_namespaces()?[0];
//! let mut qp = admin.create_io_qpair::<Vec<u8>>(1, 128)?;
//! qp.read(nsid, 0, 8, vec![0; 4096], 7)?;
//! qp.wait(Duration::from_secs(5), |c| {
//!     assert_eq!(c.tag, 7);
//!     assert!(c.cqe.status().is_success());
//! })?;
//! drop(qp);
//! admin.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod host;
pub mod rdma;
pub mod tcp;

pub use host::{ADMIN_IN_CAPSULE, AdminQueue, AsyncEvent, FabricOptions, FabricQpair, Transport};

use crate::spec::cmd::{Cqe, Status};
use crate::spec::tcp::Fes;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Errors of the Fabrics host. Each message says what went wrong and, where it can,
/// what to do about it. Errors of a queue pair's transport are fatal to that queue
/// pair: after one, it only hands back its buffers (see [`FabricQpair::drain_failed`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing listens at the address.
    #[error("connect to {addr} refused: is polluxd listening?")]
    Refused {
        /// The target's address.
        addr: SocketAddr,
    },
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The target's address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The controller did not answer in time.
    #[error(
        "{what} on {addr} timed out after {after:?}; the connection was closed (raise FabricOptions::timeout if the target is slow)"
    )]
    Timeout {
        /// The target's address.
        addr: SocketAddr,
        /// What was waited for.
        what: String,
        /// How long.
        after: Duration,
    },
    /// A socket call failed.
    #[error("I/O error on the connection to {addr}: {source}")]
    Io {
        /// The target's address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The controller closed the connection.
    #[error("the controller at {addr} closed the connection{}", closed_detail(*.outstanding))]
    Closed {
        /// The target's address.
        addr: SocketAddr,
        /// Commands that were outstanding.
        outstanding: usize,
    },
    /// The controller sent something the protocol does not allow; the host sent an
    /// H2CTermReq and closed the connection.
    #[error(
        "protocol error from the controller at {addr}: {what}; the host terminated the connection (H2CTermReq, {fes:?})"
    )]
    Protocol {
        /// The target's address.
        addr: SocketAddr,
        /// What was wrong.
        what: String,
        /// The Fatal Error Status sent.
        fes: Fes,
    },
    /// The controller terminated the connection with a C2HTermReq.
    #[error(
        "the controller at {addr} terminated the connection: C2HTermReq FES {fes:#x} ({}), FEI {fei:#x}",
        fes_text(*.fes)
    )]
    TermReq {
        /// The target's address.
        addr: SocketAddr,
        /// Fatal Error Status as received.
        fes: u16,
        /// Fatal Error Information as received.
        fei: u32,
    },
    /// The ICResp is not one this host can work with.
    #[error("the controller at {addr} sent an unusable ICResp: {why}")]
    IcResp {
        /// The target's address.
        addr: SocketAddr,
        /// What is wrong with it.
        why: String,
    },
    /// The Connect command failed.
    #[error("Connect failed: status {}", describe_connect_status(.status, *.dw0))]
    ConnectRejected {
        /// Queue being connected.
        qid: u16,
        /// The status.
        status: Status,
        /// Dword 0 of the completion (for Invalid Parameters: which field).
        dw0: u32,
    },
    /// A command that the host needed failed.
    #[error("{what} failed: status {}", describe(*.status))]
    Command {
        /// What the command was for.
        what: String,
        /// The status.
        status: Status,
    },
    /// The controller is not in a state the host can use.
    #[error("the controller at {addr} {why}")]
    Controller {
        /// The target's address.
        addr: SocketAddr,
        /// What is wrong.
        why: String,
    },
    /// An RDMA call failed (rdma-core's message, or no RDMA device).
    #[error("NVMe/RDMA to {addr}: {why}")]
    Rdma {
        /// The target's address.
        addr: SocketAddr,
        /// What failed.
        why: String,
    },
    /// The caller asked for something that cannot be done.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The connection failed before; it must be set up anew.
    #[error("the connection to {addr} failed earlier ({why}); connect again")]
    Dead {
        /// The target's address.
        addr: SocketAddr,
        /// The first failure.
        why: String,
    },
}

fn closed_detail(outstanding: usize) -> String {
    if outstanding == 0 {
        String::new()
    } else {
        format!(" with {outstanding} command(s) outstanding")
    }
}

fn fes_text(fes: u16) -> &'static str {
    match fes {
        0x01 => "invalid PDU header field",
        0x02 => "PDU sequence error",
        0x03 => "header digest error",
        0x04 => "data transfer out of range",
        0x05 => "data transfer limit exceeded",
        0x06 => "unsupported parameter",
        _ => "reserved value",
    }
}

fn describe_connect_status(status: &Status, dw0: u32) -> String {
    let text = match (status.sct, status.sc) {
        (1, 0x80) => "incompatible format: the controller does not take this Connect format",
        (1, 0x81) => "controller busy: the requested controller is in use",
        (1, 0x82) => "invalid parameters",
        (1, 0x83) => "restart discovery: the subsystem is not at this address any more",
        (1, 0x84) => "host not allowed by the subsystem",
        _ => return describe(*status),
    };
    let mut s = format!("sct={} sc={:#04x} ({text}", status.sct, status.sc);
    if status.sc == 0x82 {
        // Invalid Parameters: IATTR (bit 0 of byte 0) says SQE or data, IPO (bytes 3:2)
        // the byte offset of the field (fabrics 3.3, Figure 23).
        let in_data = dw0 & 1 != 0;
        let ipo = dw0 >> 16;
        s.push_str(&format!(
            ": the {} byte {ipo} is wrong",
            if in_data {
                "Connect data's"
            } else {
                "Connect command's"
            }
        ));
    }
    s.push(')');
    s
}

/// An NVMe status as text: `sct=.. sc=.. (meaning)`, as error messages show it.
pub fn describe(status: Status) -> String {
    format!(
        "sct={} sc={:#04x} ({}{})",
        status.sct,
        status.sc,
        status_text(status),
        if status.dnr { ", do not retry" } else { "" }
    )
}

/// What a status means (base 4.6.1.2, Figures 94-100), for the codes a host meets;
/// command specific codes (SCT 1) depend on the command and are shown as such.
pub fn status_text(status: Status) -> &'static str {
    match (status.sct, status.sc) {
        (0, 0x00) => "successful completion",
        (0, 0x01) => "invalid command opcode",
        (0, 0x02) => "invalid field in command",
        (0, 0x03) => "command ID conflict",
        (0, 0x04) => "data transfer error",
        (0, 0x05) => "aborted due to power loss notification",
        (0, 0x06) => "internal error",
        (0, 0x07) => "command abort requested",
        (0, 0x08) => "aborted due to SQ deletion",
        (0, 0x0b) => "invalid namespace or format",
        (0, 0x0c) => "command sequence error",
        (0, 0x0d) => "invalid SGL segment descriptor",
        (0, 0x0e) => "invalid number of SGL descriptors",
        (0, 0x0f) => "data SGL length invalid",
        (0, 0x11) => "SGL descriptor type invalid",
        (0, 0x15) => "operation denied",
        (0, 0x16) => "SGL offset invalid",
        (0, 0x18) => "host identifier inconsistent format",
        (0, 0x19) => "keep alive timer expired",
        (0, 0x1a) => "keep alive timeout invalid",
        (0, 0x20) => "namespace is write protected",
        (0, 0x21) => "command interrupted",
        (0, 0x22) => "transient transport error",
        (0, 0x80) => "LBA out of range",
        (0, 0x81) => "capacity exceeded",
        (0, 0x82) => "namespace not ready",
        (0, 0x83) => "reservation conflict",
        (0, 0x84) => "format in progress",
        (1, _) => "command specific status",
        (2, 0x80) => "write fault",
        (2, 0x81) => "unrecovered read error",
        (2, 0x82) => "end-to-end guard check error",
        (2, 0x83) => "end-to-end application tag check error",
        (2, 0x84) => "end-to-end reference tag check error",
        (2, 0x85) => "compare failure",
        (2, 0x86) => "access denied",
        (2, 0x87) => "deallocated or unwritten logical block",
        (3, 0x00) => "internal path error",
        (3, 0x70) => "host pathing error",
        (3, 0x71) => "command aborted by host",
        _ => "unknown status",
    }
}

/// The status that [`FabricQpair::drain_failed`] gives commands whose queue pair failed:
/// Command Aborted By Host (SCT 3h Path Related, SC 71h; base Figure 100).
pub const STATUS_ABORTED_BY_HOST: Status = Status {
    sct: 3,
    sc: 0x71,
    more: false,
    dnr: false,
};

/// A data buffer that a queue pair owns while its command runs.
pub trait DataBuf {
    /// The bytes, for data that goes to the controller.
    fn as_slice(&self) -> &[u8];
    /// The bytes, for data that comes from the controller.
    fn as_mut_slice(&mut self) -> &mut [u8];
}

impl DataBuf for Vec<u8> {
    fn as_slice(&self) -> &[u8] {
        self
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }
}

impl DataBuf for Box<[u8]> {
    fn as_slice(&self) -> &[u8] {
        self
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }
}

/// Which way a queue-pair command moves its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XferDir {
    /// No data (a buffer given anyway is only carried and handed back).
    None,
    /// Host to controller: writes, and admin commands that send data.
    HostToCtrl,
    /// Controller to host: reads, Identify, Get Log Page.
    CtrlToHost,
}

/// Data of a blocking admin command, borrowed for the command's duration.
#[derive(Debug)]
pub enum DataDir<'a> {
    /// No data.
    None,
    /// The controller fills the buffer.
    ToHost(&'a mut [u8]),
    /// The buffer goes to the controller.
    ToController(&'a [u8]),
}

/// A finished command of a queue pair.
#[derive(Debug)]
pub struct Completion<B> {
    /// The tag given at submission.
    pub tag: u64,
    /// The completion entry; [`Cqe::status`] tells how it went. For reads that ended
    /// with a C2HData PDU carrying the SUCCESS flag, the host builds it (status success,
    /// CID and SQID filled in).
    pub cqe: Cqe,
    /// The buffer given at submission.
    pub buf: Option<B>,
}

/// Why a submission was refused; the buffer comes back with it.
pub enum SubmitError<B> {
    /// Depth - 1 commands are outstanding: poll for completions and retry.
    QueueFull(Option<B>),
    /// The command cannot be sent as given.
    Invalid {
        /// What is wrong.
        why: String,
        /// The buffer.
        buf: Option<B>,
    },
    /// The queue pair failed earlier (see [`FabricQpair::poll`]).
    Dead(Option<B>),
}

impl<B> SubmitError<B> {
    /// The buffer handed back.
    pub fn into_buf(self) -> Option<B> {
        match self {
            SubmitError::QueueFull(b) | SubmitError::Dead(b) => b,
            SubmitError::Invalid { buf, .. } => buf,
        }
    }
}

impl<B> fmt::Debug for SubmitError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::QueueFull(b) => f
                .debug_tuple("QueueFull")
                .field(&b.as_ref().map(|_| ".."))
                .finish(),
            SubmitError::Invalid { why, buf } => f
                .debug_struct("Invalid")
                .field("why", why)
                .field("buf", &buf.as_ref().map(|_| ".."))
                .finish(),
            SubmitError::Dead(b) => f
                .debug_tuple("Dead")
                .field(&b.as_ref().map(|_| ".."))
                .finish(),
        }
    }
}

impl<B> fmt::Display for SubmitError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::QueueFull(_) => {
                f.write_str("the queue pair is full: poll for completions and submit again")
            }
            SubmitError::Invalid { why, .. } => write!(f, "command refused: {why}"),
            SubmitError::Dead(_) => {
                f.write_str("the queue pair failed earlier; drain it and create a new one")
            }
        }
    }
}

impl<B> std::error::Error for SubmitError<B> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_is_wrong() {
        let e = Error::ConnectRejected {
            qid: 0,
            status: Status::CONNECT_INVALID_HOST,
            dw0: 0,
        };
        assert_eq!(
            e.to_string(),
            "Connect failed: status sct=1 sc=0x84 (host not allowed by the subsystem)"
        );
        let e = Error::ConnectRejected {
            qid: 1,
            status: Status::CONNECT_INVALID_PARAMETERS,
            dw0: (256 << 16) | 1,
        };
        assert!(e.to_string().contains("Connect data's byte 256"), "{e}");
        let e = Error::Refused {
            addr: "127.0.0.1:4420".parse().unwrap(),
        };
        assert_eq!(
            e.to_string(),
            "connect to 127.0.0.1:4420 refused: is polluxd listening?"
        );
        let e = Error::Command {
            what: "Identify Controller".into(),
            status: Status::INVALID_FIELD,
        };
        assert_eq!(
            e.to_string(),
            "Identify Controller failed: status sct=0 sc=0x02 (invalid field in command, do not retry)"
        );
    }

    #[test]
    fn submit_errors_hand_the_buffer_back() {
        let e: SubmitError<Vec<u8>> = SubmitError::QueueFull(Some(vec![1, 2]));
        assert!(e.to_string().contains("full"));
        assert_eq!(e.into_buf(), Some(vec![1, 2]));
    }
}
