//! `backup` and `dump`: progress per component, a summary table at the end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use stack_backup_core::backup::{self, Request};
use stack_backup_core::config::{Config, Env};
use stack_backup_core::ledger::Observer;
use stack_backup_core::repository::NoProgress;
use stack_backup_core::{disk, ExitCode};

use super::ctx;
use crate::output::{table, Output};

/// One progress bar per component (bytes read and rate).
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, (ProgressBar, usize)>>,
}

impl Bars {
    fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Observer for Bars {
    fn started(&self, component: &str, _artifact: &str) {
        let mut bars = self.bars.lock().expect("bars");
        let entry = bars.entry(component.to_string()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix:32} {bytes:>10} {bytes_per_sec:>12} {msg}",
                )
                .expect("template"),
            );
            bar.set_prefix(component.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            (bar, 0)
        });
        entry.1 += 1;
        entry.0.set_message("");
    }

    fn bytes(&self, component: &str, n: u64) {
        if let Some((bar, _)) = self.bars.lock().expect("bars").get(component) {
            bar.inc(n);
        }
    }

    fn finished(&self, component: &str, _artifact: &str, ok: bool) {
        if let Some((bar, open)) = self.bars.lock().expect("bars").get_mut(component) {
            *open = open.saturating_sub(1);
            if !ok {
                bar.abandon_with_message("FAILED");
            } else if *open == 0 {
                bar.set_message("done");
                bar.disable_steady_tick();
                bar.tick();
            }
        }
    }
}

/// Progress bars per component, on a terminal.
pub fn observer(out: &Output) -> Option<Arc<dyn Observer>> {
    out.progress
        .then(|| Arc::new(Bars::new()) as Arc<dyn Observer>)
}

pub fn run(cfg: &Config, env: &Env, req: &Request, out: &Output) -> anyhow::Result<ExitCode> {
    let report = ctx(
        backup::run(cfg, env, req, observer(out), NoProgress),
        "backup failed",
    )?;
    super::watch::produced(&report.set.name);
    out.json(&serde_json::to_value(&report)?);
    render(&report, out);
    Ok(ExitCode::Success)
}

/// The summary table and the closing lines of a backup, for people.
pub fn render(report: &backup::Report, out: &Output) {
    let rows: Vec<Vec<String>> = report
        .components
        .iter()
        .map(|c| {
            vec![
                c.component.clone(),
                disk::human(c.size),
                c.files.to_string(),
                if c.reused {
                    "reused".into()
                } else {
                    "read".into()
                },
                format!("{:.1}s", c.seconds),
            ]
        })
        .collect();
    out.say(table(
        &["COMPONENT", "SIZE", "FILES", "CONTENT", "TIME"],
        &rows,
    ));
    out.say(format!(
        "\nbackup set `{}` ({}), tier {}: {} processed, {} new data ({} stored), {:.1}s",
        report.set.name,
        report.set.short_id(),
        report.set.tier,
        disk::human(report.total_bytes),
        disk::human(report.data_added),
        disk::human(report.data_added_packed),
        report.seconds
    ));
    out.say(format!(
        "restore it with: stack-backup restore {}",
        report.set.name
    ));
}
