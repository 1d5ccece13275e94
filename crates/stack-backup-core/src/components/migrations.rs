//! The migration state the code checked out now expects, read from its
//! migration files, and the comparison with a backup's recorded state.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use crate::manifest::MigrationState;

/// What the code's migration files say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeState {
    /// The tool.
    pub tool: String,
    /// Alembic: the heads. Others: every migration in the directory.
    pub expected: BTreeSet<String>,
}

/// The quoted value after `=` on a line like `revision = "abc"` or
/// `down_revision: Union[str, None] = ("a", "b")`.
fn quoted_values(line: &str) -> Vec<String> {
    let Some((_, value)) = line.split_once('=') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find(['"', '\'']) {
        let quote = &rest[start..=start];
        let after = &rest[start + 1..];
        let Some(end) = after.find(quote) else { break };
        out.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

/// Alembic heads: revisions no other revision names as its down revision.
#[must_use]
pub fn alembic_heads(dir: &Path) -> Option<BTreeSet<String>> {
    let mut revisions = BTreeSet::new();
    let mut downs = BTreeSet::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.extension().and_then(|e| e.to_str()) != Some("py") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        for line in text.lines() {
            let t = line.trim_start();
            let key = t.split(['=', ':', ' ']).next().unwrap_or_default();
            match key {
                "revision" => revisions.extend(quoted_values(t).into_iter().take(1)),
                "down_revision" => downs.extend(quoted_values(t)),
                _ => {}
            }
        }
    }
    Some(revisions.difference(&downs).cloned().collect())
}

/// Every migration in a directory of a tool that names them by a leading
/// version (`20240101120000_add_x.rb`, `0001_init.sql`, `V3__x.sql`).
fn versioned(dir: &Path, tool: &str) -> Option<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let v = match tool {
            "flyway" => name
                .strip_prefix('V')
                .and_then(|r| r.split_once("__"))
                .map(|(v, _)| v.replace('_', ".")),
            "prisma" => entry.path().is_dir().then(|| name.clone()),
            _ => {
                let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
                (!digits.is_empty()).then_some(digits)
            }
        };
        if let Some(v) = v {
            out.insert(v);
        }
    }
    Some(out)
}

/// Laravel's migrations: the file names without `.php`
/// (`2014_10_12_000000_create_users_table`), as its `migrations` table
/// records them.
fn laravel(dir: &Path) -> Option<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(m) = name.strip_suffix(".php") {
            out.insert(m.to_string());
        }
    }
    Some(out)
}

/// One line for `show`: each tool's newest applied migration.
#[must_use]
pub fn summary(states: &[MigrationState]) -> String {
    if states.is_empty() {
        return "none found".to_string();
    }
    states
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m.tool,
                m.applied.last().map_or("-", String::as_str)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Step 3 of a restore for a database kind: the set's migration state
/// against the live database's (notes: a restore exists to change it) and
/// against the code in `dir` (problems: the restore is refused unless a
/// mismatch is allowed).
#[must_use]
pub fn report(
    c: &crate::components::ComponentId,
    recorded: &[MigrationState],
    live: &[MigrationState],
    dir: Option<&Path>,
    manifest: &crate::manifest::Manifest,
) -> crate::components::restoring::MigrationReport {
    let mut report = crate::components::restoring::MigrationReport::default();
    let commit = manifest
        .git
        .as_ref()
        .map_or("an unrecorded commit".to_string(), |g| {
            format!("commit {}", &g.commit[..g.commit.len().min(12)])
        });
    for m in recorded {
        let live_m = live.iter().find(|l| l.tool == m.tool);
        if live_m.map(|l| &l.applied) != Some(&m.applied) {
            report.notes.push(format!(
                "{c}: {} goes from {} (live) to {} (backup)",
                m.tool,
                live_m.map_or("none".into(), |l| l.applied.join(",")),
                m.applied.join(",")
            ));
        }
        let Some(dir) = dir else { continue };
        match code_state(dir, &m.tool) {
            Some(code) if !fits(m, &code) => report.problems.push(format!(
                "{c}: the backup's {} state is {} (taken at {commit}), but the code checked out now expects {}; \
                 restoring would leave the database out of step with the code. Check out {commit} first, \
                 or pass --allow-migration-mismatch",
                m.tool,
                m.applied.join(","),
                code.expected.iter().cloned().collect::<Vec<_>>().join(",")
            )),
            Some(_) => report.notes.push(format!("{c}: {} fits the code", m.tool)),
            None => report.notes.push(format!(
                "{c}: {} not compared with the code (no readable {})",
                m.tool,
                dir.display()
            )),
        }
    }
    report
}

/// The state the code in `dir` expects, for the tool recorded in a backup.
#[must_use]
pub fn code_state(dir: &Path, tool: &str) -> Option<CodeState> {
    let expected = match tool {
        "alembic" => alembic_heads(dir)?,
        "rails" | "sqlx" | "diesel" | "flyway" | "prisma" => versioned(dir, tool)?,
        "laravel" => laravel(dir)?,
        _ => return None,
    };
    Some(CodeState {
        tool: tool.to_string(),
        expected,
    })
}

/// Whether a backup's applied set fits the code: for Alembic the applied
/// revisions are exactly the heads; for the others the same migrations.
#[must_use]
pub fn fits(backup: &MigrationState, code: &CodeState) -> bool {
    let applied: BTreeSet<String> = backup.applied.iter().cloned().collect();
    applied == code.expected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alembic_heads_from_revision_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("a.py"),
            "revision = 'aaa'\ndown_revision = None\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("b.py"),
            "revision: str = \"bbb\"\ndown_revision: Union[str, None] = 'aaa'\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("c.py"),
            "revision = \"ccc\"\ndown_revision = 'aaa'\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("m.py"),
            "revision = \"mmm\"\ndown_revision = ('bbb', 'ccc')\n",
        )
        .unwrap();
        let heads = alembic_heads(d.path()).unwrap();
        assert_eq!(heads.into_iter().collect::<Vec<_>>(), vec!["mmm"]);
        let state = MigrationState {
            tool: "alembic".into(),
            table: "public.alembic_version".into(),
            applied: vec!["mmm".into()],
        };
        assert!(fits(&state, &code_state(d.path(), "alembic").unwrap()));
        let old = MigrationState {
            applied: vec!["bbb".into()],
            ..state
        };
        assert!(!fits(&old, &code_state(d.path(), "alembic").unwrap()));
    }

    #[test]
    fn versioned_tools() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("20240101_init.rb"), "").unwrap();
        std::fs::write(d.path().join("20240202_more.rb"), "").unwrap();
        let c = code_state(d.path(), "rails").unwrap();
        assert_eq!(c.expected.len(), 2);
    }
}
