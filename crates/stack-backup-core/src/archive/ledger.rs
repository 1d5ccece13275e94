//! The ledger: what really happened to every artifact of a backup.
//!
//! `rustic_core`'s archiver logs and *skips* an entry whose open or read
//! fails, then saves the snapshot anyway. So every reader handed to it is a
//! [`TrackedReader`] that hashes and counts what passes through and writes
//! the outcome here; a producing process that exits non-zero turns the end
//! of its stream into an error *and* a `Failed` outcome. The backup checks
//! the ledger (and the snapshot's tree) before it lets a snapshot stand.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// What happened to one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Read to the end; the producer (if any) exited successfully.
    Done {
        /// Bytes read.
        size: u64,
        /// SHA-256 of those bytes (as bytes: a backup of 300,000 files
        /// holds one per file until its check).
        sha256: [u8; 32],
    },
    /// Failed; the message says why (never holds a secret).
    Failed(String),
}

/// Receives progress of streamed artifacts (progress bars live in the CLI).
pub trait Observer: Send + Sync {
    /// An artifact started to be read.
    fn started(&self, _component: &str, _artifact: &str) {}
    /// `n` more bytes of an artifact were read.
    fn bytes(&self, _component: &str, _n: u64) {}
    /// An artifact finished (successfully or not).
    fn finished(&self, _component: &str, _artifact: &str, _ok: bool) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;
impl Observer for Quiet {}

/// Outcomes by artifact path (snapshot path without the leading `/`).
#[derive(Default)]
pub struct Ledger {
    outcomes: Mutex<BTreeMap<String, Outcome>>,
    component_failures: Mutex<Vec<(String, String)>>,
    seconds: Mutex<BTreeMap<String, f64>>,
    observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("outcomes", &self.outcomes)
            .finish()
    }
}

impl Ledger {
    /// A ledger reporting progress to `observer`.
    pub fn new(observer: Option<Arc<dyn Observer>>) -> Self {
        Self {
            observer,
            ..Self::default()
        }
    }

    /// Records the outcome of an artifact; a failure is never overwritten
    /// by a later success.
    pub fn record(&self, artifact: &str, outcome: Outcome) {
        let mut map = self.outcomes.lock().expect("ledger lock");
        if matches!(map.get(artifact), Some(Outcome::Failed(_))) {
            return;
        }
        map.insert(artifact.to_string(), outcome);
    }

    /// Records a failure of a component that is not tied to one artifact
    /// (e.g. a directory that could not be listed).
    pub fn fail_component(&self, component: &str, message: String) {
        self.component_failures
            .lock()
            .expect("ledger lock")
            .push((component.to_string(), message));
    }

    /// The outcome of an artifact, if it was read at all.
    pub fn get(&self, artifact: &str) -> Option<Outcome> {
        self.outcomes
            .lock()
            .expect("ledger lock")
            .get(artifact)
            .cloned()
    }

    /// The outcome of an artifact, taken out of the ledger (a backup's
    /// check reads each once, and a set may have 300,000 of them).
    pub fn take(&self, artifact: &str) -> Option<Outcome> {
        self.outcomes.lock().expect("ledger lock").remove(artifact)
    }

    /// Failures recorded against components.
    pub fn component_failures(&self) -> Vec<(String, String)> {
        self.component_failures.lock().expect("ledger lock").clone()
    }

    /// Seconds spent reading each component's artifacts (summed).
    pub fn seconds(&self) -> BTreeMap<String, f64> {
        self.seconds.lock().expect("ledger lock").clone()
    }

    fn add_seconds(&self, component: &str, secs: f64) {
        *self
            .seconds
            .lock()
            .expect("ledger lock")
            .entry(component.to_string())
            .or_default() += secs;
    }

    pub(crate) fn observer(&self) -> Option<&Arc<dyn Observer>> {
        self.observer.as_ref()
    }
}

/// Something to check once a producing process has ended.
pub struct ChildGuard {
    /// The process writing the stream.
    pub child: Child,
    /// What the process is, for messages (e.g. `pg_dump`).
    pub what: String,
    /// Collects the child's stderr (returns its last lines).
    pub stderr: Option<JoinHandle<String>>,
}

/// A reader that hashes and counts its bytes, checks the producer's exit
/// status at the end, and records the outcome in the [`Ledger`].
///
/// Contract: the outcome is `Done` only when the reader reached the end of
/// the stream, the expected leading bytes (`magic`) were there, and the
/// producer exited with status 0. Dropping it before the end kills the
/// producer and records `Failed`.
pub struct TrackedReader<R: Read> {
    inner: R,
    hasher: Sha256,
    size: u64,
    artifact: String,
    component: String,
    ledger: Arc<Ledger>,
    child: Option<ChildGuard>,
    magic: Option<&'static [u8]>,
    head: Vec<u8>,
    finished: bool,
    started: std::time::Instant,
}

impl<R: Read> TrackedReader<R> {
    /// Wraps `inner`, an artifact of `component` stored at `artifact`.
    pub fn new(
        inner: R,
        artifact: impl Into<String>,
        component: impl Into<String>,
        ledger: Arc<Ledger>,
        child: Option<ChildGuard>,
        magic: Option<&'static [u8]>,
    ) -> Self {
        let artifact = artifact.into();
        let component = component.into();
        if let Some(o) = ledger.observer() {
            o.started(&component, &artifact);
        }
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
            artifact,
            component,
            ledger,
            child,
            magic,
            head: Vec::new(),
            finished: false,
            started: std::time::Instant::now(),
        }
    }

    fn fail(&mut self, message: String) -> std::io::Error {
        self.finished = true;
        self.ledger
            .add_seconds(&self.component, self.started.elapsed().as_secs_f64());
        if let Some(mut g) = self.child.take() {
            let _ = g.child.kill();
            let _ = g.child.wait();
        }
        self.ledger
            .record(&self.artifact, Outcome::Failed(message.clone()));
        if let Some(o) = self.ledger.observer() {
            o.finished(&self.component, &self.artifact, false);
        }
        std::io::Error::other(format!("{}: {message}", self.component))
    }

    fn finish(&mut self) -> std::io::Result<()> {
        if let Some(magic) = self.magic {
            if !self.head.starts_with(magic) {
                let msg = format!(
                    "{} is not a valid artifact: it does not start with {:?} ({} bytes read)",
                    self.artifact,
                    String::from_utf8_lossy(magic),
                    self.size
                );
                return Err(self.fail(msg));
            }
        }
        if let Some(mut g) = self.child.take() {
            let status = g.child.wait();
            let stderr = g
                .stderr
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default();
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => {
                    let mut msg = format!("{} failed ({s})", g.what);
                    if !stderr.trim().is_empty() {
                        msg.push_str(": ");
                        msg.push_str(stderr.trim());
                    }
                    return Err(self.fail(msg));
                }
                Err(e) => return Err(self.fail(format!("waiting for {}: {e}", g.what))),
            }
        }
        self.finished = true;
        self.ledger
            .add_seconds(&self.component, self.started.elapsed().as_secs_f64());
        let sha256 = std::mem::take(&mut self.hasher).finalize().into();
        self.ledger.record(
            &self.artifact,
            Outcome::Done {
                size: self.size,
                sha256,
            },
        );
        if let Some(o) = self.ledger.observer() {
            o.finished(&self.component, &self.artifact, true);
        }
        Ok(())
    }
}

impl<R: Read> Read for TrackedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.finished {
            return Ok(0);
        }
        match self.inner.read(buf) {
            Ok(0) => {
                self.finish()?;
                Ok(0)
            }
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.size += n as u64;
                if let Some(magic) = self.magic {
                    if self.head.len() < magic.len() {
                        let take = (magic.len() - self.head.len()).min(n);
                        self.head.extend_from_slice(&buf[..take]);
                    }
                }
                if let Some(o) = self.ledger.observer() {
                    o.bytes(&self.component, n as u64);
                }
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => Err(self.fail(format!("reading {}: {e}", self.artifact))),
        }
    }
}

impl<R: Read> Drop for TrackedReader<R> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.fail(format!("{} was not read to the end", self.artifact));
        }
    }
}

/// SHA-256 of a byte slice, lowercase hex.
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn drain(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        Ok(v)
    }

    fn hex_literal(s: &str) -> [u8; 32] {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).unwrap();
        b
    }

    #[test]
    fn records_size_and_hash_of_a_clean_stream() {
        let ledger = Arc::new(Ledger::default());
        let mut r = TrackedReader::new(&b"hello"[..], "a/b", "c", ledger.clone(), None, None);
        assert_eq!(drain(&mut r).unwrap(), b"hello");
        assert_eq!(
            ledger.get("a/b"),
            Some(Outcome::Done {
                size: 5,
                // sha256sum of "hello"
                sha256: hex_literal(
                    "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
                )
            })
        );
    }

    #[test]
    fn a_producer_exiting_non_zero_fails_the_stream() {
        let ledger = Arc::new(Ledger::default());
        let mut child = Command::new("sh")
            .args(["-c", "printf partial; exit 3"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let guard = ChildGuard {
            child,
            what: "dumper".into(),
            stderr: None,
        };
        let mut r =
            TrackedReader::new(out, "x", "postgres.main", ledger.clone(), Some(guard), None);
        let err = drain(&mut r).unwrap_err();
        assert!(err.to_string().contains("dumper failed"), "{err}");
        assert!(
            matches!(ledger.get("x"), Some(Outcome::Failed(m)) if m.contains("exit status: 3"))
        );
    }

    #[test]
    fn wrong_magic_and_early_drop_fail() {
        let ledger = Arc::new(Ledger::default());
        let mut r = TrackedReader::new(
            &b"garbage"[..],
            "m",
            "c",
            ledger.clone(),
            None,
            Some(b"PGDMP"),
        );
        assert!(drain(&mut r).is_err());
        assert!(matches!(ledger.get("m"), Some(Outcome::Failed(_))));

        let r = TrackedReader::new(&b"abc"[..], "d", "c", ledger.clone(), None, None);
        drop(r);
        assert!(
            matches!(ledger.get("d"), Some(Outcome::Failed(m)) if m.contains("not read to the end"))
        );
    }
}
