//! The machine: child processes, free disk space, the state directory,
//! the TLS crypto provider and memory given back.

pub mod disk;
pub mod fault;
pub mod memory;
pub mod process;
pub mod state;
pub mod tls;
