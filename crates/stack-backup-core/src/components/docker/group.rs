//! Loading images out of a `docker save` tar from a set: an image's own
//! tar, or a group (several images saved by one `docker save`,
//! `docker/saved/…`).
//!
//! Such a tar is input read from a repository: [`only_images`] copies it
//! through a strict filter. Every member's bytes pass unchanged, under a
//! fresh header written from what the filter parsed (never the input's
//! own, which Docker's tar reader could read differently), except
//! `manifest.json`, replaced by one holding only the wanted images'
//! entries with `RepoTags` null, and `repositories`, `index.json` and
//! `oci-layout`, left out: so `docker load` adds no tag and moves no other
//! image's tag (the caller tags what it loaded). Only POSIX ustar headers
//! with plain octal numbers, regular files, directories and the
//! `<layer>/layer.tar -> ../<layer>/layer.tar` symlinks `docker save`
//! writes for a repeated layer are accepted, under relative names without
//! `..`; the one extension is a PAX header holding only the `size` of the
//! regular file after it (Go's tar writer uses it for a file of 8 GiB or
//! more). A truncated tar is an error, never a shorter stream. The classic
//! layout (`<id>.json`) and the OCI one engines from 25 on write
//! (`blobs/sha256/<id>`, named by a `manifest.json` too) are both read;
//! without `index.json` an engine loads the OCI one from `manifest.json`,
//! as it loads a classic tar. The kept entries' `Layers` are not matched
//! against the members: Docker checks them itself (paths inside the tar,
//! layer digests against the config's).

use std::io::{Read, Write};
use std::process::Stdio;

use sha2::{Digest, Sha256};

use crate::components::restoring::SetContext;
use crate::components::ComponentId;
use crate::error::{Error, Result};

/// The largest `manifest.json` read (a group of hundreds of images stays
/// far below).
pub(super) const MAX_MANIFEST: u64 = 1 << 20;

fn bad(m: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, m.into())
}

/// Reads one 512-byte block; `false` at a clean end of input.
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

/// A member name `docker save` can write: relative, no `..`, no empty
/// component (a directory's trailing `/` aside).
fn safe_name(name: &str) -> bool {
    let name = name.strip_suffix('/').unwrap_or(name);
    !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// `../<64 hex>/layer.tar`: the only symlink target `docker save` writes.
fn layer_link(target: &str) -> bool {
    target
        .strip_prefix("../")
        .and_then(|t| t.strip_suffix("/layer.tar"))
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn header_checksum_ok(hdr: &[u8; 512]) -> bool {
    let mut blank = *hdr;
    blank[148..156].copy_from_slice(b"        ");
    let sum: u64 = blank.iter().map(|b| u64::from(*b)).sum();
    let stored = cstr(&hdr[148..156]);
    u64::from_str_radix(stored.trim_matches(|c: char| c == ' ' || c == '\0'), 8) == Ok(sum)
}

/// One member's header as the filter reads it: the only fields written
/// out again (owner, group and everything else are left out).
#[derive(Clone)]
struct Member {
    /// Relative, without a trailing `/` (a directory gets it back when
    /// written).
    name: String,
    /// `b'0'`, `b'2'` or `b'5'` (an old-style `\0` file reads as `b'0'`).
    kind: u8,
    size: u64,
    mode: u64,
    mtime: u64,
    link: String,
}

/// A numeric field as `docker save` (Go's `archive/tar`) writes it: octal
/// digits from the first byte, ended by a NUL or space, then nothing but
/// NULs and spaces. Go's reader is laxer (leading NULs and spaces,
/// base-256), which is why a member is never forwarded under its own
/// header: a field two readers could read differently is refused here.
fn octal(f: &[u8], what: &str) -> std::io::Result<u64> {
    let digits = f.iter().take_while(|b| (b'0'..=b'7').contains(b)).count();
    let rest = &f[digits..];
    if digits == 0
        || rest.is_empty()
        || !matches!(rest[0], 0 | b' ')
        || rest.iter().any(|b| !matches!(b, 0 | b' '))
    {
        return Err(bad(format!(
            "a tar header whose {what} is not plain octal ({:?}); docker save writes nothing else",
            String::from_utf8_lossy(f)
        )));
    }
    let text = std::str::from_utf8(&f[..digits]).map_err(|_| bad(what.to_string()))?;
    u64::from_str_radix(text, 8).map_err(|_| bad(format!("a tar header's {what} overflows")))
}

/// A text field up to its first NUL; only printable ASCII without spaces
/// (every name `docker save` writes is hex, `/`, `.` and a few words).
fn text(f: &[u8], what: &str) -> std::io::Result<String> {
    let end = f.iter().position(|c| *c == 0).unwrap_or(f.len());
    if f[end..].iter().any(|b| *b != 0) || !f[..end].iter().all(u8::is_ascii_graphic) {
        return Err(bad(format!(
            "a tar header whose {what} is not plain ASCII ({:?})",
            String::from_utf8_lossy(f)
        )));
    }
    Ok(String::from_utf8_lossy(&f[..end]).into_owned())
}

/// Reads one header strictly: POSIX ustar magic (`ustar\0` `00`; the GNU
/// `ustar  \0` gives the prefix field another meaning), no name prefix,
/// no PAX or GNU extension headers (docker 20.10's `docker save` writes
/// none: its names are short and its times whole seconds), a trailing `/`
/// only on a directory, and the checks on names and links.
fn parse_header(hdr: &[u8; 512]) -> std::io::Result<Member> {
    if &hdr[257..263] != b"ustar\0" || &hdr[263..265] != b"00" {
        return Err(bad(format!(
            "a tar header that is not POSIX ustar (magic {:?}); docker save writes nothing else",
            String::from_utf8_lossy(&hdr[257..265])
        )));
    }
    let raw = text(&hdr[0..100], "name")?;
    if hdr[345..500].iter().any(|b| *b != 0) {
        return Err(bad(format!(
            "the tar member `{raw}` has a name prefix; docker save writes none"
        )));
    }
    let kind = match hdr[156] {
        0 | b'0' => b'0',
        k @ (b'2' | b'5') => k,
        b'x' | b'g' => {
            return Err(bad(
                "the image tar has a PAX header docker save does not write (global, or two in a row)",
            ))
        }
        k => {
            return Err(bad(format!(
                "the image tar has a member `{raw}` of type `{}`; only files, directories and layer links are accepted",
                char::from(k)
            )))
        }
    };
    let name = match raw.strip_suffix('/') {
        Some(n) if kind == b'5' => n.to_string(),
        Some(_) => {
            return Err(bad(format!(
                "the image tar has a member `{raw}` whose name ends in `/` but is not a directory"
            )))
        }
        None => raw.clone(),
    };
    if !safe_name(&name) {
        return Err(bad(format!(
            "the image tar has a member named `{raw}` (absolute or with `..`)"
        )));
    }
    let m = Member {
        size: octal(&hdr[124..136], "size")?,
        mode: octal(&hdr[100..108], "mode")?,
        mtime: octal(&hdr[136..148], "mtime")?,
        link: text(&hdr[157..257], "link name")?,
        name,
        kind,
    };
    match kind {
        b'2' if !m.name.ends_with("/layer.tar") || !layer_link(&m.link) || m.size != 0 => {
            Err(bad(format!(
                "the image tar has a symlink `{}` -> `{}` that docker save does not write",
                m.name, m.link
            )))
        }
        b'0' if !m.link.is_empty() => Err(bad(format!(
            "the image tar's file `{}` names a link target",
            m.name
        ))),
        b'5' if m.size != 0 || !m.link.is_empty() => Err(bad(format!(
            "the image tar's directory `{}` has a size or link target",
            m.name
        ))),
        _ => Ok(m),
    }
}

/// A POSIX ustar header holding exactly `m` (owner root, no prefix).
fn fresh_header(m: &Member) -> std::io::Result<[u8; 512]> {
    let name = if m.kind == b'5' {
        format!("{}/", m.name)
    } else {
        m.name.clone()
    };
    if name.len() > 100 || m.link.len() > 100 {
        return Err(bad(format!("the tar member name `{name}` is too long")));
    }
    let mut hdr = [0u8; 512];
    hdr[..name.len()].copy_from_slice(name.as_bytes());
    let field = |v: u64, width: usize, what: &str| {
        let s = format!("{v:0w$o}\0", w = width - 1);
        (s.len() == width)
            .then_some(s)
            .ok_or_else(|| bad(format!("the tar member `{name}`: {what} too large")))
    };
    hdr[100..108].copy_from_slice(field(m.mode, 8, "mode")?.as_bytes());
    hdr[108..116].copy_from_slice(b"0000000\0");
    hdr[116..124].copy_from_slice(b"0000000\0");
    hdr[124..136].copy_from_slice(field(m.size, 12, "size")?.as_bytes());
    hdr[136..148].copy_from_slice(field(m.mtime, 12, "mtime")?.as_bytes());
    hdr[156] = m.kind;
    hdr[157..157 + m.link.len()].copy_from_slice(m.link.as_bytes());
    hdr[257..263].copy_from_slice(b"ustar\0");
    hdr[263..265].copy_from_slice(b"00");
    hdr[148..156].copy_from_slice(b"        ");
    let sum: u32 = hdr.iter().map(|b| u32::from(*b)).sum();
    hdr[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(hdr)
}

/// The largest PAX header read (one `size` record is some 30 bytes).
const MAX_PAX: u64 = 512;

/// The members `docker load` is not given: the tags an image tar carries
/// besides `manifest.json` (`repositories`; an OCI `index.json` names
/// images in its annotations) and the OCI marker that would make an
/// engine read `index.json` instead of `manifest.json`.
const LEFT_OUT: [&str; 3] = ["repositories", "index.json", "oci-layout"];

/// The `size` of a PAX extended header: its only record, `N size=D\n`
/// with `N` the record's own length in decimal; anything else is refused
/// (a `path`, `linkpath` or GNU sparse record would make Docker read
/// another member than the one checked here).
fn pax_size(input: &mut dyn Read, hdr: &[u8; 512]) -> std::io::Result<u64> {
    if &hdr[257..263] != b"ustar\0" || &hdr[263..265] != b"00" {
        return Err(bad("a PAX header that is not POSIX ustar"));
    }
    let len = octal(&hdr[124..136], "size")?;
    if len > MAX_PAX {
        return Err(bad("a PAX header larger than 512 bytes"));
    }
    let mut body = [0u8; 512];
    input.read_exact(&mut body)?;
    let record = &body[..usize::try_from(len).map_err(|_| bad("size"))?];
    let refused = || {
        bad(format!(
            "the image tar has a PAX header other than one `size` ({:?}); docker save writes no other",
            String::from_utf8_lossy(record)
        ))
    };
    let text = std::str::from_utf8(record).map_err(|_| refused())?;
    let (n, rest) = text.split_once(' ').ok_or_else(refused)?;
    let value = rest
        .strip_prefix("size=")
        .and_then(|v| v.strip_suffix('\n'))
        .ok_or_else(refused)?;
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(n) || !digits(value) || n.parse::<usize>().ok() != Some(text.len()) {
        return Err(refused());
    }
    value.parse().map_err(|_| refused())
}

/// The next member's header, strictly read (see [`parse_header`]); a PAX
/// header is read with it and its `size` taken for the member's, which
/// must then be a regular file.
fn read_member(input: &mut dyn Read, hdr: &mut [u8; 512]) -> std::io::Result<Member> {
    if hdr[156] != b'x' {
        return parse_header(hdr);
    }
    let size = pax_size(input, hdr)?;
    if !read_block(input, hdr)? || hdr.iter().all(|b| *b == 0) {
        return Err(bad("the image tar ends after a PAX header (truncated)"));
    }
    if !header_checksum_ok(hdr) {
        return Err(bad("a tar header with a bad checksum"));
    }
    let m = parse_header(hdr)?;
    if m.kind != b'0' {
        return Err(bad(format!(
            "the image tar has a PAX header before `{}`, which is not a regular file",
            m.name
        )));
    }
    Ok(Member { size, ..m })
}

/// Writes `m`'s header: a fresh ustar one, after a PAX header holding
/// only its size when the size does not fit in ustar's 11 octal digits.
fn write_header(out: &mut dyn Write, m: &Member) -> std::io::Result<()> {
    const USTAR_MAX: u64 = (1 << 33) - 1;
    if m.size <= USTAR_MAX {
        return out.write_all(&fresh_header(m)?);
    }
    let record = {
        let tail = format!(" size={}\n", m.size);
        // The length counts its own digits.
        let mut n = tail.len() + 1;
        while format!("{n}{tail}").len() != n {
            n += 1;
        }
        format!("{n}{tail}")
    };
    let pax = Member {
        name: "PaxHeader".into(),
        kind: b'x',
        size: record.len() as u64,
        mode: 0o644,
        mtime: m.mtime,
        link: String::new(),
    };
    out.write_all(&fresh_header(&pax)?)?;
    out.write_all(record.as_bytes())?;
    out.write_all(&vec![0u8; 512 - record.len()])?;
    out.write_all(&fresh_header(&Member {
        size: 0,
        ..m.clone()
    })?)
}

/// Copies the image tar `input` (an image's own `docker save`, or a
/// group's) to `out` as a tar holding images `ids` (`sha256:…`) alone in
/// its `manifest.json`, untagged. Fails, having written an incomplete
/// tar, when the tar is not what `docker save` writes, when one of `ids`
/// is not in it, or when it is truncated: the caller must then make sure
/// the consumer does not take what was written for a whole tar.
pub(super) fn only_images(
    input: &mut dyn Read,
    out: &mut dyn Write,
    ids: &[String],
) -> std::io::Result<()> {
    let mut manifest_done = false;
    let mut hdr = [0u8; 512];
    loop {
        if !read_block(input, &mut hdr)? {
            return Err(bad(
                "the image tar ends without its end-of-archive blocks (truncated)",
            ));
        }
        if hdr.iter().all(|b| *b == 0) {
            let mut second = [0u8; 512];
            if !read_block(input, &mut second)? || second.iter().any(|b| *b != 0) {
                return Err(bad("the image tar's end-of-archive is damaged"));
            }
            if !manifest_done {
                return Err(bad("the image tar has no manifest.json"));
            }
            out.write_all(&hdr)?;
            out.write_all(&second)?;
            std::io::copy(input, &mut std::io::sink())?;
            return Ok(());
        }
        if !header_checksum_ok(&hdr) {
            return Err(bad("a tar header with a bad checksum"));
        }
        // Docker never sees this header: the member goes out under a
        // fresh one written from what was parsed here, so that docker
        // load reads exactly the member the checks passed.
        let m = read_member(input, &mut hdr)?;
        let (name, kind, size) = (m.name.clone(), m.kind, m.size);
        let padded = size.div_ceil(512) * 512;
        match (kind, name.as_str()) {
            (b'0', "manifest.json") => {
                if manifest_done {
                    return Err(bad("the image tar has two manifest.json"));
                }
                if size > MAX_MANIFEST {
                    return Err(bad("the image tar's manifest.json is larger than 1 MiB"));
                }
                let mut body = vec![0u8; usize::try_from(padded).map_err(|_| bad("size"))?];
                input.read_exact(&mut body)?;
                body.truncate(usize::try_from(size).map_err(|_| bad("size"))?);
                let new = only_entries(&body, ids)?;
                write_header(
                    out,
                    &Member {
                        size: new.len() as u64,
                        ..m
                    },
                )?;
                out.write_all(&new)?;
                out.write_all(&vec![0u8; (512 - new.len() % 512) % 512])?;
                manifest_done = true;
            }
            (b'0', n) if LEFT_OUT.contains(&n) => {
                let n = std::io::copy(&mut input.take(padded), &mut std::io::sink())?;
                if n != padded {
                    return Err(bad("the image tar ends inside a file (truncated)"));
                }
            }
            (_, n) if n == "manifest.json" || LEFT_OUT.contains(&n) => {
                return Err(bad(format!("the image tar's {name} is not a regular file")));
            }
            _ => {
                write_header(out, &m)?;
                let n = std::io::copy(&mut input.take(size), out)?;
                let pad = padded - size;
                let skipped = std::io::copy(&mut input.take(pad), &mut std::io::sink())?;
                if n != size || skipped != pad {
                    return Err(bad("the image tar ends inside a file (truncated)"));
                }
                // The padding is written anew too: nothing of the input
                // reaches docker but the members' bytes.
                out.write_all(&vec![0u8; usize::try_from(pad).map_err(|_| bad("size"))?])?;
            }
        }
    }
}

/// Whether a `manifest.json` entry's `Config` names image `id`: in the
/// classic layout `<hex>.json`, in the OCI one `blobs/sha256/<hex>`.
fn names_image(config: &str, id: &str) -> bool {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    config.strip_suffix(".json") == Some(hex) || config.strip_prefix("blobs/sha256/") == Some(hex)
}

/// `manifest.json` with the entries of images `ids` alone (in the order of
/// `ids`), their `RepoTags` null.
fn only_entries(body: &[u8], ids: &[String]) -> std::io::Result<Vec<u8>> {
    let entries: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the image tar's manifest.json cannot be read: {e}")))?;
    let mut kept = Vec::with_capacity(ids.len());
    for id in ids {
        let mut entry = entries
            .iter()
            .find(|e| {
                e.get("Config")
                    .and_then(|c| c.as_str())
                    .is_some_and(|c| names_image(c, id))
            })
            .cloned()
            .ok_or_else(|| {
                bad(format!(
                    "image {} is not in the image tar's manifest.json",
                    id.strip_prefix("sha256:").unwrap_or(id)
                ))
            })?;
        entry.insert("RepoTags".into(), serde_json::Value::Null);
        kept.push(entry);
    }
    serde_json::to_vec(&kept).map_err(|e| bad(e.to_string()))
}

/// A reader that hashes what passes through it.
struct Hashing<R>(R, Sha256);

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.update(&buf[..n]);
        Ok(n)
    }
}

/// Loads images `ids` out of the image tar `archive` of the set (an
/// image's own, or a group's) with one `docker load`, untagged: the caller
/// tags them. Returns the SHA-256 of the tar as read. When the filter
/// fails, `docker load` is killed before its input ends, so that it loads
/// nothing (it unpacks the whole stream before it loads any image).
pub(super) fn load(
    set: &SetContext,
    id: &ComponentId,
    archive: &str,
    ids: &[String],
) -> Result<String> {
    let c = id.as_str();
    let node = set.node(id, archive)?;
    let mut child = crate::process::command("docker")
        .args(["load", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::component(c, format!("cannot run docker load: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let (r, w) = nix::unistd::pipe().map_err(|e| Error::component(c, format!("pipe: {e}")))?;
    let (r, mut w) = (std::fs::File::from(r), std::fs::File::from(w));
    let (filtered, hash, wrote) = std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let res = set.repo.dump(&node, &mut w);
            drop(w);
            res.map_err(|e| e.display_log())
        });
        let mut input = Hashing(r, Sha256::new());
        let filtered = only_images(&mut input, &mut stdin, ids).and_then(|()| stdin.flush());
        if filtered.is_err() {
            // Before stdin closes: a tar cut at a member boundary would
            // look whole to docker load.
            let _ = child.kill();
        }
        drop(stdin);
        let hash = hex::encode(input.1.finalize());
        drop(input.0);
        let wrote = writer.join().unwrap_or_else(|_| Err("panicked".into()));
        (filtered, hash, wrote)
    });
    let out = child
        .wait_with_output()
        .map_err(|e| Error::component(c, format!("docker load: {e}")))?;
    // The filter stopping closes the pipe under the reader (a broken
    // pipe there says nothing more); a failed read truncates what the
    // filter sees: say both.
    match (filtered, wrote) {
        (Err(e), Err(m)) => {
            return Err(Error::Verification(format!(
                "{c}: {}: {e} (reading it from the set: {m}); nothing was loaded",
                archive
            )))
        }
        (Err(e), Ok(())) => {
            return Err(Error::Verification(format!(
                "{c}: {}: {e}; nothing was loaded",
                archive
            )))
        }
        (Ok(()), Err(m)) => {
            return Err(Error::Verification(format!(
                "{c}: reading {} from the set failed: {m}",
                archive
            )))
        }
        (Ok(()), Ok(())) => {}
    }
    if !out.status.success() {
        return Err(Error::component(
            c,
            format!(
                "docker load failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const L1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const L2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn header(name: &str, kind: u8, size: u64, link: &str) -> [u8; 512] {
        let mut hdr = [0u8; 512];
        hdr[..name.len()].copy_from_slice(name.as_bytes());
        hdr[100..108].copy_from_slice(b"0000644\0");
        hdr[136..148].copy_from_slice(b"15303147271\0");
        hdr[156] = kind;
        hdr[157..157 + link.len()].copy_from_slice(link.as_bytes());
        hdr[257..263].copy_from_slice(b"ustar\0");
        hdr[263..265].copy_from_slice(b"00");
        set_size(&mut hdr, size);
        hdr
    }

    fn member(name: &str, kind: u8, body: &[u8], link: &str) -> Vec<u8> {
        let mut v = header(name, kind, body.len() as u64, link).to_vec();
        v.extend_from_slice(body);
        v.resize(512 + body.len().div_ceil(512) * 512, 0);
        v
    }

    fn file(name: &str, body: &[u8]) -> Vec<u8> {
        member(name, b'0', body, "")
    }

    fn manifest() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!([
            {"Config": format!("{}.json", &A[7..]), "RepoTags": ["a:latest"],
             "Layers": [format!("{L1}/layer.tar")]},
            {"Config": format!("{}.json", &B[7..]), "RepoTags": ["b:latest"],
             "Layers": [format!("{L1}/layer.tar"), format!("{L2}/layer.tar")]},
        ]))
        .unwrap()
    }

    /// What `docker save A B` writes, in its (lexical) order.
    fn group_tar(manifest: &[u8]) -> Vec<u8> {
        let mut t = member(&format!("{L1}/"), b'5', b"", "");
        t.extend(file(&format!("{L1}/layer.tar"), b"shared layer bytes"));
        t.extend(member(&format!("{L2}/"), b'5', b"", ""));
        t.extend(member(
            &format!("{L2}/layer.tar"),
            b'2',
            b"",
            &format!("../{L1}/layer.tar"),
        ));
        t.extend(file(&format!("{}.json", &A[7..]), b"{\"config\":\"a\"}"));
        t.extend(file(&format!("{}.json", &B[7..]), b"{\"config\":\"b\"}"));
        t.extend(file("manifest.json", manifest));
        t.extend(file("repositories", b"{\"a\":{\"latest\":\"x\"}}"));
        t.extend([0u8; 1024]);
        t
    }

    fn filter(tar: &[u8], id: &str) -> std::io::Result<Vec<u8>> {
        filter_ids(tar, &[id])
    }

    fn filter_ids(tar: &[u8], ids: &[&str]) -> std::io::Result<Vec<u8>> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let mut out = Vec::new();
        only_images(&mut &tar[..], &mut out, &ids).map(|()| out)
    }

    /// The members of a tar: (name, type, body).
    fn members(tar: &[u8]) -> Vec<(String, u8, Vec<u8>)> {
        let mut v = Vec::new();
        let mut at = 0;
        while at + 512 <= tar.len() {
            let hdr: [u8; 512] = tar[at..at + 512].try_into().unwrap();
            if hdr.iter().all(|b| *b == 0) {
                break;
            }
            assert!(header_checksum_ok(&hdr), "a rewritten header's checksum");
            let size = usize::try_from(tar_size(&hdr[124..136]).unwrap()).unwrap();
            v.push((
                tar_name(&hdr),
                hdr[156],
                tar[at + 512..at + 512 + size].to_vec(),
            ));
            at += 512 + size.div_ceil(512) * 512;
        }
        v
    }

    #[test]
    fn one_image_keeps_every_member_but_its_manifest_and_drops_repositories() {
        let tar = group_tar(&manifest());
        let out = filter(&tar, B).unwrap();
        assert_eq!(out.len() % 512, 0);
        assert!(out.ends_with(&[0u8; 1024]));
        let got = members(&out);
        let names: Vec<&str> = got.iter().map(|m| m.0.as_str()).collect();
        assert!(!names.contains(&"repositories"), "{names:?}");
        assert_eq!(names.len(), 7, "{names:?}");
        // Everything else as it was.
        for (orig, new) in members(&tar).iter().zip(&got).take(6) {
            assert_eq!(orig, new);
        }
        let m: serde_json::Value = serde_json::from_slice(&got[6].2).unwrap();
        assert_eq!(m.as_array().unwrap().len(), 1, "{m}");
        assert_eq!(m[0]["Config"], format!("{}.json", &B[7..]));
        assert!(m[0]["RepoTags"].is_null(), "{m}");
        assert_eq!(m[0]["Layers"].as_array().unwrap().len(), 2);
        // Both images, in the order asked, untagged.
        let out = filter_ids(&tar, &[B, A]).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&members(&out)[6].2).unwrap();
        assert_eq!(m.as_array().unwrap().len(), 2, "{m}");
        assert_eq!(m[0]["Config"], format!("{}.json", &B[7..]));
        assert_eq!(m[1]["Config"], format!("{}.json", &A[7..]));
        assert!(
            m[0]["RepoTags"].is_null() && m[1]["RepoTags"].is_null(),
            "{m}"
        );
        let c = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
        let err = filter_ids(&tar, &[A, c]).unwrap_err();
        assert!(err.to_string().contains("is not in"), "{err}");
    }

    fn fails(tar: &[u8], id: &str, says: &str) {
        let err = filter(tar, id).unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }

    /// `first` put before a whole group tar fails the filter, saying `says`.
    fn fails_before_group(first: Vec<u8>, says: &str) {
        let mut tar = first;
        tar.extend(group_tar(&manifest()));
        fails(&tar, A, says);
    }

    #[test]
    fn an_image_missing_from_the_manifest_is_an_error() {
        let c = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
        fails(
            &group_tar(&manifest()),
            c,
            "is not in the image tar's manifest.json",
        );
    }

    #[test]
    fn names_leaving_the_tar_and_foreign_links_are_refused() {
        for name in ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b"] {
            fails_before_group(file(name, b"x"), "absolute or with `..`");
        }
        for (name, link) in [
            (format!("{L2}/layer.tar"), "/etc/shadow".to_string()),
            (format!("{L2}/layer.tar"), format!("../../{L1}/layer.tar")),
            (format!("{L2}/json"), format!("../{L1}/layer.tar")),
        ] {
            fails_before_group(member(&name, b'2', b"", &link), "symlink");
        }
        fails_before_group(member("dev", b'3', b"", ""), "of type `3`");
        fails_before_group(member("x", b'1', b"", "manifest.json"), "of type `1`");
        fails_before_group(
            member("pax", b'x', b"30 path=../../etc/passwd\n", ""),
            "PAX header",
        );
    }

    #[test]
    fn an_oversized_or_broken_manifest_is_refused() {
        let mut big = manifest();
        big.truncate(big.len() - 1);
        big.extend(std::iter::repeat_n(b' ', 1 << 20));
        big.push(b']');
        fails(&group_tar(&big), A, "larger than 1 MiB");
        fails(&group_tar(b"{\"not\":\"a list\"}"), A, "cannot be read");
        let mut no_manifest = file("x.json", b"{}");
        no_manifest.extend([0u8; 1024]);
        fails(&no_manifest, A, "no manifest.json");
    }

    #[test]
    fn a_truncated_tar_is_an_error() {
        let tar = group_tar(&manifest());
        // Inside a member, at a member boundary (no end blocks), inside
        // the end blocks, inside a header.
        for cut in [700, 1024, tar.len() - 512, tar.len() - 1024, 1536 + 100] {
            let err = filter(&tar[..cut], A).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("truncated")
                    || text.contains("end-of-archive")
                    || err.kind() == std::io::ErrorKind::UnexpectedEof,
                "cut at {cut}: {err}"
            );
        }
        // A damaged header checksum.
        let mut bad = tar.clone();
        bad[10] ^= 1;
        fails(&bad, A, "bad checksum");
    }

    fn rechecksum(hdr: &mut [u8]) {
        hdr[148..156].copy_from_slice(b"        ");
        let sum: u32 = hdr[..512].iter().map(|b| u32::from(*b)).sum();
        hdr[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    /// `group_tar` with its first member's header changed by `edit`.
    fn first_header_edited(edit: impl Fn(&mut [u8])) -> Vec<u8> {
        let mut tar = file("extra", b"0123456789");
        edit(&mut tar[..512]);
        rechecksum(&mut tar);
        tar.extend(group_tar(&manifest()));
        tar
    }

    #[test]
    fn a_trailing_slash_on_anything_but_a_directory_is_refused() {
        // Docker's reader takes `manifest.json/` for `manifest.json`: a
        // second manifest (with another image's tags) would replace the
        // one the filter wrote.
        let full = manifest();
        for name in ["manifest.json/", "repositories/", "x.json/"] {
            let mut tar = group_tar(&full);
            tar.truncate(tar.len() - 1024);
            tar.extend(file(name, &full));
            tar.extend([0u8; 1024]);
            fails(&tar, A, "ends in `/` but is not a directory");
        }
        let mut tar = group_tar(&full);
        tar.truncate(tar.len() - 1024);
        tar.extend(member("manifest.json/", b'5', b"", ""));
        tar.extend([0u8; 1024]);
        fails(&tar, A, "manifest.json is not a regular file");
    }

    #[test]
    fn numbers_two_readers_could_read_differently_are_refused() {
        // Go strips leading NULs and spaces (reads 10); a lax parser cut
        // at the first NUL reads 0 and the two lose step.
        for size in [
            &b"\x00\x00000000012\x00"[..],
            b"  000000012\0",
            b"00000000012 ",
            b"0000000001x\0",
            b"\0\0\0\0\0\0\0\0\0\0\0\0",
        ] {
            let tar = first_header_edited(|h| {
                h[124..136].fill(0);
                h[124..124 + size.len()].copy_from_slice(size);
            });
            if size == b"00000000012 " {
                // Ended by a space: plain octal, read as 10.
                filter(&tar, A).unwrap();
            } else {
                fails(&tar, A, "size is not plain octal");
            }
        }
        // Base-256 (GNU) sizes.
        let tar = first_header_edited(|h| {
            h[124..136].fill(0);
            h[124] = 0x80;
            h[135] = 10;
        });
        fails(&tar, A, "size is not plain octal");
        let tar = first_header_edited(|h| h[136..148].copy_from_slice(b"\x0015303147271"));
        fails(&tar, A, "mtime is not plain octal");
    }

    #[test]
    fn pax_gnu_magic_and_name_prefixes_are_refused() {
        for records in [
            &b"14 size=1000\n"[..],
            b"30 GNU.sparse.name=manifest.json\n",
            b"20 mtime=1.5\n",
        ] {
            for kind in [b'x', b'g'] {
                fails_before_group(member("pax", kind, records, ""), "PAX header");
            }
        }
        // GNU magic: Go reads the prefix field as atime/ctime there.
        let tar = first_header_edited(|h| h[257..265].copy_from_slice(b"ustar  \0"));
        fails(&tar, A, "not POSIX ustar");
        let tar = first_header_edited(|h| h[257..265].fill(0));
        fails(&tar, A, "not POSIX ustar");
        let tar = first_header_edited(|h| h[345..350].copy_from_slice(b"sub/x"));
        fails(&tar, A, "name prefix");
        for kind in [b'L', b'K', b'S', b'1', b'7'] {
            let tar = first_header_edited(|h| h[156] = kind);
            fails(&tar, A, "of type");
        }
        let tar = first_header_edited(|h| h[0..6].copy_from_slice(b"ex tra"));
        fails(&tar, A, "not plain ASCII");
    }

    #[test]
    fn members_go_out_under_fresh_headers_and_padding() {
        // Owner names, a STAR trailer and junk padding in the input reach
        // docker as nothing: each header is written from the parsed fields.
        let mut tar = first_header_edited(|h| {
            h[265..269].copy_from_slice(b"evil");
            h[108..116].copy_from_slice(b"0001750\0");
            h[508..512].copy_from_slice(b"tar\0");
        });
        tar[512 + 10..1024].fill(b'Z');
        let out = filter(&tar, A).unwrap();
        let hdr: [u8; 512] = out[..512].try_into().unwrap();
        let expected = fresh_header(&Member {
            name: "extra".into(),
            kind: b'0',
            size: 10,
            mode: 0o644,
            mtime: 0o15303147271,
            link: String::new(),
        })
        .unwrap();
        assert_eq!(hdr, expected);
        assert!(hdr[265..512].iter().all(|b| *b == 0));
        assert_eq!(&out[512..522], b"0123456789");
        assert!(out[522..1024].iter().all(|b| *b == 0), "padding rewritten");
        // Every header of the output parses back to itself.
        let mut at = 0;
        while out[at..at + 512].iter().any(|b| *b != 0) {
            let h: [u8; 512] = out[at..at + 512].try_into().unwrap();
            let m = parse_header(&h).unwrap();
            assert_eq!(fresh_header(&m).unwrap(), h);
            at += 512 + usize::try_from(m.size.div_ceil(512) * 512).unwrap();
        }
    }

    /// What an engine from 25 on writes for image A alone: the OCI layout,
    /// with a `manifest.json` naming its blobs, and its tag in three places.
    fn oci_tar() -> Vec<u8> {
        let manifest = serde_json::to_vec(&serde_json::json!([
            {"Config": format!("blobs/sha256/{}", &A[7..]), "RepoTags": ["a:latest"],
             "Layers": [format!("blobs/sha256/{L1}")]},
        ]))
        .unwrap();
        let mut t = member("blobs/", b'5', b"", "");
        t.extend(member("blobs/sha256/", b'5', b"", ""));
        t.extend(file(&format!("blobs/sha256/{L1}"), b"layer bytes"));
        t.extend(file(
            &format!("blobs/sha256/{}", &A[7..]),
            b"{\"config\":\"a\"}",
        ));
        t.extend(file(
            "index.json",
            b"{\"manifests\":[{\"annotations\":{\"io.containerd.image.name\":\"a:latest\"}}]}",
        ));
        t.extend(file("manifest.json", &manifest));
        t.extend(file("oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}"));
        t.extend(file("repositories", b"{\"a\":{\"latest\":\"x\"}}"));
        t.extend([0u8; 1024]);
        t
    }

    #[test]
    fn the_oci_layout_loads_from_its_manifest_without_its_tags() {
        let out = filter(&oci_tar(), A).unwrap();
        let got = members(&out);
        let names: Vec<&str> = got.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "blobs/".to_string(),
                "blobs/sha256/".into(),
                format!("blobs/sha256/{L1}"),
                format!("blobs/sha256/{}", &A[7..]),
                "manifest.json".into(),
            ]
        );
        let m: serde_json::Value = serde_json::from_slice(&got[4].2).unwrap();
        assert_eq!(m[0]["Config"], format!("blobs/sha256/{}", &A[7..]));
        assert!(m[0]["RepoTags"].is_null(), "{m}");
        assert!(!String::from_utf8_lossy(&out).contains("a:latest"));
        // A config of another image's name is not taken for A's.
        fails(&oci_tar(), B, "is not in");
    }

    /// A PAX header holding `records`, then a regular file of `body`.
    fn pax_file(records: &[u8], name: &str, body: &[u8]) -> Vec<u8> {
        let mut t = member("PaxHeader", b'x', records, "");
        let mut f = file(name, body);
        // Go writes the ustar size as zero when the PAX one counts.
        f[124..136].copy_from_slice(b"00000000000\0");
        rechecksum(&mut f);
        t.extend(f);
        t
    }

    #[test]
    fn a_pax_size_is_read_and_nothing_else_of_pax() {
        let mut tar = pax_file(b"11 size=10\n", "big", b"0123456789");
        tar.extend(group_tar(&manifest()));
        let out = filter(&tar, A).unwrap();
        let got = members(&out);
        assert_eq!(got[0], ("big".to_string(), b'0', b"0123456789".to_vec()));
        for records in [
            &b"12 size=10\n"[..],
            b"11 size=+9\n",
            b"11 size=10\n11 size=10\n",
            b"11 path=bi\n",
            b"11 size=10 ",
        ] {
            fails_before_group(pax_file(records, "big", b"0123456789"), "PAX header");
        }
        // Before a directory, a link or another PAX header.
        fails_before_group(
            member("PaxHeader", b'x', b"10 size=0\n", ""),
            "not a regular file",
        );
        let mut tar = member("PaxHeader", b'x', b"11 size=10\n", "");
        tar.extend(pax_file(b"11 size=10\n", "big", b"0123456789"));
        tar.extend(group_tar(&manifest()));
        fails(&tar, A, "PAX header");
    }

    #[test]
    fn a_member_of_8_gib_or_more_goes_out_with_a_pax_size_read_back_alike() {
        let m = Member {
            name: "big/layer.tar".into(),
            kind: b'0',
            size: 9 << 30,
            mode: 0o644,
            mtime: 1,
            link: String::new(),
        };
        let mut out = Vec::new();
        write_header(&mut out, &m).unwrap();
        assert_eq!(out.len(), 1536);
        let mut input = &out[512..];
        let mut hdr: [u8; 512] = out[..512].try_into().unwrap();
        assert!(header_checksum_ok(&hdr));
        let back = read_member(&mut input, &mut hdr).unwrap();
        assert_eq!((back.name.as_str(), back.size), ("big/layer.tar", 9 << 30));
        // Below the limit: a plain ustar header.
        let mut out = Vec::new();
        write_header(
            &mut out,
            &Member {
                size: (1 << 33) - 1,
                ..m
            },
        )
        .unwrap();
        assert_eq!(out.len(), 512);
    }
}
