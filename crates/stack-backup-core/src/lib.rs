//! stack-backup's library: the stack model, configuration, the
//! restic-format repository, the components and the checks.
//!
//! The `stack-backup` binary parses arguments and renders output; every
//! decision lives here. The folders show the architecture:
//!
//! - [`model`]: what a stack and a backup set are (config, manifest, tiers,
//!   tags, sets). Pure data, no I/O beyond reading the config.
//! - [`repo`]: the restic-format repository (open, lock, remote backends,
//!   pack cache).
//! - [`archive`]: how artifacts go into and come out of the repository
//!   (the archive source, the ledger of what was read, read-back hashing).
//! - [`components`]: one module per component kind behind one trait; the
//!   only place that knows what a PostgreSQL database or a volume is.
//! - [`operations`]: the commands (backup, restore, export, import,
//!   lifecycle), written against the component trait.
//! - [`system`]: processes, disks and the TLS provider.

pub mod archive;
pub mod components;
pub mod error;
pub mod model;
pub mod operations;
pub mod repo;
pub mod system;

// Short paths for the modules every layer uses.
pub use archive::{ledger, source, verify};
pub use components::{docker, git, migrations, postgres, redis};
pub use model::{
    checksums, config, manifest, monitoring, runbook, secret, sets, tags, tiers, validate,
};
pub use operations::{
    backup, copy, discover, doctor, drill, export, health, immaculate, immutability, import, init,
    notify, prometheus, records, recover, restore, retention, sacred, schedule, status,
};
pub use repo::{as_of, lock, object_lock, packcache, read_only, remote, repository, restic_lock};
pub use system::{disk, process};

pub use config::Config;
pub use error::{Error, ExitCode, Result};
