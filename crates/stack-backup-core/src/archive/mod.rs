//! Artifacts into and out of the repository: the archive source that
//! streams them in, the ledger of what was read, and read-back hashing.

pub mod ledger;
mod packed;
pub mod source;
pub mod verify;
