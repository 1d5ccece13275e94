//! `docker.volume.NAME`: a named volume, as files with owners and modes.
//! Containers using it are stopped while it is copied (with
//! `stop-containers = true`) or restored.

use std::path::PathBuf;

use super::engine;
use crate::components::restoring::{Applied, Lane, Restore, Restorer, SetContext};
use crate::components::tree::{self, TreeRecord};
use crate::components::{
    wrong_record, Archived, BackupContext, ComponentId, DiskNeeds, Kind, Planned, Record,
    RestoreOptions, Stack,
};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// The kind `docker.volume`.
pub struct Volume;

impl Kind for Volume {
    fn prefix(&self) -> &'static str {
        "docker.volume"
    }

    fn configured(&self, stack: &Stack) -> Vec<String> {
        stack.volumes.clone()
    }

    fn covers(&self, _stack: &Stack, id: &ComponentId) -> Vec<crate::components::Covered> {
        vec![crate::components::Covered::Volume(id.name().to_string())]
    }

    fn doctor(&self, _stack: &Stack, id: &ComponentId) -> Result<String> {
        engine::volume_mountpoint(id.name()).map(|m| format!("present at {m}"))
    }

    fn plan_backup(&self, ctx: &BackupContext, id: &ComponentId) -> Result<Option<Planned>> {
        let vol = id.name();
        let mount = engine::volume_mountpoint(vol).map_err(Error::into_missing)?;
        let users = engine::volume_users(vol)?;
        let stop = ctx
            .stack
            .cfg
            .docker
            .as_ref()
            .is_some_and(|d| d.stop_containers);
        if !users.is_empty() && !stop {
            log::warn!(
                "{id}: containers {} keep running while the volume is copied; set `stop-containers = true` in [docker] for a consistent copy",
                users.join(", ")
            );
        }
        let target = format!("docker/volumes/{vol}");
        let mut planned = Planned::new(
            Record::DockerVolume(TreeRecord::new(vol.to_string(), target.clone())),
            vec![tree::entry(id, PathBuf::from(&mount), &target)],
            0,
        );
        if stop {
            planned.stop = users;
        }
        Ok(Some(planned))
    }

    fn archived(&self, record: &mut Record, measured: &Archived) {
        if let Record::DockerVolume(t) = record {
            t.measured(measured);
        }
    }

    fn tree<'r>(&self, record: &'r Record) -> Option<&'r str> {
        match record {
            Record::DockerVolume(t) => Some(&t.path),
            _ => None,
        }
    }

    fn restorer(
        &self,
        cfg: &Config,
        _opts: &RestoreOptions,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Restore> {
        let Record::DockerVolume(record) = r else {
            return Err(wrong_record(id));
        };
        if let Some(why) = database_files(cfg, &record.source)? {
            return Ok(Restore::Skip(why));
        }
        Ok(Restore::Into(Box::new(VolumeRestorer::new(
            id.clone(),
            record.clone(),
            &record.source,
        ))))
    }

    fn drill(
        &self,
        scratch: &crate::components::Scratch,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Option<Box<dyn crate::components::Drilled>>> {
        let Record::DockerVolume(record) = r else {
            return Err(wrong_record(id));
        };
        Ok(Some(Box::new(crate::components::drilling::TreeDrill::new(
            scratch,
            id,
            record.clone(),
        ))))
    }

    fn describe(&self, r: &Record) -> (String, String) {
        let Record::DockerVolume(t) = r else {
            return (String::new(), String::new());
        };
        (
            format!("`{}`", t.source),
            format!("{} files, {}", t.files, crate::disk::human(t.bytes)),
        )
    }

    fn export_howto(&self, _m: &Manifest, r: &Record, _path_of: &dyn Fn(&str) -> String) -> String {
        let Record::DockerVolume(t) = r else {
            return String::new();
        };
        format!(
            "Volume `{}` ({} files). Stop the containers using it, then:\n\n    docker volume create {}\n    cp -a {}/. \"$(docker volume inspect -f '{{{{.Mountpoint}}}}' {})\"/\n",
            t.source, t.files, t.source, t.path, t.source
        )
    }
}

/// Why a volume is left alone by a restore: every running container that
/// mounts it is the `container =` of a configured database, whose
/// component restores it from its dump. Swapping the files of a live
/// server's data directory (copied while it ran) under it would stop the
/// server in the middle of the restore and bring back an inconsistent copy.
fn database_files(cfg: &Config, volume: &str) -> Result<Option<String>> {
    let users = match engine::volume_mountpoint(volume) {
        Ok(_) => engine::volume_users(volume)?,
        Err(_) => return Ok(None),
    };
    let databases: Vec<&String> = cfg
        .postgres
        .values()
        .filter_map(|c| c.container.as_ref())
        .chain(cfg.mysql.values().filter_map(|c| c.container.as_ref()))
        .chain(cfg.redis.values().filter_map(|c| c.container.as_ref()))
        .collect();
    if users.is_empty() || !users.iter().all(|u| databases.contains(&u)) {
        return Ok(None);
    }
    Ok(Some(format!(
        "the data of database container(s) {}, restored from their dumps",
        users.join(", ")
    )))
}

/// A volume of the set into the named volume `volume` (created when it
/// does not exist), its users stopped meanwhile.
pub struct VolumeRestorer {
    id: ComponentId,
    record: TreeRecord,
    volume: String,
}

impl VolumeRestorer {
    /// Restores the volume of `record` into the volume `volume`.
    #[must_use]
    pub fn new(id: ComponentId, record: TreeRecord, volume: &str) -> Self {
        Self {
            id,
            record,
            volume: volume.to_string(),
        }
    }
}

impl Restorer for VolumeRestorer {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn action(&self) -> String {
        let users = engine::volume_users(&self.volume).unwrap_or_default();
        format!(
            "replace the contents of volume `{}` ({} files){}",
            self.volume,
            self.record.files,
            if users.is_empty() {
                String::new()
            } else {
                format!("; containers {} are stopped meanwhile", users.join(", "))
            }
        )
    }

    fn lane(&self) -> Lane {
        Lane::Files
    }

    fn preflight(&self, _set: &SetContext) -> Result<Option<String>> {
        match engine::volume_mountpoint(&self.volume) {
            Ok(m) => tree::refuse_leftovers(&self.id, std::path::Path::new(&m)).map(|()| None),
            Err(_) => Ok(None),
        }
    }

    fn disk_needs(&self, set: &SetContext) -> Result<DiskNeeds> {
        Ok(vec![(set.docker_root()?, self.record.bytes)])
    }

    fn restore(&self, set: &SetContext) -> Result<Box<dyn Applied>> {
        let mount = PathBuf::from(match engine::volume_mountpoint(&self.volume) {
            Ok(m) => m,
            Err(_) => {
                crate::process::output(
                    self.id.as_str(),
                    "docker",
                    &["volume", "create", &self.volume],
                )?;
                engine::volume_mountpoint(&self.volume)?
            }
        });
        let users = engine::volume_users(&self.volume)?;
        tree::restore_tree(set, &self.id, &self.record.path, &mount, &users)
    }
}
