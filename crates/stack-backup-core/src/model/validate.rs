//! A backup set read back is input: its `manifest.json` and
//! `CHECKSUM.sha256` may come from a tampered repository or an edited
//! export whose checksums were recomputed. Before a set's manifest decides
//! anything — which database a restore replaces, which volume it writes,
//! which image it tags, where an export or import writes a file — it is
//! checked here, in one place, against the config.
//!
//! [`check_paths`] holds for every set (export, verify): every path is
//! relative, normalised, without `..`, and each component's artifacts are
//! where its kind writes them. [`check_against`] adds the config: the
//! stack's name, a PostgreSQL record's database the config's, volume
//! names and image references the stack's, path roots the config's, image
//! IDs that are image IDs.
//! A failure is [`Error::Refused`] naming the offending field, raised
//! before anything is touched.

use std::str::FromStr;

use crate::components::{check_manifest, ComponentId, Record, Stack};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::manifest::{safe_file_name, Manifest};

/// Whether `p` is a relative, normalised path inside a set: non-empty
/// `/`-separated parts, none empty, `.` or `..`, no NUL.
#[must_use]
pub fn is_safe_relative(p: &str) -> bool {
    !p.is_empty() && !p.contains('\0') && p.split('/').all(|part| !matches!(part, "" | "." | ".."))
}

fn refused(what: &str, field: &str, message: &str) -> Error {
    Error::Refused(format!(
        "{what}: `{field}` {message}; the set is refused and nothing was changed"
    ))
}

fn check_path(what: &str, field: &str, p: &str) -> Result<()> {
    if is_safe_relative(p) {
        Ok(())
    } else {
        Err(refused(
            what,
            field,
            &format!("is `{p}`, not a relative path inside the set"),
        ))
    }
}

fn expect_eq(what: &str, field: &str, got: &str, want: &str, whose: &str) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(refused(
            what,
            field,
            &format!("is `{got}`; {whose} is `{want}`"),
        ))
    }
}

/// The checks that need no config: ids agree with their records, every
/// path of the manifest and of the checksum file (`sums`) is relative and normalised, and
/// each component's files are where its kind puts them. `what` names the
/// set in messages (`set \`x\``, a directory).
pub fn check_paths<'a>(
    what: &str,
    m: &Manifest,
    sums: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    check_manifest(m).map_err(|e| Error::Refused(format!("{what}: manifest.json: {e}")))?;
    for p in sums {
        check_path(what, "CHECKSUM.sha256", p)?;
    }
    for (i, a) in m.artifacts.iter().enumerate() {
        check_path(what, &format!("artifacts[{i}].path"), &a.path)?;
    }
    for (id, record) in &m.components {
        check_record_paths(what, id, record)?;
    }
    Ok(())
}

fn check_record_paths(what: &str, id: &ComponentId, record: &Record) -> Result<()> {
    let field = |f: &str| format!("components.{id}.{f}");
    let name = id.name();
    match record {
        Record::Postgres(p) => {
            check_path(what, &field("dump"), &p.dump)?;
            let dir = format!("postgres/{name}/");
            if !p.dump.starts_with(&dir) {
                return Err(refused(
                    what,
                    &field("dump"),
                    &format!("is `{}`, outside `{dir}`", p.dump),
                ));
            }
            expect_eq(
                what,
                &field("dump"),
                &p.dump,
                &format!("{dir}{}.dump", safe_file_name(&p.database)),
                "the dump of its database",
            )?;
            if let Some(r) = &p.roles {
                expect_eq(
                    what,
                    &field("roles"),
                    r,
                    &format!("{dir}globals.sql"),
                    "the roles file",
                )?;
            }
        }
        Record::Mysql(p) if p.format.is_none() => {
            // The SQL dump holds the rows: a list of rows files beside it
            // would be ignored by the restore, so it is not a set this
            // program wrote.
            if !p.rows.is_empty() {
                return Err(refused(
                    what,
                    &field("rows"),
                    "lists rows files, but the set has no `format` (an SQL dump)",
                ));
            }
            expect_eq(
                what,
                &field("dump"),
                &p.dump,
                &format!("mysql/{name}/{}.sql", safe_file_name(&p.database)),
                "the dump of its database",
            )?;
        }
        Record::Mysql(p) => check_mysql_rows(what, &field, name, p)?,
        Record::Redis(r) => expect_eq(
            what,
            &field("rdb"),
            &r.rdb,
            &format!("redis/{name}/dump.rdb"),
            "the RDB file of the component",
        )?,
        Record::DockerImage(i) => check_image(what, &field, name, i)?,
        Record::DockerVolume(t) => {
            expect_eq(what, &field("source"), &t.source, name, "its id")?;
            expect_eq(
                what,
                &field("path"),
                &t.path,
                &format!("docker/volumes/{name}"),
                "the volume's tree",
            )?;
        }
        Record::Path(t) => expect_eq(
            what,
            &field("path"),
            &t.path,
            &format!("paths/{name}"),
            "the directory's tree",
        )?,
        Record::Sqlite(s) => expect_eq(
            what,
            &field("file"),
            &s.file,
            &crate::components::sqlite::set_file(name),
            "the database's copy",
        )?,
        Record::Git(g) => {
            for (i, f) in g.files.iter().enumerate() {
                check_path(what, &field(&format!("files[{i}]")), f)?;
                if !f.starts_with("git/") {
                    return Err(refused(
                        what,
                        &field(&format!("files[{i}]")),
                        &format!("is `{f}`, outside `git/`"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A `rows-v1` MariaDB record: the schema and one file per counted table,
/// each where its name puts it, with plain names and columns.
fn check_mysql_rows(
    what: &str,
    field: &dyn Fn(&str) -> String,
    name: &str,
    p: &crate::components::mysql::MysqlRecord,
) -> Result<()> {
    expect_eq(
        what,
        &field("dump"),
        &p.dump,
        &crate::components::mysql::rows::schema_path(name, &p.database),
        "the schema of its database",
    )?;
    // One file per table, where its name puts it, with columns,
    // and exactly the tables whose rows are counted.
    for (i, f) in p.rows.iter().enumerate() {
        expect_eq(
            what,
            &field(&format!("rows[{i}].path")),
            &f.path,
            &crate::components::mysql::rows::rows_path(name, &p.database, &f.table),
            "the rows file of its table",
        )?;
        // Names go into the export's load script and MANIFEST.md:
        // one with a control character could end a line there.
        if !crate::components::mysql::rows::plain_name(&f.table) {
            return Err(refused(
                what,
                &field(&format!("rows[{i}].table")),
                "has a control character",
            ));
        }
        if let Some(c) = f
            .columns
            .iter()
            .find(|c| !crate::components::mysql::rows::plain_name(c))
        {
            return Err(refused(
                what,
                &field(&format!("rows[{i}].columns")),
                &format!("has {c:?}, a name with a control character"),
            ));
        }
        if f.columns.is_empty() {
            return Err(refused(
                what,
                &field(&format!("rows[{i}].columns")),
                "is empty",
            ));
        }
    }
    let tables: Vec<&String> = p.rows.iter().map(|f| &f.table).collect();
    if !tables.iter().copied().eq(p.row_counts.keys()) {
        return Err(refused(
            what,
            &field("rows"),
            "does not list exactly the tables of `row_counts`, in order",
        ));
    }
    Ok(())
}

/// An image record: its reference, its own archive or its group's, its ID.
fn check_image(
    what: &str,
    field: &dyn Fn(&str) -> String,
    name: &str,
    i: &crate::docker::ImageRecord,
) -> Result<()> {
    expect_eq(what, &field("reference"), &i.reference, name, "its id")?;
    if i.group.is_empty() {
        expect_eq(
            what,
            &field("archive"),
            &i.archive,
            &crate::docker::image_artifact(&i.reference),
            "the image's archive",
        )?;
    } else {
        if !i.group.contains(&i.id) || !i.group.windows(2).all(|w| w[0] < w[1]) {
            return Err(refused(
                what,
                &field("group"),
                "does not list the image's ID among sorted, distinct IDs",
            ));
        }
        expect_eq(
            what,
            &field("archive"),
            &i.archive,
            &crate::docker::group_artifact(&i.group),
            "the archive of its group",
        )?;
    }
    let hex = i.id.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refused(
            what,
            &field("id"),
            &format!(
                "is `{}`, not an image ID (`sha256:` and 64 hex digits)",
                i.id
            ),
        ));
    }
    Ok(())
}

/// The database a `[postgres.NAME]` entry's URL names, as backup records
/// it (`postgres` when the URL names none).
fn configured_database(url: &str) -> Option<String> {
    postgres::Config::from_str(url)
        .ok()
        .map(|pc| pc.get_dbname().unwrap_or("postgres").to_string())
}

/// [`check_paths`], then the set against the config: the stack's name,
/// and for every component `only` selects (none: all): a PostgreSQL
/// record's database and a directory's root are the config's entry's (a
/// component the config lacks is skipped by the restore, which touches
/// nothing of it); a Docker image or volume is one of the stack's (their
/// restore would create it). Docker is asked for a compose
/// project's images and volumes only when a selected component needs them.
pub fn check_against<'a>(
    what: &str,
    m: &Manifest,
    sums: impl IntoIterator<Item = &'a str>,
    cfg: &Config,
    only: &[String],
) -> Result<()> {
    check_paths(what, m, sums)?;
    expect_eq(
        what,
        "stack",
        &m.stack,
        &cfg.stack.name.0,
        "the config's stack",
    )?;
    let selected: Vec<(&ComponentId, &Record)> = m
        .components
        .iter()
        .filter(|(id, _)| id.selected_by(only))
        .collect();
    let needs_docker = selected
        .iter()
        .any(|(_, r)| matches!(r, Record::DockerImage(_) | Record::DockerVolume(_)));
    let stack = if needs_docker {
        Some(Stack::resolve(cfg)?)
    } else {
        None
    };
    for (id, record) in selected {
        let field = |f: &str| format!("components.{id}.{f}");
        match record {
            // Not in the config: the restore skips it and touches nothing.
            Record::Postgres(p) => {
                let Some(pg) = cfg.postgres.get(id.name()) else {
                    continue;
                };
                let want = configured_database(pg.url.expose()).unwrap_or_default();
                expect_eq(what, &field("database"), &p.database, &want, "the config's")?;
            }
            // SQLite: restored into the config's path, whatever the set's.
            // MariaDB: into the config's database whatever the record
            // names; the record's name only names the dump file.
            Record::Redis(_) | Record::Git(_) | Record::Sqlite(_) | Record::Mysql(_) => {}
            Record::DockerImage(i) => {
                let images = stack.as_ref().map_or(&[][..], |s| &s.images[..]);
                if !images.contains(&i.reference) {
                    return Err(refused(
                        what,
                        &field("reference"),
                        &format!(
                            "is `{}`, not an image of the config ({})",
                            i.reference,
                            images.join(", ")
                        ),
                    ));
                }
            }
            Record::DockerVolume(t) => {
                let volumes = stack.as_ref().map_or(&[][..], |s| &s.volumes[..]);
                if !volumes.contains(&t.source) {
                    return Err(refused(
                        what,
                        &field("source"),
                        &format!(
                            "is `{}`, not a volume of the config ({})",
                            t.source,
                            volumes.join(", ")
                        ),
                    ));
                }
            }
            Record::Path(t) => {
                let Some(p) = cfg.paths.get(id.name()) else {
                    continue;
                };
                expect_eq(
                    what,
                    &field("source"),
                    &t.source,
                    &p.path.display().to_string(),
                    "the config's",
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_safe_relative;

    #[test]
    fn only_relative_normalised_paths_are_safe() {
        for ok in [
            "a",
            "postgres/main/shop.dump",
            "docker/volumes/v/..x",
            "a/.b",
        ] {
            assert!(is_safe_relative(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            "./a",
            "a/..",
            "a\0b",
        ] {
            assert!(!is_safe_relative(bad), "{bad:?}");
        }
    }
}
