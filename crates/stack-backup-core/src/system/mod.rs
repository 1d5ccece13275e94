//! The machine: child processes, free disk space and the state directory.

pub mod disk;
pub mod fault;
pub mod process;
pub mod state;
