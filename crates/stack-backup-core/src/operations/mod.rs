//! The commands, written against the component trait
//! ([`crate::components`]): they never match on component kinds.

pub mod backup;
pub mod copy;
pub mod discover;
pub mod doctor;
pub mod drill;
pub mod export;
pub mod health;
pub mod immaculate;
pub mod immutability;
pub mod import;
pub mod init;
pub mod notify;
pub mod prometheus;
pub mod records;
pub mod recover;
pub mod restore;
pub mod retention;
pub mod sacred;
pub mod schedule;
pub mod status;
