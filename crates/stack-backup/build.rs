//! Build-time facts for `stack-backup --version`: the git commit the binary
//! was built from and the patch level of the vendored rustic_core, so a
//! report from an installed package says exactly what code ran.
//!
//! Sets `STACK_BACKUP_LONG_VERSION`. Works from a source tarball without
//! `.git` (the commit is then "unknown commit", unless the packager sets
//! `STACK_BACKUP_GIT_COMMIT`) and never fails the build for lack of git.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let crate_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = crate_dir.join("../..");
    let version = std::env::var("CARGO_PKG_VERSION").expect("set by cargo");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=STACK_BACKUP_GIT_COMMIT");
    let commit = match std::env::var("STACK_BACKUP_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => git_commit(&root).unwrap_or_else(|| "unknown commit".into()),
    };

    let patches_dir = root.join("vendor/patches");
    let rustic_manifest = root.join("vendor/rustic_core/Cargo.toml");
    for p in [&patches_dir, &rustic_manifest] {
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    let rustic = package_version(&rustic_manifest).unwrap_or_else(|| "unknown".into());
    let patches = match patch_ids(&patches_dir) {
        Some(ids) if ids.is_empty() => "no patches".to_string(),
        Some(ids) => format!("{} patches: {}", ids.len(), ids.join(" ")),
        None => "unknown patch level".to_string(),
    };
    let commit = if commit == "unknown commit" {
        commit
    } else {
        format!("commit {commit}")
    };
    println!(
        "cargo:rustc-env=STACK_BACKUP_LONG_VERSION={version} ({commit}; rustic_core {rustic} + {patches})"
    );
}

/// HEAD of the repository whose top level is `root`, abbreviated; `None`
/// outside one. A tarball unpacked inside some other repository must not
/// borrow that repository's commit, hence the top-level check.
pub(crate) fn git_commit(root: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != root.canonicalize().ok()? {
        return None;
    }
    // Rebuild when HEAD moves: the worktree's HEAD (a checkout), the branch
    // it points to (a commit) and packed-refs (a gc). Only existing files:
    // cargo reruns a script on every build for a path that does not exist.
    let git_dir = PathBuf::from(git(&["rev-parse", "--absolute-git-dir"])?);
    let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
        .map_or_else(|| git_dir.clone(), PathBuf::from);
    let mut watch = vec![git_dir.join("HEAD"), common.join("packed-refs")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(common.join(branch));
    }
    for p in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}

/// `[package] version` of a Cargo.toml, read without a TOML parser (a
/// build dependency would be one more crate to compile for one line).
fn package_version(manifest: &Path) -> Option<String> {
    let text = std::fs::read_to_string(manifest).ok()?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(v) = line.strip_prefix("version") {
                let v = v.trim_start().strip_prefix('=')?.trim().trim_matches('"');
                return Some(v.to_string());
            }
        }
    }
    None
}

/// The decision ids of `vendor/patches/*.patch` in the order they apply
/// (`0003-…` → `0003`, `0008-1-…` → `0008-1`); `None` without the directory.
fn patch_ids(dir: &Path) -> Option<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".patch"))
        .collect();
    names.sort();
    Some(
        names
            .iter()
            .map(|n| {
                let mut parts = n.trim_end_matches(".patch").split('-');
                let mut id = parts.next().unwrap_or_default().to_string();
                if let Some(sub) = parts
                    .next()
                    .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
                {
                    id = format!("{id}-{sub}");
                }
                id
            })
            .collect(),
    )
}
