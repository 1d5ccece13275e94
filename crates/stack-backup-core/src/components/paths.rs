//! `[paths.NAME]`: plain directories, with owners and modes.

use std::path::{Path, PathBuf};

use super::restoring::{Applied, Lane, Restore, Restorer, SetContext};
use super::tree::{self, TreeRecord};
use super::{wrong_record, BackupContext, ComponentId, DiskNeeds, Kind, Planned, Record, Stack};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// The kind `paths`.
pub struct Paths;

fn record(id: &ComponentId, r: &Record) -> Result<TreeRecord> {
    match r {
        Record::Path(t) => Ok(t.clone()),
        _ => Err(wrong_record(id)),
    }
}

fn configured_path(cfg: &Config, id: &ComponentId) -> Result<PathBuf> {
    cfg.paths
        .get(id.name())
        .map(|p| p.path.clone())
        .ok_or_else(|| Error::component(id.as_str(), "not in the config"))
}

impl Kind for Paths {
    fn prefix(&self) -> &'static str {
        "paths"
    }

    fn configured(&self, stack: &Stack) -> Vec<String> {
        stack.cfg.paths.keys().cloned().collect()
    }

    fn covers(&self, stack: &Stack, id: &ComponentId) -> Vec<super::Covered> {
        configured_path(stack.cfg, id)
            .map(super::Covered::Dir)
            .into_iter()
            .collect()
    }

    fn doctor(&self, stack: &Stack, id: &ComponentId) -> Result<String> {
        let path = configured_path(stack.cfg, id)?;
        let md = std::fs::metadata(&path).map_err(|e| Error::io("reading", &path, e))?;
        if !md.is_dir() {
            return Err(Error::Refused(format!(
                "{} is not a directory",
                path.display()
            )));
        }
        std::fs::read_dir(&path).map_err(|e| Error::io("listing", &path, e))?;
        Ok(format!("{} readable", path.display()))
    }

    fn plan_backup(&self, ctx: &BackupContext, id: &ComponentId) -> Result<Option<Planned>> {
        let path = configured_path(ctx.stack.cfg, id)?;
        if !path.is_dir() {
            return Err(Error::missing(
                id.as_str(),
                format!("{} is not a directory", path.display()),
            ));
        }
        let target = format!("paths/{}", id.name());
        Ok(Some(Planned::new(
            Record::Path(TreeRecord::new(path.display().to_string(), target.clone())),
            vec![tree::entry(id, path, &target)],
            0,
        )))
    }

    fn archived(&self, record: &mut Record, measured: &super::Archived) {
        if let Record::Path(t) = record {
            t.measured(measured);
        }
    }

    fn tree<'r>(&self, record: &'r Record) -> Option<&'r str> {
        match record {
            Record::Path(t) => Some(&t.path),
            _ => None,
        }
    }

    fn restorer(
        &self,
        cfg: &Config,
        _opts: &super::RestoreOptions,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Restore> {
        let Some(p) = cfg.paths.get(id.name()) else {
            return Ok(Restore::Skip("not in the config".into()));
        };
        Ok(Restore::Into(Box::new(PathRestorer {
            id: id.clone(),
            record: record(id, r)?,
            live: p.path.clone(),
        })))
    }

    fn drill(
        &self,
        scratch: &super::Scratch,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Option<Box<dyn super::Drilled>>> {
        Ok(Some(Box::new(super::drilling::TreeDrill::new(
            scratch,
            id,
            record(id, r)?,
        ))))
    }

    fn describe(&self, r: &Record) -> (String, String) {
        match r {
            Record::Path(t) => (
                format!("`{}`", t.source),
                format!("{} files, {}", t.files, crate::disk::human(t.bytes)),
            ),
            _ => (String::new(), String::new()),
        }
    }

    fn export_howto(&self, _m: &Manifest, r: &Record, _path_of: &dyn Fn(&str) -> String) -> String {
        let Record::Path(t) = r else {
            return String::new();
        };
        format!(
            "Directory `{}` ({} files):\n\n    rsync -a --delete {}/ {}/\n",
            t.source, t.files, t.path, t.source
        )
    }
}

/// A directory of the set into a directory on the host.
pub struct PathRestorer {
    id: ComponentId,
    record: TreeRecord,
    live: PathBuf,
}

impl PathRestorer {
    /// Restores the directory of `record` into `target` (the live path, or
    /// a scratch directory).
    #[must_use]
    pub fn new(id: ComponentId, record: TreeRecord, target: &Path) -> Self {
        Self {
            id,
            record,
            live: target.to_path_buf(),
        }
    }
}

impl Restorer for PathRestorer {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn action(&self) -> String {
        format!("replace directory {}", self.live.display())
    }

    fn lane(&self) -> Lane {
        Lane::Files
    }

    fn preflight(&self, _set: &SetContext) -> Result<Option<String>> {
        tree::refuse_leftovers(&self.id, &self.live).map(|()| None)
    }

    fn disk_needs(&self, _set: &SetContext) -> Result<DiskNeeds> {
        Ok(vec![(self.live.clone(), self.record.bytes)])
    }

    fn restore(&self, set: &SetContext) -> Result<Box<dyn Applied>> {
        tree::restore_tree(set, &self.id, &self.record.path, &self.live, &[])
    }
}
