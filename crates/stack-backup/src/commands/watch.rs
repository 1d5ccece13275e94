//! The one place every command that works on the repository passes
//! through: a `start` notification before it, and after it the run's
//! record (for `status`), the `success`/`failure` notifications and the
//! Prometheus file of `[status] prometheus-file`. None of this changes a
//! command's exit code or stops it.

use std::sync::Mutex;
use std::time::Instant;

use stack_backup_core::config::{Config, Env};
use stack_backup_core::monitoring::Event;
use stack_backup_core::notify::{self, Message};
use stack_backup_core::records::{self, RunRecord};
use stack_backup_core::{prometheus, status, ExitCode};

use crate::cli::{Command, ImmaculateCommand};
use crate::output::Output;

/// The set the running command made or worked on, for the payloads.
static SET: Mutex<Option<String>> = Mutex::new(None);

/// Called by a command once it knows its set.
pub fn produced(name: &str) {
    if let Ok(mut s) = SET.lock() {
        *s = Some(name.to_string());
    }
}

/// The name a watched command is recorded and announced under; `None`
/// for commands that only read or print (list, status, schedule, …).
#[must_use]
pub fn watched(cmd: &Command) -> Option<&'static str> {
    Some(match cmd {
        Command::Backup(_) => "backup",
        Command::Dump(_) => "dump",
        Command::Restore(_) => "restore",
        Command::Copy(_) => "copy",
        Command::Emergency(_) => "emergency",
        Command::Sacred(_) => "sacred",
        Command::Prune(_) => "prune",
        Command::Verify(_) => "verify",
        Command::Drill(_) => "drill",
        Command::Export(_) => "export",
        Command::Import(_) => "import",
        Command::Immaculate(ImmaculateCommand::Create(_)) => "immaculate create",
        Command::Immaculate(ImmaculateCommand::Verify(_)) => "immaculate verify",
        _ => return None,
    })
}

/// Removes every secret known from the environment, and URL passwords.
fn scrub(text: &str, env: &Env) -> String {
    let mut t = text.to_string();
    for s in stack_backup_core::remote::env_secrets(env) {
        t = t.replace(s.as_str(), "***");
    }
    t.split(' ')
        .map(|w| {
            if w.contains("://") {
                stack_backup_core::secret::redact_url(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A watched command in progress.
pub struct Watch<'a> {
    cfg: &'a Config,
    env: &'a Env,
    command: &'static str,
    started: jiff::Timestamp,
    clock: Instant,
}

impl<'a> Watch<'a> {
    /// Sends the `start` notifications.
    pub fn start(cfg: &'a Config, env: &'a Env, command: &'static str) -> Self {
        let w = Self {
            cfg,
            env,
            command,
            started: jiff::Timestamp::now(),
            clock: Instant::now(),
        };
        w.notify(Event::Start, None, None, None);
        w
    }

    fn notify(
        &self,
        outcome: Event,
        duration: Option<f64>,
        error: Option<String>,
        exit_code: Option<u8>,
    ) {
        if self.cfg.notify.is_empty() {
            return;
        }
        let msg = Message {
            stack: self.cfg.stack.name.0.clone(),
            command: self.command.into(),
            outcome,
            set: SET.lock().ok().and_then(|s| s.clone()),
            duration_seconds: duration,
            error,
            exit_code,
        };
        for d in notify::send(&self.cfg.notify, &msg) {
            if d.ok {
                log::info!("notified {} ({})", d.target, outcome.as_str());
            }
        }
    }

    /// Records the run, notifies, rewrites the Prometheus file.
    pub fn finish(self, result: &anyhow::Result<ExitCode>, out: &Output) {
        let code = match result {
            Ok(c) => *c,
            Err(e) => super::exit_code_of(e),
        };
        let duration = self.clock.elapsed().as_secs_f64();
        let ok = code == ExitCode::Success;
        let set = SET.lock().ok().and_then(|s| s.clone());
        let stack = &self.cfg.stack.name.0;
        records::record_run(
            self.cfg,
            stack,
            &RunRecord {
                command: self.command.into(),
                started: self.started.to_string(),
                duration_seconds: (duration * 1000.0).round() / 1000.0,
                outcome: if ok { "success" } else { "failure" }.into(),
                exit_code: code.code(),
                set,
            },
        );
        let error = result
            .as_ref()
            .err()
            .map(|e| scrub(&format!("{e:#}"), self.env))
            .or_else(|| (!ok).then(|| format!("exit code {}", code.code())));
        self.notify(
            if ok { Event::Success } else { Event::Failure },
            Some(duration),
            error,
            Some(code.code()),
        );
        if let Some(file) = &self.cfg.status.prometheus_file {
            write_metrics(self.cfg, self.env, file, out);
        }
    }
}

/// Computes the status and writes the Prometheus file; a failure is a
/// warning.
pub fn write_metrics(cfg: &Config, env: &Env, file: &std::path::Path, out: &Output) {
    let res = status::run(cfg, env, &status::Request::default())
        .map_err(anyhow::Error::from)
        .and_then(|st| Ok(prometheus::write_atomic(file, &prometheus::render(&st))?));
    if let Err(e) = res {
        out.warn(format!(
            "could not update the Prometheus file {}: {}",
            file.display(),
            scrub(&format!("{e:#}"), env)
        ));
    }
}
