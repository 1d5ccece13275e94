//! Roles on restore. The set's `globals.sql` (from `pg_dumpall
//! --globals-only`) is never run: it holds every role of the cluster, and
//! running it would reset rotated passwords, bring back dropped roles and
//! run whatever `psql` meta-command it holds. Instead, a restore creates
//! only the roles the dump refers to (`roles_used` of the record) that do
//! not exist, from statements it builds itself out of the attributes it
//! parses from the file. An existing role is never altered or dropped.

use std::collections::BTreeMap;

use super::quote_ident;
use crate::error::{Error, Result};

/// A role as `globals.sql` describes it, reduced to what a restore may
/// recreate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleSpec {
    /// `LOGIN`, `INHERIT`, `CREATEDB`, … (only harmless attributes; see
    /// [`ALLOWED`]).
    pub attributes: Vec<String>,
    /// `CONNECTION LIMIT n`.
    pub connection_limit: Option<i64>,
    /// `VALID UNTIL '…'`.
    pub valid_until: Option<String>,
    /// The stored password hash (`SCRAM-SHA-256$…` or `md5…`).
    pub password: Option<String>,
    /// Attributes left out because a restore never grants them.
    pub refused: Vec<String>,
}

/// Attributes a created role may get. `SUPERUSER`, `REPLICATION` and
/// `BYPASSRLS` are never granted from a backup file.
pub const ALLOWED: [&str; 10] = [
    "LOGIN",
    "NOLOGIN",
    "INHERIT",
    "NOINHERIT",
    "CREATEDB",
    "NOCREATEDB",
    "CREATEROLE",
    "NOCREATEROLE",
    "NOSUPERUSER",
    "NOREPLICATION",
];

/// Reads the roles of a `pg_dumpall --globals-only` file: `CREATE ROLE x;`
/// and `ALTER ROLE x WITH …;` lines. Anything else is ignored, and a line
/// this parser does not understand is skipped (the role is then created
/// with defaults).
#[must_use]
pub fn parse_globals(sql: &str) -> BTreeMap<String, RoleSpec> {
    let mut roles: BTreeMap<String, RoleSpec> = BTreeMap::new();
    for line in sql.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("CREATE ROLE ") {
            if let Some((name, tail)) = ident(rest) {
                if tail.trim() == ";" {
                    roles.entry(name).or_default();
                }
            }
        } else if let Some(rest) = line.strip_prefix("ALTER ROLE ") {
            let Some((name, tail)) = ident(rest) else {
                continue;
            };
            let Some(attrs) = tail.trim_start().strip_prefix("WITH ") else {
                continue;
            };
            let Some(attrs) = attrs.trim_end().strip_suffix(';') else {
                continue;
            };
            if let Some(spec) = attributes(attrs) {
                roles.insert(name, spec);
            }
        }
    }
    roles
}

/// An SQL identifier at the start of `s` (bare or double-quoted), and the
/// rest.
fn ident(s: &str) -> Option<(String, &str)> {
    if s.starts_with('"') {
        return quoted(s, '"');
    }
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(s.len());
    (end > 0).then(|| (s[..end].to_string(), &s[end..]))
}

/// A single-quoted SQL literal at the start of `s`, and the rest.
fn literal(s: &str) -> Option<(String, &str)> {
    quoted(s, '\'')
}

/// Text between `q` quotes at the start of `s` (a doubled `q` stands for
/// one), and the rest; `None` when it is not closed.
fn quoted(s: &str, q: char) -> Option<(String, &str)> {
    let rest = s.strip_prefix(q)?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != q {
            out.push(c);
        } else if rest[i + 1..].starts_with(q) {
            out.push(q);
            chars.next();
        } else {
            return Some((out, &rest[i + 1..]));
        }
    }
    None
}

fn attributes(mut s: &str) -> Option<RoleSpec> {
    let mut spec = RoleSpec::default();
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Some(spec);
        }
        if let Some(rest) = s.strip_prefix("PASSWORD ") {
            let (pw, rest) = literal(rest.trim_start())?;
            spec.password = Some(pw);
            s = rest;
        } else if let Some(rest) = s.strip_prefix("VALID UNTIL ") {
            let (until, rest) = literal(rest.trim_start())?;
            spec.valid_until = Some(until);
            s = rest;
        } else if let Some(rest) = s.strip_prefix("CONNECTION LIMIT ") {
            let rest = rest.trim_start();
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                .unwrap_or(rest.len());
            spec.connection_limit = Some(rest[..end].parse().ok()?);
            s = &rest[end..];
        } else {
            let end = s.find(char::is_whitespace).unwrap_or(s.len());
            let word = &s[..end];
            if !word.chars().all(|c| c.is_ascii_uppercase()) {
                return None;
            }
            if ALLOWED.contains(&word) || word == "NOBYPASSRLS" {
                spec.attributes.push(word.to_string());
            } else {
                spec.refused.push(word.to_string());
            }
            s = &s[end..];
        }
    }
}

/// The statement that creates `name` as `spec` says (the password only
/// with `with_password`).
#[must_use]
pub fn create_statement(name: &str, spec: &RoleSpec, with_password: bool) -> String {
    let mut sql = format!("CREATE ROLE {}", quote_ident(name));
    let mut parts: Vec<String> = spec.attributes.clone();
    if let Some(n) = spec.connection_limit {
        parts.push(format!("CONNECTION LIMIT {n}"));
    }
    if let Some(until) = &spec.valid_until {
        parts.push(format!("VALID UNTIL {}", quote_literal(until)));
    }
    if with_password {
        if let Some(pw) = &spec.password {
            parts.push(format!("PASSWORD {}", quote_literal(pw)));
        }
    }
    if parts.is_empty() {
        parts.push("NOLOGIN".into());
    }
    sql.push_str(" WITH ");
    sql.push_str(&parts.join(" "));
    sql
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The roles of `used` that do not exist on the server.
pub fn missing(client: &mut postgres::Client, used: &[String]) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT u FROM unnest($1::text[]) u WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = u) ORDER BY 1",
            &[&used],
        )
        .map_err(|e| Error::component("postgres", format!("reading the roles: {e}")))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Creates the roles `names` (each missing on the server) as `specs`
/// describe them (defaults when the set has no `globals.sql` line for one).
/// Returns the roles created, to be dropped again by an undo.
pub fn create(
    client: &mut postgres::Client,
    component: &str,
    names: &[String],
    specs: &BTreeMap<String, RoleSpec>,
    with_passwords: bool,
) -> Result<Vec<String>> {
    let mut created = Vec::new();
    for name in names {
        let spec = specs.get(name).cloned().unwrap_or_default();
        if !spec.refused.is_empty() {
            log::warn!(
                "{component}: role `{name}` created without {} (never granted from a backup)",
                spec.refused.join(", ")
            );
        }
        let sql = create_statement(name, &spec, with_passwords);
        if let Err(e) = client.batch_execute(&sql) {
            // The statement may hold a password hash: it is not shown.
            drop_roles(client, &created);
            return Err(Error::component(
                component,
                format!("creating role `{name}` the dump needs: {e}"),
            ));
        }
        created.push(name.clone());
    }
    Ok(created)
}

/// Drops roles this restore created (an undo). Failures are logged.
pub fn drop_roles(client: &mut postgres::Client, names: &[String]) {
    for name in names.iter().rev() {
        if let Err(e) = client.batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(name)))
        {
            log::warn!("could not drop role `{name}` created by the failed restore: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLOBALS: &str = r#"--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;

--
-- Roles
--

CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:abc$def:ghi';
CREATE ROLE "Odd ""Name""";
ALTER ROLE "Odd ""Name""" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 3 VALID UNTIL '2030-01-01 00:00:00+00';
CREATE ROLE boss;
ALTER ROLE boss WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
\! touch /tmp/pwned
CREATE ROLE evil; DROP ROLE app;
GRANT app TO boss;
"#;

    #[test]
    fn globals_are_parsed_not_run() {
        let roles = parse_globals(GLOBALS);
        assert_eq!(
            roles.keys().cloned().collect::<Vec<_>>(),
            ["Odd \"Name\"", "app", "boss"],
            "a CREATE ROLE line with anything after the `;` is not taken"
        );
        let app = &roles["app"];
        assert!(app.attributes.contains(&"LOGIN".to_string()));
        assert_eq!(
            app.password.as_deref(),
            Some("SCRAM-SHA-256$4096:abc$def:ghi")
        );
        let odd = &roles["Odd \"Name\""];
        assert_eq!(odd.connection_limit, Some(3));
        assert_eq!(odd.valid_until.as_deref(), Some("2030-01-01 00:00:00+00"));
        assert_eq!(
            roles["boss"].refused,
            ["SUPERUSER", "REPLICATION", "BYPASSRLS"]
        );
    }

    #[test]
    fn statements_are_built_from_parsed_parts() {
        let roles = parse_globals(GLOBALS);
        let app = create_statement("app", &roles["app"], false);
        assert!(!app.contains("PASSWORD"), "{app}");
        assert!(app.starts_with("CREATE ROLE \"app\" WITH NOSUPERUSER INHERIT"));
        let with = create_statement("app", &roles["app"], true);
        assert!(
            with.ends_with("PASSWORD 'SCRAM-SHA-256$4096:abc$def:ghi'"),
            "{with}"
        );
        let boss = create_statement("boss", &roles["boss"], true);
        assert!(
            !boss.contains(" SUPERUSER") && !boss.contains(" REPLICATION"),
            "{boss}"
        );
        let odd = create_statement("Odd \"Name\"", &roles["Odd \"Name\""], false);
        assert!(
            odd.starts_with("CREATE ROLE \"Odd \"\"Name\"\"\" WITH"),
            "{odd}"
        );
        assert!(odd.contains("VALID UNTIL '2030-01-01 00:00:00+00'"));
        assert_eq!(
            create_statement("x", &RoleSpec::default(), true),
            "CREATE ROLE \"x\" WITH NOLOGIN"
        );
    }

    #[test]
    fn injected_text_is_not_an_attribute() {
        let roles = parse_globals(
            "CREATE ROLE a;\nALTER ROLE a WITH LOGIN; DROP DATABASE x;\nALTER ROLE b WITH PASSWORD 'x'' ; DROP ROLE c; --';\n",
        );
        assert_eq!(
            roles["a"],
            RoleSpec::default(),
            "the ALTER line with a second statement is skipped"
        );
        assert_eq!(roles["b"].password.as_deref(), Some("x' ; DROP ROLE c; --"));
        assert!(
            create_statement("b", &roles["b"], true).ends_with("PASSWORD 'x'' ; DROP ROLE c; --'")
        );
    }
}
