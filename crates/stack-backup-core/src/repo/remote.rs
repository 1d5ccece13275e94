//! Remote repositories: restic's location notation translated into what
//! `rustic_backend` understands, with credentials kept out of sight.
//!
//! Accepted `[repository] url` forms:
//!
//! - `s3:http://HOST:PORT/BUCKET[/PREFIX]` and `s3:https://…` — an
//!   S3-compatible server at that endpoint (path-style requests);
//! - `s3:HOST[:PORT]/BUCKET[/PREFIX]` — the same over HTTPS (restic's short
//!   form, e.g. `s3:s3.amazonaws.com/bucket/prefix`);
//! - `opendal:SERVICE` — the OpenDAL services compiled in (`s3`, `sftp`,
//!   `gcs`, `azblob`, `b2`, `webdav`, `fs`: decision 0027), configured with
//!   `[repository.options]`;
//! - `rest:…`, `rclone:…`, `local:…` — passed to `rustic_backend` as written.
//!
//! S3 credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
//! (and `AWS_SESSION_TOKEN`), else from the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile
//! `AWS_PROFILE` or `default`). The region is `[repository.options] region`,
//! `AWS_DEFAULT_REGION`, `AWS_REGION`, or `us-east-1`.
//!
//! Secret option values (keys holding `secret`, `password`, `token` or
//! `key` other than `access_key_id`) are refused in the config file: they
//! come from `STACK_BACKUP_REPOSITORY_OPTION_<KEY>` variables instead, so that
//! the copy of the config stored in every backup set never holds one. The
//! [`Remote`] built here only ever shows its redacted form
//! ([`Remote::describe`]); its `Debug` hides option values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::Env;
use crate::error::{Error, Result};

/// Prefix of environment variables that add `rustic_backend` options.
pub const OPTION_ENV_PREFIX: &str = "STACK_BACKUP_REPOSITORY_OPTION_";

/// A remote repository ready for `rustic_backend`: the backend string and
/// its options (which may hold credentials: never print them).
#[derive(Clone)]
pub struct Remote {
    /// The `rustic_backend` repository string, e.g. `opendal:s3`.
    pub backend: String,
    /// Options for the backend (bucket, root, endpoint, credentials, …).
    pub options: BTreeMap<String, String>,
    /// For S3: the endpoint and bucket, used in error messages.
    pub s3: Option<S3Target>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("backend", &self.backend)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Where an S3 repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    /// `http(s)://host[:port]`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The prefix inside the bucket (`/` for the bucket's root).
    pub root: String,
}

/// True for an option key whose value is a secret.
#[must_use]
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    if k == "access_key_id" || k == "aws_access_key_id" {
        return false;
    }
    ["secret", "password", "token", "key", "credential"]
        .iter()
        .any(|w| k.contains(w))
}

/// Checks `[repository.options]` from the config file: no secret values.
pub fn check_config_options(options: &BTreeMap<String, String>) -> Result<(), String> {
    for k in options.keys() {
        if is_secret_key(k) {
            return Err(format!(
                "`{k}` holds a secret and must not be written in the config (it is stored in every backup set); set {OPTION_ENV_PREFIX}{} instead",
                k.to_ascii_uppercase()
            ));
        }
    }
    Ok(())
}

/// The secret values held in environment variables this tool reads
/// (AWS keys, repository passwords, secret backend options), so that log
/// output can be scrubbed of them whatever a library logs.
#[must_use]
pub fn env_secrets(env: &Env) -> Vec<String> {
    let named = [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "STACK_BACKUP_PASSWORD",
        "STACK_BACKUP_TO_PASSWORD",
    ];
    env.iter()
        .filter(|(k, v)| {
            v.len() >= 4
                && (named.contains(&k.as_str())
                    || k.strip_prefix(OPTION_ENV_PREFIX).is_some_and(is_secret_key))
        })
        .map(|(_, v)| v.clone())
        .collect()
}

/// Parses `s3:…` in restic's notation into endpoint, bucket and prefix.
pub fn parse_s3(rest: &str) -> Result<S3Target, String> {
    let (scheme, hostpath) = if let Some(r) = rest.strip_prefix("http://") {
        ("http", r)
    } else if let Some(r) = rest.strip_prefix("https://") {
        ("https", r)
    } else {
        ("https", rest)
    };
    let (host, path) = hostpath.split_once('/').ok_or_else(|| {
        format!("`s3:{rest}` names no bucket; write s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]")
    })?;
    if host.is_empty() {
        return Err(format!("`s3:{rest}` names no host"));
    }
    if host.contains('@') {
        return Err(
            "credentials must not be written in the repository URL; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                .into(),
        );
    }
    let path = path.trim_matches('/');
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Err(format!("`s3:{rest}` names no bucket"));
    }
    Ok(S3Target {
        endpoint: format!("{scheme}://{host}"),
        bucket: bucket.to_string(),
        root: format!("/{}", prefix.trim_matches('/')),
    })
}

/// AWS credentials found in the environment or the shared credentials file.
struct AwsCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

fn nonempty(env: &Env, k: &str) -> Option<String> {
    env.get(k).filter(|v| !v.is_empty()).cloned()
}

fn credentials_file(env: &Env) -> Option<PathBuf> {
    nonempty(env, "AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| nonempty(env, "HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))
}

/// Reads one profile of an AWS shared credentials file (INI).
fn read_profile(text: &str, profile: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            inside = section == profile || section == format!("profile {profile}");
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    out
}

fn aws_credentials(env: &Env) -> Result<Option<AwsCredentials>> {
    if let (Some(id), Some(secret)) = (
        nonempty(env, "AWS_ACCESS_KEY_ID"),
        nonempty(env, "AWS_SECRET_ACCESS_KEY"),
    ) {
        return Ok(Some(AwsCredentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: nonempty(env, "AWS_SESSION_TOKEN"),
        }));
    }
    let Some(file) = credentials_file(env) else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading AWS credentials file", file, e)),
    };
    let profile = nonempty(env, "AWS_PROFILE").unwrap_or_else(|| "default".into());
    let p = read_profile(&text, &profile);
    Ok(
        match (p.get("aws_access_key_id"), p.get("aws_secret_access_key")) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Some(AwsCredentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                    session_token: p.get("aws_session_token").cloned(),
                })
            }
            _ => None,
        },
    )
}

/// Options from `STACK_BACKUP_REPOSITORY_OPTION_<KEY>` variables (key
/// lower-cased).
fn env_options(env: &Env) -> BTreeMap<String, String> {
    env.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(OPTION_ENV_PREFIX)
                .filter(|k| !k.is_empty())
                .map(|k| (k.to_ascii_lowercase(), v.clone()))
        })
        .collect()
}

/// Builds the backend string and options for a remote repository `url`,
/// with `config_options` from `[repository.options]` and credentials from
/// `env`. Errors are [`Error::Usage`] (exit 2) and never hold a secret.
pub fn resolve(url: &str, config_options: &BTreeMap<String, String>, env: &Env) -> Result<Remote> {
    let mut options = config_options.clone();
    options.extend(env_options(env));
    if let Some(rest) = url.strip_prefix("s3:") {
        let target = parse_s3(rest).map_err(|m| Error::Usage(format!("repository url: {m}")))?;
        options.insert("bucket".into(), target.bucket.clone());
        options.insert("root".into(), target.root.clone());
        options.insert("endpoint".into(), target.endpoint.clone());
        if !options.contains_key("region") {
            let region = nonempty(env, "AWS_DEFAULT_REGION")
                .or_else(|| nonempty(env, "AWS_REGION"))
                .unwrap_or_else(|| "us-east-1".into());
            options.insert("region".into(), region);
        }
        // Credentials are resolved here, not by the SDK chain: no surprise
        // lookups (instance metadata) and one clear error when missing.
        options.insert("disable_config_load".into(), "true".into());
        options
            .entry("disable_ec2_metadata".into())
            .or_insert_with(|| "true".into());
        let anonymous = options.get("skip_signature").is_some_and(|v| v == "true");
        if !anonymous && !options.contains_key("secret_access_key") {
            let creds = aws_credentials(env)?.ok_or_else(|| {
                Error::Usage(format!(
                    "no S3 credentials for {}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put them in ~/.aws/credentials (profile `default` or AWS_PROFILE)",
                    describe_s3(&target)
                ))
            })?;
            options.insert("access_key_id".into(), creds.access_key_id);
            options.insert("secret_access_key".into(), creds.secret_access_key);
            if let Some(t) = creds.session_token {
                options.insert("session_token".into(), t);
            }
        }
        return Ok(Remote {
            backend: "opendal:s3".into(),
            options,
            s3: Some(target),
        });
    }
    Ok(Remote {
        backend: url.to_string(),
        options,
        s3: None,
    })
}

fn describe_s3(t: &S3Target) -> String {
    format!("bucket `{}` at {}", t.bucket, t.endpoint)
}

impl Remote {
    /// A short, secret-free description for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        self.s3
            .as_ref()
            .map_or_else(|| self.backend.clone(), describe_s3)
    }

    /// Turns a backend error (already rendered as text) into a message that
    /// says what is wrong and what to do, with any secret value removed.
    #[must_use]
    pub fn explain(&self, raw: &str) -> String {
        let mut msg = self.scrub(raw);
        let lower = msg.to_ascii_lowercase();
        let hint = if lower.contains("nosuchbucket") || lower.contains("bucket does not exist") {
            Some(format!(
                "the bucket does not exist ({}); create it first",
                self.describe()
            ))
        } else if lower.contains("invalidaccesskeyid")
            || lower.contains("signaturedoesnotmatch")
            || lower.contains("accessdenied")
            || lower.contains("status: 403")
        {
            Some(format!(
                "the S3 server refused the credentials ({}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
                self.describe()
            ))
        } else if lower.contains("connection refused")
            || lower.contains("error sending request")
            || lower.contains("dns error")
            || lower.contains("timed out")
            || lower.contains("connection reset")
            || lower.contains("connect error")
        {
            Some(format!(
                "cannot reach {}; is the server up and the endpoint right?",
                self.describe()
            ))
        } else {
            None
        };
        if let Some(h) = hint {
            msg = format!("{h} (backend said: {msg})");
        }
        msg
    }

    /// Removes every secret option value from `text`.
    #[must_use]
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (k, v) in &self.options {
            if is_secret_key(k) && !v.is_empty() {
                out = out.replace(v.as_str(), "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn restic_s3_notation() {
        let t = parse_s3("http://127.0.0.1:9000/bucket/some/prefix/").unwrap();
        assert_eq!(t.endpoint, "http://127.0.0.1:9000");
        assert_eq!(t.bucket, "bucket");
        assert_eq!(t.root, "/some/prefix");
        let t = parse_s3("s3.amazonaws.com/b").unwrap();
        assert_eq!(t.endpoint, "https://s3.amazonaws.com");
        assert_eq!(t.root, "/");
        assert!(parse_s3("http://host").is_err());
        assert!(parse_s3("http://host/").is_err());
        assert!(parse_s3("http://a:b@host/bucket").is_err());
    }

    #[test]
    fn credentials_from_env_then_file() {
        let e = env(&[
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK-secret"),
        ]);
        let r = resolve("s3:http://h:1/b/p", &BTreeMap::new(), &e).unwrap();
        assert_eq!(r.backend, "opendal:s3");
        assert_eq!(r.options["secret_access_key"], "SK-secret");
        assert_eq!(r.options["region"], "us-east-1");
        assert!(!format!("{r:?}").contains("SK-secret"));
        assert_eq!(r.scrub("x SK-secret y"), "x *** y");

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("creds");
        std::fs::write(
            &f,
            "[other]\naws_access_key_id = O\naws_secret_access_key = OS\n[default]\naws_access_key_id = D\naws_secret_access_key = DS\n",
        )
        .unwrap();
        let f = f.display().to_string();
        let r = resolve(
            "s3:h/b",
            &BTreeMap::new(),
            &env(&[
                ("AWS_SHARED_CREDENTIALS_FILE", &f),
                ("AWS_PROFILE", "other"),
            ]),
        )
        .unwrap();
        assert_eq!(r.options["access_key_id"], "O");
        let err = resolve(
            "s3:h/b",
            &BTreeMap::new(),
            &env(&[("HOME", "/nonexistent")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
        assert_eq!(err.exit_code(), crate::ExitCode::Usage);
    }

    #[test]
    fn backend_errors_are_explained_and_scrubbed() {
        let e = env(&[
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK-123"),
        ]);
        let r = resolve("s3:http://h:9/b/p", &BTreeMap::new(), &e).unwrap();
        let m = r.explain("S3Error { code: \"NoSuchBucket\" } sig SK-123");
        assert!(
            m.starts_with("the bucket does not exist (bucket `b` at http://h:9)"),
            "{m}"
        );
        assert!(!m.contains("SK-123"), "{m}");
        let m = r.explain("error sending request for url (http://h:9/b/p/config)");
        assert!(m.starts_with("cannot reach bucket `b`"), "{m}");
        let m = r.explain("S3Error { code: \"InvalidAccessKeyId\" }");
        assert!(m.contains("refused the credentials"), "{m}");
        assert_eq!(r.explain("something else"), "something else");
        let secrets = env_secrets(&env(&[
            ("AWS_SECRET_ACCESS_KEY", "SK-123"),
            ("STACK_BACKUP_REPOSITORY_OPTION_PASSWORD", "pw-456"),
            ("STACK_BACKUP_REPOSITORY_OPTION_REGION", "eu-west-1"),
        ]));
        assert_eq!(secrets.len(), 2, "{secrets:?}");
    }

    #[test]
    fn secret_options_refused_in_config() {
        let mut o = BTreeMap::new();
        o.insert("region".to_string(), "x".to_string());
        o.insert("access_key_id".to_string(), "x".to_string());
        assert!(check_config_options(&o).is_ok());
        o.insert("secret_access_key".to_string(), "x".to_string());
        assert!(check_config_options(&o)
            .unwrap_err()
            .contains("STACK_BACKUP_REPOSITORY_OPTION_SECRET_ACCESS_KEY"));
    }
}
