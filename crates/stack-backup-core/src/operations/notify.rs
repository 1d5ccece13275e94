//! Notifications: the outcome of a command sent to each `[[notify]]` target
//! that asked for the event.
//!
//! Sending never fails a command and never delays it by more than the
//! largest `timeout-seconds` of the targets: every target is sent to at
//! once on its own detached thread, each with one deadline for the attempt
//! and its single retry, and the caller waits for the answers only until
//! that deadline. A thread stuck where no timeout reaches (the system
//! resolver, which reqwest's blocking client waits for when it drops) is
//! left behind and ends with the process. A failure is logged as a warning
//! naming the target without its token
//! ([`crate::secret::redact_endpoint`]). Payloads hold the stack, the
//! command, the outcome, the set, the duration and the error text, which
//! the caller has already scrubbed of secrets.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::monitoring::{Event, NotifyTarget};

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// The stack.
    pub stack: String,
    /// The command (`backup`, `verify`, …).
    pub command: String,
    /// `start`, `success` or `failure`.
    pub outcome: Event,
    /// The set made or worked on, when known.
    pub set: Option<String>,
    /// Seconds the command ran (none at start).
    pub duration_seconds: Option<f64>,
    /// The error (already free of secrets), on failure.
    pub error: Option<String>,
    /// The exit code (none at start).
    pub exit_code: Option<u8>,
}

/// The outcome of sending to one target.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// The target as shown (no token).
    pub target: String,
    /// Whether it was accepted (2xx).
    pub ok: bool,
    /// Attempts made.
    pub attempts: u32,
    /// The last error, when not ok.
    pub error: Option<String>,
}

/// The pause before the retry (shortened to fit the deadline).
const RETRY_PAUSE: Duration = Duration::from_millis(300);

/// The request for one target and event: URL, body, content type, headers.
fn request(
    kind: &str,
    url: &str,
    msg: &Message,
) -> (String, Vec<u8>, &'static str, Vec<(&'static str, String)>) {
    let summary = format!(
        "stack-backup {} of stack {}: {}{}",
        msg.command,
        msg.stack,
        msg.outcome.as_str(),
        msg.set
            .as_deref()
            .map_or(String::new(), |s| format!(" (set {s})")),
    );
    match kind {
        "healthchecks" => {
            let base = url.trim_end_matches('/');
            let url = match msg.outcome {
                Event::Start => format!("{base}/start"),
                Event::Success => base.to_string(),
                Event::Failure => format!("{base}/fail"),
            };
            let body = match &msg.error {
                Some(e) => format!("{summary}\n{e}\n"),
                None => format!("{summary}\n"),
            };
            (url, body.into_bytes(), "text/plain", Vec::new())
        }
        "ntfy" => {
            let body = match &msg.error {
                Some(e) => format!("{summary}\n{e}"),
                None => summary,
            };
            let mut headers = vec![("Title", format!("stack-backup: {}", msg.stack))];
            if msg.outcome == Event::Failure {
                headers.push(("Priority", "high".into()));
                headers.push(("Tags", "warning".into()));
            }
            (url.to_string(), body.into_bytes(), "text/plain", headers)
        }
        _ => (
            url.to_string(),
            serde_json::to_vec(msg).unwrap_or_default(),
            "application/json",
            Vec::new(),
        ),
    }
}

/// Sends `msg` to one target: one attempt and, within the deadline, one
/// retry.
fn send_one(t: &NotifyTarget, msg: &Message) -> Delivery {
    let Some((kind, url)) = t.endpoint() else {
        return Delivery {
            target: "-".into(),
            ok: false,
            attempts: 0,
            error: Some("no target".into()),
        };
    };
    let shown = shown(t);
    let deadline = Instant::now() + Duration::from_secs(t.timeout_seconds.max(1));
    let (to, body, ctype, headers) = request(kind, url.expose(), msg);
    let mut attempts = 0;
    let mut last_err = String::new();
    while attempts < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(50) {
            break;
        }
        attempts += 1;
        let res = crate::system::tls::client_builder()
            .timeout(left)
            .connect_timeout(left)
            .build()
            .and_then(|c| {
                let mut rq = c
                    .post(&to)
                    .header("Content-Type", ctype)
                    .header(
                        "User-Agent",
                        concat!("stack-backup/", env!("CARGO_PKG_VERSION")),
                    )
                    .body(body.clone());
                for (k, v) in &headers {
                    rq = rq.header(*k, v.as_str());
                }
                rq.send()
            });
        match res {
            Ok(r) if r.status().is_success() => {
                return Delivery {
                    target: shown,
                    ok: true,
                    attempts,
                    error: None,
                }
            }
            Ok(r) => last_err = format!("answered {}", r.status()),
            // reqwest's error text holds the URL: keep the kind only.
            Err(e) => {
                last_err = if e.is_timeout() {
                    "timed out".into()
                } else if e.is_connect() {
                    "could not connect".into()
                } else {
                    "request failed".into()
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(RETRY_PAUSE.min(left));
    }
    Delivery {
        target: shown,
        ok: false,
        attempts,
        error: Some(last_err),
    }
}

/// A target as logs and deliveries show it (no token).
fn shown(t: &NotifyTarget) -> String {
    t.endpoint()
        .map_or_else(|| "-".into(), |(kind, url)| format!("{kind} {url}"))
}

/// Sends `msg` to every target that asked for its event, all at once.
/// Returns within the largest `timeout-seconds` of them (plus thread
/// start-up), whatever the network or the resolver does; a target that
/// has not answered by then is reported as failed.
#[must_use]
pub fn send(targets: &[NotifyTarget], msg: &Message) -> Vec<Delivery> {
    let wanted: Vec<&NotifyTarget> = targets
        .iter()
        .filter(|t| t.on.contains(&msg.outcome))
        .collect();
    let Some(longest) = wanted.iter().map(|t| t.timeout_seconds.max(1)).max() else {
        return Vec::new();
    };
    let deadline = Instant::now() + Duration::from_secs(longest) + Duration::from_millis(200);
    let (tx, rx) = mpsc::channel();
    for (i, t) in wanted.iter().enumerate() {
        let (tx, t, msg) = (tx.clone(), (*t).clone(), msg.clone());
        // Detached on purpose: see the module's doc.
        std::thread::spawn(move || {
            let _ = tx.send((i, send_one(&t, &msg)));
        });
    }
    drop(tx);
    let mut got: Vec<Option<Delivery>> = vec![None; wanted.len()];
    while got.iter().any(Option::is_none) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, d)) => got[i] = Some(d),
            Err(_) => break,
        }
    }
    let out: Vec<Delivery> = got
        .into_iter()
        .zip(&wanted)
        .map(|(d, t)| {
            d.unwrap_or_else(|| Delivery {
                target: shown(t),
                ok: false,
                attempts: 1,
                error: Some(format!(
                    "no answer within {} s (name resolution or connection stalled)",
                    t.timeout_seconds.max(1)
                )),
            })
        })
        .collect();
    for d in out.iter().filter(|d| !d.ok) {
        log::warn!(
            "notification to {} failed after {} attempt(s): {}; the command's outcome is unchanged",
            d.target,
            d.attempts,
            d.error.as_deref().unwrap_or("unknown error")
        );
    }
    out
}
