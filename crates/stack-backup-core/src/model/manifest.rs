//! The manifest of a backup set: `manifest.json` (for machines, versioned
//! schema, see `docs/manifest.md`), `MANIFEST.md` (for people) and
//! `CHECKSUM.sha256` (`sha256sum -c` format, paths relative to the root of
//! the restored snapshot).
//!
//! Contract: nothing here ever holds a secret. URLs are redacted before
//! they are recorded; passwords are never read into these types.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::components::ComponentId;
use crate::git::GitHead;
use crate::tiers::Tier;

/// The manifest schema version written by this build.
pub const SCHEMA: u32 = 1;

/// Where the manifest files live inside a backup set.
pub const DIR: &str = "stack-backup";
/// `stack-backup/manifest.json`
pub const JSON_PATH: &str = "stack-backup/manifest.json";
/// `stack-backup/MANIFEST.md`
pub const MD_PATH: &str = "stack-backup/MANIFEST.md";
/// `stack-backup/CHECKSUM.sha256`
pub const CHECKSUM_PATH: &str = "stack-backup/CHECKSUM.sha256";
/// `stack-backup/stack-backup.toml`
pub const CONFIG_PATH: &str = "stack-backup/stack-backup.toml";

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Schema version ([`SCHEMA`]).
    pub schema: u32,
    /// The program that wrote it, e.g. `stack-backup 0.1.0`.
    pub tool: String,
    /// Stack name.
    pub stack: String,
    /// Backup set name.
    pub name: String,
    /// Tier.
    pub tier: Tier,
    /// When the backup started (RFC 3339, UTC).
    pub created: String,
    /// Host it was taken on.
    pub host: String,
    /// The snapshot whose unchanged content was reused, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// git state, when `[git]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitHead>,
    /// Every component, by id (`postgres.main`, `docker.image.web:latest`…).
    pub components: BTreeMap<ComponentId, Component>,
    /// Every single-file artifact (dumps, image tars, RDB files, generated
    /// files) with size and SHA-256. Files of directory trees (volumes,
    /// paths) are listed in `CHECKSUM.sha256` only.
    pub artifacts: Vec<ArtifactRecord>,
    /// The command that restores this set.
    pub restore_command: String,
    /// Where the set came from, when it was made by `import`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<Imported>,
}

/// How an imported set was made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Imported {
    /// `export` (a directory `stack-backup export` wrote: the artifacts are
    /// the original ones) or `legacy` (a shell-script backup directory,
    /// stored file by file; restored by hand from its MANIFEST.md).
    pub layout: String,
    /// The directory imported.
    pub source: String,
    /// When (RFC 3339).
    pub time: String,
    /// The set it was exported from, for `export`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_name: Option<String>,
}

/// One single-file artifact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArtifactRecord {
    /// Path inside the set, e.g. `postgres/main/shop.dump`.
    pub path: String,
    /// Component it belongs to.
    pub component: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// True when its content was reused from the parent set unread.
    #[serde(default)]
    pub reused: bool,
}

/// A migration tool's applied state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MigrationState {
    /// `alembic`, `django`, `rails`, `flyway`, `sqlx`, `diesel`, `prisma`.
    pub tool: String,
    /// The table it keeps its state in.
    pub table: String,
    /// Every applied migration (Alembic: every head), sorted.
    pub applied: Vec<String>,
}

pub use crate::components::docker::ImageRecord;
pub use crate::components::git::GitRecord;
pub use crate::components::postgres::PostgresRecord;
pub use crate::components::redis::RedisRecord;
pub use crate::components::tree::TreeRecord;
/// What one component holds: the record of its kind.
pub use crate::components::Record as Component;

/// A name made safe for a file in a backup set: letters, digits, `-`, `_`
/// and `.` are kept, anything else (`/`, `:`, `@`, spaces) becomes `_`.
#[must_use]
pub fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Renders `CHECKSUM.sha256` from `(path, sha256)` pairs, in `sha256sum`
/// format (names with `\` or a newline escaped the way `sha256sum` does).
#[must_use]
pub fn render_checksums<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (path, sha) in entries {
        push_checksum_line(&mut out, path, sha);
    }
    out
}

/// Appends one line of `CHECKSUM.sha256` to `out`, escaped as
/// `sha256sum` escapes a name holding `\`, a newline or a return.
pub fn push_checksum_line(out: &mut String, path: &str, sha: &str) {
    if path.contains(['\\', '\n', '\r']) {
        let escaped = path
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        let _ = writeln!(out, "\\{sha}  {escaped}");
    } else {
        let _ = writeln!(out, "{sha}  {path}");
    }
}

/// Parses `CHECKSUM.sha256` into `path → sha256`.
#[must_use]
pub fn parse_checksums(text: &str) -> BTreeMap<String, String> {
    checksum_lines(text)
        .map(|(path, sha)| (path, sha.to_string()))
        .collect()
}

/// The `(path, sha256)` of every line of `CHECKSUM.sha256`, in file order:
/// `sha256sum`'s escapes undone, a line without a separator skipped.
pub fn checksum_lines(text: &str) -> impl Iterator<Item = (String, &str)> {
    text.lines().filter_map(|line| {
        let (escaped, line) = match line.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let (sha, path) = line.split_once("  ").or_else(|| line.split_once(" *"))?;
        let path = if escaped {
            unescape(path)
        } else {
            path.to_string()
        };
        Some((path, sha))
    })
}

/// Undoes `sha256sum`'s escaping of `\\`, `\n` and `\r` in names.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn human(bytes: u64) -> String {
    crate::disk::human(bytes)
}

impl Manifest {
    /// `MANIFEST.md`: what is in the set and how to restore it, with and
    /// without stack-backup.
    #[must_use]
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Backup set `{}` of stack `{}`\n",
            self.name, self.stack
        );
        let _ = writeln!(s, "- tier: {}", self.tier);
        let _ = writeln!(s, "- taken: {} on host `{}`", self.created, self.host);
        let _ = writeln!(s, "- by: {} (manifest schema {})", self.tool, self.schema);
        if let Some(g) = &self.git {
            let _ = writeln!(
                s,
                "- git: commit `{}` on {}{}{}",
                g.commit,
                g.branch
                    .as_deref()
                    .map_or("a detached HEAD".to_string(), |b| format!("branch `{b}`")),
                if g.dirty {
                    ", with uncommitted changes"
                } else {
                    ""
                },
                if g.untracked > 0 {
                    format!(", {} untracked file(s)", g.untracked)
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(s, "\n## Restore\n\n```sh\n{}\n```\n", self.restore_command);
        let _ = writeln!(s, "## Components\n");
        let _ = writeln!(s, "| component | what | details |\n| --- | --- | --- |");
        for (name, c) in &self.components {
            let (what, details) = c.kind().describe(c);
            let _ = writeln!(s, "| {name} | {what} | {details} |");
        }
        let _ = writeln!(s, "\n## Artifacts\n");
        let _ = writeln!(s, "| path | size | sha256 |\n| --- | --- | --- |");
        for a in &self.artifacts {
            let _ = writeln!(s, "| {} | {} | `{}` |", a.path, human(a.size), a.sha256);
        }
        let _ = writeln!(
            s,
            "\n## Restoring by hand (without stack-backup)\n\n\
             The repository is a standard restic repository.\n\n\
             ```sh\n\
             restic -r REPOSITORY restore latest --tag name:{name} --tag stack:{stack} --target /tmp/restore\n\
             cd /tmp/restore && sha256sum -c stack-backup/CHECKSUM.sha256\n\
             # PostgreSQL: createdb NAME && pg_restore --exit-on-error -d NAME postgres/<component>/<db>.dump\n\
             #             (roles first: psql -f postgres/<component>/globals.sql)\n\
             # Docker:     docker load -i docker/images/<image>.tar\n\
             # Volumes:    copy docker/volumes/<volume>/ into the volume (containers stopped)\n\
             # Redis:      stop Redis, put redis/<component>/dump.rdb in its dir, start it\n\
             # Paths:      copy paths/<name>/ back in place\n\
             ```",
            name = self.name,
            stack = self.stack
        );
        let _ = writeln!(
            s,
            "\n## Recovering on a bare host\n\n{}",
            crate::runbook::render_runbook(&crate::runbook::runbook(self, "REPOSITORY"))
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_round_trip_with_escapes() {
        let entries = [("a/b.txt", "aa"), ("odd\\name\nx", "bb")];
        let text = render_checksums(entries.iter().map(|(a, b)| (*a, *b)));
        assert!(
            text.starts_with("aa  a/b.txt\n\\bb  odd\\\\name\\nx\n"),
            "{text:?}"
        );
        let back = parse_checksums(&text);
        assert_eq!(back["a/b.txt"], "aa");
        assert_eq!(back["odd\\name\nx"], "bb");
    }
}
