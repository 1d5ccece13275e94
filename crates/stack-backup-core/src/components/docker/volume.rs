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
        opts: &RestoreOptions,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Restore> {
        let Record::DockerVolume(record) = r else {
            return Err(wrong_record(id));
        };
        if let Some(why) = database_files(cfg, opts, id, &record.source)? {
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

/// Where the official images keep each server's data directory (the
/// PostgreSQL entry covers images that set PGDATA below the mount).
const DATA_DIRS: [(&str, &[&str]); 3] = [
    (
        "postgres",
        &["/var/lib/postgresql/data", "/var/lib/postgresql"],
    ),
    ("mysql", &["/var/lib/mysql"]),
    ("redis", &["/data"]),
];

/// A running container that mounts a volume.
struct Mounter {
    id: String,
    name: String,
    destinations: Vec<String>,
}

/// The running containers mounting `volume`, by full ID, with where each
/// mounts it.
fn mounters(component: &str, volume: &str) -> Result<Vec<Mounter>> {
    let ids = crate::process::output(
        component,
        "docker",
        &[
            "ps",
            "--no-trunc",
            "--filter",
            &format!("volume={volume}"),
            "--format",
            "{{.ID}}",
        ],
    )?;
    let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // `.Mounts` as JSON: a bind mount has no `Name`, which a template
    // comparing it would fail on.
    let mut args = vec![
        "inspect",
        "--format",
        "{{.Id}}\t{{.Name}}\t{{json .Mounts}}",
    ];
    args.extend(ids);
    let out = crate::process::output(component, "docker", &args)?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let (id, name) = (f.next()?, f.next()?);
            let mounts: Vec<serde_json::Value> =
                serde_json::from_str(f.next().unwrap_or("[]")).unwrap_or_default();
            Some(Mounter {
                id: id.to_string(),
                name: name.trim_start_matches('/').to_string(),
                destinations: mounts
                    .iter()
                    .filter(|m| m["Name"].as_str() == Some(volume))
                    .filter_map(|m| m["Destination"].as_str().map(str::to_string))
                    .collect(),
            })
        })
        .collect())
}

/// What a restore does with a volume that a configured database server
/// keeps its data directory in. Such a volume was copied while the server
/// ran, so its files are no consistent copy: swapping them in under the
/// server would bring back a torn data directory. It is left alone (its
/// content comes back through the database components' dumps) only when
/// every running container mounting it is the `container =` of a database
/// component of the set selected in this restore — or of a Redis with
/// `role = "cache"`, whose content is disposable — mounted at that
/// server's data directory. A volume with a database server on it and any
/// other user, or whose server is not restored by this restore, is
/// refused (`Error::Refused`): nothing would bring that data back.
/// Containers are compared by ID, so any spelling of a name matches.
/// `Ok(None)` (restore it as files) when no database server keeps its
/// data in the volume.
fn database_files(
    cfg: &Config,
    opts: &RestoreOptions,
    id: &ComponentId,
    volume: &str,
) -> Result<Option<String>> {
    if engine::volume_mountpoint(volume).is_err() {
        return Ok(None);
    }
    let users = mounters(id.as_str(), volume)?;
    if users.is_empty() {
        return Ok(None);
    }
    // (kind, component name, container, disposable)
    let configured: Vec<(&str, &String, &String, bool)> = cfg
        .postgres
        .iter()
        .filter_map(|(n, c)| Some(("postgres", n, c.container.as_ref()?, false)))
        .chain(
            cfg.mysql
                .iter()
                .filter_map(|(n, c)| Some(("mysql", n, c.container.as_ref()?, false))),
        )
        .chain(cfg.redis.iter().filter_map(|(n, c)| {
            Some((
                "redis",
                n,
                c.container.as_ref()?,
                c.role == crate::config::RedisRole::Cache,
            ))
        }))
        .collect();
    let mut servers = Vec::new(); // (container, component, restored here or disposable)
    let mut others = Vec::new();
    for u in &users {
        let server = configured.iter().find(|(kind, _, container, _)| {
            let data_dirs = DATA_DIRS
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(&[][..], |(_, d)| *d);
            u.destinations
                .iter()
                .any(|d| data_dirs.contains(&d.as_str()))
                && container_id(container).as_deref() == Some(u.id.as_str())
        });
        match server {
            Some((kind, name, _, disposable)) => {
                let component = format!("{kind}.{name}");
                let restored = opts.restoring.iter().any(|r| r.as_str() == component);
                servers.push((u.name.clone(), component, restored || *disposable));
            }
            None => others.push(u.name.clone()),
        }
    }
    if servers.is_empty() {
        return Ok(None);
    }
    let names = |v: &[&(String, String, bool)]| -> String {
        v.iter()
            .map(|(c, comp, _)| format!("{c} ({comp})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let all: Vec<&(String, String, bool)> = servers.iter().collect();
    let missing: Vec<&(String, String, bool)> = servers.iter().filter(|s| !s.2).collect();
    let why = if !others.is_empty() {
        format!("it is also used by {}", others.join(", "))
    } else if !missing.is_empty() {
        format!(
            "this restore does not bring back {}",
            missing
                .iter()
                .map(|s| s.1.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        return Ok(Some(format!(
            "the data directory of database container(s) {}, restored from their dumps (a Redis cache is disposable)",
            names(&all)
        )));
    };
    Err(Error::Refused(format!(
        "{id}: volume `{volume}` is the data directory of running database container(s) {}, and {why}: a raw copy of a running server's files would be swapped in under it. Restore with `--only` without {id} (the database components restore its content), or stop the container(s) first",
        names(&all)
    )))
}

/// The full ID of container `name`, `None` when there is none.
fn container_id(name: &str) -> Option<String> {
    crate::process::output(
        "docker",
        "docker",
        &["inspect", "--format", "{{.Id}}", name],
    )
    .ok()
    .map(|s| s.trim().to_string())
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
