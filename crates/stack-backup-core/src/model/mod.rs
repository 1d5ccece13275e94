//! What a stack and a backup set are: configuration, manifest, tiers,
//! snapshot tags and the sets seen through them.

pub mod checksums;
pub mod config;
pub mod manifest;
pub mod monitoring;
pub mod runbook;
pub mod secret;
pub mod sets;
pub mod tags;
pub mod tiers;
pub mod validate;
