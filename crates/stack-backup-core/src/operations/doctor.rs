//! `doctor`: is every part of the stack ready to be backed up?
//!
//! Read-only: it connects, asks for versions and measures free space, and
//! changes nothing anywhere.

use serde::Serialize;

use crate::components::Stack;
use crate::config::{Config, Env};
use crate::error::Error;
use crate::repository::{self, Location};
use crate::{disk, docker, sets};

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
                let detail = e.detail();
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
    if let Some(c) = check_object_lock(cfg) {
        checks.push(Check::from_result("object-lock", c));
    }
    if cfg.docker.is_some() {
        checks.push(Check::from_result(
            "docker",
            docker::engine()
                .map(|e| format!("Docker Engine {} (API {})", e.version, e.api_version)),
        ));
    }
    match Stack::resolve(cfg) {
        Ok(stack) => {
            for id in stack.components() {
                checks.push(Check::from_result(
                    id.to_string(),
                    id.kind().doctor(&stack, &id),
                ));
            }
        }
        Err(e) => checks.push(Check::from_result("docker", Err(e))),
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

/// Whether an S3 bucket has Object Lock, and whether the configured
/// retention can be applied; `None` for a repository not on S3 without
/// `immaculate-retain`.
fn check_object_lock(cfg: &Config) -> Option<Result<String, Error>> {
    if cfg.tiers.immaculate_retain.is_some() {
        return Some(crate::object_lock::policy(cfg).map(|p| {
            let p = p.expect("immaculate-retain is set");
            format!(
                "{} has Object Lock enabled; immaculate and sacred sets are retained {} in {} mode",
                p.s3.describe(),
                cfg.tiers.immaculate_retain.as_deref().unwrap_or_default(),
                p.mode.s3()
            )
        }));
    }
    let s3 = match crate::object_lock::S3::for_config(cfg) {
        Ok(Some(s3)) => s3,
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    // Without `immaculate-retain` this is information only: credentials
    // without the permission to read the bucket's lock configuration, or a
    // store without the call, must not make doctor "not ready".
    Some(Ok(match s3.lock_enabled() {
        Ok(true) => format!(
            "{} has Object Lock enabled; set [tiers] immaculate-retain to protect immaculate and sacred sets",
            s3.describe()
        ),
        Ok(false) => format!(
            "{} has no Object Lock: baselines can be deleted with the backup's credentials",
            s3.describe()
        ),
        Err(e) => format!(
            "{}: whether Object Lock is enabled could not be read ({}); only needed with [tiers] immaculate-retain",
            s3.describe(),
            e.detail()
        ),
    }))
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
