//! # pollux-nvme
//!
//! NVMe for Pollux: the spec structures, the userspace PCIe driver over VFIO (with the
//! Controller Memory Buffer) and the NVMe-oF host.
//!
//! - [`spec`]: the NVMe base, NVMe-oF and NVMe/TCP structures, declared once and shared by
//!   target and host: controller registers (CAP, VS, CC, CSTS, AQA, ASQ, ACQ, CMBLOC,
//!   CMBSZ, CMBMSC), SQE/CQE, status codes, Identify structures, log pages, Fabrics
//!   commands and the NVMe/TCP PDUs, each `#[repr(C)]` with compile-time size and offset
//!   checks.
//! - [`pci`]: VFIO container, group and device; BAR mapping with volatile, bounds-checked
//!   MMIO; a mapper in the engine's DMA registration map that gives each region an IOVA.
//! - [`ctrlr`]: controller bring-up, namespaces, reset, shutdown, timeouts and Abort.
//! - [`qpair`]: SQ/CQ rings, doorbells, phase tags, PRP lists and SGLs built from
//!   addresses resolved for the controller.
//! - [`cmb`]: the Controller Memory Buffer: enable, map, allocate, and its addresses as the
//!   controller sees them.
//! - [`fabrics`] (started): the NVMe-oF host. Over TCP today: a blocking admin queue that
//!   brings the controller up (Connect, CC.EN, Identify, discovery log) and
//!   non-blocking I/O queue pairs that own their buffers until completion; RDMA is to
//!   come, with the same queue-pair interface.

pub mod cmb;
pub mod ctrlr;
pub mod fabrics;
pub mod pci;
pub mod qpair;
pub mod spec;
