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
}

impl ImageDrill {
    pub(super) fn new(scratch: &Scratch, id: &ComponentId, record: ImageRecord) -> Self {
        Self {
            tag: scratch.image_tag(id),
            id: id.clone(),
            record,
            tagged: false,
            present: false,
        }
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

    fn restore(&mut self, set: &SetContext) -> Result<String> {
        let want = self.want(set)?;
        let c = self.id.as_str().to_string();
        if engine::image_id(&self.record.id).is_ok() {
            // The drill's verify step read the tar and checked its SHA-256.
            self.present = true;
            return Ok("image ID already present: not loaded (its tar was verified)".into());
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

/// Removes the drill tags of drill `prefix` (`stack-backup-drill:<id>-`).
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
        match name.as_str() {
            "manifest.json" | "index.json" if regular && size <= MAX_META => {
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
            "repositories" if regular => {
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

fn read_block(input: &mut dyn Read, buf: &mut [u8; 512]) -> std::io::Result<bool> {
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

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn tar_name(hdr: &[u8; 512]) -> String {
    let (name, prefix) = (cstr(&hdr[0..100]), cstr(&hdr[345..500]));
    let full = if prefix.is_empty() || &hdr[257..262] != b"ustar" {
        name
    } else {
        format!("{prefix}/{name}")
    };
    full.trim_start_matches("./").to_string()
}

/// A size field: octal text, or base-256 (high bit set) for large files.
fn tar_size(f: &[u8]) -> Option<u64> {
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

fn set_size(hdr: &mut [u8; 512], size: u64) {
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
}
