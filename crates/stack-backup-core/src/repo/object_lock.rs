//! S3 Object Lock for immaculate and sacred sets: every object a set needs
//! (its snapshot file, its packs, the index files that list them, the
//! repository's config and key files) gets a retention date, so that the
//! credentials that write backups cannot destroy those versions.
//!
//! OpenDAL offers no Object Lock calls, so this module makes its own few
//! S3 requests (PutObjectRetention, HeadObject, GetObjectLockConfiguration,
//! ListObjectVersions, versioned GET and DELETE), signed with the SigV4
//! signer OpenDAL itself uses (`reqsign`), over `reqwest`, path-style, with
//! the same endpoint, region and credentials as the repository
//! ([`crate::remote`]).
//!
//! What is durable: the retention dates in the bucket. They are only ever
//! extended (a date is set to now + `immaculate-retain`, later than any set
//! before); S3 refuses to shorten one. What it protects and what it does
//! not: see the README ("Immutable baselines") and decision 0026.

use std::collections::BTreeSet;

use bytes::Bytes;
use jiff::Timestamp;
use rustic_core::repofile::SnapshotFile;
use rustic_core::{FileType, IndexedFull, Repository};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::repository::Location;
use crate::tiers::RetainMode;

/// An S3 bucket (and the repository's prefix in it), with signed requests.
pub struct S3 {
    http: reqwest::blocking::Client,
    rt: tokio::runtime::Runtime,
    signer: reqsign_core::Signer<reqsign_aws_v4::Credential>,
    endpoint: String,
    bucket: String,
    /// `shop/` for a repository at `/shop` in the bucket, `` at its root.
    prefix: String,
    describe: String,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

/// An answer from the server.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Response {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One version of one object (or a delete marker), from ListObjectVersions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The key relative to the repository's prefix (`data/ab/ab…`).
    pub key: String,
    /// The version id.
    pub version_id: String,
    /// When it was written.
    pub last_modified: Timestamp,
    /// A delete marker, not data.
    pub delete_marker: bool,
    /// Its size (0 for a delete marker).
    pub size: u64,
}

/// The current version of an object, from HeadObject.
#[derive(Debug, Clone)]
pub struct Head {
    /// Its version id (`None` in a bucket without versioning).
    pub version_id: Option<String>,
    /// Its retention: mode and date.
    pub retention: Option<(String, Timestamp)>,
}

/// Percent-encodes `s` for a URL path (`/` kept when `path`).
fn encode(s: &str, path: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (path && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text between the first `<tag>` and its `</tag>` in `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(&xml[start..end])
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

impl S3 {
    /// The bucket of an S3 remote with its credentials; `None` for another
    /// kind of remote or an anonymous one.
    pub fn of(remote: &Remote) -> Result<Option<Self>> {
        let Some(t) = &remote.s3 else {
            return Ok(None);
        };
        let (Some(id), Some(secret)) = (
            remote.options.get("access_key_id"),
            remote.options.get("secret_access_key"),
        ) else {
            return Ok(None);
        };
        let mut provider = reqsign_aws_v4::StaticCredentialProvider::new(id, secret);
        if let Some(token) = remote.options.get("session_token") {
            provider = provider.with_session_token(token);
        }
        let region = remote
            .options
            .get("region")
            .map_or("us-east-1", String::as_str);
        let signer = reqsign_core::Signer::new(
            reqsign_core::Context::new(),
            provider,
            reqsign_aws_v4::RequestSigner::new("s3", region),
        );
        let describe = remote.describe();
        let local = |e: std::io::Error| Error::io("starting the S3 signer", "", e);
        let root = t.root.trim_matches('/');
        Ok(Some(Self {
            http: crate::system::tls::client_builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()
                .map_err(|e| Error::Repository {
                    location: describe.clone(),
                    message: format!("starting an HTTP client: {e}"),
                })?,
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(local)?,
            signer,
            endpoint: t.endpoint.trim_end_matches('/').to_string(),
            bucket: t.bucket.clone(),
            prefix: if root.is_empty() {
                String::new()
            } else {
                format!("{root}/")
            },
            describe,
        }))
    }

    /// The bucket of the repository of `cfg`, when it is on S3.
    pub fn for_config(cfg: &Config) -> Result<Option<Self>> {
        match Location::of(cfg) {
            Location::Local(_) => Ok(None),
            Location::Remote(u) => Self::of(&crate::remote::resolve(
                &u,
                &cfg.repository.options,
                &crate::repository::process_env(),
            )?),
        }
    }

    /// A secret-free description (bucket and endpoint).
    #[must_use]
    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn err(&self, message: String) -> Error {
        Error::Repository {
            location: self.describe.clone(),
            message,
        }
    }

    /// One signed request: `key` relative to the repository's prefix (`None`
    /// for the bucket itself), `query` already encoded.
    fn send(
        &self,
        method: reqwest::Method,
        key: Option<&str>,
        query: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Response> {
        let mut uri = format!("{}/{}", self.endpoint, self.bucket);
        if let Some(k) = key {
            uri.push('/');
            uri.push_str(&encode(&format!("{}{k}", self.prefix), true));
        }
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(query);
        }
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(
                "x-amz-content-sha256",
                hex::encode(Sha256::digest(&body)).as_str(),
            );
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let (mut parts, ()) = req
            .body(())
            .map_err(|e| self.err(format!("building a request: {e}")))?
            .into_parts();
        self.rt
            .block_on(self.signer.sign(&mut parts, None))
            .map_err(|e| self.err(format!("signing a request: {e}")))?;
        let what = format!("{method} {}", key.unwrap_or("(bucket)"));
        let resp = self
            .http
            .request(method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .map_err(|e| self.err(format!("{what}: {e}")))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .map_err(|e| self.err(format!("{what}: reading the answer: {e}")))?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn expect_ok(&self, what: &str, r: Response) -> Result<Response> {
        if r.ok() {
            return Ok(r);
        }
        let text = String::from_utf8_lossy(&r.body);
        let code = element(&text, "Code").unwrap_or("");
        Err(self.err(format!("{what}: HTTP {} {code}", r.status)))
    }

    /// Whether the bucket has Object Lock enabled (GetObjectLockConfiguration).
    pub fn lock_enabled(&self) -> Result<bool> {
        let r = self.send(reqwest::Method::GET, None, "object-lock=", &[], Vec::new())?;
        if r.status == 404 {
            return Ok(false);
        }
        let r = self.expect_ok("reading the bucket's Object Lock configuration", r)?;
        let text = String::from_utf8_lossy(&r.body);
        Ok(element(&text, "ObjectLockEnabled") == Some("Enabled"))
    }

    /// Sets the retention of the current version of `key` (PutObjectRetention).
    pub fn put_retention(&self, key: &str, mode: RetainMode, until: Timestamp) -> Result<()> {
        let r = self.retention_request(key, None, mode, until, false)?;
        self.expect_ok(&format!("setting the retention of {key}"), r)
            .map(drop)
    }

    /// Asks to set the retention of `version` of `key` to `until`, with
    /// `x-amz-bypass-governance-retention: true`; the server's answer. A
    /// store honouring Object Lock refuses an earlier date unless the
    /// credentials hold `s3:BypassGovernanceRetention` and the mode is
    /// GOVERNANCE. Deletes nothing.
    pub fn put_retention_bypassing(
        &self,
        key: &str,
        version: &str,
        mode: RetainMode,
        until: Timestamp,
    ) -> Result<Response> {
        self.retention_request(key, Some(version), mode, until, true)
    }

    fn retention_request(
        &self,
        key: &str,
        version: Option<&str>,
        mode: RetainMode,
        until: Timestamp,
        bypass: bool,
    ) -> Result<Response> {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            mode.s3(),
            until.strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        .into_bytes();
        use base64::Engine as _;
        use md5::Digest as _;
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        let mut headers = vec![("content-md5", md5)];
        if bypass {
            headers.push(("x-amz-bypass-governance-retention", "true".into()));
        }
        let query = version.map_or_else(
            || "retention=".to_string(),
            |v| format!("retention=&versionId={}", encode(v, false)),
        );
        self.send(reqwest::Method::PUT, Some(key), &query, &headers, body)
    }

    /// The retention of `key` (its current version, or `version`): mode and
    /// date, from HeadObject; `None` when it has none or is gone.
    pub fn retention(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<(String, Timestamp)>> {
        let query = version.map_or_else(String::new, |v| format!("versionId={}", encode(v, false)));
        let r = self.send(reqwest::Method::HEAD, Some(key), &query, &[], Vec::new())?;
        if r.status == 404 {
            return Ok(None);
        }
        let r = self.expect_ok(&format!("reading the retention of {key}"), r)?;
        let until = r
            .header("x-amz-object-lock-retain-until-date")
            .and_then(|d| d.parse::<Timestamp>().ok());
        Ok(until.map(|u| {
            (
                r.header("x-amz-object-lock-mode").unwrap_or("").to_string(),
                u,
            )
        }))
    }

    /// Every version and delete marker under the repository's prefix
    /// (ListObjectVersions, all pages).
    pub fn versions(&self) -> Result<Vec<Version>> {
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = format!("versions=&prefix={}", encode(&self.prefix, false));
            if let Some((k, v)) = &markers {
                query.push_str(&format!(
                    "&key-marker={}&version-id-marker={}",
                    encode(k, false),
                    encode(v, false)
                ));
            }
            let r = self.send(reqwest::Method::GET, None, &query, &[], Vec::new())?;
            let r = self.expect_ok("listing object versions", r)?;
            let text = String::from_utf8_lossy(&r.body).into_owned();
            for (tag, delete_marker) in [("Version", false), ("DeleteMarker", true)] {
                let open = format!("<{tag}>");
                for item in text.split(&open).skip(1) {
                    let item = item.split(&format!("</{tag}>")).next().unwrap_or("");
                    let key = unescape(element(item, "Key").unwrap_or(""));
                    let Some(key) = key.strip_prefix(&self.prefix) else {
                        continue;
                    };
                    let Some(last_modified) =
                        element(item, "LastModified").and_then(|t| t.parse::<Timestamp>().ok())
                    else {
                        continue;
                    };
                    out.push(Version {
                        key: key.to_string(),
                        version_id: unescape(element(item, "VersionId").unwrap_or("null")),
                        last_modified,
                        delete_marker,
                        size: element(item, "Size")
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0),
                    });
                }
            }
            if element(&text, "IsTruncated") != Some("true") {
                return Ok(out);
            }
            markers = Some((
                unescape(element(&text, "NextKeyMarker").unwrap_or("")),
                unescape(element(&text, "NextVersionIdMarker").unwrap_or("")),
            ));
        }
    }

    /// The bytes of one version of `key` (from `offset`, `len` bytes when
    /// given).
    pub fn get_version(
        &self,
        key: &str,
        version: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes> {
        let headers: Vec<(&str, String)> = range
            .map(|(o, l)| vec![("range", format!("bytes={o}-{}", o + l.max(1) - 1))])
            .unwrap_or_default();
        let r = self.send(
            reqwest::Method::GET,
            Some(key),
            &format!("versionId={}", encode(version, false)),
            &headers,
            Vec::new(),
        )?;
        Ok(self
            .expect_ok(&format!("reading {key} version {version}"), r)?
            .body)
    }

    /// The current version of `key` (HeadObject): its version id and its
    /// retention (mode and date); `None` when there is no current version.
    pub fn head(&self, key: &str) -> Result<Option<Head>> {
        let r = self.send(reqwest::Method::HEAD, Some(key), "", &[], Vec::new())?;
        if r.status == 404 {
            return Ok(None);
        }
        let r = self.expect_ok(&format!("reading {key}'s metadata"), r)?;
        let retention = r
            .header("x-amz-object-lock-retain-until-date")
            .and_then(|d| d.parse::<Timestamp>().ok())
            .map(|u| {
                (
                    r.header("x-amz-object-lock-mode").unwrap_or("").to_string(),
                    u,
                )
            });
        Ok(Some(Head {
            version_id: r
                .header("x-amz-version-id")
                .filter(|v| !v.is_empty() && *v != "null")
                .map(str::to_string),
            retention,
        }))
    }
}

/// Retention as configured: the bucket (checked to have Object Lock), how
/// long, and the mode.
#[derive(Debug)]
pub struct Policy {
    /// The bucket.
    pub s3: S3,
    /// `immaculate-retain`, in seconds.
    pub secs: u64,
    /// `retain-mode`.
    pub mode: RetainMode,
}

/// The retention `cfg` asks for, checked against the bucket: `None` when
/// `immaculate-retain` is not set; a usage error (exit 2) when it is set on
/// a repository that is not on S3 or a bucket without Object Lock, since a
/// retention that silently does nothing is worse than none.
pub fn policy(cfg: &Config) -> Result<Option<Policy>> {
    let Some(secs) = cfg
        .tiers
        .retain_secs()
        .map_err(|m| Error::Usage(format!("[tiers] immaculate-retain: {m}")))?
    else {
        return Ok(None);
    };
    let s3 = S3::for_config(cfg)?.ok_or_else(|| {
        Error::Usage(
            "[tiers] immaculate-retain needs a repository on S3 (with Object Lock enabled and credentials); remove it for this repository"
                .into(),
        )
    })?;
    if !s3.lock_enabled()? {
        return Err(Error::Usage(format!(
            "[tiers] immaculate-retain is set, but {} does not have Object Lock enabled, so nothing could be protected; create the bucket with Object Lock (which turns versioning on), or remove the key",
            s3.describe()
        )));
    }
    Ok(Some(Policy {
        s3,
        secs,
        mode: cfg.tiers.retain_mode.unwrap_or_default(),
    }))
}

/// What [`protect`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Protected {
    /// Objects given a retention date.
    pub objects: usize,
    /// Of which packs.
    pub packs: usize,
    /// The date (RFC 3339).
    pub until: String,
    /// `GOVERNANCE` or `COMPLIANCE`.
    pub mode: String,
}

/// The pack ids (hex) that hold the trees and data of `snap`.
pub fn set_packs<S: IndexedFull>(
    repo: &Repository<S>,
    snap: &SnapshotFile,
) -> Result<BTreeSet<String>> {
    let e = |what: &str, e: Box<rustic_core::RusticError>| Error::Repository {
        location: "repository".into(),
        message: format!("{what}: {}", e.display_log()),
    };
    let mut packs = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut trees = vec![snap.tree];
    while let Some(t) = trees.pop() {
        if !seen.insert(t) {
            continue;
        }
        packs.insert(
            repo.get_index_entry(&t)
                .map_err(|x| e("finding a tree's pack", x))?
                .pack
                .to_hex()
                .to_string(),
        );
        let tree = repo.get_tree(&t).map_err(|x| e("reading a tree", x))?;
        for node in tree.nodes {
            if let Some(st) = node.subtree {
                trees.push(st);
            }
            for d in node.content.iter().flatten() {
                packs.insert(
                    repo.get_index_entry(d)
                        .map_err(|x| e("finding a blob's pack", x))?
                        .pack
                        .to_hex()
                        .to_string(),
                );
            }
        }
    }
    Ok(packs)
}

/// The keys (relative to the repository) of every object `snap` needs:
/// config, key files, its snapshot file, the index files that list its
/// packs, and its packs (the snapshot file last); and how many of them
/// are packs.
pub fn set_objects<S: IndexedFull>(
    repo: &Repository<S>,
    snap: &SnapshotFile,
) -> Result<(Vec<String>, usize)> {
    let e = |what: &str, e: &rustic_core::RusticError| Error::Repository {
        location: "repository".into(),
        message: format!("{what}: {}", e.display_log()),
    };
    let packs = set_packs(repo, snap)?;
    let mut keys = vec!["config".to_string()];
    for id in repo
        .list_raw(FileType::Key)
        .map_err(|x| e("listing key files", &x))?
    {
        keys.push(format!("keys/{}", &*id.to_hex()));
    }
    for id in repo
        .list_raw(FileType::Index)
        .map_err(|x| e("listing index files", &x))?
    {
        let raw = repo
            .read_raw_file(FileType::Index, &id)
            .map_err(|x| e("reading an index file", &x))?;
        let index: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
        let lists = index["packs"].as_array().is_some_and(|ps| {
            ps.iter()
                .filter_map(|p| p["id"].as_str())
                .any(|p| packs.contains(p))
        });
        if lists {
            keys.push(format!("index/{}", &*id.to_hex()));
        }
    }
    let n = packs.len();
    keys.extend(packs.iter().map(|p| format!("data/{}/{p}", &p[..2])));
    // Last: its date is what `extend_if_due` reads, so it is only set once
    // every other object has one (a run that failed half-way is redone).
    keys.push(format!("snapshots/{}", &*snap.id.to_hex()));
    Ok((keys, n))
}

/// Gives every object `snap` needs a retention date of now +
/// `immaculate-retain` when `cfg` asks for one; `None` when it does not.
/// Fails (the set stays, unprotected) when the bucket refuses.
pub fn protect<S: IndexedFull>(
    cfg: &Config,
    repo: &Repository<S>,
    snap: &SnapshotFile,
) -> Result<Option<Protected>> {
    let Some(p) = policy(cfg)? else {
        return Ok(None);
    };
    protect_with(&p, repo, snap).map(Some)
}

fn protect_with<S: IndexedFull>(
    p: &Policy,
    repo: &Repository<S>,
    snap: &SnapshotFile,
) -> Result<Protected> {
    let (keys, packs) = set_objects(repo, snap)?;
    let secs = i64::try_from(p.secs).unwrap_or(i64::MAX);
    let until = Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .map_err(|e| Error::Usage(format!("[tiers] immaculate-retain: {e}")))?;
    for k in &keys {
        // An object shared with another baseline may already be retained
        // longer (or in compliance mode, which cannot be shortened): keep
        // that date.
        if let Some((_, held)) = p.s3.retention(k, None)? {
            if held >= until {
                continue;
            }
        }
        p.s3.put_retention(k, p.mode, until)?;
    }
    Ok(Protected {
        objects: keys.len(),
        packs,
        until: until.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        mode: p.mode.s3().to_string(),
    })
}

/// Extends the retention of `snap`'s objects (as [`protect`]) when its
/// snapshot file has none or less than a third of `immaculate-retain` is
/// left; `None` when nothing was due or no retention is configured.
/// `verify` calls it for each baseline it read back intact.
pub fn extend_if_due<S: IndexedFull>(
    cfg: &Config,
    repo: &Repository<S>,
    snap: &SnapshotFile,
) -> Result<Option<Protected>> {
    // A past view (`--as-of`) must not touch the current versions, which
    // may be an attacker's.
    if cfg.repository.as_of.is_some() {
        return Ok(None);
    }
    let Some(p) = policy(cfg)? else {
        return Ok(None);
    };
    let key = format!("snapshots/{}", &*snap.id.to_hex());
    let left = p.s3.retention(&key, None)?.map_or(0, |(_, until)| {
        until
            .as_second()
            .saturating_sub(Timestamp::now().as_second())
    });
    if left > i64::try_from(p.secs / 3).unwrap_or(i64::MAX) {
        return Ok(None);
    }
    protect_with(&p, repo, snap).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_queries_are_encoded_once() {
        assert_eq!(encode("shop/data/ab/ab01", true), "shop/data/ab/ab01");
        assert_eq!(encode("a b/c+d", true), "a%20b/c%2Bd");
        assert_eq!(encode("a/b", false), "a%2Fb");
        assert_eq!(element("<a><K>x&amp;y</K></a>", "K"), Some("x&amp;y"));
        assert_eq!(unescape("x&amp;y"), "x&y");
    }
}
