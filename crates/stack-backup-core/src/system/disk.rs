//! Free-space checks against the `min-free-space` floor.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Free space on one filesystem.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Space {
    /// The path asked about.
    pub path: PathBuf,
    /// Bytes available to this user.
    pub available: u64,
}

/// Bytes available on the filesystem holding `path`. A path that does not
/// exist yet is measured at its nearest existing ancestor.
pub fn available(path: &Path) -> Result<Space> {
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => {
                p = Path::new(".");
                break;
            }
        }
    }
    let st = nix::sys::statvfs::statvfs(p)
        .map_err(|e| Error::io("measuring free space on", p, std::io::Error::from(e)))?;
    #[allow(clippy::unnecessary_cast)]
    let available = st.blocks_available() as u64 * st.fragment_size() as u64;
    Ok(Space {
        path: path.to_path_buf(),
        available,
    })
}

/// Human form of a byte count, e.g. `1.5 GiB`.
#[must_use]
pub fn human(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// Refuses ([`Error::Refused`]) unless `needed + floor` bytes are free on
/// the filesystem of `path`.
pub fn ensure(path: &Path, needed: u64, floor: u64) -> Result<Space> {
    let space = available(path)?;
    let want = needed.saturating_add(floor);
    if space.available < want {
        return Err(Error::Refused(format!(
            "not enough free space on {}: {} free, {} needed ({} for the data + {} floor `min-free-space`)",
            path.display(),
            human(space.available),
            human(want),
            human(needed),
            human(floor)
        )));
    }
    Ok(space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_an_impossible_floor() {
        let dir = tempfile::tempdir().unwrap();
        let err = ensure(dir.path(), 0, u64::MAX / 2).unwrap_err();
        assert!(err.to_string().contains("not enough free space"), "{err}");
        let ok = ensure(&dir.path().join("not/yet"), 0, 1).unwrap();
        assert!(ok.available > 0);
    }
}
