//! An image of the set in a drill. When the engine already has the
//! image's ID, it is not loaded: the drill's verify step has read its tar
//! from the set and checked its SHA-256 (the ID is the identity, the tar
//! the proof that the set holds it). Otherwise the tar is loaded with its own tags taken out on
//! the way (so that `docker load` cannot move a live tag such as
//! `shop-web:latest`), tagged `stack-backup-drill:<id>-<name>`, its ID
//! compared, and the drill tag removed afterwards (which deletes the image
//! only when nothing else tags it: it was not there before).

use std::io::{Read, Write};
use std::process::Stdio;

use sha2::{Digest, Sha256};

use super::engine;
use super::ImageRecord;
use crate::components::drilling::{Drilled, Scratch, IMAGE_REPO};
use crate::components::restoring::{Lane, SetContext};
use crate::components::ComponentId;
use crate::error::{Error, Result};

/// The drill of one image.
pub(super) struct ImageDrill {
    id: ComponentId,
    record: ImageRecord,
    tag: String,
    tagged: bool,
    present: bool,
    /// `<state>/drill/<id>/loaded-images`: the IDs this drill loads.
    loaded: std::path::PathBuf,
}

impl ImageDrill {
    pub(super) fn new(scratch: &Scratch, id: &ComponentId, record: ImageRecord) -> Self {
        Self {
            tag: scratch.image_tag(id),
            id: id.clone(),
            record,
            tagged: false,
            present: false,
            loaded: scratch.dir.join(LOADED),
        }
    }

    /// Records the image ID in the drill's directory (fsynced) before it
    /// is loaded: a drill killed between `docker load` and `docker tag`
    /// leaves an untagged image that only this record names.
    fn record_load(&self) -> Result<()> {
        use std::io::Write as _;
        std::fs::create_dir_all(&self.loaded)
            .map_err(|e| Error::io("creating", &self.loaded, e))?;
        let path = self.loaded.join(self.record.id.replace(':', "_"));
        std::fs::File::create(&path)
            .and_then(|mut f| {
                f.write_all(self.record.id.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::File::open(&self.loaded)?.sync_all())
            .map_err(|e| Error::io("writing", &path, e))
    }

    fn want(&self, set: &SetContext) -> Result<String> {
        set.checksums
            .get(&self.record.archive)
            .cloned()
            .ok_or_else(|| {
                Error::Verification(format!(
                    "{}: {} has no checksum in CHECKSUM.sha256",
                    self.id, self.record.archive
                ))
            })
    }

    /// Streams the tar from the set through `out`, returning its SHA-256.
    fn stream(
        &self,
        set: &SetContext,
        out: &mut dyn FnMut(&mut dyn Read) -> std::io::Result<()>,
    ) -> Result<String> {
        let c = self.id.as_str();
        let node = set.node(&self.id, &self.record.archive)?;
        let (r, w) = nix::unistd::pipe().map_err(|e| Error::component(c, format!("pipe: {e}")))?;
        let (mut r, mut w) = (std::fs::File::from(r), std::fs::File::from(w));
        std::thread::scope(|s| {
            let writer = s.spawn(move || {
                let res = set.repo.dump(&node, &mut w);
                drop(w);
                res.map_err(|e| e.display_log())
            });
            let mut hashing = Hashing(&mut r, Sha256::new());
            let read = out(&mut hashing)
                .and_then(|()| std::io::copy(&mut hashing, &mut std::io::sink()).map(|_| ()));
            let hash = hex::encode(hashing.1.finalize());
            drop(r);
            let wrote = writer.join().unwrap_or_else(|_| Err("panicked".into()));
            wrote.map_err(|m| {
                Error::Verification(format!(
                    "{c}: reading {} from the set failed: {m}",
                    self.record.archive
                ))
            })?;
            read.map_err(|e| Error::component(c, format!("streaming the image tar: {e}")))?;
            Ok(hash)
        })
    }
}

impl Drilled for ImageDrill {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn lane(&self) -> Lane {
        Lane::Images
    }

    /// The loaded image in the engine's data root, unless the engine
    /// already has it (it is then not loaded).
    fn disk_needs(&self, set: &SetContext) -> Result<crate::components::DiskNeeds> {
        if engine::image_id(&self.record.id).is_ok() {
            return Ok(Vec::new());
        }
        Ok(vec![(set.docker_root()?, set.artifact_bytes(&self.id))])
    }

    fn disk_shared(&self) -> Option<&str> {
        (!self.record.group.is_empty()).then_some(self.record.archive.as_str())
    }

    fn restore(&mut self, set: &SetContext) -> Result<String> {
        let want = self.want(set)?;
        let c = self.id.as_str().to_string();
        if engine::image_id(&self.record.id).is_ok() {
            // The drill's verify step read the tar and checked its SHA-256.
            self.present = true;
            return Ok("image ID already present: not loaded (its tar was verified)".into());
        }
        self.record_load()?;
        if !self.record.group.is_empty() {
            // This image alone out of its group, untagged.
            let got = super::group::load(set, &self.id, &self.record)?;
            if got != want {
                return Err(Error::Verification(format!(
                    "{c}: {} does not match its checksum",
                    self.record.archive
                )));
            }
            crate::process::output(&c, "docker", &["tag", &self.record.id, &self.tag])?;
            self.tagged = true;
            return Ok(format!("loaded from its group and tagged {}", self.tag));
        }
        let mut child = crate::process::command("docker")
            .args(["load", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::component(&c, format!("cannot run docker load: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let streamed = self.stream(set, &mut |input| untagged(input, &mut stdin));
        drop(stdin);
        let out = child
            .wait_with_output()
            .map_err(|e| Error::component(&c, format!("docker load: {e}")))?;
        let got = streamed?;
        if got != want {
            return Err(Error::Verification(format!(
                "{c}: {} does not match its checksum",
                self.record.archive
            )));
        }
        if !out.status.success() {
            return Err(Error::Verification(format!(
                "{c}: docker load failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        crate::process::output(&c, "docker", &["tag", &self.record.id, &self.tag])?;
        self.tagged = true;
        Ok(format!("loaded and tagged {}", self.tag))
    }

    fn check(&mut self, _set: &SetContext) -> Result<String> {
        let reference = if self.tagged {
            &self.tag
        } else {
            &self.record.id
        };
        let got = engine::image_id(reference).map_err(|e| {
            Error::Verification(format!("{}: {reference} not in the engine: {e}", self.id))
        })?;
        if got != self.record.id {
            return Err(Error::Verification(format!(
                "{}: {reference} is {got}, the set's image is {}",
                self.id, self.record.id
            )));
        }
        Ok(format!(
            "ID {} {}",
            &got[..got.len().min(19)],
            if self.present {
                "(present before)"
            } else {
                "(loaded)"
            }
        ))
    }

    fn remove(&mut self) -> Result<()> {
        if self.tagged {
            remove_tag(&self.tag)?;
            self.tagged = false;
        }
        if !self.present {
            // Loaded but the tag failed: the image is untagged.
            remove_untagged(&self.record.id)?;
        }
        Ok(())
    }

    fn kept(&self) -> String {
        if self.tagged {
            format!(
                "{}: image {} (docker image rm {})",
                self.id, self.tag, self.tag
            )
        } else {
            String::new()
        }
    }
}

fn remove_tag(tag: &str) -> Result<()> {
    if engine::image_id(tag).is_err() {
        return Ok(());
    }
    crate::process::output("docker", "docker", &["image", "rm", tag]).map(|_| ())
}

/// The directory of a drill recording the image IDs it loads.
const LOADED: &str = "loaded-images";

/// Removes image `id` when it is in the engine with no tag and no
/// container (of any state) made from it: what a drill loaded and did not
/// get to tag. Returns whether it removed it.
fn remove_untagged(id: &str) -> Result<bool> {
    let Ok(info) = crate::process::output(
        "docker",
        "docker",
        &["image", "inspect", "--format", "{{len .RepoTags}}", id],
    ) else {
        return Ok(false);
    };
    if info.trim() != "0" {
        return Ok(false);
    }
    let users = crate::process::output(
        "docker",
        "docker",
        &[
            "ps",
            "--all",
            "--quiet",
            "--filter",
            &format!("ancestor={id}"),
        ],
    )?;
    if !users.trim().is_empty() {
        return Ok(false);
    }
    crate::process::output("docker", "docker", &["image", "rm", id])?;
    Ok(true)
}

/// Removes the drill tags of drill `prefix` (`stack-backup-drill:<id>-`),
/// then the images it recorded loading that are left untagged and unused.
pub(super) fn clean(scratch: &Scratch) -> Result<Vec<String>> {
    let listed = crate::process::output(
        "docker",
        "docker",
        &["images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO],
    )?;
    let prefix = format!("{IMAGE_REPO}:{}-", scratch.id);
    let mut removed = Vec::new();
    for tag in listed.lines().filter(|t| t.starts_with(&prefix)) {
        remove_tag(tag)?;
        removed.push(format!("image tag {tag}"));
    }
    let dir = scratch.dir.join(LOADED);
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Ok(id) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if id.starts_with("sha256:") && remove_untagged(&id)? {
            removed.push(format!("untagged image {id}"));
        }
    }
    Ok(removed)
}

/// A reader that hashes what passes through it.
struct Hashing<'a, R>(&'a mut R, Sha256);

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.update(&buf[..n]);
        Ok(n)
    }
}

/// The largest metadata file rewritten (manifest.json, index.json).
const MAX_META: u64 = 16 << 20;

/// Copies a `docker save` tar with the image's own tags taken out:
/// `RepoTags` of `manifest.json` emptied, the annotations naming it in an
/// OCI `index.json` dropped, the legacy `repositories` file left out.
/// Everything else passes unchanged.
fn untagged(input: &mut dyn Read, out: &mut dyn Write) -> std::io::Result<()> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut hdr = [0u8; 512];
    loop {
        if !read_block(input, &mut hdr)? {
            return Ok(());
        }
        if hdr.iter().all(|b| *b == 0) {
            out.write_all(&hdr)?;
            std::io::copy(input, out)?;
            return Ok(());
        }
        let size = tar_size(&hdr[124..136]).ok_or_else(|| bad("a tar header with a bad size"))?;
        let padded = size.div_ceil(512) * 512;
        let name = tar_name(&hdr);
        let regular = matches!(hdr[156], 0 | b'0');
        // A PAX or GNU long-name header names the entry after it: read
        // it, and refuse when it renames that entry to a file that tags
        // (the rewriter would pass it through and `docker load` could
        // move a live tag). Other extended headers pass unchanged.
        if matches!(hdr[156], b'x' | b'g' | b'L') {
            if size > MAX_META {
                return Err(bad("an extended tar header larger than 16 MiB"));
            }
            let mut body = vec![0u8; usize::try_from(padded).map_err(|_| bad("size"))?];
            input.read_exact(&mut body)?;
            let data = &body[..usize::try_from(size).map_err(|_| bad("size"))?];
            let long = if hdr[156] == b'L' {
                Some(cstr(data))
            } else {
                pax_path(data)
            };
            if long.is_some_and(|n| tags_file(n.trim_start_matches("./"))) {
                return Err(bad(
                    "the image's tar names its manifest through a PAX/GNU long-name header; its tags cannot be taken out",
                ));
            }
            out.write_all(&hdr)?;
            out.write_all(&body)?;
            continue;
        }
        if tags_file(&name) && (!regular || size > MAX_META) {
            return Err(bad(&format!(
                "{name} in the image's tar is not a regular file of at most 16 MiB; its tags cannot be taken out"
            )));
        }
        match name.as_str() {
            "manifest.json" | "index.json" => {
                let mut body = vec![0u8; usize::try_from(padded).map_err(|_| bad("size"))?];
                input.read_exact(&mut body)?;
                body.truncate(usize::try_from(size).map_err(|_| bad("size"))?);
                let new = strip_tags(&body).ok_or_else(|| bad("unreadable manifest.json"))?;
                set_size(&mut hdr, new.len() as u64);
                out.write_all(&hdr)?;
                out.write_all(&new)?;
                let pad = (512 - new.len() % 512) % 512;
                out.write_all(&vec![0u8; pad])?;
            }
            "repositories" => {
                std::io::copy(&mut input.take(padded), &mut std::io::sink())?;
            }
            _ => {
                out.write_all(&hdr)?;
                let n = std::io::copy(&mut input.take(padded), out)?;
                if n != padded {
                    return Err(bad("the tar ends inside a file"));
                }
            }
        }
    }
}

/// A file of a `docker save` tar that names tags.
fn tags_file(name: &str) -> bool {
    matches!(name, "manifest.json" | "index.json" | "repositories")
}

/// The `path` record of a PAX extended header (`<len> path=<value>\n`).
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .filter_map(|l| l.split_once(' ').map(|(_, kv)| kv))
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "path")
        .map(|(_, v)| v.to_string())
        .next_back()
}

pub(super) fn read_block(input: &mut dyn Read, buf: &mut [u8; 512]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let n = input.read(&mut buf[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(false)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    Ok(true)
}

pub(super) fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

pub(super) fn tar_name(hdr: &[u8; 512]) -> String {
    let (name, prefix) = (cstr(&hdr[0..100]), cstr(&hdr[345..500]));
    let full = if prefix.is_empty() || &hdr[257..262] != b"ustar" {
        name
    } else {
        format!("{prefix}/{name}")
    };
    full.trim_start_matches("./").to_string()
}

/// A size field: octal text, or base-256 (high bit set) for large files.
pub(super) fn tar_size(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        return Some(f[1..].iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)));
    }
    let s = cstr(f);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

pub(super) fn set_size(hdr: &mut [u8; 512], size: u64) {
    hdr[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    hdr[148..156].copy_from_slice(b"        ");
    let sum: u32 = hdr.iter().map(|b| u32::from(*b)).sum();
    hdr[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn strip_tags(body: &[u8]) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(items) = v.as_array_mut() {
        for m in items {
            if let Some(o) = m.as_object_mut() {
                o.insert("RepoTags".into(), serde_json::Value::Null);
            }
        }
    }
    if let Some(ms) = v.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        for m in ms {
            if let Some(o) = m.as_object_mut() {
                o.remove("annotations");
            }
        }
    }
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, body: &[u8]) -> Vec<u8> {
        let mut hdr = [0u8; 512];
        hdr[..name.len()].copy_from_slice(name.as_bytes());
        hdr[100..108].copy_from_slice(b"0000644\0");
        hdr[156] = b'0';
        hdr[257..263].copy_from_slice(b"ustar\0");
        set_size(&mut hdr, body.len() as u64);
        let mut v = hdr.to_vec();
        v.extend_from_slice(body);
        v.resize(512 + body.len().div_ceil(512) * 512, 0);
        v
    }

    #[test]
    fn the_image_tags_are_taken_out_and_the_rest_passes() {
        let mut tar = entry("abc/layer.tar", b"layer bytes");
        tar.extend(entry("repositories", b"{\"shop\":{\"latest\":\"x\"}}"));
        tar.extend(entry(
            "manifest.json",
            b"[{\"Config\":\"c.json\",\"RepoTags\":[\"shop:latest\"],\"Layers\":[\"abc/layer.tar\"]}]",
        ));
        tar.extend([0u8; 1024]);
        let mut out = Vec::new();
        untagged(&mut tar.as_slice(), &mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("layer bytes"));
        assert!(!text.contains("shop:latest") && !text.contains("repositories"));
        assert!(text.contains("\"RepoTags\":null"));
        assert_eq!(out.len() % 512, 0);
        // The rewritten header's checksum is valid.
        let hdr: [u8; 512] = out[1024..1536].try_into().unwrap();
        let mut blank = hdr;
        blank[148..156].copy_from_slice(b"        ");
        let sum: u32 = blank.iter().map(|b| u32::from(*b)).sum();
        assert_eq!(cstr(&hdr[148..155]).trim(), format!("{sum:06o}"));
    }

    #[test]
    fn a_manifest_behind_a_long_name_header_fails() {
        for (kind, body) in [
            (b'L', b"./manifest.json\0".to_vec()),
            (b'x', b"24 path=./manifest.json\n".to_vec()),
        ] {
            let mut tar = entry("././@LongLink", &body);
            tar[156] = kind;
            tar.extend(entry(
                "x",
                b"[{\"Config\":\"c.json\",\"RepoTags\":[\"shop:latest\"]}]",
            ));
            tar.extend([0u8; 1024]);
            let err = untagged(&mut tar.as_slice(), &mut Vec::new()).unwrap_err();
            assert!(err.to_string().contains("long-name"), "{err}");
        }
        // Another long name passes through unchanged.
        let mut tar = entry("././@LongLink", b"blobs/sha256/long\0");
        tar[156] = b'L';
        tar.extend([0u8; 1024]);
        let mut out = Vec::new();
        untagged(&mut tar.as_slice(), &mut out).unwrap();
        assert_eq!(out, tar);
    }
}
