//! The restic-format repository: opening it (local or remote), the
//! process lock, and the pack cache of remote repositories.

pub mod as_of;
pub mod lock;
pub mod object_lock;
pub mod packcache;
pub mod read_only;
pub mod remote;
pub mod repository;
pub mod restic_lock;
