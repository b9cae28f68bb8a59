//! # pollux-rdma
//!
//! RDMA for Pollux. This crate is being built issue by issue; today it holds only this
//! map of what it will hold.
//!
//! Safe types over the system's rdma-core (libibverbs, librdmacm): the device list,
//! contexts, protection domains, memory regions (also from a dma-buf fd with
//! `ibv_reg_dmabuf_mr`), completion queues polled in batches, shared receive queues, RC
//! queue pairs with a typestate for their setup, and rdma_cm listeners and connections. A
//! child keeps its parent alive (a memory region keeps its protection domain, which keeps
//! its context). A machine without an RDMA device is a normal condition, reported by
//! name. The protection domain becomes a mapper in the engine's DMA registration map.
//! It depends on nothing else of Pollux.
