//! Immutable baselines on S3 (issue 17): with `[tiers] immaculate-retain`,
//! every object an immaculate set needs gets an Object Lock retention date
//! in the local S3 server (moto, which refuses versioned deletes under
//! retention and turns plain deletes into delete markers, as AWS does);
//! `backups` sets are pruned as usual; the backup's own credentials cannot
//! destroy the baseline's versions, and `--as-of TIME` reads the
//! repository as it was before the attack and restores the baseline.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::backend::{endpoint, new_bucket, s3_credentials, Repo, ACCESS_KEY, SECRET_KEY};
use common::*;

/// A bucket made with Object Lock enabled (which turns versioning on).
fn locked_bucket() -> String {
    let bucket = unique("sbt-locked").replace('_', "-");
    let out = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "x-amz-bucket-object-lock-enabled: true",
            &format!("{}/{bucket}", endpoint()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "creating {bucket}: {out:?}");
    bucket
}

/// A signed request with the backup's own credentials; (HTTP code, body,
/// headers).
fn s3(
    method: &str,
    bucket: &str,
    path_query: &str,
    upload: Option<&[u8]>,
) -> (u16, String, String) {
    let headers = tempfile::NamedTempFile::new().unwrap();
    let mut c = Command::new("curl");
    c.args(["-s", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
        .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
        .args(["-o", "-", "-w", "\n%{http_code}", "-D"])
        .arg(headers.path());
    let body = tempfile::NamedTempFile::new().unwrap();
    if let Some(b) = upload {
        std::fs::write(body.path(), b).unwrap();
        c.arg("-T").arg(body.path());
    } else if method == "HEAD" {
        c.arg("-I");
    } else {
        c.args(["-X", method]);
    }
    let out = c
        .arg(format!("{}/{bucket}/{path_query}", endpoint()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        std::fs::read_to_string(headers.path()).unwrap_or_default(),
    )
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

/// (key, version id) pairs.
type Versions = Vec<(String, String)>;

/// Every version (key, version id) and delete marker under `prefix`.
fn versions(bucket: &str, prefix: &str) -> (Versions, Versions) {
    let (code, xml, _) = s3("GET", bucket, &format!("?versions&prefix={prefix}/"), None);
    assert_eq!(code, 200, "{xml}");
    assert!(
        !xml.contains("<IsTruncated>true"),
        "one page is enough here"
    );
    let pick = |tag: &str| {
        xml.split(&format!("<{tag}>"))
            .skip(1)
            .map(|v| {
                (
                    between(v, "<Key>", "</Key>").unwrap().to_string(),
                    between(v, "<VersionId>", "</VersionId>")
                        .unwrap()
                        .to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    (pick("Version"), pick("DeleteMarker"))
}

/// The retain-until date of one version, if it has one.
fn retained_until(bucket: &str, key: &str, version: &str) -> Option<String> {
    let (_, _, headers) = s3("HEAD", bucket, &format!("{key}?versionId={version}"), None);
    headers.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("x-amz-object-lock-retain-until-date:")
            .map(|d| d.trim().to_string())
    })
}

/// The current (latest) objects under `prefix`, relative keys.
fn current(bucket: &str, prefix: &str) -> BTreeSet<String> {
    let (code, xml, _) = s3(
        "GET",
        bucket,
        &format!("?list-type=2&prefix={prefix}/"),
        None,
    );
    assert_eq!(code, 200, "{xml}");
    xml.split("<Contents>")
        .skip(1)
        .map(|c| between(c, "<Key>", "</Key>").unwrap()[prefix.len() + 1..].to_string())
        .collect()
}

fn data_packs(bucket: &str, prefix: &str) -> BTreeSet<String> {
    current(bucket, prefix)
        .into_iter()
        .filter(|k| k.starts_with("data/"))
        .collect()
}

#[test]
fn a_retain_without_object_lock_is_refused_before_anything_is_written() {
    let media = tempfile::tempdir().unwrap();
    std::fs::write(media.path().join("a.txt"), "a\n").unwrap();
    let mut sb = Sandbox::new();
    let bucket = new_bucket(&endpoint());
    s3_credentials(&mut sb, SECRET_KEY);
    let repo = Repo::S3 {
        endpoint: endpoint(),
        bucket,
        prefix: "shop".into(),
        cache: sb.path().join("cache"),
    };
    repo.write_config(
        &sb,
        "shop",
        &format!(
            "\n[tiers]\nimmaculate-retain = \"1d\"\n\n[paths.media]\npath = \"{}\"\n",
            media.path().display()
        ),
    );
    sb.init();
    let r = sb.run(&["immaculate", "create", "--name", "base"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("does not have Object Lock"),
        "{}",
        r.stderr
    );
    assert_eq!(repo.snapshot_count(), 0);
    let r = sb.run(&["--json", "doctor"]);
    assert!(
        r.stdout.contains("does not have Object Lock"),
        "{}",
        r.stdout
    );
}

#[test]
fn baselines_survive_the_backup_credentials_and_backups_sets_stay_prunable() {
    let mut sb = Sandbox::new();
    // In the sandbox: a restore refuses to build its copy beside a
    // directory in the world-writable temp directory.
    let media = tempfile::tempdir_in(sb.path()).unwrap();
    std::fs::write(media.path().join("a.bin"), noise(1, 300_000)).unwrap();
    let db = TempDb::seeded(20, "r1");
    let bucket = locked_bucket();
    let prefix = "shop";
    s3_credentials(&mut sb, SECRET_KEY);
    let repo = Repo::S3 {
        endpoint: endpoint(),
        bucket: bucket.clone(),
        prefix: prefix.into(),
        cache: sb.path().join("cache"),
    };
    repo.write_config(
        &sb,
        "shop",
        &format!(
            "prune-grace-hours = 0\n\n[tiers]\nimmaculate-retain = \"2d\"\n\n[retention.backups]\nkeep-last = 1\n\n[paths.media]\npath = \"{}\"\n\n[postgres.main]\nurl = \"{}\"\n",
            media.path().display(),
            db.url()
        ),
    );
    sb.init();
    let r = sb.run(&["--json", "doctor"]);
    assert!(r.stdout.contains("has Object Lock enabled"), "{}", r.stdout);

    sb.run(&["backup", "--name", "early-a"]).expect_code(0);
    let r = sb.run(&["--json", "immaculate", "create", "--name", "base"]);
    r.expect_code(0);
    let created = r.json();
    let retention = &created["retention"];
    assert!(retention["packs"].as_u64().unwrap() >= 1, "{}", r.stdout);
    assert_eq!(retention["mode"], "GOVERNANCE");
    let base_id = created["backup"]["set"]["id"].as_str().unwrap().to_string();

    // Every object the baseline needs is retained for about two days.
    let retained: BTreeMap<(String, String), String> = versions(&bucket, prefix)
        .0
        .into_iter()
        .filter_map(|(k, v)| {
            let until = retained_until(&bucket, &k, &v)?;
            Some(((k[prefix.len() + 1..].to_string(), v), until))
        })
        .collect();
    let keys: BTreeSet<&str> = retained.keys().map(|(k, _)| k.as_str()).collect();
    assert!(keys.contains("config"), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("keys/")), "{keys:?}");
    assert!(
        keys.contains(format!("snapshots/{base_id}").as_str()),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.starts_with("index/")), "{keys:?}");
    let retained_packs: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.starts_with("data/"))
        .map(|k| (*k).to_string())
        .collect();
    assert_eq!(
        retained_packs.len() as u64,
        retention["packs"].as_u64().unwrap(),
        "{keys:?}"
    );
    let year = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(47);
    assert!(
        retained
            .values()
            .all(|u| u.as_str() > year.to_string().as_str()),
        "{retained:?}"
    );

    // `immaculate verify` extends the dates once a third of the period is
    // left: with the period raised to 30 days, two are far less.
    let cfg = std::fs::read_to_string(sb.config()).unwrap();
    std::fs::write(
        sb.config(),
        cfg.replace("immaculate-retain = \"2d\"", "immaculate-retain = \"30d\""),
    )
    .unwrap();
    sb.run(&["immaculate", "verify", "base"]).expect_code(0);
    let month = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(29 * 24);
    for (k, v) in retained.keys() {
        let until = retained_until(&bucket, &format!("{prefix}/{k}"), v).unwrap();
        assert!(until.as_str() > month.to_string().as_str(), "{k}: {until}");
    }
    std::fs::write(sb.config(), cfg).unwrap();
    // The time to read back after the attack: every object the baseline
    // needs is there and retained. (Later, prune replaces the index files,
    // and the attacker destroys every version that is not retained.)
    let as_of = jiff::Timestamp::now().to_string();
    let digests = |db: &TempDb| ["customers", "orders"].map(|t| table_digest(&db.name, t));
    let base_tables = digests(&db);

    // A `backups` set with data of its own is pruned as usual: its packs
    // are marked, then deleted by the next run; the baseline is whole.
    let before = data_packs(&bucket, prefix);
    std::fs::write(media.path().join("b.bin"), noise(2, 300_000)).unwrap();
    sb.run(&["backup", "--name", "early-b"]).expect_code(0);
    let own: BTreeSet<String> = data_packs(&bucket, prefix)
        .difference(&before)
        .cloned()
        .collect();
    assert!(!own.is_empty());
    assert!(own.is_disjoint(&retained_packs));
    std::fs::remove_file(media.path().join("b.bin")).unwrap();
    // The database moves too (a sequence; the tables stay as digested):
    // an unchanged one would reuse early-b's dump (decision 0048), which
    // then stays for late.
    sql(&db, "SELECT nextval('customers_id_seq')");
    sb.run(&["backup", "--name", "late"]).expect_code(0);
    let r = sb.run(&["--json", "prune", "--apply"]);
    r.expect_code(0);
    assert_eq!(r.json()["removed_sets"], 2, "{}", r.stdout);
    sb.run(&["prune", "--apply"]).expect_code(0);
    let now = data_packs(&bucket, prefix);
    assert!(own.is_disjoint(&now), "early-b's packs are deleted");
    assert!(retained_packs.is_subset(&now), "the baseline's packs stay");
    repo.restic(&["check", "--read-data"]).expect_code(0);

    // The ransomware case, with the backup's own credentials: every object
    // deleted (delete markers), every version deleted for good where the
    // store allows it, some overwritten.
    let (all, _) = versions(&bucket, prefix);
    for key in current(&bucket, prefix) {
        let (code, body, _) = s3("DELETE", &bucket, &format!("{prefix}/{key}"), None);
        assert_eq!(code, 204, "{key}: {body}");
    }
    let mut refused = BTreeSet::new();
    for (key, version) in &all {
        let (code, _, _) = s3(
            "DELETE",
            &bucket,
            &format!("{key}?versionId={version}"),
            None,
        );
        if code == 403 {
            refused.insert((key[prefix.len() + 1..].to_string(), version.clone()));
        } else {
            assert_eq!(code, 204, "{key} {version}");
        }
    }
    let (code, _, _) = s3("PUT", &bucket, &format!("{prefix}/config"), Some(b"ransom"));
    assert_eq!(code, 200);
    assert!(
        current(&bucket, prefix).len() <= 1,
        "only the overwritten config is current"
    );
    let kept: BTreeSet<_> = retained.keys().cloned().collect();
    assert_eq!(refused, kept, "exactly the retained versions survive");
    let (left, _) = versions(&bucket, prefix);
    for (key, version) in &kept {
        assert!(
            left.iter()
                .any(|(k, v)| k == &format!("{prefix}/{key}") && v == version),
            "{key} {version} is gone"
        );
    }

    // Without --as-of the repository is visibly broken.
    let r = sb.run(&["list"]);
    assert!(r.code == 1 || r.code == 2, "{r:?}");
    assert!(r.stderr.contains("repository"), "{}", r.stderr);
    let r = sb.run(&["restore", "base", "--yes"]);
    assert_ne!(r.code, 0, "{r:?}");

    // The stack is damaged too.
    sql(
        &db,
        "DELETE FROM orders; UPDATE customers SET name = 'ransom';",
    );
    std::fs::write(media.path().join("a.bin"), b"ransom").unwrap();
    assert_ne!(digests(&db), base_tables);

    // As of before the attack: the baseline is listed, verifies (every
    // blob read back by its SHA-256), and restores bit-identical.
    let r = sb.run(&["--json", "list", "--as-of", &as_of]);
    r.expect_code(0);
    assert!(r.stdout.contains(&base_id), "{}", r.stdout);
    let r = sb.run(&["verify", "--as-of", &as_of, "base"]);
    r.expect_code(0);
    assert!(r.stdout.contains("every SHA-256 matches"), "{}", r.stdout);
    // A restore through a read-only view takes no pre-restore set: said
    // explicitly, or refused as a usage error.
    let r = sb.run(&["restore", "--as-of", &as_of, "base", "--yes"]);
    r.expect_code(2);
    assert!(r.stderr.contains("--no-pre-restore"), "{}", r.stderr);
    assert_ne!(digests(&db), base_tables);
    let r = sb.run(&[
        "--json",
        "restore",
        "--as-of",
        &as_of,
        "base",
        "--yes",
        "--no-pre-restore",
    ]);
    r.expect_code(0);
    assert_eq!(digests(&db), base_tables);
    assert_eq!(
        std::fs::read(media.path().join("a.bin")).unwrap(),
        noise(1, 300_000)
    );
    // Nothing was written into the attacked repository.
    assert!(
        current(&bucket, prefix).len() <= 1,
        "{:?}",
        current(&bucket, prefix)
    );
}

#[test]
fn as_of_needs_a_repository_on_s3() {
    let sb = Sandbox::new();
    sb.write_config("shop", "[paths.media]\npath = \"/nonexistent\"\n");
    let r = sb.run(&["list", "--as-of", "2026-01-01T00:00:00Z"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("--as-of needs a repository on S3"),
        "{}",
        r.stderr
    );
    let r = sb.run(&["list", "--as-of", "yesterday"]);
    r.expect_code(2);
}

/// The versions (ids) of one key.
fn versions_of(bucket: &str, prefix: &str, key: &str) -> Vec<String> {
    let full = format!("{prefix}/{key}");
    versions(bucket, prefix)
        .0
        .into_iter()
        .filter(|(k, _)| *k == full)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn verify_immutability_attacks_a_sample_and_passes_only_when_the_store_refuses() {
    let mut sb = Sandbox::new();
    let media = tempfile::tempdir_in(sb.path()).unwrap();
    std::fs::write(media.path().join("a.bin"), noise(3, 200_000)).unwrap();
    let bucket = locked_bucket();
    let prefix = "shop";
    s3_credentials(&mut sb, SECRET_KEY);
    let repo = Repo::S3 {
        endpoint: endpoint(),
        bucket: bucket.clone(),
        prefix: prefix.into(),
        cache: sb.path().join("cache"),
    };
    let config = |tiers: &str| {
        repo.write_config(
            &sb,
            "shop",
            &format!(
                "{tiers}\n[paths.media]\npath = \"{}\"\n",
                media.path().display()
            ),
        );
    };
    // COMPLIANCE: no credentials can shorten or bypass it.
    config("[tiers]\nimmaculate-retain = \"1d\"\nretain-mode = \"compliance\"\n");
    sb.init();
    sb.run(&["immaculate", "create", "--name", "base"])
        .expect_code(0);
    // Every version but the lock files' (each command leaves one).
    let data_versions = || {
        versions(&bucket, prefix)
            .0
            .into_iter()
            .filter(|(k, _)| !k.starts_with(&format!("{prefix}/locks/")))
            .collect::<BTreeSet<_>>()
    };
    let all_before = data_versions();
    let r = sb.run(&["--json", "verify", "--immutability", "base"]);
    r.expect_code(0);
    let checked = r.json()["checked"].as_array().unwrap().clone();
    let keys: Vec<&str> = checked.iter().map(|c| c["key"].as_str().unwrap()).collect();
    assert!(keys.iter().any(|k| k.starts_with("snapshots/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("index/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("data/")), "{keys:?}");
    assert!(checked.iter().all(|c| c["ok"] == true), "{}", r.stdout);
    // The overwrite's versions were removed again: nothing left behind.
    assert_eq!(data_versions(), all_before);

    // GOVERNANCE with credentials that may bypass it (moto grants every
    // caller s3:BypassGovernanceRetention): shortening the retention is
    // accepted, the check fails naming the object, the original date is
    // put back, and no version was added or removed (a write-back would be
    // a new version that `--as-of` cannot see).
    config("[tiers]\nimmaculate-retain = \"1d\"\nretain-mode = \"governance\"\n");
    let r = sb.run(&["--json", "immaculate", "create", "--name", "gov"]);
    r.expect_code(0);
    let gov_id = r.json()["backup"]["set"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let snap = format!("snapshots/{gov_id}");
    let snap_versions = versions_of(&bucket, prefix, &snap);
    assert_eq!(snap_versions.len(), 1);
    let until = retained_until(&bucket, &format!("{prefix}/{snap}"), &snap_versions[0]);
    assert!(until.is_some());
    let all_before = data_versions();
    let r = sb.run(&["verify", "--immutability", "gov"]);
    r.expect_code(3);
    assert!(
        r.stdout.contains(&format!(
            "FAILED {snap}: retention can be bypassed with these credentials"
        )),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("not protected"), "{}", r.stderr);
    assert_eq!(data_versions(), all_before);
    assert_eq!(
        retained_until(&bucket, &format!("{prefix}/{snap}"), &snap_versions[0]),
        until
    );
    sb.run(&["verify", "gov"]).expect_code(0);
    repo.restic(&["check"]).expect_code(0);

    // An object without a retention date is reported, never touched.
    config("");
    let r = sb.run(&["--json", "immaculate", "create", "--name", "bare"]);
    r.expect_code(0);
    let bare_snap = format!(
        "snapshots/{}",
        r.json()["backup"]["set"]["id"].as_str().unwrap()
    );
    let before = versions_of(&bucket, prefix, &bare_snap);
    assert_eq!(before.len(), 1);
    let r = sb.run(&["--json", "verify", "--immutability", "bare"]);
    r.expect_code(3);
    let report = r.json_report();
    let checked = report["checked"].as_array().unwrap().clone();
    let c = checked
        .iter()
        .find(|c| c["key"] == bare_snap.as_str())
        .unwrap();
    assert_eq!(c["ok"], false);
    assert!(
        c["outcome"]
            .as_str()
            .unwrap()
            .contains("no retention date (not touched)"),
        "{c}"
    );
    assert_eq!(versions_of(&bucket, prefix, &bare_snap), before);
    sb.run(&["verify", "bare"]).expect_code(0);
}

/// `chattr -R -i` on drop, so that a failed test leaves removable files.
struct Unchattr(std::path::PathBuf);

impl Drop for Unchattr {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .arg("-R")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn local_packs(repo: &std::path::Path) -> BTreeSet<std::path::PathBuf> {
    walk(&repo.join("data"))
}

fn walk(dir: &std::path::Path) -> BTreeSet<std::path::PathBuf> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.insert(e.path());
        }
    }
    out
}

#[test]
fn local_baselines_are_read_only_spared_by_prune_and_immutable_on_request() {
    let sb = Sandbox::new();
    // On the disk the build is on (ext4 here), not a tmpfs /tmp, which may
    // have no immutable attribute.
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = disk.path().join("repo");
    let _unchattr = Unchattr(root.clone());
    let repo = Repo::local(&root);
    let media = tempfile::tempdir_in(sb.path()).unwrap();
    std::fs::write(media.path().join("a.bin"), noise(5, 300_000)).unwrap();
    std::fs::write(media.path().join("b.bin"), noise(6, 300_000)).unwrap();
    repo.write_config(
        &sb,
        "shop",
        &format!(
            "prune-grace-hours = 0\n\n[retention.backups]\nkeep-last = 1\n\n[paths.media]\npath = \"{}\"\n",
            media.path().display()
        ),
    );
    sb.init();
    // `early` holds a.bin and b.bin in one pack; the baseline shares a.bin.
    sb.run(&["backup", "--name", "early"]).expect_code(0);
    let early = local_packs(&root);
    std::fs::remove_file(media.path().join("b.bin")).unwrap();
    let r = sb.run(&["--json", "immaculate", "create", "--name", "base"]);
    r.expect_code(0);
    let made = &r.json()["read_only"];
    let base_id = r.json()["backup"]["set"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let read_only: BTreeSet<_> = local_packs(&root)
        .into_iter()
        .filter(|p| mode(p) == 0o444)
        .collect();
    assert_eq!(
        read_only.len() as u64,
        made["packs"].as_u64().unwrap(),
        "{made}"
    );
    assert_eq!(mode(&root.join("snapshots").join(&base_id)), 0o444);
    let shared: Vec<_> = early.intersection(&read_only).cloned().collect();
    assert!(
        !shared.is_empty(),
        "the pack with a.bin is the baseline's too"
    );
    let digests: BTreeMap<_, _> = read_only
        .iter()
        .map(|p| (p.clone(), sha256_file(p)))
        .collect();
    let r = sb.run(&["--json", "verify", "--immutability"]);
    r.expect_code(0);
    assert_eq!(r.json()["store"], "local");

    // Removing `early` leaves its pack half unused, which rustic would
    // repack: the baseline's read-only packs are left as they are.
    sb.run(&["backup", "--name", "late"]).expect_code(0);
    let r = sb.run(&["--json", "prune", "--apply"]);
    r.expect_code(0);
    let j = r.json();
    assert_eq!(j["removed_sets"], 1, "{}", r.stdout);
    assert!(j["packs_read_only"].as_u64().unwrap() >= 1, "{}", r.stdout);
    sb.run(&["prune", "--apply"]).expect_code(0);
    for (p, d) in &digests {
        assert_eq!(&sha256_file(p), d, "{} changed", p.display());
    }
    repo.restic(&["check", "--read-data"]).expect_code(0);

    // Read-only clears the write bits only: a 0600 file becomes 0400,
    // never readable by more than before.
    let pack = shared[0].clone();
    std::fs::set_permissions(&pack, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    sb.run(&["immaculate", "protect", "base"]).expect_code(0);
    assert_eq!(mode(&pack), 0o400);

    // `--chattr`: immutable, as lsattr shows; a file whose attribute and
    // mode are cleared by hand fails the check.
    let r = sb.run(&["--json", "immaculate", "protect", "--chattr"]);
    r.expect_code(0);
    let attrs = Command::new("lsattr").arg(&pack).output().unwrap();
    let flags = String::from_utf8_lossy(&attrs.stdout);
    assert!(
        flags.split_whitespace().next().unwrap().contains('i'),
        "{flags}"
    );
    let r = sb.run(&["--json", "verify", "--immutability", "base"]);
    r.expect_code(0);
    let checked = r.json()["checked"].as_array().unwrap().clone();
    assert!(!checked.is_empty());
    for c in &checked {
        assert_eq!(c["outcome"], "immutable", "{c}");
    }
    assert!(std::fs::remove_file(&pack).is_err(), "immutable");
    let ok = Command::new("chattr")
        .arg("-i")
        .arg(&pack)
        .status()
        .unwrap();
    assert!(ok.success());
    // The attribute alone cleared (the mode still read-only): fails too.
    assert_eq!(mode(&pack) & 0o222, 0);
    sb.run(&["verify", "--immutability", "base"]).expect_code(3);
    std::fs::set_permissions(&pack, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let r = sb.run(&["verify", "--immutability", "base"]);
    r.expect_code(3);
    let rel = pack.strip_prefix(&root).unwrap().display().to_string();
    assert!(
        r.stdout.contains(&format!("FAILED {rel}: writable")),
        "{}",
        r.stdout
    );
    restic(&root, &["check"]).expect_code(0);

    // A second stack in the same repository: `shop`'s immutable packs are
    // needed by its baseline, not stuck, and do not stop `blog`'s prune
    // from deleting its own unused pack.
    sb.run(&["immaculate", "protect", "--chattr"])
        .expect_code(0);
    let blog = tempfile::tempdir_in(sb.path()).unwrap();
    std::fs::write(blog.path().join("c.bin"), noise(7, 300_000)).unwrap();
    repo.write_config(
        &sb,
        "blog",
        &format!(
            "prune-grace-hours = 0\n\n[retention.backups]\nkeep-last = 1\n\n[paths.media]\npath = \"{}\"\n",
            blog.path().display()
        ),
    );
    let before = local_packs(&root);
    sb.run(&["backup", "--name", "b1"]).expect_code(0);
    let b1: Vec<_> = local_packs(&root).difference(&before).cloned().collect();
    assert!(!b1.is_empty());
    std::fs::remove_file(blog.path().join("c.bin")).unwrap();
    std::fs::write(blog.path().join("d.bin"), noise(8, 300_000)).unwrap();
    sb.run(&["backup", "--name", "b2"]).expect_code(0);
    sb.run(&["prune", "--apply"]).expect_code(0);
    let r = sb.run(&["--json", "prune", "--apply"]);
    r.expect_code(0);
    let j = r.json();
    assert!(j["unlock_first"].is_null(), "{}", r.stdout);
    assert!(
        j["packs_immutable_other_stacks"]["shop"].as_u64().unwrap() >= 1,
        "{}",
        r.stdout
    );
    // Its data pack at least (tree packs may wait for a repack, which
    // `shop`'s read-only packs disable repository-wide).
    assert!(j["packs_removed"].as_u64().unwrap() >= 1, "{}", r.stdout);
    assert!(b1.iter().any(|p| !p.exists()), "{}", r.stdout);
    restic(&root, &["check"]).expect_code(0);
}

fn sha256_file(p: &std::path::Path) -> String {
    stack_backup_core::ledger::sha256_hex(&std::fs::read(p).unwrap())
}
