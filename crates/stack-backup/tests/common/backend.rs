//! The repository backends a behaviour suite runs against: a local
//! directory, and a bucket on the S3-compatible server (moto) started by
//! `scripts/services.sh`. A [`Repo`] is made fresh per test, is written into
//! the sandbox's config, is read by stock restic, and can have its pack
//! files listed and damaged, whatever it is stored on.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::*;

/// Test credentials (moto accepts any); remote.rs checks that the secret
/// never appears in output.
pub const ACCESS_KEY: &str = "sbtest-access-key";

/// The secret key of repositories made by [`Backend::S3`].
pub const SECRET_KEY: &str = "sbtest-secret-key";

/// The S3 server started by `scripts/services.sh`.
pub fn endpoint() -> String {
    std::env::var("SB_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into())
}

/// A new bucket on the server at `endpoint` (moto creates buckets on an
/// unsigned PUT); returns its name.
pub fn new_bucket(endpoint: &str) -> String {
    let bucket = unique("sbt-bucket").replace('_', "-");
    let out = Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")])
        .output()
        .expect("curl is installed (scripts/services.sh)");
    assert!(
        out.status.success(),
        "creating bucket {bucket} at {endpoint} failed: is the S3 server up? (scripts/services.sh)"
    );
    bucket
}

/// Puts the AWS credentials (with `secret`) into the sandbox's environment.
pub fn s3_credentials(sb: &mut Sandbox, secret: &str) {
    sb.env.push(("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()));
    sb.env.push(("AWS_SECRET_ACCESS_KEY".into(), secret.into()));
    sb.env
        .push(("AWS_DEFAULT_REGION".into(), "us-east-1".into()));
}

/// Stock restic on an S3 repository (with a cache of its own).
pub fn restic_s3(url: &str, secret: &str, args: &[&str]) -> Run {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new("restic")
        .arg("-r")
        .arg(url)
        .args(args)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("RESTIC_CACHE_DIR", cache.path())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .stdin(Stdio::null())
        .output()
        .expect("restic is installed");
    Run::from(out)
}

/// Where a behaviour test keeps its repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Local,
    S3,
}

impl Backend {
    /// A new, empty (not yet initialised) repository for `sb`; puts the
    /// credentials it needs into the sandbox's environment.
    pub fn fresh_repo(self, sb: &mut Sandbox) -> Repo {
        match self {
            Backend::Local => Repo::local(&sb.repo()),
            Backend::S3 => {
                let endpoint = endpoint();
                let bucket = new_bucket(&endpoint);
                s3_credentials(sb, SECRET_KEY);
                Repo::S3 {
                    endpoint,
                    bucket,
                    prefix: "shop".into(),
                    cache: sb.path().join("cache"),
                }
            }
        }
    }
}

/// A repository on one backend.
pub enum Repo {
    Local {
        path: PathBuf,
    },
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
        /// stack-backup's cache directory (`cache-dir`).
        cache: PathBuf,
    },
}

/// One pack file: its path (local) or object key (S3), and its size.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pack {
    pub size: u64,
    pub key: String,
}

impl Repo {
    /// The local repository at `path`.
    pub fn local(path: &Path) -> Self {
        Repo::Local {
            path: path.to_path_buf(),
        }
    }

    /// The repository as `-r` / `--to` take it: a path or `s3:…`.
    pub fn url(&self) -> String {
        match self {
            Repo::Local { path } => path.display().to_string(),
            Repo::S3 {
                endpoint,
                bucket,
                prefix,
                ..
            } => format!("s3:{endpoint}/{bucket}/{prefix}"),
        }
    }

    /// The body of the config's `[repository]` table.
    pub fn config_table(&self) -> String {
        match self {
            Repo::Local { path } => format!("path = \"{}\"\n", path.display()),
            Repo::S3 { cache, .. } => format!(
                "url = \"{}\"\ncache-dir = \"{}\"\n",
                self.url(),
                cache.display()
            ),
        }
    }

    /// Writes `sb`'s `stack-backup.toml` with `[stack]`, this repository
    /// and `extra` (as [`Sandbox::write_config`] does for a local one).
    pub fn write_config(&self, sb: &Sandbox, stack: &str, extra: &str) {
        let text = format!(
            "[stack]\nname = \"{stack}\"\nmin-free-space = \"1MiB\"\n\n[repository]\n{}\n{extra}",
            self.config_table()
        );
        std::fs::write(sb.config(), text).unwrap();
    }

    /// Stock restic on this repository.
    pub fn restic(&self, args: &[&str]) -> Run {
        match self {
            Repo::Local { path } => restic(path, args),
            Repo::S3 { .. } => restic_s3(&self.url(), SECRET_KEY, args),
        }
    }

    /// Stock restic restores the latest set named `name` into a new
    /// directory.
    pub fn restic_restore(&self, name: &str) -> tempfile::TempDir {
        match self {
            Repo::Local { path } => restic_restore(path, name),
            Repo::S3 { .. } => {
                let dir = tempfile::tempdir().unwrap();
                self.restic(&[
                    "restore",
                    "latest",
                    "--tag",
                    &format!("name:{name}"),
                    "--target",
                    &dir.path().to_string_lossy(),
                ])
                .expect_code(0);
                dir
            }
        }
    }

    /// Number of snapshots stock restic sees.
    pub fn snapshot_count(&self) -> usize {
        let r = self.restic(&["snapshots", "--json"]);
        r.expect_code(0);
        serde_json::from_str::<serde_json::Value>(&r.stdout)
            .unwrap()
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Every pack file under `data/`, smallest first.
    pub fn packs(&self) -> Vec<Pack> {
        let mut packs = match self {
            Repo::Local { path } => {
                let mut packs = Vec::new();
                for dir in std::fs::read_dir(path.join("data")).unwrap() {
                    for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
                        let p = f.unwrap().path();
                        packs.push(Pack {
                            size: std::fs::metadata(&p).unwrap().len(),
                            key: p.display().to_string(),
                        });
                    }
                }
                packs
            }
            Repo::S3 { prefix, .. } => self.s3_list(&format!("{prefix}/data/")),
        };
        packs.sort();
        packs
    }

    /// Flips 64 bytes in the middle of `pack`, as bit rot would.
    pub fn corrupt(&self, pack: &Pack) {
        let mut bytes = match self {
            Repo::Local { .. } => std::fs::read(&pack.key).unwrap(),
            Repo::S3 { .. } => self.s3_get(&pack.key),
        };
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 64] {
            *b ^= 0xff;
        }
        match self {
            Repo::Local { .. } => std::fs::write(&pack.key, bytes).unwrap(),
            Repo::S3 { .. } => self.s3_put(&pack.key, &bytes),
        }
    }

    /// Damages the largest pack file; returns it.
    pub fn corrupt_largest_pack(&self) -> Pack {
        let p = self.packs().pop().expect("a pack");
        self.corrupt(&p);
        p
    }

    /// curl, signed as the repository's user would sign.
    fn s3_curl(&self) -> Command {
        let mut c = Command::new("curl");
        c.args([
            "-sf",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            &format!("{ACCESS_KEY}:{SECRET_KEY}"),
        ]);
        c
    }

    fn s3_object_url(&self, key: &str) -> String {
        match self {
            Repo::S3 {
                endpoint, bucket, ..
            } => format!("{endpoint}/{bucket}/{key}"),
            Repo::Local { .. } => unreachable!("not an S3 repository"),
        }
    }

    fn s3_get(&self, key: &str) -> Vec<u8> {
        let out = self
            .s3_curl()
            .arg(self.s3_object_url(key))
            .output()
            .unwrap();
        assert!(out.status.success(), "GET {key}: {out:?}");
        out.stdout
    }

    fn s3_put(&self, key: &str, bytes: &[u8]) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), bytes).unwrap();
        let out = self
            .s3_curl()
            .arg("-T")
            .arg(tmp.path())
            .arg(self.s3_object_url(key))
            .output()
            .unwrap();
        assert!(out.status.success(), "PUT {key}: {out:?}");
    }

    /// The objects under `prefix` (directory markers left out).
    fn s3_list(&self, prefix: &str) -> Vec<Pack> {
        let Repo::S3 {
            endpoint, bucket, ..
        } = self
        else {
            unreachable!("not an S3 repository")
        };
        let mut packs = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{endpoint}/{bucket}?list-type=2&prefix={prefix}");
            if let Some(t) = &token {
                url.push_str("&continuation-token=");
                url.push_str(
                    &t.replace('+', "%2B")
                        .replace('=', "%3D")
                        .replace('/', "%2F"),
                );
            }
            let out = self.s3_curl().arg(&url).output().unwrap();
            assert!(out.status.success(), "listing {prefix}: {out:?}");
            let xml = String::from_utf8_lossy(&out.stdout).into_owned();
            for item in xml.split("<Contents>").skip(1) {
                let key = between(item, "<Key>", "</Key>");
                let size: u64 = between(item, "<Size>", "</Size>").parse().unwrap();
                if !key.ends_with('/') {
                    packs.push(Pack {
                        size,
                        key: key.to_string(),
                    });
                }
            }
            if between(&xml, "<IsTruncated>", "</IsTruncated>") != "true" {
                return packs;
            }
            token =
                Some(between(&xml, "<NextContinuationToken>", "</NextContinuationToken>").into());
        }
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text.find(open).map(|i| i + open.len()).unwrap_or(0);
    let end = text[start..].find(close).map_or(start, |i| start + i);
    &text[start..end]
}
