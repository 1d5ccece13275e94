//! A database of the set restored into a scratch database
//! (`sbdrill_<drill id>_<key>`) by the restore's own [`PgRestorer`] (same
//! privileges decision, same roles handling, `pg_restore
//! --exit-on-error`), then checked there: row counts and migration state
//! against the manifest, and every table read once by `pg_dump` into
//! `/dev/null` (a damaged page or TOAST chunk fails it).

use super::{
    admin_config, client_config, component, connect, locks, migration_state_now, quote_ident,
    roles, row_counts, server_version, PgRestorer, PgTarget, PostgresRecord, ToolRun,
};
use crate::components::drilling::{env_name, Drilled, Scratch, DB_PREFIX};
use crate::components::restoring::{count_diff, Lane, Restorer, SetContext};
use crate::components::ComponentId;
use crate::config::PostgresConfig;
use crate::error::{Error, Result};

/// The drill of one `[postgres.NAME]`.
pub(super) struct PgDrill {
    id: ComponentId,
    record: PostgresRecord,
    target: PgTarget,
    restorer: PgRestorer,
    /// The scratch database goes to the live server (no `[drill]
    /// postgres-url`): roles are cluster-wide, so none may be created.
    live_server: bool,
}

impl PgDrill {
    pub(super) fn new(
        scratch: &Scratch,
        id: &ComponentId,
        pg: &PostgresConfig,
        record: PostgresRecord,
    ) -> Self {
        let target = PgTarget {
            key: id.name().to_string(),
            server: scratch.postgres_server(pg),
            database: scratch.database(id.name()),
            owners: scratch.cfg.drill.postgres_url.is_none(),
        };
        Self {
            restorer: PgRestorer::new(id.clone(), record.clone(), target.clone(), false),
            id: id.clone(),
            record,
            target,
            live_server: scratch.cfg.drill.postgres_url.is_none(),
        }
    }

    /// Refuses (before anything is created) when the dump needs roles the
    /// live server lacks: the restorer would create them, and roles are
    /// cluster-wide — the drill would change the live server for good.
    fn refuse_missing_roles(&self) -> Result<()> {
        let used = self.record.roles_used.clone().unwrap_or_default();
        if used.is_empty() {
            return Ok(());
        }
        let mut c = connect(&self.target.key, &self.target.server)?;
        let missing = roles::missing(&mut c, &used)?;
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::Refused(format!(
            "{}: the dump needs roles this server lacks ({}); a drill never creates roles on the live server — set `[drill] postgres-url` to another server",
            self.id,
            missing.join(", ")
        )))
    }

    fn connect(&self) -> Result<::postgres::Client> {
        let mut pc = client_config(&self.target.key, &self.target.server)?;
        pc.dbname(&self.target.database);
        pc.connect(::postgres::NoTls).map_err(|e| {
            Error::component(
                self.id.as_str(),
                format!(
                    "cannot connect to the scratch database `{}`: {e}",
                    self.target.database
                ),
            )
        })
    }
}

impl Drilled for PgDrill {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn lane(&self) -> Lane {
        Lane::Databases
    }

    fn restore(&mut self, set: &SetContext) -> Result<String> {
        if self.live_server {
            self.refuse_missing_roles()?;
        }
        // A scratch database has no original: the commit drops nothing.
        self.restorer.restore(set).map_err(scratch_advice)?.commit();
        Ok(format!(
            "database `{}` ({} tables){}",
            self.target.database,
            self.record.row_counts.len(),
            if self.target.owners {
                ""
            } else {
                ", without the dump's owners and grants ([drill] postgres-url)"
            }
        ))
    }

    /// What the restore would need: one copy of the database in the
    /// scratch server's data directory (the live one, without `[drill]
    /// postgres-url`).
    fn disk_needs(&self, set: &SetContext) -> Result<crate::components::DiskNeeds> {
        self.restorer.disk_needs(set).map_err(scratch_advice)
    }

    fn check(&mut self, _set: &SetContext) -> Result<String> {
        let c = &self.id;
        let mut client = self.connect()?;
        let counts = row_counts(&self.target.key, &mut client)?;
        if let Some(diff) = count_diff(&self.record.row_counts, &counts) {
            return Err(Error::Verification(format!(
                "{c}: row counts differ from the manifest: {diff}"
            )));
        }
        let migrations = migration_state_now(&self.target.key, &mut client)?;
        if migrations != self.record.migrations {
            return Err(Error::Verification(format!(
                "{c}: migration state of the restored database differs from the manifest"
            )));
        }
        let major = server_version(&self.target.key, &mut client)?.major;
        drop(client);
        let mut pc = client_config(&self.target.key, &self.target.server)?;
        pc.dbname(&self.target.database);
        let tool = ToolRun::find(&self.target.key, &self.target.server, &pc, "pg_dump", major)?;
        tool.output(
            c.as_str(),
            &["--no-password", "--format=plain", "--file=/dev/null"],
        )
        .map_err(|e| Error::Verification(format!("{c}: reading every table failed: {e}")))?;
        Ok(format!(
            "{} tables: row counts and migrations match; every table read (pg_dump)",
            counts.len()
        ))
    }

    /// The scratch database's URL, with the password of the
    /// `password-file` in it when the URL has none: the check is the
    /// operator's own program and needs to connect as the drill did.
    fn env(&self) -> Vec<(String, String)> {
        let server = &self.target.server;
        let password = server
            .password_file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|p| p.lines().next().unwrap_or_default().to_string());
        let Ok(url) = scratch_url(
            server.url.expose(),
            &self.target.database,
            password.as_deref(),
        ) else {
            return Vec::new();
        };
        // The check runs on this host: a container's name means nothing
        // here, and the unresolved URL could reach another server of that
        // name, so a URL that does not resolve is not exported at all.
        let url = match &server.container {
            Some(c) => {
                match crate::components::docker::address::resolve_url(self.id.as_str(), c, &url) {
                    Ok(u) => u,
                    Err(e) => {
                        log::warn!("{e}; the drill's checks get no SB_DRILL_PG_URL");
                        return Vec::new();
                    }
                }
            }
            None => url,
        };
        vec![
            (env_name("SB_DRILL_PG_URL_", self.id.name()), url.clone()),
            ("SB_DRILL_PG_URL".into(), url),
        ]
    }

    fn remove(&mut self) -> Result<()> {
        let db = &self.target.database;
        drop_databases(&self.target.key, &self.target.server, db, Some(db)).map(|_| ())
    }

    fn kept(&self) -> String {
        format!(
            "{}: database `{}` on {} (psql \"$SB_DRILL_PG_URL\"; remove with `stack-backup drill --clean`)",
            self.id,
            self.target.database,
            self.target.server.url.redacted()
        )
    }
}

/// A refusal of the restorer, with the way out a drill has (the restorer
/// knows only the stack's own settings).
fn scratch_advice(e: Error) -> Error {
    match e {
        Error::Refused(why) => Error::Refused(format!(
            "{why}. A drill always restores into a new scratch database: `[drill] postgres-url` (with `postgres-password-file`) can name a role that may create databases, on this server or another"
        )),
        e => e,
    }
}

/// The configured URL with its database replaced by `db`, and `password`
/// added when the URL names a user without one.
pub(super) fn scratch_url(
    url: &str,
    db: &str,
    password: Option<&str>,
) -> std::result::Result<String, String> {
    let (scheme, rest) = url.split_once("://").ok_or("not a URL")?;
    let (authority, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    let authority = match (authority.rsplit_once('@'), password) {
        (Some((user, host)), Some(pw)) if !user.contains(':') => {
            let pw = percent_encoding::utf8_percent_encode(pw, percent_encoding::NON_ALPHANUMERIC);
            format!("{user}:{pw}@{host}")
        }
        _ => authority.to_string(),
    };
    Ok(format!("{scheme}://{authority}/{db}{query}"))
}

/// Drops every database of the server whose name starts with `prefix`
/// (which starts with [`DB_PREFIX`]: nothing else can be named) — or,
/// with `only`, just the database `only` and its restore temporaries
/// (`<only>__sb_restore_*`), never a longer name sharing its start — its
/// sessions ended first; returns the names dropped. Through `admin-url`
/// when set (it may have created them), else the configured role.
pub(super) fn drop_databases(
    key: &str,
    server: &PostgresConfig,
    prefix: &str,
    only: Option<&str>,
) -> Result<Vec<String>> {
    if !prefix.starts_with(DB_PREFIX) || prefix.len() <= DB_PREFIX.len() {
        return Err(Error::component(
            component(key),
            format!("refusing to drop databases named `{prefix}*`"),
        ));
    }
    let mut pc = match admin_config(key, server)? {
        Some(a) => a,
        None => client_config(key, server)?,
    };
    pc.dbname("postgres");
    let mut c = pc.connect(::postgres::NoTls).map_err(|e| {
        Error::component(
            component(key),
            format!("cannot connect to drop the scratch databases: {e}"),
        )
    })?;
    let like = format!("{}%", prefix.replace('\\', "\\\\").replace('_', "\\_"));
    let names: Vec<String> = c
        .query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE $1",
            &[&like],
        )
        .map_err(|e| Error::component(component(key), format!("listing scratch databases: {e}")))?
        .iter()
        .map(|r| r.get(0))
        .filter(|n: &String| {
            only.is_none_or(|db| n == db || n.starts_with(&format!("{db}__sb_restore_")))
        })
        .collect();
    for n in &names {
        locks::terminate_sessions(&mut c, n)?;
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(n)))
            .map_err(|e| Error::component(component(key), format!("dropping {n}: {e}")))?;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_scratch_url_names_the_scratch_database() {
        assert_eq!(
            super::scratch_url(
                "postgres://u:p@h:5432/shop?sslmode=disable",
                "sbdrill_x",
                Some("other")
            )
            .unwrap(),
            "postgres://u:p@h:5432/sbdrill_x?sslmode=disable"
        );
        assert_eq!(
            super::scratch_url("postgresql://u@h", "d", None).unwrap(),
            "postgresql://u@h/d"
        );
        assert_eq!(
            super::scratch_url("postgresql://u@h/x", "d", Some("a b@c")).unwrap(),
            "postgresql://u:a%20b%40c@h/d"
        );
    }
}
