//! `schedule`: systemd service and timer units (or one cron file) that run
//! the commands of `[schedule]`.
//!
//! The units have the shape of the packaged `stack-backup-backup.service`
//! and `.timer` (`packaging/`), and the same names (`stack-backup-COMMAND`):
//! a oneshot service at low CPU and I/O priority, started by a timer with
//! `Persistent=true` (a run missed while the machine was off happens at
//! boot) and a randomized delay. Every service of a stack takes one
//! `flock` on `schedule-STACK.lock` in the state directory first, so a prune never
//! starts while that stack's backup runs (they queue, up to 6 hours), on
//! top of the repository's own lock. Every file written starts with
//! [`MARKER`]; `remove` removes only files that do.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::monitoring::ScheduleEntry;

/// The first line of every file `schedule install` writes.
pub const MARKER: &str =
    "# Written by `stack-backup schedule install`; `schedule remove` deletes it.";

/// Where units go by default.
pub const SYSTEMD_DIR: &str = "/etc/systemd/system";

/// The cron file by default.
pub const CRON_FILE: &str = "/etc/cron.d/stack-backup";

/// How long a scheduled command waits for another of the same stack.
const LOCK_WAIT_SECONDS: u64 = 6 * 3600;

/// One file to write.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UnitFile {
    /// Its path.
    pub path: PathBuf,
    /// Its contents.
    pub text: String,
}

/// What to write for a config.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The files.
    pub files: Vec<UnitFile>,
    /// Entries left out, and why.
    pub skipped: Vec<String>,
    /// The timers to enable (systemd only).
    pub timers: Vec<String>,
    /// The state directory that holds the `flock` file (created and
    /// checked by `install`: a lock in a directory others can write, such
    /// as `/run/lock`, lets any local user hold it and stop every backup).
    pub state_dir: PathBuf,
    /// The stack whose schedule this is (written into every file; another
    /// stack's files are never overwritten or removed).
    pub stack: String,
}

/// Options of a plan.
#[derive(Debug, Clone)]
pub struct Options {
    /// The binary the units run.
    pub binary: PathBuf,
    /// The config file they pass (`--config`), absolute.
    pub config: PathBuf,
    /// A cron file instead of units.
    pub cron: bool,
    /// The directory for units (systemd) or the cron file's path.
    pub target: Option<PathBuf>,
    /// The `flock` program.
    pub flock: PathBuf,
}

/// The state directory of the config (`[state] dir`, environment
/// applied), else root's default: the scheduled commands run as root.
fn lock_dir(cfg: &Config) -> PathBuf {
    cfg.state
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::system::state::SYSTEM_DIR))
}

/// The default arguments of a scheduled command.
fn default_args(cmd: &str) -> &'static [&'static str] {
    match cmd {
        "prune" => &["--apply"],
        _ => &[],
    }
}

fn command_line(o: &Options, cfg: &Config, cmd: &str, e: &ScheduleEntry) -> String {
    let lock = lock_dir(cfg)
        .join(format!("schedule-{}.lock", cfg.stack.name.0))
        .display()
        .to_string();
    let mut words: Vec<String> = vec![
        o.flock.display().to_string(),
        "-w".into(),
        LOCK_WAIT_SECONDS.to_string(),
        lock,
        o.binary.display().to_string(),
        "--config".into(),
        o.config.display().to_string(),
        "--no-progress".into(),
        cmd.into(),
    ];
    if e.args().is_empty() {
        words.extend(default_args(cmd).iter().map(|s| (*s).to_string()));
    } else {
        words.extend(e.args().iter().cloned());
    }
    words
        .into_iter()
        .map(|w| {
            if w.contains(char::is_whitespace) {
                format!("\"{w}\"")
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A cron time for a calendar expression: `minutely`, `hourly`, `daily`,
/// `weekly`, `monthly`, `*:0/N`, `*:MM`, `HH:MM`, or five cron fields.
pub fn cron_time(when: &str) -> std::result::Result<String, String> {
    let w = when.trim();
    let fixed = match w {
        "minutely" => Some("* * * * *"),
        "hourly" => Some("0 * * * *"),
        "daily" => Some("0 0 * * *"),
        "weekly" => Some("0 0 * * 1"),
        "monthly" => Some("0 0 1 * *"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Ok(f.into());
    }
    if w.split_whitespace().count() == 5 && !w.contains(':') {
        return Ok(w.into());
    }
    let num = |s: &str, max: u32| s.parse::<u32>().ok().filter(|n| *n <= max);
    if let Some(rest) = w.strip_prefix("*:") {
        if let Some(step) = rest.strip_prefix("0/").and_then(|s| num(s, 59)) {
            if step > 0 {
                return Ok(format!("*/{step} * * * *"));
            }
        }
        if let Some(m) = num(rest, 59) {
            return Ok(format!("{m} * * * *"));
        }
    }
    if let Some((h, m)) = w.split_once(':') {
        if let (Some(h), Some(m)) = (num(h, 23), num(m, 59)) {
            return Ok(format!("{m} {h} * * *"));
        }
    }
    Err(format!(
        "`{w}` has no cron equivalent here; use minutely, hourly, daily, weekly, monthly, *:0/N, *:MM, HH:MM or five cron fields"
    ))
}

/// What `install` writes for `cfg` (no I/O).
pub fn plan(cfg: &Config, o: &Options) -> Result<Plan> {
    if cfg.schedule.is_empty() {
        return Err(Error::Usage(
            "the config has no [schedule] section; add e.g. `[schedule]\\nbackup = \"daily\"`"
                .into(),
        ));
    }
    let stack = &cfg.stack.name.0;
    let mut files = Vec::new();
    let skipped: Vec<String> = Vec::new();
    let mut timers = Vec::new();
    let mut cron = format!(
        "{MARKER}\n# stack `{stack}`, config {}\nSHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        o.config.display()
    );
    for (cmd, e) in &cfg.schedule {
        let line = command_line(o, cfg, cmd, e);
        if o.cron {
            let time = cron_time(e.when()).map_err(|m| {
                Error::Config(crate::config::ConfigError {
                    file: o.config.display().to_string(),
                    line: None,
                    column: None,
                    key: Some(format!("schedule.{cmd}")),
                    message: m,
                })
            })?;
            cron.push_str(&format!("{time} root {line}\n"));
            continue;
        }
        let dir = o
            .target
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEMD_DIR));
        let unit = format!("stack-backup-{cmd}");
        let service = format!(
            "{MARKER}
[Unit]
Description=stack-backup: {cmd} of stack {stack}
Documentation=man:stack-backup-{cmd}(1)
Wants=network-online.target
After=network-online.target docker.service postgresql.service redis-server.service

[Service]
Type=oneshot
ExecStart={line}
# A backup competes with the stack it protects; it may be slow, not the stack.
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
"
        );
        let delay = match e.when().trim() {
            "minutely" => "10s",
            w if w.starts_with("*:") => "2min",
            "hourly" => "5min",
            _ => "30min",
        };
        let timer = format!(
            "{MARKER}
[Unit]
Description=stack-backup: {cmd} of stack {stack} ({when})
Documentation=man:stack-backup-{cmd}(1)

[Timer]
OnCalendar={when}
RandomizedDelaySec={delay}
# A run missed while the machine was off happens at the next boot.
Persistent=true

[Install]
WantedBy=timers.target
",
            when = e.when().trim()
        );
        files.push(UnitFile {
            path: dir.join(format!("{unit}.service")),
            text: service,
        });
        files.push(UnitFile {
            path: dir.join(format!("{unit}.timer")),
            text: timer,
        });
        timers.push(format!("{unit}.timer"));
    }
    if o.cron {
        files.push(UnitFile {
            path: o.target.clone().unwrap_or_else(|| PathBuf::from(CRON_FILE)),
            text: cron,
        });
    }
    Ok(Plan {
        files,
        skipped,
        timers,
        state_dir: lock_dir(cfg),
        stack: cfg.stack.name.0.clone(),
    })
}

/// Writes the plan's files (each beside, then renamed). A file that exists
/// without [`MARKER`] is someone else's: refused, nothing written.
pub fn install(plan: &Plan) -> Result<()> {
    crate::system::state::ensure(&plan.state_dir)?;
    for f in &plan.files {
        if let Ok(old) = std::fs::read_to_string(&f.path) {
            if !old.starts_with(MARKER) {
                return Err(Error::Refused(format!(
                    "{} exists and was not written by `schedule install`; move it away first",
                    f.path.display()
                )));
            }
            if !of_stack(&old, &plan.stack) {
                return Err(Error::Refused(format!(
                    "{} holds the schedule of another stack; give this one its own `--dir` (or remove that schedule first)",
                    f.path.display()
                )));
            }
        }
    }
    for f in &plan.files {
        let io = |e: std::io::Error| Error::io("writing", &f.path, e);
        if let Some(dir) = f.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = f.path.with_extension("stack-backup-tmp");
        std::fs::write(&tmp, &f.text).map_err(io)?;
        std::fs::rename(&tmp, &f.path).map_err(io)?;
    }
    Ok(())
}

/// The files of `plan` that exist and carry [`MARKER`] (what `remove`
/// deletes). With systemd, every `stack-backup-COMMAND` unit in the
/// directory counts, also of commands no longer in `[schedule]`.
#[must_use]
pub fn installed(plan: &Plan, o: &Options) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = plan.files.iter().map(|f| f.path.clone()).collect();
    if !o.cron {
        let dir = o
            .target
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEMD_DIR));
        for cmd in crate::monitoring::SCHEDULABLE {
            for ext in ["service", "timer"] {
                paths.push(dir.join(format!("stack-backup-{cmd}.{ext}")));
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .is_ok_and(|t| t.starts_with(MARKER) && of_stack(&t, &plan.stack))
        })
        .collect()
}

/// Whether a file `install` wrote is the schedule of `stack` (units name it
/// in their description, the cron file in its second line).
fn of_stack(text: &str, stack: &str) -> bool {
    text.contains(&format!("of stack {stack}\n"))
        || text.contains(&format!("of stack {stack} ("))
        || text.contains(&format!("# stack `{stack}`,"))
}

/// Deletes `paths`.
pub fn remove(paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        std::fs::remove_file(p).map_err(|e| Error::io("removing", p, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::cron_time;

    #[test]
    fn cron_times() {
        assert_eq!(cron_time("hourly").unwrap(), "0 * * * *");
        assert_eq!(cron_time("*:0/15").unwrap(), "*/15 * * * *");
        assert_eq!(cron_time("*:30").unwrap(), "30 * * * *");
        assert_eq!(cron_time("03:45").unwrap(), "45 3 * * *");
        assert_eq!(cron_time("5 4 * * 0").unwrap(), "5 4 * * 0");
        assert!(cron_time("Mon *-*-* 03:00").is_err());
    }
}
