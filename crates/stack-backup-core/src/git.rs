//! git: the commit the code runs at.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::process;

/// The state of a working tree's HEAD.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GitHead {
    /// Full commit id of HEAD.
    pub commit: String,
    /// Current branch, `None` when detached.
    pub branch: Option<String>,
    /// True when tracked files differ from HEAD.
    pub dirty: bool,
    /// Number of untracked files.
    pub untracked: usize,
    /// `git status --short` output (at most 200 lines).
    pub status: String,
}

/// Reads HEAD, branch and dirty state of the working tree at `path`.
pub fn head(path: &Path) -> Result<GitHead> {
    let p = path.to_string_lossy();
    let git = |args: &[&str]| {
        let mut full = vec!["-C", &p];
        full.extend_from_slice(args);
        process::output("git", "git", &full)
    };
    let commit = git(&["rev-parse", "--verify", "HEAD"])?;
    let branch = git(&["symbolic-ref", "--quiet", "--short", "HEAD"]).ok();
    let status = git(&["status", "--porcelain=v1", "--untracked-files=normal"])?;
    let untracked = status.lines().filter(|l| l.starts_with("??")).count();
    let dirty = status.lines().any(|l| !l.starts_with("??"));
    let status: Vec<&str> = status.lines().take(200).collect();
    Ok(GitHead {
        commit,
        branch,
        dirty,
        untracked,
        status: status.join("\n"),
    })
}

/// `git --version`, e.g. `2.47.3`.
pub fn version() -> Result<String> {
    let v = process::output("git", "git", &["--version"])?;
    Ok(v.trim_start_matches("git version ").to_string())
}
