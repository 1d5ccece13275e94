//! Typed errors of the library and the exit code each maps to.
//!
//! Every error says what failed and, where it helps, what to do. No variant
//! ever carries a secret: callers redact URLs before building one
//! (see [`crate::secret::redact_url`]).

use std::path::PathBuf;

/// The process exit codes of `stack-backup`; documented in the README.
///
/// Scripts rely on these numbers: never renumber an existing code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Everything worked.
    Success = 0,
    /// Any failure not covered below (a component failed, I/O error, …).
    Failure = 1,
    /// Bad command line or bad / unreadable configuration.
    Usage = 2,
    /// A checksum, repository check or post-restore verification failed.
    Verification = 3,
    /// The tool refused to act to keep data safe (not enough disk, not
    /// confirmed, would overwrite something).
    SafetyRefusal = 4,
    /// Another process holds the repository lock (a stack-backup process
    /// on this machine, or a conflicting lock in the repository that did
    /// not go within `lock-wait-seconds`).
    Locked = 5,
    /// `doctor` found a component or the repository not ready.
    NotReady = 6,
    /// A database lock was not granted within `lock-timeout-seconds`; the
    /// blocking session is named.
    LockTimeout = 7,
}

impl ExitCode {
    /// The numeric process exit code.
    #[must_use]
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A library error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),

    /// Something about the repository failed (open, init, read, write).
    #[error("repository {location}: {message}")]
    Repository {
        /// Where the repository is (path or redacted URL).
        location: String,
        /// What went wrong.
        message: String,
    },

    /// `init` found a repository already there; it never overwrites one.
    #[error("a repository already exists at {0}; refusing to overwrite it (use it as it is, or choose another path)")]
    RepositoryExists(String),

    /// Another process holds the repository lock.
    #[error("repository {location} is locked by another stack-backup process (lock file {lock})")]
    Locked {
        /// Where the repository is.
        location: String,
        /// The lock file held by the other process.
        lock: PathBuf,
    },

    /// A lock in the repository (restic's, or stack-backup's on another
    /// host) conflicted for longer than `lock-wait-seconds`.
    #[error("repository {location} is locked: {holder}; waited {waited}s (`lock-wait-seconds`); if that process is gone, `stack-backup unlock` removes stale locks")]
    RepoLocked {
        /// Where the repository is.
        location: String,
        /// Who holds the conflicting lock (host, pid, command, age).
        holder: String,
        /// How long we waited, in seconds.
        waited: u64,
    },

    /// A database lock was not granted in time (the message names the
    /// blocking sessions).
    #[error("{0}")]
    LockTimeout(String),

    /// No repository password could be found.
    #[error("no repository password: set STACK_BACKUP_PASSWORD, or `password-file` / `password-command` in [repository]")]
    NoPassword,

    /// Reading the repository password failed.
    #[error("reading the repository password failed: {0}")]
    Password(String),

    /// No backup set with that name or id.
    #[error("no backup set named `{0}` in the repository (see `stack-backup list`)")]
    NotFound(String),

    /// The tool refused to act to keep data safe.
    #[error("{0}")]
    Refused(String),

    /// The request itself is wrong (unknown component, bad name).
    #[error("{0}")]
    Usage(String),

    /// A verification failed (checksum, repository check).
    #[error("verification failed: {0}")]
    Verification(String),

    /// A component (database, Redis, Docker, …) failed.
    #[error("{component}: {message}")]
    Component {
        /// The component, e.g. `postgres.main`.
        component: String,
        /// What went wrong, and what to do.
        message: String,
    },

    /// A component that does not exist (a dropped database, a removed
    /// volume or image, a stopped Redis): what does not exist cannot be
    /// lost, so a pre-restore snapshot leaves it out instead of failing.
    #[error("{component}: {message}")]
    Missing {
        /// The component, e.g. `postgres.main`.
        component: String,
        /// What was not found.
        message: String,
    },

    /// Nothing is configured or selected to back up.
    #[error("nothing to back up: {0}")]
    NothingToBackUp(String),

    /// Plain I/O with the path it concerned.
    #[error("{action} {path}: {cause}")]
    Io {
        /// What was being done, e.g. "writing".
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
}

impl Error {
    /// The exit code this error maps to.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Config(_) | Self::NoPassword | Self::Usage(_) => ExitCode::Usage,
            Self::Verification(_) => ExitCode::Verification,
            Self::Refused(_) | Self::RepositoryExists(_) | Self::NothingToBackUp(_) => {
                ExitCode::SafetyRefusal
            }
            Self::Locked { .. } | Self::RepoLocked { .. } => ExitCode::Locked,
            Self::LockTimeout(_) => ExitCode::LockTimeout,
            _ => ExitCode::Failure,
        }
    }

    /// Builds an [`Error::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            cause: source,
        }
    }

    /// Builds an [`Error::Component`].
    pub fn component(component: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Component {
            component: component.into(),
            message: message.into(),
        }
    }
}

impl Error {
    /// Builds an [`Error::Missing`].
    pub fn missing(component: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Missing {
            component: component.into(),
            message: message.into(),
        }
    }

    /// The same failure, as "the component does not exist" (for probes
    /// whose every failure means that: `docker volume inspect`, a Redis
    /// that does not answer).
    #[must_use]
    pub fn into_missing(self) -> Self {
        match self {
            Self::Component { component, message } => Self::Missing { component, message },
            other => other,
        }
    }

    /// Whether the component does not exist.
    #[must_use]
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Missing { .. })
    }

    /// The message without the component's name, for reports that show the
    /// component beside it.
    #[must_use]
    pub fn detail(&self) -> String {
        match self {
            Self::Component { message, .. } | Self::Missing { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// Result with the library [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
