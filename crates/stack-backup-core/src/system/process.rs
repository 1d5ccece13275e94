//! Running helper programs (`docker`, `git`, `pg_dump --version`) and
//! turning their failures into errors that name the component.
//!
//! Contract: nothing secret is ever passed in argv; secrets go through the
//! environment of the child only (see `postgres`). Every child starts from
//! an empty environment ([`command`]): it inherits only the variables of
//! [`BASE_ENV`] and those its program needs ([`inherited_for`]), so the
//! repository password (`STACK_BACKUP_PASSWORD`, `RESTIC_PASSWORD`), cloud
//! keys (`AWS_*`) and our own `STACK_BACKUP_*` settings never reach one.
//! What a child is handed explicitly (`PGPASSWORD` for `pg_dump`) is set
//! on the command by its caller.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Variables every child inherits: where programs are, the home directory,
/// locale, time zone and temporary directory. Entries ending in `*` are
/// prefixes.
pub const BASE_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR",
];

/// What the Docker CLI needs to find its engine and its credentials.
pub const DOCKER_ENV: &[&str] = &[
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CONTEXT",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "DOCKER_API_VERSION",
];

/// What the PostgreSQL client tools read (`PGSSLMODE`, `PGSERVICEFILE`…);
/// the connection itself is set explicitly by [`crate::postgres`].
pub const PG_ENV: &[&str] = &["PG*"];

/// What a `password-command` may need to reach a secret store
/// (`pass`, `gpg`, a keyring): agent sockets and store locations.
pub const PASSWORD_COMMAND_ENV: &[&str] = &[
    "GNUPGHOME",
    "GPG_TTY",
    "PASSWORD_STORE_DIR",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "DBUS_SESSION_BUS_ADDRESS",
    "SSH_AUTH_SOCK",
];

/// Never inherited, whatever a list says: the repository's secrets and our
/// own settings.
fn forbidden(name: &str) -> bool {
    name.starts_with("STACK_BACKUP_")
        || name.starts_with("RESTIC_")
        || name.starts_with("RUSTIC_")
        || name.starts_with("AWS_")
}

fn listed(name: &str, list: &[&str]) -> bool {
    list.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *p,
    })
}

/// The variables a program inherits beyond [`BASE_ENV`], by its file name:
/// `docker` gets [`DOCKER_ENV`] and [`PG_ENV`] (it runs the PostgreSQL tools
/// in containers with `docker exec -e`), `pg_*` and `psql` get [`PG_ENV`],
/// anything else nothing more.
#[must_use]
pub fn inherited_for(program: &OsStr) -> Vec<&'static str> {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if name == "docker" {
        DOCKER_ENV.iter().chain(PG_ENV).copied().collect()
    } else if name.starts_with("pg_") || name == "psql" {
        PG_ENV.to_vec()
    } else {
        Vec::new()
    }
}

/// A command for `program` with an explicit environment: this process's
/// variables that [`BASE_ENV`] or [`inherited_for`] name, and nothing
/// else. Callers add what the child needs with `.env()`.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let extra = inherited_for(program.as_ref());
    command_with(program, &extra)
}

/// Like [`command`], with `extra` variables (names or `PREFIX*`) inherited
/// as well.
pub fn command_with(program: impl AsRef<OsStr>, extra: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        let Some(name) = k.to_str() else { continue };
        if !forbidden(name) && (listed(name, BASE_ENV) || listed(name, extra)) {
            cmd.env(&k, v);
        }
    }
    cmd
}

/// Runs a program to completion and returns its trimmed stdout. A missing
/// program or a non-zero exit is an [`Error::Component`] naming
/// `component`, the command line and the program's stderr.
pub fn output(component: &str, program: &str, args: &[&str]) -> Result<String> {
    run(component, command(program).args(args), program, args)
}

/// Like [`output`], for a prepared command (extra environment, cwd); build
/// it with [`command`] so that it inherits no secret.
pub fn run(component: &str, cmd: &mut Command, program: &str, args: &[&str]) -> Result<String> {
    let shown = format!("{program} {}", args.join(" "));
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::component(
                    component,
                    format!("`{program}` is not installed (not on PATH)"),
                )
            } else {
                Error::component(component, format!("cannot run `{shown}`: {e}"))
            }
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::component(
            component,
            format!("`{shown}` failed ({}): {}", out.status, stderr.trim()),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
