//! An image of the set in a drill. When the engine already has the
//! image's ID, it is not loaded: the drill's verify step has read its tar
//! from the set and checked its SHA-256 (the ID is the identity, the tar
//! the proof that the set holds it). Otherwise the image alone is loaded
//! out of its tar, untagged, through the filter of [`super::group`] (so
//! that `docker load` cannot move a live tag such as `shop-web:latest`),
//! tagged `stack-backup-drill:<id>-<name>`, its ID compared, and the drill
//! tag removed afterwards (which deletes the image only when nothing else
//! tags it: it was not there before).

use super::engine;
use super::ImageRecord;
use crate::components::drilling::{Drilled, Scratch, IMAGE_REPO};
use crate::components::restoring::{Lane, SetContext};
use crate::components::ComponentId;
use crate::error::{Error, Result};

/// The drill of one image.
pub(super) struct ImageDrill {
    id: ComponentId,
    record: ImageRecord,
    tag: String,
    tagged: bool,
    present: bool,
    /// `<state>/drill/<id>/loaded-images`: the IDs this drill loads.
    loaded: std::path::PathBuf,
}

impl ImageDrill {
    pub(super) fn new(scratch: &Scratch, id: &ComponentId, record: ImageRecord) -> Self {
        Self {
            tag: scratch.image_tag(id),
            id: id.clone(),
            record,
            tagged: false,
            present: false,
            loaded: scratch.dir.join(LOADED),
        }
    }

    /// Records the image ID in the drill's directory (fsynced) before it
    /// is loaded: a drill killed between `docker load` and `docker tag`
    /// leaves an untagged image that only this record names.
    fn record_load(&self) -> Result<()> {
        use std::io::Write as _;
        std::fs::create_dir_all(&self.loaded)
            .map_err(|e| Error::io("creating", &self.loaded, e))?;
        let path = self.loaded.join(self.record.id.replace(':', "_"));
        std::fs::File::create(&path)
            .and_then(|mut f| {
                f.write_all(self.record.id.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::File::open(&self.loaded)?.sync_all())
            .map_err(|e| Error::io("writing", &path, e))
    }

    fn want(&self, set: &SetContext) -> Result<String> {
        set.checksums.get(&self.record.archive).ok_or_else(|| {
            Error::Verification(format!(
                "{}: {} has no checksum in CHECKSUM.sha256",
                self.id, self.record.archive
            ))
        })
    }
}

impl Drilled for ImageDrill {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn lane(&self) -> Lane {
        Lane::Images
    }

    /// The loaded image in the engine's data root, unless the engine
    /// already has it (it is then not loaded).
    fn disk_needs(&self, set: &SetContext) -> Result<crate::components::DiskNeeds> {
        if engine::image_id(&self.record.id).is_ok() {
            return Ok(Vec::new());
        }
        Ok(vec![(set.docker_root()?, set.artifact_bytes(&self.id))])
    }

    fn disk_shared(&self) -> Option<&str> {
        (!self.record.group.is_empty()).then_some(self.record.archive.as_str())
    }

    fn restore(&mut self, set: &SetContext) -> Result<String> {
        let want = self.want(set)?;
        let c = self.id.as_str().to_string();
        if engine::image_id(&self.record.id).is_ok() {
            // The drill's verify step read the tar and checked its SHA-256.
            self.present = true;
            return Ok("image ID already present: not loaded (its tar was verified)".into());
        }
        self.record_load()?;
        // This image alone (out of its group, if it has one), untagged
        // through the filter: the tar's own tags move no live tag such as
        // `shop-web:latest`.
        let got = super::group::load(
            set,
            &self.id,
            &self.record.archive,
            std::slice::from_ref(&self.record.id),
        )?;
        if got != want {
            return Err(Error::Verification(format!(
                "{c}: {} does not match its checksum",
                self.record.archive
            )));
        }
        crate::process::output(&c, "docker", &["tag", &self.record.id, &self.tag])?;
        self.tagged = true;
        Ok(if self.record.group.is_empty() {
            format!("loaded and tagged {}", self.tag)
        } else {
            format!("loaded from its group and tagged {}", self.tag)
        })
    }

    fn check(&mut self, _set: &SetContext) -> Result<String> {
        let reference = if self.tagged {
            &self.tag
        } else {
            &self.record.id
        };
        let got = engine::image_id(reference).map_err(|e| {
            Error::Verification(format!("{}: {reference} not in the engine: {e}", self.id))
        })?;
        if got != self.record.id {
            return Err(Error::Verification(format!(
                "{}: {reference} is {got}, the set's image is {}",
                self.id, self.record.id
            )));
        }
        Ok(format!(
            "ID {} {}",
            &got[..got.len().min(19)],
            if self.present {
                "(present before)"
            } else {
                "(loaded)"
            }
        ))
    }

    fn remove(&mut self) -> Result<()> {
        if self.tagged {
            remove_tag(&self.tag)?;
            self.tagged = false;
        }
        if !self.present {
            // Loaded but the tag failed: the image is untagged.
            remove_untagged(&self.record.id)?;
        }
        Ok(())
    }

    fn kept(&self) -> String {
        if self.tagged {
            format!(
                "{}: image {} (docker image rm {})",
                self.id, self.tag, self.tag
            )
        } else {
            String::new()
        }
    }
}

fn remove_tag(tag: &str) -> Result<()> {
    if engine::image_id(tag).is_err() {
        return Ok(());
    }
    crate::process::output("docker", "docker", &["image", "rm", tag]).map(|_| ())
}

/// The directory of a drill recording the image IDs it loads.
const LOADED: &str = "loaded-images";

/// Removes image `id` when it is in the engine with no tag and no
/// container (of any state) made from it: what a drill loaded and did not
/// get to tag. Returns whether it removed it.
fn remove_untagged(id: &str) -> Result<bool> {
    let Ok(info) = crate::process::output(
        "docker",
        "docker",
        &["image", "inspect", "--format", "{{len .RepoTags}}", id],
    ) else {
        return Ok(false);
    };
    if info.trim() != "0" {
        return Ok(false);
    }
    let users = crate::process::output(
        "docker",
        "docker",
        &[
            "ps",
            "--all",
            "--quiet",
            "--filter",
            &format!("ancestor={id}"),
        ],
    )?;
    if !users.trim().is_empty() {
        return Ok(false);
    }
    crate::process::output("docker", "docker", &["image", "rm", id])?;
    Ok(true)
}

/// Removes the drill tags of drill `prefix` (`stack-backup-drill:<id>-`),
/// then the images it recorded loading that are left untagged and unused.
pub(super) fn clean(scratch: &Scratch) -> Result<Vec<String>> {
    let listed = crate::process::output(
        "docker",
        "docker",
        &["images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO],
    )?;
    let prefix = format!("{IMAGE_REPO}:{}-", scratch.id);
    let mut removed = Vec::new();
    for tag in listed.lines().filter(|t| t.starts_with(&prefix)) {
        remove_tag(tag)?;
        removed.push(format!("image tag {tag}"));
    }
    let dir = scratch.dir.join(LOADED);
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Ok(id) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if id.starts_with("sha256:") && remove_untagged(&id)? {
            removed.push(format!("untagged image {id}"));
        }
    }
    Ok(removed)
}
