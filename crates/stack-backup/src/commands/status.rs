//! `status`

use stack_backup_core::config::{Config, Env};
use stack_backup_core::monitoring::parse_duration;
use stack_backup_core::status::{self, Status};
use stack_backup_core::{disk, prometheus, Error, ExitCode};

use super::ctx;
use crate::cli::StatusArgs;
use crate::output::{table, Output};

/// `3d4h`, `5h12m`, `40s`.
pub fn age(secs: i64) -> String {
    let (neg, s) = (secs < 0, secs.unsigned_abs());
    let text = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    };
    if neg {
        format!("in {text}")
    } else {
        text
    }
}

pub fn run(cfg: &Config, args: &StatusArgs, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    let max_age_seconds = args
        .max_age
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|m| Error::Usage(format!("--max-age: {m}")))?;
    let st = ctx(
        status::run(cfg, env, &status::Request { max_age_seconds }),
        "reading the status",
    )?;
    if let Some(f) = args
        .prometheus
        .as_ref()
        .or(cfg.status.prometheus_file.as_ref())
    {
        prometheus::write_atomic(f, &prometheus::render(&st))
            .map_err(|e| Error::io("writing", f, e))?;
    }
    if let Some(f) = &args.html {
        std::fs::write(f, crate::html::page(&st)).map_err(|e| Error::io("writing", f, e))?;
    }
    out.json(&serde_json::to_value(&st)?);
    render(&st, out);
    if st.ok() {
        return Ok(ExitCode::Success);
    }
    for v in &st.violations {
        out.warn(violation_line(v));
    }
    eprintln!(
        "error: {} component(s) older than their max-age (exit 3)",
        st.violations.len()
    );
    Ok(ExitCode::Verification)
}

fn violation_line(v: &status::Violation) -> String {
    let tier = v.tier.map_or(String::new(), |t| format!(" in tier {t}"));
    match v.age_seconds {
        Some(a) => format!(
            "{}: newest good backup{tier} is {} old, more than {}",
            v.component,
            age(a),
            age(v.max_age_seconds as i64)
        ),
        None => format!(
            "{}: no good backup{tier} at all (max-age {})",
            v.component,
            age(v.max_age_seconds as i64)
        ),
    }
}

fn render(st: &Status, out: &Output) {
    out.say(format!(
        "stack `{}`, repository {}{}",
        st.stack,
        st.repository,
        st.repository_bytes.map_or(String::new(), |b| format!(
            ": {}, {} added in 7 days",
            disk::human(b),
            disk::human(st.added_7d_bytes)
        ))
    ));
    let rows: Vec<Vec<String>> = st
        .tiers
        .iter()
        .map(|t| {
            let n = t.newest.as_ref();
            vec![
                t.tier.to_string(),
                t.sets.to_string(),
                n.map_or("-".into(), |b| b.name.clone()),
                n.map_or("-".into(), |b| age(b.age_seconds)),
                n.and_then(|b| b.size).map_or("-".into(), disk::human),
                n.map_or("-".into(), |b| b.components.join(",")),
            ]
        })
        .collect();
    out.say(format!(
        "\n{}",
        table(
            &["TIER", "SETS", "NEWEST", "AGE", "SIZE", "COMPONENTS"],
            &rows
        )
    ));
    if !st.components.is_empty() {
        let rows: Vec<Vec<String>> = st
            .components
            .iter()
            .map(|c| {
                vec![
                    c.component.clone(),
                    c.last_success.name.clone(),
                    c.last_success.tier.to_string(),
                    age(c.last_success.age_seconds),
                ]
            })
            .collect();
        out.say(format!(
            "\n{}",
            table(&["COMPONENT", "LAST GOOD SET", "TIER", "AGE"], &rows)
        ));
    }
    out.say(String::new());
    out.say(match &st.last_verify {
        Some(v) => format!(
            "last verify: {} ago, {} ({})",
            age(v.age_seconds),
            verdict(v.run.succeeded()),
            v.run.command
        ),
        None => "last verify: none recorded on this machine".into(),
    });
    out.say(match &st.last_drill {
        Some(d) => format!(
            "last drill: {} of set {}, {}, restored in {:.0}s",
            d.time,
            d.set,
            verdict(d.ok),
            d.rto_seconds
        ),
        None => "last drill: no drill yet".into(),
    });
    for c in &st.copies {
        out.say(match &c.newest_pending {
            None => format!(
                "copy to {}: up to date (last copy {})",
                c.target, c.last_copy
            ),
            Some(p) => format!(
                "copy to {}: {} set(s) not copied, newest `{}` ({} old); lag {}",
                c.target,
                c.pending,
                p.name,
                age(p.age_seconds),
                age(c.lag_seconds)
            ),
        });
    }
}

/// How a verify or drill result is shown (text and HTML alike).
pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAILED"
    }
}
