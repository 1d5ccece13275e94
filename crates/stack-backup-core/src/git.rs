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

/// The git files of a backup set and the recorded HEAD.
pub fn plan(
    path: &Path,
) -> Result<(
    Vec<crate::source::Entry>,
    GitHead,
    crate::manifest::GitRecord,
)> {
    use crate::source::{Artifact, Content, Entry};
    let head = head(path)?;
    let info = serde_json::to_vec_pretty(&head).unwrap_or_default();
    let files = [
        ("git/HEAD_COMMIT", format!("{}\n", head.commit).into_bytes()),
        (
            "git/BRANCH",
            format!("{}\n", head.branch.as_deref().unwrap_or("(detached)")).into_bytes(),
        ),
        ("git/status.txt", format!("{}\n", head.status).into_bytes()),
        ("git/info.json", info),
    ];
    let entries = files
        .iter()
        .map(|(p, b)| {
            Entry::File(Artifact {
                path: (*p).to_string(),
                component: "git".into(),
                content: Content::Bytes(std::sync::Arc::new(b.clone())),
                reuse_meta: None,
            })
        })
        .collect();
    let record = crate::manifest::GitRecord {
        path: path.display().to_string(),
        files: files.iter().map(|(p, _)| (*p).to_string()).collect(),
    };
    Ok((entries, head, record))
}

/// The commit a tag points at, or `None` when there is no such tag.
pub fn tag_target(path: &Path, tag: &str) -> Result<Option<String>> {
    let p = path.to_string_lossy();
    let exists = process::output("git", "git", &["-C", &p, "tag", "--list", tag])?;
    if exists.is_empty() {
        return Ok(None);
    }
    let target = format!("refs/tags/{tag}^{{commit}}");
    Ok(Some(process::output(
        "git",
        "git",
        &["-C", &p, "rev-parse", "--verify", &target],
    )?))
}

/// Whether `commit` exists in the repository at `path`.
#[must_use]
pub fn has_commit(path: &Path, commit: &str) -> bool {
    let p = path.to_string_lossy();
    let want = format!("{commit}^{{commit}}");
    process::output("git", "git", &["-C", &p, "cat-file", "-e", &want]).is_ok()
}

/// Creates the annotated tag `tag` at `commit`. When the repository has no
/// committer identity configured, the tag is made by `stack-backup`.
pub fn create_tag(path: &Path, tag: &str, commit: &str, message: &str) -> Result<()> {
    let p = path.to_string_lossy();
    let has_identity = process::output("git", "git", &["-C", &p, "config", "user.email"])
        .is_ok_and(|e| !e.is_empty());
    let mut args: Vec<&str> = vec!["-C", &p];
    if !has_identity {
        args.extend([
            "-c",
            "user.name=stack-backup",
            "-c",
            "user.email=stack-backup@localhost",
        ]);
    }
    args.extend(["tag", "-a", tag, "-m", message, commit]);
    process::output("git", "git", &args).map(|_| ())
}
