//! Rendering for people and for scripts.

use std::io::{IsTerminal, Write};

use stack_backup_core::ExitCode;

use crate::cli::Cli;

/// How output is rendered.
#[derive(Debug, Clone)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
    /// Progress bars are drawn (a TTY, no `--json`, `--quiet` or `--no-progress`).
    #[allow(dead_code)]
    pub progress: bool,
}

impl Output {
    pub fn new(cli: &Cli) -> Self {
        Self {
            json: cli.json,
            quiet: cli.quiet,
            verbose: cli.verbose,
            progress: !cli.json
                && !cli.quiet
                && !cli.no_progress
                && std::io::stderr().is_terminal(),
        }
    }

    /// Library log lines (rustic_core's too) go to stderr: warnings by
    /// default, more with -v, errors only with -q.
    pub fn init_logging(&self) {
        let level = match (self.quiet, self.verbose) {
            (true, _) => log::LevelFilter::Error,
            (false, 0) => log::LevelFilter::Warn,
            (false, 1) => log::LevelFilter::Info,
            (false, _) => log::LevelFilter::Debug,
        };
        // OpenDAL logs every failed request as a warning, including the
        // expected "not found" of probing for a repository; its retries and
        // failures show at -vv (the error itself is always reported).
        let opendal = if self.verbose >= 2 {
            level
        } else {
            log::LevelFilter::Off
        };
        // Every line is scrubbed of the secrets found in the environment,
        // and reqsign (which prints credentials at debug level) is capped.
        let env: stack_backup_core::config::Env = std::env::vars().collect();
        let secrets = stack_backup_core::remote::env_secrets(&env);
        env_logger::Builder::new()
            .filter_level(level)
            .filter_module("opendal", opendal)
            .filter_module("reqsign", level.min(log::LevelFilter::Info))
            .filter_module("reqsign_core", level.min(log::LevelFilter::Info))
            .filter_module("reqsign_aws_v4", level.min(log::LevelFilter::Info))
            .format(move |buf, record| {
                let mut text = record.args().to_string();
                for s in &secrets {
                    text = text.replace(s.as_str(), "***");
                }
                writeln!(buf, "[{:<5} {}] {text}", record.level(), record.target())
            })
            .format_timestamp(None)
            .target(env_logger::Target::Stderr)
            .init();
    }

    /// A line for people (stdout), unless `--json` or `--quiet`.
    pub fn say(&self, text: impl AsRef<str>) {
        if !self.json && !self.quiet {
            println!("{}", text.as_ref());
        }
    }

    /// A warning for people (stderr), unless `--quiet`.
    pub fn warn(&self, text: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("warning: {}", text.as_ref());
        }
    }

    /// Prints a JSON document on stdout (only with `--json`).
    pub fn json(&self, value: &serde_json::Value) {
        if self.json {
            let mut stdout = std::io::stdout().lock();
            let _ = serde_json::to_writer_pretty(&mut stdout, value);
            let _ = writeln!(stdout);
        }
    }

    /// Reports a failure: always on stderr, and as JSON on stdout with `--json`.
    pub fn error(&self, err: &anyhow::Error, code: ExitCode) {
        eprintln!("error: {err:#}");
        if self.json {
            let v = serde_json::json!({
                "error": { "message": format!("{err:#}"), "exit_code": code.code() }
            });
            println!("{v}");
        }
    }
}

/// Renders rows as an aligned text table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|h| (*h).to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}
