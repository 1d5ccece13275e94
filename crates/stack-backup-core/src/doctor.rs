//! `doctor`: is every part of the stack ready to be backed up?
//!
//! Read-only: it connects, asks for versions and measures free space, and
//! changes nothing anywhere.

use serde::Serialize;

use crate::config::{Config, Env};
use crate::error::Error;
use crate::repository::{self, Location};
use crate::{disk, docker, git, postgres, redis, sets};

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked, e.g. `postgres.main`, `repository`, `disk`.
    pub component: String,
    /// Whether it is ready.
    pub ok: bool,
    /// What was found, or what is wrong and what to do.
    pub detail: String,
}

impl Check {
    fn from_result(component: impl Into<String>, r: Result<String, Error>) -> Self {
        let component = component.into();
        match r {
            Ok(detail) => Self {
                component,
                ok: true,
                detail,
            },
            Err(e) => {
                // Component errors already carry the component's name.
                let detail = match e {
                    Error::Component { message, .. } => message,
                    other => other.to_string(),
                };
                Self {
                    component,
                    ok: false,
                    detail,
                }
            }
        }
    }
}

/// Runs every check for the stack; the stack is ready when all are `ok`.
#[must_use]
pub fn run(cfg: &Config, env: &Env) -> Vec<Check> {
    let mut checks = vec![
        Check::from_result("repository", check_repository(cfg, env)),
        Check::from_result("disk", check_disk(cfg)),
    ];
    for (name, pg) in &cfg.postgres {
        checks.push(Check::from_result(
            postgres::component(name),
            check_postgres(name, pg),
        ));
    }
    for (name, rd) in &cfg.redis {
        checks.push(Check::from_result(
            redis::component(name),
            check_redis(name, rd),
        ));
    }
    if let Some(d) = &cfg.docker {
        checks.push(Check::from_result(
            "docker",
            docker::engine()
                .map(|e| format!("Docker Engine {} (API {})", e.version, e.api_version)),
        ));
        for image in &d.images {
            checks.push(Check::from_result(
                format!("docker.image.{image}"),
                docker::image_id(image).map(|id| format!("present, ID {id}")),
            ));
        }
        for vol in &d.volumes {
            checks.push(Check::from_result(
                format!("docker.volume.{vol}"),
                docker::volume_mountpoint(vol).map(|m| format!("present at {m}")),
            ));
        }
    }
    if let Some(g) = &cfg.git {
        checks.push(Check::from_result("git", check_git(&g.path)));
    }
    for (name, p) in &cfg.paths {
        checks.push(Check::from_result(
            format!("paths.{name}"),
            check_path(&p.path),
        ));
    }
    checks
}

fn check_repository(cfg: &Config, env: &Env) -> Result<String, Error> {
    let loc = Location::of(cfg);
    if !repository::exists(cfg)? {
        return Err(Error::Repository {
            location: loc.to_string(),
            message: "no repository here yet; run `stack-backup init`".into(),
        });
    }
    let repo = repository::open_from(cfg, env)?;
    let version = repo.config().version;
    let n = sets::list(&repo, &cfg.stack.name.0)?.len();
    Ok(format!(
        "restic repository (format v{version}) at {loc}, {n} backup set(s)"
    ))
}

fn check_disk(cfg: &Config) -> Result<String, Error> {
    let floor = cfg.min_free_space();
    let mut parts = Vec::new();
    let mut places = vec![("temp", std::env::temp_dir())];
    if let Location::Local(p) = Location::of(cfg) {
        places.insert(0, ("repository", p));
    } else if let Some(c) = repository::cache_dir(cfg) {
        places.insert(0, ("repository cache", c));
    }
    for (what, path) in places {
        let space = disk::ensure(&path, 0, floor)?;
        parts.push(format!("{what} {} free", disk::human(space.available)));
    }
    Ok(format!(
        "{} (floor {})",
        parts.join(", "),
        disk::human(floor)
    ))
}

fn check_postgres(name: &str, pg: &crate::config::PostgresConfig) -> Result<String, Error> {
    let mut client = postgres::connect(name, pg)?;
    let server = postgres::server_version(name, &mut client)?;
    let pc = postgres::client_config(name, pg)?;
    let t = postgres::ToolRun::find(name, pg, &pc, "pg_dump", server.major)?;
    let tool = match &pg.container {
        Some(c) => format!("pg_dump in container {c}: {}", t.version),
        None => format!("{} ({})", t.program.display(), t.version),
    };
    Ok(format!(
        "server {} (major {}); {tool}",
        server.version, server.major
    ))
}

fn check_redis(name: &str, rd: &crate::config::RedisConfig) -> Result<String, Error> {
    let mut conn = redis::connect(name, rd)?;
    let v = redis::server_version(name, &mut conn)?;
    Ok(format!(
        "redis-server {v} at {}, role {:?}",
        rd.url.redacted(),
        rd.role
    )
    .to_lowercase())
}

fn check_git(path: &std::path::Path) -> Result<String, Error> {
    let v = git::version()?;
    let h = git::head(path)?;
    Ok(format!(
        "git {v}; HEAD {} on {}{}",
        &h.commit[..h.commit.len().min(12)],
        h.branch.as_deref().unwrap_or("(detached)"),
        if h.dirty { ", dirty" } else { "" }
    ))
}

fn check_path(path: &std::path::Path) -> Result<String, Error> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("reading", path, e))?;
    if !meta.is_dir() {
        return Err(Error::Refused(format!(
            "{} is not a directory",
            path.display()
        )));
    }
    std::fs::read_dir(path).map_err(|e| Error::io("listing", path, e))?;
    Ok(format!("{} readable", path.display()))
}
