//! git: the commit the code runs at.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{BackupContext, ComponentId, Kind, Planned, Record, Restore, Stack};
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

/// `git`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GitRecord {
    /// Working tree.
    pub path: String,
    /// Files in the set.
    pub files: Vec<String>,
}

/// The kind `git`: HEAD commit, branch, dirty state and status of the
/// configured working tree. Code is never restored: the restore says which
/// commit to check out.
pub struct Git;

impl Kind for Git {
    fn prefix(&self) -> &'static str {
        "git"
    }

    fn singleton(&self) -> bool {
        true
    }

    fn configured(&self, stack: &Stack) -> Vec<String> {
        stack.cfg.git.iter().map(|_| String::new()).collect()
    }

    fn doctor(&self, stack: &Stack, _id: &ComponentId) -> Result<String> {
        let Some(g) = &stack.cfg.git else {
            return Err(crate::Error::component("git", "not in the config"));
        };
        let v = version()?;
        let h = head(&g.path)?;
        Ok(format!(
            "git {v}; HEAD {} on {}{}",
            &h.commit[..h.commit.len().min(12)],
            h.branch.as_deref().unwrap_or("(detached)"),
            if h.dirty { ", dirty" } else { "" }
        ))
    }

    fn plan_backup(&self, ctx: &BackupContext, id: &ComponentId) -> Result<Option<Planned>> {
        use crate::source::{Artifact, Content, Entry};
        let Some(g) = &ctx.stack.cfg.git else {
            return Ok(None);
        };
        let head = match &ctx.git_head {
            Some(h) => h.clone(),
            None => head(&g.path)?,
        };
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
                    component: id.to_string(),
                    content: Content::Bytes(std::sync::Arc::new(b.clone())),
                    reuse_meta: None,
                })
            })
            .collect();
        let record = GitRecord {
            path: g.path.display().to_string(),
            files: files.iter().map(|(p, _)| (*p).to_string()).collect(),
        };
        Ok(Some(Planned::new(Record::Git(record), entries, 0)))
    }

    fn drill(
        &self,
        scratch: &super::Scratch,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Option<Box<dyn super::Drilled>>> {
        let Record::Git(record) = r else {
            return Err(super::wrong_record(id));
        };
        let path = scratch
            .cfg
            .git
            .as_ref()
            .map_or_else(|| record.path.clone(), |g| g.path.display().to_string());
        Ok(Some(Box::new(GitDrill {
            id: id.clone(),
            path,
        })))
    }

    fn restorer(
        &self,
        _cfg: &crate::config::Config,
        _opts: &super::RestoreOptions,
        _id: &ComponentId,
        _record: &Record,
    ) -> Result<Restore> {
        Ok(Restore::Skip(
            "code is not restored; check out the recorded commit yourself".into(),
        ))
    }

    fn describe(&self, r: &Record) -> (String, String) {
        match r {
            Record::Git(g) => (format!("git tree `{}`", g.path), g.files.join(", ")),
            _ => (String::new(), String::new()),
        }
    }

    fn export_howto(
        &self,
        m: &crate::manifest::Manifest,
        r: &Record,
        _path_of: &dyn Fn(&str) -> String,
    ) -> String {
        let Record::Git(g) = r else {
            return String::new();
        };
        let commit = m.git.as_ref().map_or("?", |h| h.commit.as_str());
        format!(
            "The code at `{}` was at commit {commit} (git/HEAD_COMMIT):\n\n    git -C {} checkout {commit}\n",
            g.path, g.path
        )
    }
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

/// A drill of the git component: code is never restored; the recorded
/// commit must exist in the configured working tree's repository (a
/// missing one is reported, not failed: it may live on another machine).
struct GitDrill {
    id: ComponentId,
    path: String,
}

impl super::Drilled for GitDrill {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn lane(&self) -> super::Lane {
        super::Lane::Files
    }

    fn restore(&mut self, _set: &super::SetContext) -> Result<String> {
        Ok("nothing to restore (code is checked out, not restored)".into())
    }

    fn check(&mut self, set: &super::SetContext) -> Result<String> {
        let Some(g) = &set.manifest.git else {
            return Ok("no commit recorded".into());
        };
        let found = crate::process::command("git")
            .args(["-C", &self.path, "cat-file", "-e"])
            .arg(format!("{}^{{commit}}", g.commit))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let short = &g.commit[..g.commit.len().min(12)];
        Ok(if found {
            format!("commit {short} exists in {}", self.path)
        } else {
            format!(
                "commit {short} is MISSING from {} (check it out from where it was pushed)",
                self.path
            )
        })
    }

    fn remove(&mut self) -> Result<()> {
        Ok(())
    }

    fn kept(&self) -> String {
        String::new()
    }
}
