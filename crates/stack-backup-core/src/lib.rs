//! stack-backup's library: the stack model, configuration, the
//! restic-format repository, the components and the checks.
//!
//! The `stack-backup` binary parses arguments and renders output; every
//! decision lives here.

pub mod config;
pub mod copy;
pub mod disk;
pub mod docker;
pub mod doctor;
pub mod error;
pub mod export;
pub mod git;
pub mod health;
pub mod immaculate;
pub mod import;
pub mod init;
pub mod lock;
pub mod migrations;
pub mod packcache;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod remote;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod sacred;
pub mod secret;
pub mod sets;
pub mod tiers;
pub mod verify;

pub use config::Config;
pub use error::{Error, ExitCode, Result};
pub mod backup;
pub mod ledger;
pub mod manifest;
pub mod source;
