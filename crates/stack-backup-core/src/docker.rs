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
        &format!("docker.image.{reference}"),
        &["image", "inspect", "--format", "{{.Id}}", reference],
    )
}

/// Checks that a named volume exists; returns its mount point.
pub fn volume_mountpoint(name: &str) -> Result<String> {
    docker(
        &format!("docker.volume.{name}"),
        &["volume", "inspect", "--format", "{{.Mountpoint}}", name],
    )
}
