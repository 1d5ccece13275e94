//! A Compose project as the Docker Engine sees it: its containers (found
//! by the labels Compose sets on them), their images, environment,
//! mounts and addresses, through `docker inspect`.
//!
//! Read-only. The environment is returned whole because discovery needs
//! the non-secret values (`POSTGRES_USER`, `POSTGRES_DB`); a caller must
//! never print, log or store a value whose name looks secret
//! ([`is_secret_name`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::process;

/// The label Compose puts on a project's containers, volumes and networks.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
/// The label naming a container's service.
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
/// The label naming the project's working directory.
pub const WORKING_DIR_LABEL: &str = "com.docker.compose.project.working_dir";
/// The label naming the project's compose files (comma-separated).
pub const CONFIG_FILES_LABEL: &str = "com.docker.compose.project.config_files";

/// One mount of a container.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Mount {
    /// `volume`, `bind`, `tmpfs`, …
    pub kind: String,
    /// The volume's name (volumes only).
    pub name: Option<String>,
    /// The host path (a volume's mount point, a bind mount's source).
    pub source: PathBuf,
    /// Where the container sees it.
    pub destination: String,
    /// Mounted read-write.
    pub rw: bool,
}

/// One container of a project, as `docker inspect` describes it.
#[derive(Debug, Clone)]
pub struct Container {
    /// Its name (without the leading `/`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The image it was created from, as given (`postgres:16`).
    pub image: String,
    /// The image ID.
    pub image_id: String,
    /// Its environment, `NAME` → value. Holds secrets: see the module doc.
    pub env: BTreeMap<String, String>,
    /// Its command and arguments (may hold secrets such as `--requirepass`).
    pub cmd: Vec<String>,
    /// Its mounts.
    pub mounts: Vec<Mount>,
    /// Running now.
    pub running: bool,
    /// Network name → its address there (running containers only).
    pub addresses: BTreeMap<String, String>,
    /// `5432/tcp` → the host port it is published on (first binding).
    pub published: BTreeMap<String, (String, String)>,
    /// `HostConfig.NetworkMode` (`host` when it shares the host's network).
    pub network_mode: String,
}

impl Container {
    /// The Compose service it runs (label), else its name.
    #[must_use]
    pub fn service(&self) -> &str {
        self.labels
            .get(SERVICE_LABEL)
            .map_or(self.name.as_str(), String::as_str)
    }

    /// The project it belongs to (label).
    #[must_use]
    pub fn project(&self) -> Option<&str> {
        self.labels.get(PROJECT_LABEL).map(String::as_str)
    }
}

/// Whether an environment variable's name says it holds a secret; such
/// values are never read into a config, a log or an error.
#[must_use]
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "KEY",
        "CREDENTIAL",
        "PASS",
    ]
    .iter()
    .any(|w| n.contains(w))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    name: String,
    image: String,
    #[serde(default)]
    config: InspectConfig,
    #[serde(default)]
    state: InspectState,
    #[serde(default)]
    mounts: Vec<InspectMount>,
    #[serde(default)]
    network_settings: InspectNetwork,
    #[serde(default)]
    host_config: InspectHostConfig,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InspectHostConfig {
    #[serde(default)]
    network_mode: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    #[serde(default)]
    image: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    #[serde(default)]
    running: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectMount {
    #[serde(default, rename = "Type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
    #[serde(default, rename = "RW")]
    rw: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InspectNetwork {
    #[serde(default)]
    networks: Option<BTreeMap<String, InspectEndpoint>>,
    #[serde(default)]
    ports: Option<BTreeMap<String, Option<Vec<InspectBinding>>>>,
}

#[derive(Deserialize)]
struct InspectEndpoint {
    #[serde(default, rename = "IPAddress")]
    ip_address: String,
}

#[derive(Deserialize)]
struct InspectBinding {
    #[serde(default, rename = "HostIp")]
    host_ip: String,
    #[serde(default, rename = "HostPort")]
    host_port: String,
}

fn docker(args: &[&str]) -> Result<String> {
    process::output("docker", "docker", args)
}

/// The Compose projects with at least one container (running or not).
pub fn projects() -> Result<Vec<String>> {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={PROJECT_LABEL}"),
        "--format",
        &format!("{{{{.Label \"{PROJECT_LABEL}\"}}}}"),
    ])?;
    let mut v: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// Every container of `project` (running and stopped), by name.
pub fn containers(project: &str) -> Result<Vec<Container>> {
    let ids = docker(&[
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={PROJECT_LABEL}={project}"),
    ])?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec!["container", "inspect"];
    args.extend(ids);
    let out = docker(&args)?;
    let parsed: Vec<Inspect> = serde_json::from_str(&out).map_err(|e| {
        Error::component(
            "docker",
            format!("cannot parse `docker container inspect` output: {e}"),
        )
    })?;
    let mut v: Vec<Container> = parsed.into_iter().map(container).collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

fn container(i: Inspect) -> Container {
    let env = i
        .config
        .env
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let addresses = i
        .network_settings
        .networks
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, e)| !e.ip_address.is_empty())
        .map(|(n, e)| (n, e.ip_address))
        .collect();
    let published = i
        .network_settings
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(port, b)| {
            let b = b?.into_iter().find(|b| !b.host_port.is_empty())?;
            Some((port, (b.host_ip, b.host_port)))
        })
        .collect();
    Container {
        name: i.name.trim_start_matches('/').to_string(),
        labels: i.config.labels.unwrap_or_default(),
        image: i.config.image,
        image_id: i.image,
        env,
        cmd: i.config.cmd.unwrap_or_default(),
        mounts: i
            .mounts
            .into_iter()
            .map(|m| Mount {
                kind: m.kind,
                name: m.name.filter(|n| !n.is_empty()),
                source: PathBuf::from(m.source),
                destination: m.destination,
                rw: m.rw,
            })
            .collect(),
        running: i.state.running,
        addresses,
        published,
        network_mode: i.host_config.network_mode,
    }
}

/// Volumes labelled with `project` (Compose creates them so), by name.
pub fn labelled_volumes(project: &str) -> Result<Vec<String>> {
    super::compose_volumes(project)
}

/// Whether an image reference is present in the engine.
#[must_use]
pub fn image_present(reference: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", reference]).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for n in [
            "POSTGRES_PASSWORD",
            "MARIADB_ROOT_PASSWORD",
            "REDIS_PASSWORD",
            "SECRET_KEY_BASE",
            "API_TOKEN",
            "POSTGRES_PASSWORD_FILE",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in ["POSTGRES_USER", "POSTGRES_DB", "MARIADB_DATABASE", "PGDATA"] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn inspect_output_is_read() {
        let json = r#"[{"Name":"/shop-db-1","Image":"sha256:ab","Config":{"Image":"postgres:16",
            "Labels":{"com.docker.compose.project":"shop","com.docker.compose.service":"db"},
            "Env":["POSTGRES_USER=shop","POSTGRES_PASSWORD=s3cret","EMPTY="],"Cmd":null},
            "State":{"Running":true},
            "Mounts":[{"Type":"volume","Name":"shop_pg","Source":"/var/lib/docker/volumes/shop_pg/_data","Destination":"/var/lib/postgresql/data","RW":true}],
            "NetworkSettings":{"Networks":{"shop_default":{"IPAddress":"172.18.0.2"}},"Ports":{"5432/tcp":null,"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}]}},
            "HostConfig":{"NetworkMode":"shop_default"}}]"#;
        let v: Vec<Inspect> = serde_json::from_str(json).unwrap();
        let c = container(v.into_iter().next().unwrap());
        assert_eq!(c.name, "shop-db-1");
        assert_eq!(c.service(), "db");
        assert_eq!(c.project(), Some("shop"));
        assert_eq!(c.env["POSTGRES_USER"], "shop");
        assert_eq!(c.env["EMPTY"], "");
        assert_eq!(c.mounts[0].name.as_deref(), Some("shop_pg"));
        assert_eq!(c.addresses["shop_default"], "172.18.0.2");
        assert_eq!(c.published["80/tcp"].1, "8080");
        assert!(!c.published.contains_key("5432/tcp"));
        assert_eq!(c.network_mode, "shop_default");
    }
}
