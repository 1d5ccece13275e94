//! The operations sections of `stack-backup.toml`: `[status]` (dead-man
//! switch and Prometheus file), `[[notify]]` (webhooks, healthchecks-style
//! pings, ntfy) and `[schedule]` (systemd timers or cron).
//!
//! Notification URLs usually carry a token (a healthchecks UUID, an ntfy
//! topic, a webhook key): they are [`SecretUrl`]s, shown and serialised as
//! scheme and host only, so the config stored in a backup set holds none.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secret::redact_endpoint;
use crate::tiers::Tier;

/// `[status]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StatusSection {
    /// `[status.max-age]`: per tier, the age (`"26h"`, `"8d"`) past which
    /// `status` exits 3 naming each component of that tier's sets whose
    /// newest set is older.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_age: BTreeMap<Tier, String>,
    /// The node_exporter textfile every command that finishes rewrites
    /// (atomically), and `status --prometheus` writes by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_file: Option<PathBuf>,
}

impl StatusSection {
    /// Nothing configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The `max-age` of each configured tier, in seconds.
    pub fn max_ages(&self) -> Result<BTreeMap<Tier, u64>, String> {
        self.max_age
            .iter()
            .map(|(t, d)| parse_duration(d).map(|s| (*t, s)))
            .collect()
    }
}

/// Parses a duration such as `"26h"`, `"8d"`, `"2w"`, `"90m"`, `"1h30m"`
/// (days are 24 hours) into seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = |e: String| format!("`{s}` is not a duration (e.g. \"26h\", \"8d\", \"2w\"): {e}");
    let span: jiff::Span = s
        .trim()
        .parse()
        .map_err(|e: jiff::Error| bad(e.to_string()))?;
    let secs = span
        .total((
            jiff::Unit::Second,
            jiff::SpanRelativeTo::days_are_24_hours(),
        ))
        .map_err(|e| bad(e.to_string()))?;
    if secs <= 0.0 {
        return Err(bad("it must be positive".into()));
    }
    Ok(secs.round() as u64)
}

/// An event a notification is sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// A command started.
    Start,
    /// A command finished successfully.
    Success,
    /// A command failed (any non-zero exit).
    Failure,
}

impl Event {
    /// The name used in config and payloads.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Success => "success",
            Event::Failure => "failure",
        }
    }
}

/// A URL holding a token. [`fmt::Display`], `Debug` and `Serialize` show
/// `scheme://host[:port]/…` only; [`SecretUrl::expose`] is for sending.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Checks the scheme (`http://` or `https://`).
    pub fn parse(s: &str) -> Result<Self, String> {
        if !(s.starts_with("http://") || s.starts_with("https://")) {
            return Err(format!(
                "`{}` is not an http:// or https:// URL",
                redact_endpoint(s)
            ));
        }
        Ok(Self(s.to_string()))
    }

    /// The full URL, token included. Never print or store it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_endpoint(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({self})")
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `[[notify]]`: where to report the outcome of commands. Exactly one of
/// `webhook`, `healthchecks`, `ntfy`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotifyTarget {
    /// The events sent [default: `["failure"]`].
    #[serde(default = "default_on")]
    pub on: Vec<Event>,
    /// POST a JSON body (stack, command, outcome, set, duration, error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<SecretUrl>,
    /// A healthchecks.io-style ping URL: `URL/start`, `URL`, `URL/fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthchecks: Option<SecretUrl>,
    /// An ntfy topic URL (`https://ntfy.sh/TOPIC`): a text message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntfy: Option<SecretUrl>,
    /// The most a notification may delay the command, retry included
    /// [default: 5].
    #[serde(default = "default_notify_timeout")]
    pub timeout_seconds: u64,
}

fn default_on() -> Vec<Event> {
    vec![Event::Failure]
}

fn default_notify_timeout() -> u64 {
    5
}

impl NotifyTarget {
    /// The kind and URL of the target.
    #[must_use]
    pub fn endpoint(&self) -> Option<(&'static str, &SecretUrl)> {
        self.webhook
            .as_ref()
            .map(|u| ("webhook", u))
            .or(self.healthchecks.as_ref().map(|u| ("healthchecks", u)))
            .or(self.ntfy.as_ref().map(|u| ("ntfy", u)))
    }

    fn validate(&self) -> Result<(), String> {
        let n = [&self.webhook, &self.healthchecks, &self.ntfy]
            .iter()
            .filter(|u| u.is_some())
            .count();
        if n != 1 {
            return Err(
                "a [[notify]] entry needs exactly one of `webhook`, `healthchecks`, `ntfy`".into(),
            );
        }
        if self.on.is_empty() {
            return Err("`on` lists no event; use e.g. [\"failure\", \"success\"]".into());
        }
        if self.timeout_seconds == 0 || self.timeout_seconds > 60 {
            return Err("`timeout-seconds` must be between 1 and 60".into());
        }
        Ok(())
    }
}

/// The commands `[schedule]` can run.
pub const SCHEDULABLE: [&str; 6] = ["backup", "dump", "verify", "drill", "prune", "copy"];

/// One `[schedule]` entry: `backup = "hourly"`, or a table with the
/// arguments: `copy = { when = "daily", args = ["--all", "--to", "…"] }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ScheduleEntry {
    /// When only (systemd `OnCalendar` syntax: `hourly`, `daily`,
    /// `weekly`, `*:0/15`, `Mon *-*-* 03:00`).
    When(String),
    /// When, and the command's arguments.
    Full {
        /// As above.
        when: String,
        /// Arguments after the command (no secrets: they are visible in
        /// the unit files and to `ps`).
        #[serde(default)]
        args: Vec<String>,
    },
}

impl ScheduleEntry {
    /// The calendar expression.
    #[must_use]
    pub fn when(&self) -> &str {
        match self {
            Self::When(w) | Self::Full { when: w, .. } => w,
        }
    }

    /// The arguments given, if any.
    #[must_use]
    pub fn args(&self) -> &[String] {
        match self {
            Self::When(_) => &[],
            Self::Full { args, .. } => args,
        }
    }
}

/// `[schedule]`: command name to entry.
pub type ScheduleSection = BTreeMap<String, ScheduleEntry>;

/// Checks the three sections; the error names the key.
pub fn validate(
    status: &StatusSection,
    notify: &[NotifyTarget],
    schedule: &ScheduleSection,
) -> Result<(), (String, String)> {
    for (tier, d) in &status.max_age {
        parse_duration(d).map_err(|m| (format!("status.max-age.{tier}"), m))?;
    }
    for (i, n) in notify.iter().enumerate() {
        n.validate().map_err(|m| (format!("notify[{i}]"), m))?;
    }
    for (cmd, e) in schedule {
        let key = format!("schedule.{cmd}");
        if !SCHEDULABLE.contains(&cmd.as_str()) {
            return Err((
                key,
                format!(
                    "unknown command `{cmd}`; expected one of {}",
                    SCHEDULABLE.join(", ")
                ),
            ));
        }
        let w = e.when().trim();
        if w.is_empty() || w.contains(['\n', '\r']) {
            return Err((key, "`when` must be a one-line calendar expression".into()));
        }
        if e.args()
            .iter()
            .any(|a| a.contains(['\n', '\r', '"', '\\', '%']))
        {
            return Err((
                key,
                "arguments may not hold newlines, quotes, `\\` or `%`".into(),
            ));
        }
        if cmd == "copy" && !e.args().iter().any(|a| a == "--to") {
            return Err((
                key,
                "a scheduled copy needs its target: copy = { when = \"daily\", args = [\"--all\", \"--to\", \"REPO\"] }".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("26h").unwrap(), 26 * 3600);
        assert_eq!(parse_duration("8d").unwrap(), 8 * 86400);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86400);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn endpoints_lose_their_tokens() {
        assert_eq!(
            redact_endpoint("https://hc-ping.example/0f1e-uuid?x=1"),
            "https://hc-ping.example/…"
        );
        assert_eq!(
            redact_endpoint("http://u:tok@127.0.0.1:8080/hook"),
            "http://127.0.0.1:8080/…"
        );
        assert_eq!(redact_endpoint("http://h"), "http://h");
        assert_eq!(
            redact_endpoint("http://u:p/ss@w%2Fd@host:1/hook"),
            "http://host:1/…"
        );
        assert_eq!(redact_endpoint("token-only"), "***");
        let u = SecretUrl::parse("https://ntfy.example/secret-topic").unwrap();
        assert!(!format!("{u} {u:?}").contains("secret-topic"));
        assert!(!serde_json::to_string(&u).unwrap().contains("secret-topic"));
    }
}
