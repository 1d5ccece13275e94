//! Docker Engine access through the `docker` CLI.

use serde::Serialize;

use crate::error::Result;
use crate::process;

/// What the Docker Engine says of itself.
#[derive(Debug, Clone, Serialize)]
pub struct Engine {
    /// Engine version, e.g. `20.10.24`.
    pub version: String,
    /// Engine API version, e.g. `1.41`.
    pub api_version: String,
}

/// The component id of an image reference, for errors.
fn image_component(reference: &str) -> String {
    crate::components::ComponentId::new(&super::Image, reference).to_string()
}

/// The component id of a volume, for errors.
fn volume_component(volume: &str) -> String {
    crate::components::ComponentId::new(&super::Volume, volume).to_string()
}

fn docker(component: &str, args: &[&str]) -> Result<String> {
    process::output(component, "docker", args)
}

/// Asks the engine for its version; fails when it is not reachable.
pub fn engine() -> Result<Engine> {
    let out = docker(
        "docker",
        &[
            "version",
            "--format",
            "{{.Server.Version}} {{.Server.APIVersion}}",
        ],
    )?;
    let mut parts = out.split_whitespace();
    Ok(Engine {
        version: parts.next().unwrap_or_default().to_string(),
        api_version: parts.next().unwrap_or_default().to_string(),
    })
}

/// The image ID (`sha256:…`) of an image reference.
pub fn image_id(reference: &str) -> Result<String> {
    docker(
        &image_component(reference),
        &["image", "inspect", "--format", "{{.Id}}", reference],
    )
}

/// Checks that a named volume exists; returns its mount point.
pub fn volume_mountpoint(name: &str) -> Result<String> {
    docker(
        &volume_component(name),
        &["volume", "inspect", "--format", "{{.Mountpoint}}", name],
    )
}

/// What `docker image inspect` says of an image.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInfo {
    /// Image ID, `sha256:…`.
    pub id: String,
    /// Tags.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// Repo digests.
    #[serde(default)]
    pub repo_digests: Option<Vec<String>>,
    /// Size in bytes.
    #[serde(default)]
    pub size: u64,
}

/// Inspects an image.
pub fn image_info(reference: &str) -> Result<ImageInfo> {
    let comp = image_component(reference);
    let out = docker(
        &comp,
        &["image", "inspect", "--format", "{{json .}}", reference],
    )?;
    serde_json::from_str(&out).map_err(|e| {
        crate::Error::component(
            comp,
            format!("cannot parse `docker image inspect` output: {e}"),
        )
    })
}

/// Where an image's `docker save` tar lives in a backup set.
#[must_use]
pub fn image_artifact(reference: &str) -> String {
    format!(
        "docker/images/{}.tar",
        crate::manifest::safe_file_name(reference)
    )
}

/// Where the one `docker save` of several images (a group: their IDs,
/// sorted) lives in a backup set. The name is derived from the IDs, so a
/// set's manifest can be checked against it, and the same images saved
/// together again land at the same path.
#[must_use]
pub fn group_artifact(ids: &[String]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(ids.join("\n").as_bytes());
    format!("docker/saved/{}.tar", &hex::encode(hash)[..16])
}

/// The stream that saves several images in one `docker save`, by ID (the
/// IDs just inspected: a tag moved meanwhile cannot slip in). Each layer
/// they share is read once. `members` (the components saved in it) are
/// named in its messages: a failed save fails each of them, not only the
/// one its file is attributed to.
#[must_use]
pub fn save_group_stream(ids: &[String], members: &[String]) -> crate::source::StreamSpec {
    crate::source::StreamSpec {
        program: "docker".into(),
        args: std::iter::once("save".to_string())
            .chain(ids.iter().cloned())
            .collect(),
        env: Vec::new(),
        what: format!("docker save of {} (saved together)", members.join(", ")),
        magic: None,
    }
}

/// Whether the engine writes the classic `docker save` format
/// (`manifest.json`, `<id>.json` configs, `<layer>/layer.tar`): Docker
/// Engine before 25. Later engines write an OCI layout, for which the
/// group filter is not built; on doubt (the version unreadable), no.
#[must_use]
pub fn classic_save_format() -> bool {
    engine().ok().is_some_and(|e| classic_version(&e.version))
}

/// Engine version strings before 25 (`20.10.24+dfsg1`, `24.0.7`).
fn classic_version(version: &str) -> bool {
    version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|m| m > 0 && m < 25)
}

/// The stream that saves an image (by reference, so that its tag is kept).
#[must_use]
pub fn save_stream(reference: &str) -> crate::source::StreamSpec {
    crate::source::StreamSpec {
        program: "docker".into(),
        args: vec!["save".into(), reference.into()],
        env: Vec::new(),
        what: "docker save".into(),
        magic: None,
    }
}

/// Names of running containers that mount a volume.
pub fn volume_users(volume: &str) -> Result<Vec<String>> {
    let out = docker(
        &volume_component(volume),
        &[
            "ps",
            "--filter",
            &format!("volume={volume}"),
            "--format",
            "{{.Names}}",
        ],
    )?;
    Ok(out
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

/// `docker VERB NAME` (`stop` or `start`) for each name, as a recovery
/// (restore `--abort`/`--resume`) does it for the containers a journal
/// names. A container removed since it was journaled is not an error:
/// there is nothing left to stop or start, and recovery must not stay stuck
/// on it (the data is what it resolves).
pub fn each_for_recovery(verb: &str, names: &[String]) -> Result<()> {
    for name in names {
        match docker("docker", &[verb, name]) {
            Err(e) if e.to_string().contains("No such container") => {
                log::warn!("container {name} is gone: nothing to {verb}");
            }
            r => {
                r?;
            }
        }
    }
    Ok(())
}

/// Containers stopped for a copy; started again when dropped, also when
/// the backup or restore failed.
#[derive(Debug, Default)]
pub struct StoppedContainers {
    names: Vec<String>,
    /// Started again before the restore as a whole ended
    /// ([`StoppedContainers::start_again`]).
    running: bool,
}

impl StoppedContainers {
    /// Stops `names` (in order). On failure, the ones already stopped are
    /// started again before the error is returned.
    pub fn stop(component: &str, names: &[String]) -> Result<Self> {
        let mut stopped = Self::default();
        for n in names {
            docker(component, &["stop", n])?;
            stopped.names.push(n.clone());
        }
        Ok(stopped)
    }

    /// The containers that were stopped.
    #[must_use]
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Starts them again now (they run on the restored data, so that
    /// health checks see the stack as it will be); [`Self::stop_again`]
    /// stops them once more for an undo.
    pub fn start_again(&mut self, component: &str) -> Result<()> {
        if self.running {
            return Ok(());
        }
        self.running = true;
        for n in self.names.iter().rev() {
            docker(component, &["start", n])?;
        }
        Ok(())
    }

    /// Stops them again after [`Self::start_again`] (an undo is about to
    /// swap the original back); they are started once more when dropped.
    pub fn stop_again(&mut self, component: &str) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        for n in &self.names {
            docker(component, &["stop", n])?;
        }
        self.running = false;
        Ok(())
    }
}

impl Drop for StoppedContainers {
    fn drop(&mut self) {
        if self.running {
            return;
        }
        for n in self.names.iter().rev() {
            if let Err(e) = docker("docker", &["start", n]) {
                log::error!("could not start container {n} again: {e}; start it by hand");
            }
        }
    }
}

/// Images used by the containers of a compose project (deduplicated).
pub fn compose_images(project: &str) -> Result<Vec<String>> {
    let out = docker(
        "docker",
        &[
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--format",
            "{{.Image}}",
        ],
    )?;
    let mut v: Vec<String> = out
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// Volumes of a compose project.
pub fn compose_volumes(project: &str) -> Result<Vec<String>> {
    let out = docker(
        "docker",
        &[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ],
    )?;
    Ok(out
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_engines_before_25_write_the_classic_format() {
        for (v, classic) in [
            ("20.10.24+dfsg1", true),
            ("24.0.7", true),
            ("25.0.0", false),
            ("27.3.1", false),
            ("", false),
            ("dev", false),
        ] {
            assert_eq!(super::classic_version(v), classic, "{v}");
        }
    }

    #[test]
    fn a_group_path_depends_on_the_ids_only() {
        let a = super::group_artifact(&["sha256:a".into(), "sha256:b".into()]);
        assert!(a.starts_with("docker/saved/") && a.ends_with(".tar"), "{a}");
        assert_eq!(a.len(), "docker/saved/".len() + 16 + 4);
        assert_eq!(
            a,
            super::group_artifact(&["sha256:a".into(), "sha256:b".into()])
        );
        assert_ne!(
            a,
            super::group_artifact(&["sha256:a".into(), "sha256:c".into()])
        );
    }
}
