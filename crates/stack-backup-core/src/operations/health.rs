//! `[[health]]` checks: HTTP, SQL or a command, run after a restore.

use std::time::Duration;

use crate::config::{Config, HealthCheck};
use crate::error::{Error, Result};

/// Runs one check; `Ok` holds a short description of what passed.
pub fn run(cfg: &Config, h: &HealthCheck) -> Result<String> {
    let fail = |m: String| Error::Verification(format!("health check `{}`: {m}", h.name));
    let timeout = Duration::from_secs(h.timeout_seconds.max(1));
    if let Some(url) = &h.http {
        let shown = crate::secret::redact_url(url);
        let client = crate::system::tls::client_builder()
            .timeout(timeout)
            .build()
            .map_err(|e| fail(format!("HTTP client: {e}")))?;
        let resp = client
            .get(url)
            .send()
            // reqwest's message holds the URL as given, password included.
            .map_err(|e| fail(format!("GET {shown}: {}", e.without_url())))?;
        if !resp.status().is_success() {
            return Err(fail(format!("GET {shown} answered {}", resp.status())));
        }
        return Ok(format!("{}: GET {shown} {}", h.name, resp.status()));
    }
    if let Some(sql) = &h.sql {
        let key = h.postgres.as_deref().unwrap_or_default();
        let pg = cfg
            .postgres
            .get(key)
            .ok_or_else(|| fail(format!("no [postgres.{key}]")))?;
        let mut client = crate::postgres::connect(key, pg)?;
        let stmt = format!("SET statement_timeout = {}", timeout.as_millis());
        client
            .batch_execute(&stmt)
            .map_err(|e| fail(e.to_string()))?;
        let rows = client
            .simple_query(sql)
            .map_err(|e| fail(format!("`{sql}` failed: {e}")))?;
        let first = rows.iter().find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        });
        if let Some(v) = first {
            if matches!(v.as_deref(), None | Some("f" | "false" | "0")) {
                return Err(fail(format!(
                    "`{sql}` returned {}",
                    v.as_deref().unwrap_or("NULL")
                )));
            }
        }
        return Ok(format!("{}: SQL ok", h.name));
    }
    if let Some(command) = &h.command {
        let words: Vec<&str> = command.split_whitespace().collect();
        let (prog, args) = words
            .split_first()
            .ok_or_else(|| fail("empty command".into()))?;
        let mut child = crate::process::command(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| fail(format!("cannot run `{prog}`: {e}")))?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| fail(e.to_string()))? {
                if status.success() {
                    return Ok(format!("{}: `{prog}` ok", h.name));
                }
                return Err(fail(format!("`{prog}` exited with {status}")));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "`{prog}` did not finish in {}s",
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Err(fail("no check configured".into()))
}
