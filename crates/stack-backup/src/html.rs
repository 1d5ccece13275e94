//! `status --html`: one self-contained page (inline CSS and SVG, no
//! script, no external asset) with a timeline of the sets per tier and the
//! status tables.

use std::fmt::Write as _;

use stack_backup_core::disk;
use stack_backup_core::status::Status;
use stack_backup_core::tiers::Tier;

use crate::commands::status::{age, verdict};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn timeline(st: &Status) -> String {
    const W: f64 = 900.0;
    const ROW: f64 = 28.0;
    const LEFT: f64 = 110.0;
    let tiers: Vec<Tier> = Tier::ALL.to_vec();
    let h = ROW * tiers.len() as f64 + 30.0;
    let t0 = st
        .sets
        .first()
        .map_or(st.timestamp - 86400, |s| s.timestamp);
    let t1 = st.timestamp.max(t0 + 1);
    let x = |t: i64| LEFT + (W - LEFT - 10.0) * (t - t0) as f64 / (t1 - t0) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" role=\"img\" aria-label=\"backup sets per tier over time\">"
    );
    for (i, t) in tiers.iter().enumerate() {
        let y = ROW * i as f64 + ROW / 2.0 + 4.0;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{}\" class=\"lbl\">{}</text><line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" class=\"axis\"/>",
            y + 4.0,
            t.as_str(),
            W - 10.0
        );
        for s in st.sets.iter().filter(|s| s.tier == *t) {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{y}\" r=\"5\" class=\"set {}\"><title>{} ({}, {} old)</title></circle>",
                x(s.timestamp),
                t.as_str(),
                esc(&s.name),
                esc(&s.time),
                age(s.age_seconds)
            );
        }
    }
    let yb = h - 8.0;
    let _ = write!(
        svg,
        "<text x=\"{LEFT}\" y=\"{yb}\" class=\"lbl\">{}</text><text x=\"{}\" y=\"{yb}\" class=\"lbl\" text-anchor=\"end\">now</text></svg>",
        esc(&st.sets.first().map_or(String::new(), |s| s.time.clone())),
        W - 10.0
    );
    svg
}

/// The page.
#[must_use]
pub fn page(st: &Status) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>stack-backup status: {stack}</title><style>
body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:4px 10px;text-align:left}} th{{background:#eee}}
.bad{{background:#fdd}} .ok{{background:#dfd}} .axis{{stroke:#999}} .lbl{{font-size:12px;fill:#333}}
.set{{fill:#36c}} .set.immaculate{{fill:#2a2}} .set.sacred{{fill:#c90}} .set.pre-restore{{fill:#999}} .set.data{{fill:#69c}}
</style></head><body><h1>stack-backup: <span id=\"stack\">{stack}</span></h1>
<p>Repository {repo}{size}. Status taken {time}.</p>",
        stack = esc(&st.stack),
        repo = esc(&st.repository),
        size = st.repository_bytes.map_or(String::new(), |b| format!(
            ": {}, {} added in 7 days",
            disk::human(b),
            disk::human(st.added_7d_bytes)
        )),
        time = esc(&st.time),
    );
    h.push_str("<h2>Timeline</h2>");
    h.push_str(&timeline(st));
    h.push_str("<h2>Tiers</h2><table id=\"tiers\"><tr><th>Tier</th><th>Sets</th><th>Newest</th><th>Age</th><th>Size</th><th>Components</th></tr>");
    for t in &st.tiers {
        let n = t.newest.as_ref();
        let late = match (t.max_age_seconds, n) {
            (Some(m), Some(b)) => b.age_seconds > m as i64,
            (Some(_), None) => true,
            _ => false,
        };
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if late { " class=\"bad\"" } else { "" },
            t.tier,
            t.sets,
            esc(&n.map_or("-".into(), |b| b.name.clone())),
            n.map_or("-".into(), |b| age(b.age_seconds)),
            n.and_then(|b| b.size).map_or("-".into(), disk::human),
            esc(&n.map_or("-".into(), |b| b.components.join(", "))),
        );
    }
    h.push_str("</table><h2>Components</h2><table id=\"components\"><tr><th>Component</th><th>Last good set</th><th>Tier</th><th>Age (s)</th><th>Age</th></tr>");
    for c in &st.components {
        let bad = st.violations.iter().any(|v| v.component == c.component);
        let _ = write!(
            h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if bad { "bad" } else { "ok" },
            esc(&c.component),
            esc(&c.last_success.name),
            c.last_success.tier,
            c.last_success.age_seconds,
            age(c.last_success.age_seconds)
        );
    }
    h.push_str("</table><h2>Checks</h2><ul>");
    let _ = write!(
        h,
        "<li id=\"verify\">Last verify: {}</li>",
        st.last_verify
            .as_ref()
            .map_or("none recorded on this machine".into(), |v| format!(
                "{} ago, {}",
                age(v.age_seconds),
                verdict(v.run.succeeded())
            ))
    );
    let _ = write!(
        h,
        "<li id=\"drill\">Last drill: {}</li>",
        st.last_drill
            .as_ref()
            .map_or("no drill yet".into(), |d| format!(
                "{} (set {}), {}, restored in {:.0}s",
                esc(&d.time),
                esc(&d.set),
                verdict(d.ok),
                d.rto_seconds
            ))
    );
    for c in &st.copies {
        let _ = write!(
            h,
            "<li class=\"copy\">Copy to {}: {} set(s) pending, lag {}</li>",
            esc(&c.target),
            c.pending,
            age(c.lag_seconds)
        );
    }
    h.push_str("</ul></body></html>\n");
    h
}
