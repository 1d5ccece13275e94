//! `docker.image.REF`: an image, identified by its ID (the tag alone is not
//! identity), saved with `docker save`. An image whose ID is already in the
//! parent set is not saved again. Images saved in the same backup share
//! one `docker save` of all of them (a group, `docker/saved/…`) when the
//! engine writes the classic format, so that the layers they share are
//! read once (`docs/decisions/0045-images-saved-together.md`).

use serde::{Deserialize, Serialize};

use super::engine;
use crate::components::restoring::{
    Applied, JournalEntry, Lane, Recover, Restore, Restorer, SetContext, UndoContext,
};
use crate::components::{
    wrong_record, Archived, BackupContext, ComponentId, DiskNeeds, Kind, Planned, Record,
    RestoreOptions, Stack,
};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::source::{Artifact, Content, Entry};

/// `docker.image.REF`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The reference configured.
    pub reference: String,
    /// Image ID (`sha256:…`): the identity.
    pub id: String,
    /// Repo digests known to the engine.
    pub repo_digests: Vec<String>,
    /// Tags pointing at it.
    pub tags: Vec<String>,
    /// The `docker save` tar in the set: the image's own, or the group's.
    pub archive: String,
    /// True when the tar was reused from the parent set (same image ID).
    pub reused: bool,
    /// When `archive` is a group (one `docker save` of several images):
    /// the IDs saved in it, sorted; `archive` is
    /// [`super::group_artifact`] of them. Empty for an image's own tar.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<String>,
}

/// The kind `docker.image`.
pub struct Image;

/// Images this large or larger are never saved in a group (see
/// `plan_together`).
const GROUP_IMAGE_LIMIT: u64 = 8 << 30;

/// The first 12 hex digits of an image ID.
fn short(id: &str) -> &str {
    let id = id.trim_start_matches("sha256:");
    &id[..id.len().min(12)]
}

impl Kind for Image {
    fn prefix(&self) -> &'static str {
        "docker.image"
    }

    fn configured(&self, stack: &Stack) -> Vec<String> {
        stack.images.clone()
    }

    fn doctor(&self, _stack: &Stack, id: &ComponentId) -> Result<String> {
        engine::image_id(id.name()).map(|i| format!("present, ID {i}"))
    }

    fn plan_backup(&self, _ctx: &BackupContext, id: &ComponentId) -> Result<Option<Planned>> {
        let reference = id.name();
        let info = engine::image_info(reference).map_err(Error::into_missing)?;
        let path = engine::image_artifact(reference);
        let entry = Entry::File(Artifact {
            path: path.clone(),
            component: id.to_string(),
            content: Content::Stream(engine::save_stream(reference)),
            reuse_meta: None,
        });
        let record = ImageRecord {
            reference: reference.to_string(),
            id: info.id,
            repo_digests: info.repo_digests.unwrap_or_default(),
            tags: info.repo_tags.unwrap_or_default(),
            reused: false,
            archive: path,
            group: Vec::new(),
        };
        Ok(Some(Planned::new(
            Record::DockerImage(record),
            vec![entry],
            info.size,
        )))
    }

    fn same_content(&self, new: &Record, old: &Record) -> bool {
        matches!((new, old), (Record::DockerImage(n), Record::DockerImage(o))
            if n.id == o.id && n.archive == o.archive)
    }

    fn archived(&self, record: &mut Record, measured: &Archived) {
        // An image whose group another image's plan carries measured
        // nothing: `reused` was settled by `plan_together`.
        if let Record::DockerImage(i) = record {
            if measured.files > 0 {
                i.reused = measured.reused;
            }
        }
    }

    /// Images whose ID the parent set holds keep the parent's tar (their
    /// own, or the group it saved them in), planned once; the images left
    /// to save are saved by one `docker save` of their IDs when there are
    /// two or more and the engine writes the classic format, in the plan of
    /// the first of them.
    fn plan_together(
        &self,
        plans: &mut [(&ComponentId, &mut Planned)],
        parent: Option<&Manifest>,
        reuse: &dyn Fn(&mut Artifact) -> bool,
    ) {
        let mut carried: Vec<String> = Vec::new();
        // The IDs of each group in `carried`.
        let mut groups: Vec<Vec<String>> = Vec::new();
        let mut fresh: Vec<usize> = Vec::new();
        for (i, (id, p)) in plans.iter_mut().enumerate() {
            let Record::DockerImage(rec) = &mut p.record else {
                continue;
            };
            let old = parent
                .and_then(|m| m.components.get(*id))
                .and_then(|r| match r {
                    Record::DockerImage(o) if o.id == rec.id && valid_archive(o) => Some(o),
                    _ => None,
                });
            if let Some(old) = old {
                if carried.contains(&old.archive) {
                    // Another image of this backup carries the group.
                    p.entries.clear();
                    p.estimate = 0;
                    rec.archive.clone_from(&old.archive);
                    rec.group.clone_from(&old.group);
                    rec.reused = true;
                    continue;
                }
                if let Some(Entry::File(a)) = p.entries.first() {
                    let mut a = a.clone();
                    a.path.clone_from(&old.archive);
                    if reuse(&mut a) {
                        p.entries = vec![Entry::File(a)];
                        p.estimate = 0;
                        rec.archive.clone_from(&old.archive);
                        rec.group.clone_from(&old.group);
                        carried.push(old.archive.clone());
                        if !old.group.is_empty() {
                            groups.push(old.group.clone());
                        }
                        continue;
                    }
                }
            }
            fresh.push(i);
        }
        // An image to save whose ID a group carried from the parent holds
        // (a new reference to an image saved before) loads from that
        // group: saving it again could plan the very same group path
        // twice, once reused and once read.
        fresh.retain(|i| {
            let p = &mut *plans[*i].1;
            let Record::DockerImage(rec) = &mut p.record else {
                return true;
            };
            let Some(g) = groups.iter().find(|g| g.contains(&rec.id)) else {
                return true;
            };
            p.entries.clear();
            p.estimate = 0;
            rec.archive = engine::group_artifact(g);
            rec.group.clone_from(g);
            rec.reused = true;
            false
        });
        // Loading one member of a group (a drill, `restore --only`)
        // unpacks the whole group: an image of 8 GiB or more keeps its own
        // save rather than weigh on every other member's load.
        fresh.retain(|i| plans[*i].1.estimate < GROUP_IMAGE_LIMIT);
        if fresh.len() >= 2 && engine::classic_save_format() {
            group(plans, &fresh);
        }
        guide_saves(plans, parent);
    }

    fn shared_artifact<'r>(&self, record: &'r Record) -> Option<&'r str> {
        match record {
            Record::DockerImage(i) if !i.group.is_empty() => Some(&i.archive),
            _ => None,
        }
    }

    fn restorer(
        &self,
        _cfg: &Config,
        opts: &RestoreOptions,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Restore> {
        let Record::DockerImage(record) = r else {
            return Err(wrong_record(id));
        };
        Ok(Restore::Into(Box::new(ImageRestorer {
            id: id.clone(),
            record: record.clone(),
            reference: record.reference.clone(),
            restoring: opts.restoring.clone(),
        })))
    }

    fn drill(
        &self,
        scratch: &crate::components::Scratch,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Option<Box<dyn crate::components::Drilled>>> {
        let Record::DockerImage(record) = r else {
            return Err(wrong_record(id));
        };
        Ok(Some(Box::new(super::drill::ImageDrill::new(
            scratch,
            id,
            record.clone(),
        ))))
    }

    fn drill_clean(&self, scratch: &crate::components::Scratch) -> Result<Vec<String>> {
        if scratch.cfg.docker.is_none() {
            return Ok(Vec::new());
        }
        super::drill::clean(scratch)
    }

    fn describe(&self, r: &Record) -> (String, String) {
        let Record::DockerImage(i) = r else {
            return (String::new(), String::new());
        };
        let group = if i.group.len() > 1 {
            format!(
                ", saved with {} other image(s) in {}",
                i.group.len() - 1,
                i.archive
            )
        } else {
            String::new()
        };
        (
            format!("image `{}`", i.reference),
            format!(
                "ID {}{}{group}",
                i.id,
                if i.reused { " (reused)" } else { "" }
            ),
        )
    }

    fn export_path(&self, _m: &Manifest, _id: &ComponentId, set_path: &str) -> (String, bool) {
        (format!("{set_path}.gz"), true)
    }

    fn export_howto(&self, _m: &Manifest, r: &Record, path_of: &dyn Fn(&str) -> String) -> String {
        let Record::DockerImage(i) = r else {
            return String::new();
        };
        if !i.group.is_empty() {
            // The group loads every image in it, untagged (saved by ID).
            return format!(
                "Image `{}`, ID `{}`, saved together with {} other image(s) of the set:\n\n    gunzip -c {} | docker load\n    docker tag {} {}\n",
                i.reference,
                i.id,
                i.group.len().saturating_sub(1),
                path_of(&i.archive),
                i.id,
                i.reference
            );
        }
        format!(
            "Image `{}`, ID `{}`:\n\n    gunzip -c {} | docker load\n",
            i.reference,
            i.id,
            path_of(&i.archive)
        )
    }
}

/// Saves the images `fresh` (indexes into `plans`, two or more) with one
/// `docker save`, in the plan of the first of them.
fn group(plans: &mut [(&ComponentId, &mut Planned)], fresh: &[usize]) {
    let mut ids: Vec<String> = fresh
        .iter()
        .filter_map(|i| match &plans[*i].1.record {
            Record::DockerImage(r) => Some(r.id.clone()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    let path = engine::group_artifact(&ids);
    let owner = plans[fresh[0]].0.to_string();
    let members: Vec<String> = fresh.iter().map(|i| plans[*i].0.to_string()).collect();
    for (n, i) in fresh.iter().enumerate() {
        let p = &mut *plans[*i].1;
        p.entries = if n == 0 {
            vec![Entry::File(Artifact {
                path: path.clone(),
                component: owner.clone(),
                content: Content::Stream(engine::save_group_stream(&ids, &members)),
                reuse_meta: None,
            })]
        } else {
            Vec::new()
        };
        if let Record::DockerImage(rec) = &mut p.record {
            rec.archive.clone_from(&path);
            rec.group.clone_from(&ids);
        }
    }
}

/// Gives each image saved afresh the chunker a guide (see
/// [`crate::components::Guide`]): the files the parent set saved the same
/// references in. A rebuilt image mostly repeats its previous layers,
/// and its save usually lands at another path than before (its own tar
/// after a group, or another group). The parent's path itself needs no
/// guide: the archiver takes a changed file's previous content along.
fn guide_saves(plans: &mut [(&ComponentId, &mut Planned)], parent: Option<&Manifest>) {
    let Some(parent) = parent else { return };
    let previous = |id: &ComponentId| match parent.components.get(id) {
        Some(Record::DockerImage(o)) if valid_archive(o) => Some(o.archive.clone()),
        _ => None,
    };
    // Every image whose save a path carries, previous saves in plan order.
    let mut by_path: Vec<(String, Vec<String>)> = Vec::new();
    for (id, p) in plans.iter() {
        let Record::DockerImage(rec) = &p.record else {
            continue;
        };
        if rec.reused {
            continue;
        }
        let Some(prev) = previous(id) else { continue };
        match by_path.iter_mut().find(|(path, _)| *path == rec.archive) {
            Some((_, from)) if !from.contains(&prev) => from.push(prev),
            Some(_) => {}
            None => by_path.push((rec.archive.clone(), vec![prev])),
        }
    }
    for (_, p) in plans.iter_mut() {
        let saves: Vec<String> = p
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::File(a) if a.reuse_meta.is_none() => Some(a.path.clone()),
                _ => None,
            })
            .collect();
        for path in saves {
            let Some((_, from)) = by_path.iter().find(|(x, _)| *x == path) else {
                continue;
            };
            let from: Vec<String> = from.iter().filter(|f| **f != path).cloned().collect();
            if !from.is_empty() {
                p.guides.push(crate::components::Guide { path, from });
            }
        }
    }
}

/// Whether a (parent set's) record's archive is where backup puts it: the
/// image's own tar, or the group named by its sorted IDs that include
/// the image's.
pub(crate) fn valid_archive(r: &ImageRecord) -> bool {
    if r.group.is_empty() {
        return r.archive == engine::image_artifact(&r.reference);
    }
    r.group.contains(&r.id)
        && r.group.windows(2).all(|w| w[0] < w[1])
        && r.group.iter().all(|i| {
            i.strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        && r.archive == engine::group_artifact(&r.group)
}

/// An image of the set, loaded unless its ID is present and tagged as
/// `reference` (the configured one, or a drill tag).
pub struct ImageRestorer {
    id: ComponentId,
    record: ImageRecord,
    reference: String,
    /// The components this restore brings back (the images among them
    /// saved in the same group are loaded together).
    restoring: Vec<ComponentId>,
}

impl ImageRestorer {
    /// Loads the image of `record` and tags it `reference`.
    #[must_use]
    pub fn new(id: ComponentId, record: ImageRecord, reference: &str) -> Self {
        Self {
            id,
            record,
            reference: reference.to_string(),
            restoring: Vec::new(),
        }
    }

    /// The images to load: this one and, for a group, the others of this
    /// restore saved in it that the engine lacks, so that one `docker
    /// load` reads the group once for all of them (their restorers, in
    /// the same lane after this one, find them present and only tag
    /// them). Loaded untagged: a restore that fails before their turn
    /// leaves them as untagged images, as a failed tag would.
    fn to_load(&self, set: &SetContext) -> Result<Vec<String>> {
        let mut ids = vec![self.record.id.clone()];
        if self.record.group.is_empty() {
            return Ok(ids);
        }
        if !self.record.group.contains(&self.record.id) {
            return Err(Error::Verification(format!(
                "{}: the manifest does not list image {} in its group {}",
                self.id, self.record.id, self.record.archive
            )));
        }
        for (id, r) in &set.manifest.components {
            let Record::DockerImage(r) = r else { continue };
            if self.restoring.contains(id)
                && r.archive == self.record.archive
                && r.group.contains(&r.id)
                && !ids.contains(&r.id)
                && engine::image_id(&r.id).is_err()
            {
                ids.push(r.id.clone());
            }
        }
        Ok(ids)
    }
}

impl Restorer for ImageRestorer {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn action(&self) -> String {
        format!(
            "load image `{}` (ID {}) unless present, and tag it",
            self.reference,
            short(&self.record.id)
        )
    }

    fn lane(&self) -> Lane {
        Lane::Images
    }

    fn disk_needs(&self, set: &SetContext) -> Result<DiskNeeds> {
        Ok(vec![(set.docker_root()?, set.artifact_bytes(&self.id))])
    }

    fn disk_shared(&self) -> Option<&str> {
        (!self.record.group.is_empty()).then_some(self.record.archive.as_str())
    }

    fn restore(&self, set: &SetContext) -> Result<Box<dyn Applied>> {
        let old_id = engine::image_id(&self.reference).ok();
        set.journal(
            &self.id,
            JournalEntry::Image(ImageEntry {
                reference: self.reference.clone(),
                old_id: old_id.clone(),
                new_id: self.record.id.clone(),
            }),
        )?;
        if engine::image_id(&self.record.id).is_err() {
            // Untagged, through the filter: what the tar's own manifest
            // says of tags moves none.
            let ids = self.to_load(set)?;
            super::group::load(set, &self.id, &self.record.archive, &ids)?;
        }
        crate::process::output(
            self.id.as_str(),
            "docker",
            &["tag", &self.record.id, &self.reference],
        )?;
        Ok(Box::new(Tagged {
            reference: self.reference.clone(),
            old_id,
        }))
    }

    fn post_check(&self, _set: &SetContext) -> Result<Option<String>> {
        let id = engine::image_id(&self.reference)?;
        if id != self.record.id {
            return Err(Error::Verification(format!(
                "{}: {} is {id}, expected {}",
                self.id, self.reference, self.record.id
            )));
        }
        Ok(Some(format!("{}: ID {}", self.id, short(&id))))
    }
}

/// An image tag in the restore journal: what it pointed at before.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageEntry {
    /// The tag.
    pub reference: String,
    /// Its image ID before the restore (none: it did not exist).
    pub old_id: Option<String>,
    /// The set's image ID.
    pub new_id: String,
}

/// Resolves a journaled re-tag: an abort points the tag back at its old
/// ID (or removes it when it did not exist and now names the set's image).
pub fn recover(e: &ImageEntry, to: Recover) -> Result<String> {
    if to == Recover::Finish {
        return Ok(format!("{}: kept", e.reference));
    }
    let now = engine::image_id(&e.reference).ok();
    match &e.old_id {
        Some(old) if now.as_ref() != Some(old) => {
            crate::process::output("docker", "docker", &["tag", old, &e.reference])?;
            Ok(format!("{}: tagged {} again", e.reference, short(old)))
        }
        None if now.as_ref() == Some(&e.new_id) => {
            crate::process::output("docker", "docker", &["image", "rm", &e.reference])?;
            Ok(format!(
                "{}: removed (it did not exist before)",
                e.reference
            ))
        }
        _ => Ok(format!("{}: as before", e.reference)),
    }
}

/// An image loaded/tagged; `old_id` is what the tag pointed at before.
struct Tagged {
    reference: String,
    old_id: Option<String>,
}

impl Applied for Tagged {
    fn commit(self: Box<Self>) {}

    fn undo(self: Box<Self>, _undo: &UndoContext) -> Result<()> {
        if engine::image_id(&self.reference).ok() == self.old_id {
            return Ok(());
        }
        match &self.old_id {
            Some(id) => crate::process::output("docker", "docker", &["tag", id, &self.reference])?,
            // It was not there before: take it away again.
            None => crate::process::output("docker", "docker", &["image", "rm", &self.reference])?,
        };
        Ok(())
    }
}
