//! Running helper programs (`docker`, `git`, `pg_dump --version`) and
//! turning their failures into errors that name the component.
//!
//! Contract: nothing secret is ever passed in argv; secrets go through the
//! environment of the child only (see `postgres`).

use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Runs a program to completion and returns its trimmed stdout. A missing
/// program or a non-zero exit is an [`Error::Component`] naming
/// `component`, the command line and the program's stderr.
pub fn output(component: &str, program: &str, args: &[&str]) -> Result<String> {
    run(component, Command::new(program).args(args), program, args)
}

/// Like [`output`], for a prepared command (extra environment, cwd).
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
