//! The restic-format repository, through `rustic_core` and `rustic_backend`.
//!
//! The repository is the only durable store of stack-backup: everything else
//! (cache, lock files) can be deleted at any time. Stock `restic` can read
//! every repository this module creates (format version 2).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rustic_backend::BackendOptions;
use rustic_core::{
    ConfigOptions, Credentials, KeyOptions, OpenStatus, Repository, RepositoryBackends,
    RepositoryOptions,
};

use crate::config::{Config, Env};
use crate::error::{Error, Result};
use crate::remote::{self, Remote};

/// An open repository (keys read, no index loaded).
pub type OpenRepo = Repository<OpenStatus>;

/// Where the repository is, as shown to users (never holds a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// A remote repository in `rustic_backend` notation.
    Remote(String),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::Remote(u) => write!(f, "{}", crate::secret::redact_url(u)),
        }
    }
}

impl Location {
    /// The repository location of a validated config.
    #[must_use]
    pub fn of(cfg: &Config) -> Self {
        match (&cfg.repository.path, &cfg.repository.url) {
            (Some(p), _) => Self::Local(p.clone()),
            (None, Some(u)) => Self::Remote(u.clone()),
            (None, None) => Self::Local(PathBuf::from(".")),
        }
    }

    fn backend_string(&self) -> String {
        match self {
            Self::Local(p) => p.display().to_string(),
            Self::Remote(u) => u.clone(),
        }
    }

    /// The local directory, for a local repository.
    #[must_use]
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Self::Local(p) => Some(p),
            Self::Remote(_) => None,
        }
    }
}

/// Where the repository password comes from, in order of precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `STACK_BACKUP_PASSWORD`.
    Env,
    /// `password-file` (or `STACK_BACKUP_PASSWORD_FILE`).
    File(PathBuf),
    /// `password-command`, run without a shell.
    Command(String),
}

impl PasswordSource {
    /// The source the config and environment select, if any.
    #[must_use]
    pub fn select(cfg: &Config, env: &Env) -> Option<Self> {
        if env
            .get("STACK_BACKUP_PASSWORD")
            .is_some_and(|p| !p.is_empty())
        {
            return Some(Self::Env);
        }
        if let Some(f) = &cfg.repository.password_file {
            return Some(Self::File(f.clone()));
        }
        cfg.repository
            .password_command
            .as_ref()
            .map(|c| Self::Command(c.clone()))
    }

    /// Reads the password. Error messages never include it.
    pub fn read(&self, env: &Env) -> Result<String> {
        let pw = match self {
            Self::Env => env
                .get("STACK_BACKUP_PASSWORD")
                .cloned()
                .unwrap_or_default(),
            Self::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::Password(format!("cannot read password file {}: {e}", path.display()))
                })?;
                text.lines().next().unwrap_or_default().to_string()
            }
            Self::Command(cmd) => {
                let words: Vec<&str> = cmd.split_whitespace().collect();
                let (prog, args) = words
                    .split_first()
                    .ok_or_else(|| Error::Password("password-command is empty".into()))?;
                let mut child =
                    crate::process::command_with(prog, crate::process::PASSWORD_COMMAND_ENV)
                        .args(args)
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .spawn()
                        .map_err(|e| {
                            Error::Password(format!("cannot run password-command `{prog}`: {e}"))
                        })?;
                let mut out = String::new();
                if let Some(mut so) = child.stdout.take() {
                    so.read_to_string(&mut out).map_err(|e| {
                        Error::Password(format!("reading password-command output: {e}"))
                    })?;
                }
                let status = child
                    .wait()
                    .map_err(|e| Error::Password(format!("password-command: {e}")))?;
                if !status.success() {
                    return Err(Error::Password(format!(
                        "password-command `{prog}` failed: {status}"
                    )));
                }
                out.lines().next().unwrap_or_default().to_string()
            }
        };
        if pw.is_empty() {
            return Err(Error::Password(format!(
                "the password from {self} is empty"
            )));
        }
        Ok(pw)
    }
}

impl std::fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env => write!(f, "STACK_BACKUP_PASSWORD"),
            Self::File(p) => write!(f, "password file {}", p.display()),
            Self::Command(c) => write!(f, "password-command `{c}`"),
        }
    }
}

/// Reads the repository password from the selected source.
pub fn password(cfg: &Config, env: &Env) -> Result<String> {
    PasswordSource::select(cfg, env)
        .ok_or(Error::NoPassword)?
        .read(env)
}

fn repo_err(loc: &Location, e: impl std::fmt::Display) -> Error {
    Error::Repository {
        location: loc.to_string(),
        message: e.to_string(),
    }
}

/// The process environment, for credentials of remote repositories.
pub(crate) fn process_env() -> Env {
    std::env::vars().collect()
}

/// The resolved remote (backend string, options with credentials) of a
/// remote location; `None` for a local one.
fn remote_of(cfg: &Config, loc: &Location) -> Result<Option<Remote>> {
    match loc {
        Location::Local(_) => Ok(None),
        Location::Remote(u) => {
            remote::resolve(u, &cfg.repository.options, &process_env()).map(Some)
        }
    }
}

fn backends_with(
    cfg: &Config,
    loc: &Location,
    extra: &[(&str, &str)],
) -> Result<RepositoryBackends> {
    let remote = remote_of(cfg, loc)?;
    // The REST and OpenDAL backends build their HTTPS clients in here.
    crate::system::tls::install_provider();
    let mut opts = BackendOptions::default();
    match &remote {
        None => opts = opts.repository(loc.backend_string()),
        Some(r) => {
            let mut options = r.options.clone();
            for (k, v) in extra {
                options.insert((*k).to_string(), (*v).to_string());
            }
            opts = opts.repository(r.backend.clone()).options(options);
        }
    }
    opts.to_backends()
        .map_err(|e| backend_err(loc, remote.as_ref(), &log_text(&e)))
}

/// The backends of the repository; a remote one reads packs through a
/// [`crate::packcache::PackCache`] beside its cache (whole packs instead of
/// one request per blob when a set is read back).
fn backends(cfg: &Config, loc: &Location) -> Result<RepositoryBackends> {
    let be = match cfg.repository.as_of {
        Some(at) => RepositoryBackends::new(
            std::sync::Arc::new(crate::repo::as_of::AsOf::open(cfg, at)?),
            None,
        ),
        None => backends_with(cfg, loc, &[])?,
    };
    let Some(parent) = cache_dir(cfg) else {
        return Ok(be);
    };
    match crate::packcache::PackCache::new(
        be.repository(),
        &parent,
        crate::packcache::DEFAULT_BUDGET,
    ) {
        Ok(pc) => Ok(RepositoryBackends::new(
            std::sync::Arc::new(pc),
            be.repo_hot(),
        )),
        Err(e) => {
            log::warn!(
                "no pack cache under {} ({e}); reading packs range by range",
                parent.display()
            );
            Ok(be)
        }
    }
}

/// A repository error; for a remote one the backend's text is explained
/// (missing bucket, refused credentials, unreachable endpoint) and scrubbed
/// of secrets.
fn backend_err(loc: &Location, remote: Option<&Remote>, raw: &str) -> Error {
    match remote {
        Some(r) => repo_err(loc, r.explain(raw)),
        None => repo_err(loc, raw),
    }
}

/// rustic's text of an error with its innermost cause: `display_log`
/// names two levels, and why a connection failed (a refused certificate,
/// a reset) sits deeper in reqwest's chain.
fn log_text(e: &rustic_core::RusticError) -> String {
    let mut text = e.display_log();
    let mut innermost = None;
    let mut next = std::error::Error::source(e);
    while let Some(cause) = next {
        innermost = Some(cause);
        next = cause.source();
    }
    if let Some(cause) = innermost.map(ToString::to_string) {
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// Maps a rustic error of an operation on the repository at `loc`.
fn rustic_err(cfg: &Config, loc: &Location, e: &rustic_core::RusticError) -> Error {
    let remote = remote_of(cfg, loc).ok().flatten();
    backend_err(loc, remote.as_ref(), &log_text(e))
}

/// An error of `what` (e.g. "copying backup sets") on the repository of
/// `cfg`, explained and scrubbed of secrets like every repository error.
#[must_use]
pub fn op_error(cfg: &Config, what: &str, e: &rustic_core::RusticError) -> Error {
    let loc = Location::of(cfg);
    let remote = remote_of(cfg, &loc).ok().flatten();
    backend_err(&loc, remote.as_ref(), &format!("{what}: {}", log_text(e)))
}

/// A backend error text about the repository of `cfg`, explained (for a
/// remote one: missing bucket, refused credentials, unreachable endpoint)
/// and scrubbed of secrets; without the location (callers name it).
#[must_use]
pub fn explain(cfg: &Config, raw: &str) -> String {
    match remote_of(cfg, &Location::of(cfg)).ok().flatten() {
        Some(r) => r.explain(raw),
        None => raw.to_string(),
    }
}

/// The default cache directory for remote repositories:
/// `$XDG_CACHE_HOME/stack-backup`, else `~/.cache/stack-backup`.
#[must_use]
pub fn default_cache_dir() -> Option<PathBuf> {
    let env = process_env();
    env.get("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env.get("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .map(|d| d.join("stack-backup"))
}

/// Where the cache of a remote repository lives (`None` for a local one,
/// which has no cache). rustic keeps one subdirectory per repository id in
/// it, holding copies of the index, snapshot and key files.
#[must_use]
pub fn cache_dir(cfg: &Config) -> Option<PathBuf> {
    match Location::of(cfg) {
        Location::Local(_) => None,
        Location::Remote(_) => cfg.repository.cache_dir.clone().or_else(default_cache_dir),
    }
}

fn repo_options(cfg: &Config, loc: &Location) -> RepositoryOptions {
    let mut opts = RepositoryOptions::default();
    if cfg.repository.as_of.is_some() {
        // rustic's cache drops files the listing no longer shows: a past
        // view would empty the cache of the present repository.
        opts.no_cache = true;
        return opts;
    }
    match loc {
        // A local repository is as fast as a cache; don't keep a second copy.
        Location::Local(_) => opts.no_cache = true,
        // A remote one keeps index, snapshot and key files in a local cache
        // so that list, incremental backups and restores don't download
        // the index every time.
        Location::Remote(_) => opts.cache_dir = cache_dir(cfg),
    }
    opts
}

fn unopened(cfg: &Config) -> Result<(Location, Repository<()>)> {
    let loc = Location::of(cfg);
    let be = backends(cfg, &loc)?;
    let repo =
        Repository::new(&repo_options(cfg, &loc), &be).map_err(|e| rustic_err(cfg, &loc, &e))?;
    Ok((loc, repo))
}

/// True when a repository (its `config` file) exists at the location.
pub fn exists(cfg: &Config) -> Result<bool> {
    if let Some(at) = cfg.repository.as_of {
        // The `config` object may be deleted or overwritten now; what
        // counts is whether it was there then.
        return crate::repo::as_of::AsOf::open(cfg, at).map(|_| true);
    }
    let loc = Location::of(cfg);
    if let Location::Local(p) = &loc {
        // Don't let the local backend create directories just to look.
        if !p.join("config").exists() {
            return Ok(false);
        }
    }
    // OpenDAL backends (S3 and the others) are probed for clear errors;
    // `rest:`/`rclone:` answer rustic's own check well enough.
    if remote_of(cfg, &loc)?.is_some_and(|r| r.backend.starts_with("opendal:")) {
        return probe(cfg, &loc);
    }
    let (loc, repo) = unopened(cfg)?;
    Ok(repo
        .config_id()
        .map_err(|e| rustic_err(cfg, &loc, &e))?
        .is_some())
}

/// Reads the `config` file of a remote repository with few retries: true
/// when it is there, false when the bucket answers that it is not, and a
/// clear error for an unreachable endpoint, a missing bucket or refused
/// credentials (rustic's own existence check turns every failure into
/// "not there", and its listings skip failed requests).
fn probe(cfg: &Config, loc: &Location) -> Result<bool> {
    let be = backends_with(cfg, loc, &[("retry", "2")])?;
    match be
        .repository()
        .read_full(rustic_core::FileType::Config, &rustic_core::Id::default())
    {
        Ok(_) => Ok(true),
        Err(e) => {
            let text = e.display_log();
            if text.contains("NoSuchKey") || text.contains("NotFound (persistent) at read") {
                Ok(false)
            } else {
                Err(rustic_err(cfg, loc, &e))
            }
        }
    }
}

/// Creates a new repository (restic format version 2). Refuses with
/// [`Error::RepositoryExists`] when one is there; never overwrites.
pub fn init(cfg: &Config, password: &str) -> Result<OpenRepo> {
    let loc = Location::of(cfg);
    if exists(cfg)? {
        return Err(Error::RepositoryExists(loc.to_string()));
    }
    if let Location::Local(p) = &loc {
        if p.exists()
            && std::fs::read_dir(p)
                .map_err(|e| Error::io("reading", p, e))?
                .next()
                .is_some()
        {
            return Err(Error::Refused(format!(
                "{} exists and is not empty, but is not a repository; refusing to write into it",
                p.display()
            )));
        }
    }
    let (loc, repo) = unopened(cfg)?;
    let config_opts = ConfigOptions::default().set_version(2u32);
    repo.init(
        &Credentials::password(password),
        &KeyOptions::default(),
        &config_opts,
    )
    .map_err(|e| rustic_err(cfg, &loc, &e))
}

/// Opens an existing repository. A wrong password and a missing repository
/// are distinct, clear errors.
pub fn open(cfg: &Config, password: &str) -> Result<OpenRepo> {
    open_with_progress(cfg, password, rustic_core::NoProgressBars)
}

/// Opens an existing repository, reporting rustic's own progress to `pb`.
pub fn open_with_progress<P: rustic_core::ProgressBars>(
    cfg: &Config,
    password: &str,
    pb: P,
) -> Result<OpenRepo> {
    let loc = Location::of(cfg);
    if !exists(cfg)? {
        return Err(repo_err(
            &loc,
            "no repository here; create one with `stack-backup init`",
        ));
    }
    let be = backends(cfg, &loc)?;
    let repo = Repository::new_with_progress(&repo_options(cfg, &loc), &be, pb)
        .map_err(|e| rustic_err(cfg, &loc, &e))?;
    let cache_key = format!(
        "{loc}\n{:?}\n{}",
        cfg.repository.as_of,
        crate::ledger::sha256_hex(password.as_bytes())
    );
    let repo = match key_cache::get(&cache_key) {
        None => repo,
        Some(key) => match repo.open(&Credentials::Masterkey(key)) {
            Ok(repo) => return Ok(repo),
            Err(_) => {
                // A repository created anew under the same name: derive
                // the key from the password again (without progress bars).
                key_cache::forget(&cache_key);
                Repository::new_with_progress(
                    &repo_options(cfg, &loc),
                    &be,
                    rustic_core::NoProgressBars,
                )
                .map_err(|e| rustic_err(cfg, &loc, &e))?
            }
        },
    };
    let opened = repo.open(&Credentials::password(password));
    if let Ok(repo) = &opened {
        key_cache::put(&cache_key, repo.key());
    }
    opened.map_err(|e| {
        if e.is_incorrect_password() {
            repo_err(
                &loc,
                "the password does not open this repository (no key matches)",
            )
        } else {
            rustic_err(cfg, &loc, &e)
        }
    })
}

/// Master keys of the repositories this process opened, by location and
/// the SHA-256 of the password: a second open (restore opens the repository
/// several times) skips the key derivation, a quarter of a second of scrypt
/// each time. Kept in memory only, as an open repository keeps its key.
mod key_cache {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, OnceLock};

    use rustic_core::repofile::MasterKey;

    fn keys() -> &'static Mutex<BTreeMap<String, MasterKey>> {
        static KEYS: OnceLock<Mutex<BTreeMap<String, MasterKey>>> = OnceLock::new();
        KEYS.get_or_init(Default::default)
    }

    pub(super) fn get(id: &str) -> Option<MasterKey> {
        keys().lock().ok()?.get(id).cloned()
    }

    pub(super) fn put(id: &str, key: MasterKey) {
        if let Ok(mut k) = keys().lock() {
            k.insert(id.to_string(), key);
        }
    }

    pub(super) fn forget(id: &str) {
        if let Ok(mut k) = keys().lock() {
            k.remove(id);
        }
    }
}

/// Opens the repository named by the config, reading the password.
pub fn open_from(cfg: &Config, env: &Env) -> Result<OpenRepo> {
    open(cfg, &password(cfg, env)?)
}

/// Opens the repository named by the config and loads its full index (to
/// read files of snapshots).
pub fn open_indexed(cfg: &Config, env: &Env) -> Result<Repository<rustic_core::IndexedFullStatus>> {
    open_from(cfg, env)?.to_indexed().map_err(|e| {
        let loc = Location::of(cfg);
        let remote = remote_of(cfg, &loc).ok().flatten();
        let raw = format!("reading the index: {}", e.display_log());
        backend_err(&loc, remote.as_ref(), &raw)
    })
}

/// Generates a strong random repository password (32 random bytes, hex).
pub fn generate_password() -> Result<String> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).map_err(|e| Error::Password(format!("no randomness: {e}")))?;
    Ok(hex::encode(buf))
}

/// Writes a new password file with mode 0600, refusing to replace one.
pub fn write_password_file(path: &Path, password: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Refused(format!(
                    "password file {} already exists; refusing to overwrite it",
                    path.display()
                ))
            } else {
                Error::io("creating", path, e)
            }
        })?;
    f.write_all(format!("{password}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("writing", path, e))
}

/// No progress from rustic itself (the CLI draws per-component bars).
pub use rustic_core::NoProgressBars as NoProgress;
