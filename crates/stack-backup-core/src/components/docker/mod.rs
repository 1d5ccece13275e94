//! Docker: images (by ID, saved with `docker save`) and volumes (as
//! files), through the `docker` CLI (`engine`).

pub mod address;
pub mod compose;
mod drill;
mod engine;
mod group;
mod image;
mod volume;

pub use engine::*;
pub use image::{recover as recover_image, Image, ImageEntry, ImageRecord, ImageRestorer};
pub use volume::{Volume, VolumeRestorer};
