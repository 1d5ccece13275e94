//! Which restore method a database's credentials allow, decided before
//! anything changes (restore step 1, and `doctor`), naming what is missing.
//! `docs/decisions/0011-restore-with-the-stacks-privileges.md`.

use super::{component, quote_ident, roles, PostgresRecord};
use crate::config::{PostgresConfig, RestoreMethod};
use crate::error::{Error, Result};

/// Which credentials run a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The configured `url` (the application's role).
    Role,
    /// The configured `admin-url`.
    Admin,
}

/// How the database is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A new database beside the live one, swapped in by renames, run
    /// through these credentials.
    Beside(Via),
    /// `pg_restore --clean --if-exists --single-transaction` into the live
    /// database, as the configured role (its owner).
    InPlace,
}

/// What a restore of one database will do, and with which credentials.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The method.
    pub method: Method,
    /// Roles the dump needs that do not exist, and who creates them.
    pub create_roles: Vec<String>,
    /// Who creates the missing roles (when there are any).
    pub roles_via: Via,
    /// The database does not exist: the restore creates it, owned by this
    /// role (the one the stack's `url` connects as, so that the stack owns
    /// its database again).
    pub create_owned_by: Option<String>,
}

impl Decision {
    /// The method as shown in the plan.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut s = match self.method {
            Method::Beside(via) if self.create_owned_by.is_some() => format!(
                "created (owner `{}`){}, then filled",
                self.create_owned_by.as_deref().unwrap_or_default(),
                if via == Via::Admin {
                    " through admin-url"
                } else {
                    " by the role (it may create databases)"
                }
            ),
            Method::Beside(Via::Role) => {
                "beside the live database, swapped in (the role may create databases)".to_string()
            }
            Method::Beside(Via::Admin) => {
                "beside the live database, swapped in (through admin-url)".to_string()
            }
            Method::InPlace => {
                "in place, in one transaction (pg_restore --clean --single-transaction: the role owns the database but may not create one)"
                    .to_string()
            }
        };
        if !self.create_roles.is_empty() {
            s.push_str(&format!(
                "; creates the missing role(s) {} the dump needs{}",
                self.create_roles.join(", "),
                if self.roles_via == Via::Admin {
                    " (through admin-url)"
                } else {
                    ""
                }
            ));
        }
        s
    }
}

/// What a set of credentials may do on the server.
#[derive(Debug, Clone, Default)]
struct Privileges {
    role: String,
    superuser: bool,
    createdb: bool,
    createrole: bool,
    /// Owns (or is a member of the owner of) the live database; `None`
    /// when the database does not exist.
    owner: Option<bool>,
}

impl Privileges {
    fn read(client: &mut postgres::Client, db: &str) -> Result<Self> {
        let fail = |e: postgres::Error| {
            Error::component("postgres", format!("reading the role's privileges: {e}"))
        };
        let row = client
            .query_one(
                "SELECT current_user::text, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .map_err(fail)?;
        let owner = client
            .query_opt(
                "SELECT pg_has_role(current_user, datdba, 'MEMBER') FROM pg_database WHERE datname = $1",
                &[&db],
            )
            .map_err(fail)?
            .map(|r| r.get(0));
        Ok(Self {
            role: row.get(0),
            superuser: row.get(1),
            createdb: row.get(2),
            createrole: row.get(3),
            owner,
        })
    }

    /// Creating a database and renaming the live one needs `CREATEDB` and
    /// ownership of the live database (a superuser has both).
    fn beside_missing(&self, db: &str) -> Option<String> {
        if self.superuser {
            return None;
        }
        let mut missing = Vec::new();
        if !self.createdb {
            missing.push("CREATEDB".to_string());
        }
        if self.owner == Some(false) {
            missing.push(format!("ownership of database `{db}`"));
        }
        (!missing.is_empty()).then(|| missing.join(" and "))
    }

    fn in_place_missing(&self, db: &str) -> Option<String> {
        match self.owner {
            _ if self.superuser => None,
            Some(true) => None,
            Some(false) => Some(format!("ownership of database `{db}`")),
            None => Some(format!(
                "database `{db}` to exist (restoring in place cannot create it)"
            )),
        }
    }

    fn may_create_roles(&self) -> bool {
        self.superuser || self.createrole
    }
}

/// Connects with `pc` to `db` when it exists, else to the server's
/// maintenance database (`postgres`, else `template1`): a database that
/// is gone is created from there.
pub(super) fn connect_somewhere(
    key: &str,
    pc: &postgres::Config,
    db: &str,
) -> Result<postgres::Client> {
    let mut first = pc.clone();
    first.dbname(db);
    match first.connect(postgres::NoTls) {
        Ok(c) => Ok(c),
        Err(e) if e.code() == Some(&postgres::error::SqlState::INVALID_CATALOG_NAME) => {
            let mut last = None;
            for maintenance in MAINTENANCE {
                let mut other = pc.clone();
                other.dbname(maintenance);
                match other.connect(postgres::NoTls) {
                    Ok(c) => return Ok(c),
                    Err(e) => last = Some(e),
                }
            }
            Err(Error::component(
                component(key),
                format!(
                    "database `{db}` does not exist and neither `postgres` nor `template1` is reachable to create it: {}",
                    last.map(|e| e.to_string()).unwrap_or_default()
                ),
            ))
        }
        Err(e) => Err(Error::component(
            component(key),
            format!("cannot connect to check the restore privileges: {e}"),
        )),
    }
}

/// The databases every server has, to connect to when the stack's is gone.
pub(super) const MAINTENANCE: [&str; 2] = ["postgres", "template1"];

/// Decides how `db` of `[postgres.KEY]` is restored with `record`'s dump,
/// or refuses naming the missing privilege. Changes nothing.
pub fn decide(
    key: &str,
    cfg: &PostgresConfig,
    db: &str,
    record: Option<&PostgresRecord>,
) -> Result<Decision> {
    let pc = super::client_config(key, cfg)?;
    let mut role_conn = connect_somewhere(key, &pc, db)?;
    let role = Privileges::read(&mut role_conn, db)?;
    let admin = match super::admin_config(key, cfg)? {
        Some(apc) => {
            let mut c = connect_somewhere(key, &apc, db).map_err(|e| {
                Error::component(component(key), format!("admin-url: {}", e.detail()))
            })?;
            Some(Privileges::read(&mut c, db)?)
        }
        None => None,
    };
    let refuse = |what: String| {
        Error::Refused(format!(
            "{}: cannot restore database `{db}`: {what}; nothing was changed",
            component(key)
        ))
    };
    let method = match (cfg.restore_method, &admin) {
        (RestoreMethod::Auto | RestoreMethod::Beside, Some(a)) => match a.beside_missing(db) {
            None => Method::Beside(Via::Admin),
            Some(m) => {
                return Err(refuse(format!(
                    "the admin-url role `{}` lacks {m}",
                    a.role
                )))
            }
        },
        (RestoreMethod::Beside, None) => match role.beside_missing(db) {
            None => Method::Beside(Via::Role),
            // In place needs a database to restore into: without one
            // (a new host, or a drill's scratch database) it is no way out.
            Some(m) if role.owner.is_none() => {
                return Err(refuse(format!(
                    "it does not exist, and creating it needs {m} for role `{}`; grant it, or set admin-url to a role that has it",
                    role.role
                )))
            }
            Some(m) => {
                return Err(refuse(format!(
                    "restore-method = \"beside\" needs {m} for role `{}`; grant it, or set admin-url, or use restore-method = \"in-place\"",
                    role.role
                )))
            }
        },
        (RestoreMethod::InPlace, _) => match role.in_place_missing(db) {
            None => Method::InPlace,
            Some(m) => {
                return Err(refuse(format!(
                    "restore-method = \"in-place\" needs {m} for role `{}`",
                    role.role
                )))
            }
        },
        (RestoreMethod::Auto, None) => match (role.beside_missing(db), role.in_place_missing(db)) {
            (None, _) => Method::Beside(Via::Role),
            (Some(_), None) => Method::InPlace,
            (Some(b), Some(_)) if role.owner.is_none() => {
                return Err(refuse(format!(
                    "it does not exist, and creating it needs CREATEDB, which role `{}` lacks ({b}); grant CREATEDB, or set admin-url to a role that has it",
                    role.role
                )))
            }
            (Some(b), Some(i)) => {
                return Err(refuse(format!(
                    "role `{}` lacks {b} (to restore beside the live database) and {i} (to restore in place); grant one, or set admin-url to a role that has CREATEDB",
                    role.role
                )))
            }
        },
    };
    // Roles the dump refers to that the server lacks.
    let used = record
        .and_then(|r| r.roles_used.clone())
        .unwrap_or_default();
    let create_roles = roles::missing(&mut role_conn, &used)?;
    let roles_via = match &admin {
        Some(a) if a.may_create_roles() => Via::Admin,
        _ => Via::Role,
    };
    if !create_roles.is_empty() {
        let creator = match roles_via {
            Via::Admin => admin.as_ref().unwrap_or(&role),
            Via::Role => &role,
        };
        if !creator.may_create_roles() {
            return Err(refuse(format!(
                "the dump needs role(s) {} which do not exist, and role `{}` may not create roles (CREATEROLE); create them, or set admin-url",
                create_roles.iter().map(|r| quote_ident(r)).collect::<Vec<_>>().join(", "),
                creator.role
            )));
        }
    }
    // Who would own a database created now: the stack's role.
    let create_owned_by = match (&admin, method) {
        (Some(a), Method::Beside(Via::Admin)) if a.owner.is_none() => Some(role.role.clone()),
        (_, Method::Beside(Via::Role)) if role.owner.is_none() => Some(role.role.clone()),
        _ => None,
    };
    Ok(Decision {
        method,
        create_roles,
        roles_via,
        create_owned_by,
    })
}
