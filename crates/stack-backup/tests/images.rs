//! Images that share layers, saved by one `docker save` (a group) and
//! loaded one by one out of it, against the real Docker Engine
//! (`docs/decisions/0045-images-saved-together.md`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

/// Images made by the test, removed on drop (last made, first removed).
struct Made {
    refs: Vec<String>,
}

impl Made {
    /// Builds `reference` from `from` with `files` added (name, bytes).
    fn build(&mut self, reference: &str, from: &str, files: &[(&str, &[u8])]) -> String {
        let ctx = tempfile::tempdir().unwrap();
        let mut dockerfile = format!("FROM {from}\n");
        for (name, bytes) in files {
            std::fs::write(ctx.path().join(name), bytes).unwrap();
            dockerfile.push_str(&format!("COPY {name} /{name}\n"));
        }
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        docker(&[
            "build",
            "-q",
            "-t",
            reference,
            &ctx.path().to_string_lossy(),
        ])
        .expect_code(0);
        if !self.refs.iter().any(|r| r == reference) {
            self.refs.push(reference.to_string());
        }
        id_of(reference).expect("just built")
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for r in self.refs.iter().rev() {
            let _ = docker(&["image", "rm", "-f", r]);
        }
    }
}

fn id_of(reference: &str) -> Option<String> {
    let r = docker(&["image", "inspect", "--format", "{{.Id}}", reference]);
    (r.code == 0).then(|| r.stdout.trim().to_string())
}

/// Every tag of the test's images (`prefix…`) with the ID it points at.
fn tags(prefix: &str) -> BTreeMap<String, String> {
    let r = docker(&[
        "image",
        "ls",
        "--no-trunc",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
    ]);
    r.expect_code(0);
    r.stdout
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.split_once(' '))
        .map(|(t, i)| (t.to_string(), i.to_string()))
        .collect()
}

/// Bytes `docker save` writes for `reference` alone.
fn single_save_size(reference: &str) -> u64 {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("docker save '{reference}' | wc -c")])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn manifest_of(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.join("stack-backup/manifest.json")).unwrap())
        .unwrap()
}

fn remove(refs: &[&String]) {
    for r in refs {
        docker(&["image", "rm", r]).expect_code(0);
    }
}

#[test]
fn images_sharing_a_layer_are_saved_once_and_loaded_one_by_one() {
    let prefix = unique("sbt-grp");
    let mut made = Made { refs: Vec::new() };
    let shared = format!("{prefix}-shared:latest");
    made.build(&shared, &base_image(), &[("big", &noise(7, 6 << 20))]);
    let refs: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| format!("{prefix}-{n}:latest"))
        .collect();
    let ids: Vec<String> = refs
        .iter()
        .map(|r| made.build(r, &shared, &[("payload", r.as_bytes())]))
        .collect();
    let singles: u64 = refs.iter().map(|r| single_save_size(r)).sum();

    let sb = Sandbox::new();
    let list = refs.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>();
    sb.write_config(
        "imgs",
        &format!("[docker]\nimages = [{}]\n", list.join(", ")),
    );
    sb.init();
    sb.run(&["--json", "backup", "--name", "one"])
        .expect_code(0);

    // One group tar, by stock restic, checksums as recorded.
    let out = restic_restore(&sb.repo(), "one");
    let root = out.path();
    let check = sha256sum_check(root);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    let sums = std::fs::read_to_string(root.join("stack-backup/CHECKSUM.sha256")).unwrap();
    assert_eq!(sums.matches("docker/saved/").count(), 1, "{sums}");
    assert_eq!(sums.matches("docker/images/").count(), 0, "{sums}");
    let m = manifest_of(root);
    let mut sorted = ids.clone();
    sorted.sort();
    let group = m["components"][format!("docker.image.{}", refs[0])]["archive"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(group.starts_with("docker/saved/"), "{group}");
    for (r, id) in refs.iter().zip(&ids) {
        let c = &m["components"][format!("docker.image.{r}")];
        assert_eq!(c["id"], id.as_str(), "{c}");
        assert_eq!(c["archive"], group.as_str(), "{c}");
        assert_eq!(c["group"], serde_json::json!(sorted), "{c}");
    }
    let group_size = std::fs::metadata(root.join(&group)).unwrap().len();
    assert!(
        group_size > 6 << 20 && group_size < singles,
        "group {group_size} bytes, three single saves {singles}"
    );
    // A docker save tar holding the three images.
    let listing = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(root.join(&group))
        .arg("manifest.json")
        .output()
        .unwrap();
    let saved: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(saved.as_array().unwrap().len(), 3, "{saved}");

    let show = sb.run(&["show", "one"]);
    show.expect_code(0);
    assert!(
        show.stdout
            .contains(&format!("saved with 2 other image(s) in {group}")),
        "{}",
        show.stdout
    );

    // All three gone; an unrelated tag on the shared image stays put.
    let unrelated = format!("{prefix}-unrelated:keep");
    docker(&["tag", &shared, &unrelated]).expect_code(0);
    made.refs.push(unrelated.clone());
    let before = tags(&prefix);
    remove(&refs.iter().collect::<Vec<_>>());

    // One image alone: only its tag comes back.
    sb.run(&[
        "restore",
        "one",
        "--only",
        &format!("docker.image.{}", refs[1]),
        "--yes",
    ])
    .expect_code(0);
    assert_eq!(id_of(&refs[1]).as_deref(), Some(ids[1].as_str()));
    assert_eq!(id_of(&refs[0]), None);
    assert_eq!(id_of(&refs[2]), None);
    let mut want = before.clone();
    want.remove(&refs[0]);
    want.remove(&refs[2]);
    assert_eq!(tags(&prefix), want);
    // No untagged image of the group was loaded with it.
    assert_eq!(id_of(&ids[0]), None, "image a loaded without being asked");

    // The whole set: each its own ID and tag, nothing else moved.
    sb.run(&["restore", "one", "--yes"]).expect_code(0);
    for (r, id) in refs.iter().zip(&ids) {
        assert_eq!(id_of(r).as_deref(), Some(id.as_str()), "{r}");
    }
    assert_eq!(tags(&prefix), before);

    // A drill loads each out of the group under a drill tag (the images
    // are gone, so it loads them) and leaves nothing behind.
    remove(&refs.iter().collect::<Vec<_>>());
    let r = sb.run(&["--json", "drill", "one"]);
    r.expect_code(0);
    let report = r.json();
    assert_eq!(report["ok"], true, "{report}");
    for id in &ids {
        assert_eq!(id_of(id), None, "the drill left {id} behind");
    }
    let mut want = before.clone();
    for r in &refs {
        want.remove(r);
    }
    assert_eq!(tags(&prefix), want);
    sb.run(&["restore", "one", "--yes"]).expect_code(0);

    // One image rebuilt: saved alone; the other two reuse the group.
    let new_c = made.build(&refs[2], &shared, &[("payload", b"c, rebuilt")]);
    assert_ne!(new_c, ids[2]);
    let r = sb.run(&["--json", "backup", "--name", "two"]);
    r.expect_code(0);
    let out = restic_restore(&sb.repo(), "two");
    let m = manifest_of(out.path());
    for r in &refs[..2] {
        let c = &m["components"][format!("docker.image.{r}")];
        assert_eq!(c["archive"], group.as_str(), "{c}");
        assert_eq!(c["reused"], true, "{c}");
    }
    let c = &m["components"][format!("docker.image.{}", refs[2])];
    assert_eq!(c["id"], new_c.as_str());
    assert!(
        c["archive"].as_str().unwrap().starts_with("docker/images/"),
        "{c}"
    );
    assert!(c.get("group").is_none(), "{c}");
    let report = r.json();
    let read: u64 = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["reused"] == false)
        .map(|c| c["size"].as_u64().unwrap())
        .sum();
    assert!(read < single_save_size(&refs[2]) + 4096, "{report}");
    let check = sha256sum_check(out.path());
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);

    // Restored from the second set: the reused group serves a and b.
    remove(&refs.iter().collect::<Vec<_>>());
    sb.run(&["restore", "two", "--yes"]).expect_code(0);
    assert_eq!(id_of(&refs[0]).as_deref(), Some(ids[0].as_str()));
    assert_eq!(id_of(&refs[1]).as_deref(), Some(ids[1].as_str()));
    assert_eq!(id_of(&refs[2]).as_deref(), Some(new_c.as_str()));

    // An export of the first set holds the group once, loadable by hand;
    // it imports back (after the second backup: an imported set is no
    // parent whose content is reused).
    let exported = sb.path().join("exported");
    sb.run(&["export", "one", &exported.to_string_lossy()])
        .expect_code(0);
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "--strict", "CHECKSUM.sha256"])
        .current_dir(&exported)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(exported.join(format!("{group}.gz")).is_file());
    let how = std::fs::read_to_string(exported.join("MANIFEST.md")).unwrap();
    assert!(
        how.contains(&format!("gunzip -c {group}.gz | docker load")),
        "{how}"
    );
    assert!(
        how.contains(&format!("docker tag {} {}", ids[0], refs[0])),
        "{how}"
    );
    remove(&[&refs[0], &refs[1]]);
    let load = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gunzip -c '{}.gz' | docker load -q",
            exported.join(&group).display()
        ))
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    for id in &ids {
        assert!(id_of(id).is_some(), "{id} not loaded from the export");
    }
    for (r, id) in refs.iter().zip(&ids).take(2) {
        docker(&["tag", id, r]).expect_code(0);
    }
    let _ = docker(&["image", "rm", &ids[2]]);
    sb.run(&["import", &exported.to_string_lossy(), "--name", "back"])
        .expect_code(0);
    sb.run(&["verify", "back"]).expect_code(0);

    // The group damaged in the repository: verify says so, the restore
    // refuses before it touches an image.
    backend::Repo::local(&sb.repo()).corrupt_largest_pack();
    sb.run(&["verify", "one", "--read-data"]).expect_code(3);
    remove(&[&refs[0]]);
    let before = tags(&prefix);
    let r = sb.run(&["restore", "one", "--yes"]);
    r.expect_code(3);
    assert!(r.stderr.contains(&group), "{}", r.stderr);
    assert_eq!(tags(&prefix), before);
    assert_eq!(id_of(&refs[0]), None);
    // A drill of the set fails every image of the group, not only the one
    // the group is attributed to.
    let r = sb.run(&["--json", "drill", "one"]);
    r.expect_code(3);
    let report: serde_json::Value = serde_json::Deserializer::from_str(&r.stdout)
        .into_iter::<serde_json::Value>()
        .next()
        .unwrap()
        .unwrap();
    for name in &refs {
        let c = report["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["component"] == format!("docker.image.{name}"))
            .unwrap_or_else(|| panic!("{name} not in {report}"));
        assert_eq!(c["state"], "failed", "{c}");
    }
    assert_eq!(id_of(&refs[0]), None);
}

/// A ustar member (`kind` `0` file), its header checksum computed.
fn tar_member(name: &str, body: &[u8]) -> Vec<u8> {
    let mut hdr = [0u8; 512];
    hdr[..name.len()].copy_from_slice(name.as_bytes());
    hdr[100..108].copy_from_slice(b"0000644\0");
    hdr[108..116].copy_from_slice(b"0000000\0");
    hdr[116..124].copy_from_slice(b"0000000\0");
    hdr[124..136].copy_from_slice(format!("{:011o}\0", body.len()).as_bytes());
    hdr[136..148].copy_from_slice(b"00000000000\0");
    hdr[156] = b'0';
    hdr[257..263].copy_from_slice(b"ustar\0");
    hdr[263..265].copy_from_slice(b"00");
    hdr[148..156].copy_from_slice(b"        ");
    let sum: u32 = hdr.iter().map(|b| u32::from(*b)).sum();
    hdr[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut v = hdr.to_vec();
    v.extend_from_slice(body);
    v.resize(512 + body.len().div_ceil(512) * 512, 0);
    v
}

/// Where the end-of-archive blocks of a tar start.
fn end_of_members(tar: &[u8]) -> usize {
    let mut at = 0;
    while tar[at..at + 512].iter().any(|b| *b != 0) {
        let field = String::from_utf8_lossy(&tar[at + 124..at + 136]).to_string();
        let size =
            usize::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap();
        at += 512 + size.div_ceil(512) * 512;
    }
    at
}

fn sha256_hex(bytes: &[u8]) -> String {
    stack_backup_core::ledger::sha256_hex(bytes)
}

/// Replaces the SHA-256 of `path` in a `sha256sum` file.
fn resum(file: &Path, path: &str, sha: &str) {
    let text: String = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| match l.split_once("  ") {
            Some((_, p)) if p == path => format!("{sha}  {p}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(file, text).unwrap();
}

/// Puts `tar` in place of the artifact `path` of the export in `dir`,
/// every checksum and the manifest's size made to agree, as whoever can
/// edit the directory could.
fn replace_artifact(dir: &Path, path: &str, tar: &[u8]) {
    use std::io::Write;
    let gz = dir.join(format!("{path}.gz"));
    let tar_sha = sha256_hex(tar);
    let mut z = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&gz).unwrap())
        .spawn()
        .unwrap();
    z.stdin.take().unwrap().write_all(tar).unwrap();
    assert!(z.wait().unwrap().success());
    let mpath = dir.join("stack-backup/manifest.json");
    let mut m = manifest_of(dir);
    for a in m["artifacts"].as_array_mut().unwrap() {
        if a["path"] == path {
            a["sha256"] = tar_sha.clone().into();
            a["size"] = (tar.len() as u64).into();
        }
    }
    let json = serde_json::to_vec_pretty(&m).unwrap();
    std::fs::write(&mpath, &json).unwrap();
    let inner = dir.join("stack-backup/CHECKSUM.sha256");
    resum(&inner, path, &tar_sha);
    resum(&inner, "stack-backup/manifest.json", &sha256_hex(&json));
    let top = dir.join("CHECKSUM.sha256");
    resum(
        &top,
        &format!("{path}.gz"),
        &sha256_hex(&std::fs::read(&gz).unwrap()),
    );
    resum(&top, "stack-backup/manifest.json", &sha256_hex(&json));
    resum(
        &top,
        "stack-backup/CHECKSUM.sha256",
        &sha256_hex(&std::fs::read(&inner).unwrap()),
    );
}

/// The uncompressed tar of the export's artifact `path`.
fn exported_tar(dir: &Path, path: &str) -> Vec<u8> {
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(dir.join(format!("{path}.gz")))
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The body of member `name` of `tar`, read by GNU tar.
fn member_of(tar: &[u8], name: &str) -> Vec<u8> {
    use std::io::Write;
    let mut x = std::process::Command::new("tar")
        .args(["-xOf", "-", name])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    x.stdin.take().unwrap().write_all(tar).unwrap();
    let out = x.wait_with_output().unwrap();
    assert!(out.status.success(), "no {name} in the tar");
    out.stdout
}

/// `tar` with the body of its member `name` replaced by `body` (under a
/// fresh ustar header; every other member as it was).
fn with_member(tar: &[u8], name: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut found = false;
    while tar[at..at + 512].iter().any(|b| *b != 0) {
        let field = String::from_utf8_lossy(&tar[at + 124..at + 136]).to_string();
        let size =
            usize::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap();
        let end = at + 512 + size.div_ceil(512) * 512;
        let member = String::from_utf8_lossy(&tar[at..at + 100]);
        if member.trim_end_matches('\0') == name {
            out.extend(tar_member(name, body));
            found = true;
        } else {
            out.extend_from_slice(&tar[at..end]);
        }
        at = end;
    }
    assert!(found, "no {name} in the tar");
    out.extend([0u8; 1024]);
    out
}

#[test]
fn an_image_tar_naming_another_tag_moves_no_tag_on_restore_or_drill() {
    let prefix = unique("sbt-own");
    let mut made = Made { refs: Vec::new() };
    let image = format!("{prefix}-app:latest");
    let id = made.build(&image, &base_image(), &[("payload", b"app")]);
    let victim = format!("{prefix}-victim:keep");
    let victim_id = made.build(&victim, &base_image(), &[("payload", b"victim")]);
    let sb = Sandbox::new();
    sb.write_config("imgown", &format!("[docker]\nimages = [\"{image}\"]\n"));
    sb.init();
    sb.run(&["backup", "--name", "orig"]).expect_code(0);

    // The image's own tar, its manifest.json naming the victim's tag
    // (and the OCI index, were there one): loaded unfiltered, docker load
    // would point the victim's tag at the image.
    let dir = sb.path().join("export");
    sb.run(&["export", "orig", &dir.to_string_lossy()])
        .expect_code(0);
    let archive = manifest_of(&dir)["components"][format!("docker.image.{image}")]["archive"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(archive.starts_with("docker/images/"), "{archive}");
    let tar = exported_tar(&dir, &archive);
    let mut entries: serde_json::Value =
        serde_json::from_slice(&member_of(&tar, "manifest.json")).unwrap();
    entries[0]["RepoTags"] = serde_json::json!([victim]);
    let tampered = with_member(
        &tar,
        "manifest.json",
        &serde_json::to_vec(&entries).unwrap(),
    );
    replace_artifact(&dir, &archive, &tampered);
    sb.run(&["import", &dir.to_string_lossy(), "--name", "evil"])
        .expect_code(0);

    // Drill first (the image is absent, so the drill loads it), then
    // the restore: each loads the image, and the victim's tag stays.
    docker(&["image", "rm", &image]).expect_code(0);
    assert_eq!(id_of(&id), None);
    let drill = sb.run(&["drill", "evil"]);
    assert_eq!(drill.code, 0, "{}{}", drill.stdout, drill.stderr);
    assert!(drill.stdout.contains("PASSED"), "{}", drill.stdout);
    assert_eq!(id_of(&victim).as_deref(), Some(victim_id.as_str()));
    sb.run(&["restore", "evil", "--yes"]).expect_code(0);
    assert_eq!(id_of(&image).as_deref(), Some(id.as_str()));
    assert_eq!(
        id_of(&victim).as_deref(),
        Some(victim_id.as_str()),
        "the restore moved the victim's tag"
    );
}

#[test]
fn a_group_tar_naming_a_file_outside_is_refused_and_nothing_is_loaded() {
    let prefix = unique("sbt-grpx");
    let mut made = Made { refs: Vec::new() };
    let refs: Vec<String> = ["a", "b"]
        .iter()
        .map(|n| format!("{prefix}-{n}:latest"))
        .collect();
    let ids: Vec<String> = refs
        .iter()
        .map(|r| made.build(r, &base_image(), &[("payload", r.as_bytes())]))
        .collect();
    let sb = Sandbox::new();
    let list = refs.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>();
    sb.write_config(
        "imgx",
        &format!("[docker]\nimages = [{}]\n", list.join(", ")),
    );
    sb.init();
    sb.run(&["backup", "--name", "orig"]).expect_code(0);
    // `../escape`; `manifest.json/`, a regular file Docker's tar reader
    // takes for `manifest.json` (after the one the filter rewrote): the
    // full manifest, with another image's tags moved to b.
    let victim = format!("{prefix}-victim:keep");
    for (round, (extra, says)) in [
        ("../escape", "../escape"),
        ("manifest.json/", "ends in `/` but is not a directory"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = sb.path().join(format!("export-{round}"));
        sb.run(&["export", "orig", &dir.to_string_lossy()])
            .expect_code(0);

        // The group tar with a member `../escape` at its end, every checksum and
        // the manifest's size made to agree, as whoever can edit the
        // directory could.
        let m = manifest_of(&dir);
        let group = m["components"][format!("docker.image.{}", refs[0])]["archive"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(group.starts_with("docker/saved/"), "{group}");
        // Last, after manifest.json: a tar cut before it would look whole
        // to docker load, which must therefore be stopped, not given EOF.
        let mut tar = exported_tar(&dir, &group);
        let end = end_of_members(&tar);
        let extra_body = if extra == "manifest.json/" {
            let mut saved: serde_json::Value =
                serde_json::from_slice(&member_of(&tar, "manifest.json")).unwrap();
            for e in saved.as_array_mut().unwrap() {
                if e["Config"] == format!("{}.json", &ids[1][7..]) {
                    e["RepoTags"] = serde_json::json!([victim]);
                }
            }
            serde_json::to_vec(&saved).unwrap()
        } else {
            b"outside".to_vec()
        };
        tar.truncate(end);
        tar.extend(tar_member(extra, &extra_body));
        tar.extend([0u8; 1024]);
        replace_artifact(&dir, &group, &tar);
        let evil = format!("evil-{round}");
        sb.run(&["import", &dir.to_string_lossy(), "--name", &evil])
            .expect_code(0);

        // Images a and b gone (b could be loaded along); the restore of a
        // from the tampered group fails before docker load takes anything,
        // and no tag moves.
        let _ = docker(&["image", "rm", &refs[0]]);
        let _ = docker(&["image", "rm", &refs[1]]);
        let before = tags(&prefix);
        let r = sb.run(&[
            "restore",
            &evil,
            "--only",
            &format!("docker.image.{}", refs[0]),
            "--yes",
        ]);
        assert_ne!(r.code, 0, "{}", r.stderr);
        assert!(r.stderr.contains(says), "{}", r.stderr);
        assert_eq!(
            id_of(&ids[0]),
            None,
            "image a was loaded from a refused tar"
        );
        assert_eq!(
            id_of(&ids[1]),
            None,
            "image b was loaded from a refused tar"
        );
        assert_eq!(tags(&prefix), before);
        assert_eq!(id_of(&victim), None);
        sb.run(&["restore", "orig", "--yes"]).expect_code(0);
    }
    // The untampered set still restores it.
    sb.run(&["restore", "orig", "--yes"]).expect_code(0);
    assert_eq!(id_of(&refs[0]).as_deref(), Some(ids[0].as_str()));
}

fn image_config(sb: &Sandbox, refs: &[&String]) {
    let list = refs.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>();
    sb.write_config(
        "imgs",
        &format!("[docker]\nimages = [{}]\n", list.join(", ")),
    );
}

/// New references to images a group reused from the parent holds load
/// from that group: saving them again planned the group's own path twice
/// (reused and read) and failed every backup.
#[test]
fn new_references_to_a_reused_groups_images_reuse_the_group() {
    let prefix = unique("sbt-grpref");
    let mut made = Made { refs: Vec::new() };
    let shared = format!("{prefix}-shared:latest");
    made.build(&shared, &base_image(), &[("big", &noise(11, 1 << 20))]);
    let a = format!("{prefix}-a:latest");
    let b = format!("{prefix}-b:latest");
    let id_a = made.build(&a, &shared, &[("payload", b"a")]);
    let id_b = made.build(&b, &shared, &[("payload", b"b")]);
    let mut sorted = vec![id_a.clone(), id_b.clone()];
    sorted.sort();

    let sb = Sandbox::new();
    image_config(&sb, &[&a, &b]);
    sb.init();
    sb.run(&["backup", "--name", "one"]).expect_code(0);
    let group = manifest_of(restic_restore(&sb.repo(), "one").path())["components"]
        [format!("docker.image.{a}")]["archive"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(group.starts_with("docker/saved/"), "{group}");

    // a3 and b3: exactly the group's IDs under new names.
    let a3 = format!("{prefix}-a3:latest");
    let b3 = format!("{prefix}-b3:latest");
    for (from, to) in [(&a, &a3), (&b, &b3)] {
        docker(&["tag", from, to]).expect_code(0);
        made.refs.push(to.clone());
    }
    image_config(&sb, &[&a, &b, &a3, &b3]);
    for name in ["two", "three"] {
        let r = sb.run(&["--json", "backup", "--name", name]);
        r.expect_code(0);
        let out = restic_restore(&sb.repo(), name);
        let m = manifest_of(out.path());
        for (r, id) in [(&a, &id_a), (&b, &id_b), (&a3, &id_a), (&b3, &id_b)] {
            let c = &m["components"][format!("docker.image.{r}")];
            assert_eq!(c["id"], id.as_str(), "{c}");
            assert_eq!(c["archive"], group.as_str(), "{name}: {c}");
            assert_eq!(c["group"], serde_json::json!(sorted), "{c}");
            assert_eq!(c["reused"], true, "{name}: {c}");
        }
        let sums =
            std::fs::read_to_string(out.path().join("stack-backup/CHECKSUM.sha256")).unwrap();
        assert_eq!(sums.matches("docker/").count(), 1, "{sums}");
        let check = sha256sum_check(out.path());
        assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    }
    // The new name restores out of the group: its tag only.
    docker(&["image", "rm", &b3]).expect_code(0);
    // Four images out of one group: the disk check counts the group once
    // (the loads run one after another), as much as verify reads.
    let r = sb.run(&["--json", "restore", "three", "--yes"]);
    r.expect_code(0);
    let report = r.json();
    let root = docker(&["info", "--format", "{{.DockerRootDir}}"]);
    let root = root.stdout.trim();
    let preflight = report["steps"][0]["detail"].as_str().unwrap();
    let needs = preflight
        .split("; ")
        .find_map(|p| p.strip_prefix(&format!("{root} needs ")))
        .and_then(|p| p.split(", ").next())
        .unwrap_or_else(|| panic!("{preflight}"));
    let read = report["steps"][1]["detail"].as_str().unwrap();
    assert!(
        read.contains(&format!("1 file(s), {needs} read back")),
        "{preflight} / {read}"
    );
    sb.run(&[
        "restore",
        "three",
        "--only",
        &format!("docker.image.{b3}"),
        "--yes",
    ])
    .expect_code(0);
    assert_eq!(id_of(&b3).as_deref(), Some(id_b.as_str()));
    // One new reference alone (no group of its own to form) reuses it too.
    let a4 = format!("{prefix}-a4:latest");
    docker(&["tag", &a, &a4]).expect_code(0);
    made.refs.push(a4.clone());
    image_config(&sb, &[&a, &b, &a4]);
    sb.run(&["backup", "--name", "four"]).expect_code(0);
    let m = manifest_of(restic_restore(&sb.repo(), "four").path());
    let c = &m["components"][format!("docker.image.{a4}")];
    assert_eq!(c["archive"], group.as_str(), "{c}");
    assert_eq!(c["reused"], true, "{c}");
}

/// A failed `docker save` of a group names every image saved in it (its
/// file is attributed to the first only).
#[test]
fn a_failed_group_save_names_every_image_in_it() {
    let prefix = unique("sbt-grpfail");
    let mut made = Made { refs: Vec::new() };
    let a = format!("{prefix}-a:latest");
    let b = format!("{prefix}-b:latest");
    made.build(&a, &base_image(), &[("payload", b"a")]);
    made.build(&b, &base_image(), &[("payload", b"b")]);
    let w = Wrappers::new();
    w.script(
        "docker",
        &format!(
            "if [ \"$1\" = save ] && [ $# -gt 2 ]; then echo 'save refused by the test' >&2; exit 1; fi\nexec {} \"$@\"",
            which("docker")
        ),
    );
    let mut sb = Sandbox::new();
    sb.env.push((
        "PATH".into(),
        format!("{}:{}", w.path().display(), std::env::var("PATH").unwrap()),
    ));
    image_config(&sb, &[&a, &b]);
    sb.init();
    let r = sb.run(&["backup", "--name", "one"]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("save refused by the test"),
        "{}",
        r.stderr
    );
    for name in [&a, &b] {
        assert!(
            r.stderr.contains(&format!("docker.image.{name}")),
            "{name} not named: {}",
            r.stderr
        );
    }
}
