//! The node_exporter textfile (`*.prom`) of a [`Status`].
//!
//! The file is replaced atomically (written beside as `.FILE.tmp` in the
//! same directory, then renamed), so the collector never reads half of it.
//! Metrics without a value (no drill yet, no verify yet) are left out, as
//! Prometheus expects of an unknown.

use std::fmt::Write as _;
use std::path::Path;

use crate::status::Status;

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Families in the order declared, each with its samples: the format wants
/// a family's samples together, after its `# TYPE`.
struct Doc(Vec<(String, String, Vec<String>)>);

impl Doc {
    fn family(&mut self, name: &str, help: &str) {
        self.0.push((name.into(), help.into(), Vec::new()));
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        if let Some(f) = self.0.iter_mut().find(|f| f.0 == name) {
            f.2.push(format!("{name}{{{}}} {value}", l.join(",")));
        }
    }
    fn text(&self) -> String {
        let mut out = String::new();
        for (name, help, samples) in &self.0 {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for s in samples {
                let _ = writeln!(out, "{s}");
            }
        }
        out
    }
}

/// The text of the file.
#[must_use]
pub fn render(st: &Status) -> String {
    let mut d = Doc(Vec::new());
    sets(&mut d, st);
    checks(&mut d, st);
    copies_and_size(&mut d, st);
    runs(&mut d, st);
    d.text()
}

/// Per component and tier: the newest set; per tier: how many.
fn sets(d: &mut Doc, st: &Status) {
    let stack = st.stack.as_str();
    d.family(
        "stack_backup_last_success_timestamp_seconds",
        "Time of the newest backup set holding the component, per tier.",
    );
    for c in &st.components {
        for (tier, b) in &c.by_tier {
            d.sample(
                "stack_backup_last_success_timestamp_seconds",
                &[
                    ("stack", stack),
                    ("component", &c.component),
                    ("tier", tier.as_str()),
                ],
                b.timestamp as f64,
            );
        }
    }
    d.family(
        "stack_backup_tier_sets",
        "Number of backup sets in the tier.",
    );
    d.family(
        "stack_backup_tier_last_set_timestamp_seconds",
        "Time of the newest backup set of the tier.",
    );
    for t in &st.tiers {
        d.sample(
            "stack_backup_tier_sets",
            &[("stack", stack), ("tier", t.tier.as_str())],
            t.sets as f64,
        );
        if let Some(n) = &t.newest {
            d.sample(
                "stack_backup_tier_last_set_timestamp_seconds",
                &[("stack", stack), ("tier", t.tier.as_str())],
                n.timestamp as f64,
            );
        }
    }
}

/// The last verify and the newest drill.
fn checks(d: &mut Doc, st: &Status) {
    let stack = st.stack.as_str();
    let s = [("stack", stack)];
    d.family(
        "stack_backup_last_verify_timestamp_seconds",
        "Start of the last verify run on this machine.",
    );
    d.family(
        "stack_backup_last_verify_success",
        "1 when the last verify found everything right.",
    );
    if let Some(v) = &st.last_verify {
        d.sample(
            "stack_backup_last_verify_timestamp_seconds",
            &s,
            v.timestamp as f64,
        );
        d.sample(
            "stack_backup_last_verify_success",
            &s,
            f64::from(u8::from(v.run.succeeded())),
        );
    }
    d.family(
        "stack_backup_last_drill_timestamp_seconds",
        "Time of the newest restore drill (absent: no drill yet).",
    );
    d.family(
        "stack_backup_last_drill_rto_seconds",
        "Restore time measured by the newest drill.",
    );
    d.family(
        "stack_backup_last_drill_success",
        "1 when the newest drill passed.",
    );
    if let Some(dr) = &st.last_drill {
        if let Ok(t) = dr.time.parse::<jiff::Timestamp>() {
            d.sample(
                "stack_backup_last_drill_timestamp_seconds",
                &s,
                t.as_second() as f64,
            );
        }
        d.sample("stack_backup_last_drill_rto_seconds", &s, dr.rto_seconds);
        d.sample(
            "stack_backup_last_drill_success",
            &s,
            f64::from(u8::from(dr.ok)),
        );
    }
}

/// Copy lag per target, the repository's size and growth.
fn copies_and_size(d: &mut Doc, st: &Status) {
    let stack = st.stack.as_str();
    let s = [("stack", stack)];
    d.family(
        "stack_backup_copy_lag_seconds",
        "Age of the oldest set not yet copied to the target (0: all copied).",
    );
    d.family(
        "stack_backup_copy_pending_sets",
        "Sets not yet copied to the target.",
    );
    for c in &st.copies {
        let l = [("stack", stack), ("target", c.target.as_str())];
        d.sample("stack_backup_copy_lag_seconds", &l, c.lag_seconds as f64);
        d.sample("stack_backup_copy_pending_sets", &l, c.pending as f64);
    }
    d.family(
        "stack_backup_repository_bytes",
        "Bytes of the repository's files.",
    );
    if let Some(b) = st.repository_bytes {
        d.sample("stack_backup_repository_bytes", &s, b as f64);
    }
    d.family(
        "stack_backup_repository_added_7d_bytes",
        "Bytes added to the repository by the sets of the last 7 days.",
    );
    d.sample(
        "stack_backup_repository_added_7d_bytes",
        &s,
        st.added_7d_bytes as f64,
    );
}

/// The last run of each command, and the max-age violations.
fn runs(d: &mut Doc, st: &Status) {
    let stack = st.stack.as_str();
    let s = [("stack", stack)];
    d.family(
        "stack_backup_last_duration_seconds",
        "Duration of the last run of the command on this machine.",
    );
    d.family(
        "stack_backup_last_run_timestamp_seconds",
        "Start of the last run of the command on this machine.",
    );
    d.family(
        "stack_backup_last_run_success",
        "1 when the last run of the command succeeded.",
    );
    for r in &st.last_runs {
        let l = [("stack", stack), ("command", r.run.command.as_str())];
        d.sample(
            "stack_backup_last_duration_seconds",
            &l,
            r.run.duration_seconds,
        );
        d.sample(
            "stack_backup_last_run_timestamp_seconds",
            &l,
            r.timestamp as f64,
        );
        d.sample(
            "stack_backup_last_run_success",
            &l,
            f64::from(u8::from(r.run.succeeded())),
        );
    }
    d.family(
        "stack_backup_status_violations",
        "Components older than their max-age.",
    );
    d.sample(
        "stack_backup_status_violations",
        &s,
        st.violations.len() as f64,
    );
}

/// Writes `text` to `path` atomically (beside, fsync, rename).
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map_or_else(
        || "metrics.prom".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    // Created exclusively (`O_EXCL` never follows a symlink planted at the
    // name: the textfile directory is often writable by the exporter's
    // user); a leftover of a killed run is removed first, as an entry.
    let tmp = dir.join(format!(".{name}.tmp"));
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
    };
    let mut f = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            create()?
        }
        other => other?,
    };
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
