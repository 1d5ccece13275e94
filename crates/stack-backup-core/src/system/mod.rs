//! The machine: child processes, free disk space, the state directory and
//! the TLS crypto provider.

pub mod disk;
pub mod fault;
pub mod process;
pub mod state;
pub mod tls;
