//! The machine: child processes and free disk space.

pub mod disk;
pub mod fault;
pub mod process;
