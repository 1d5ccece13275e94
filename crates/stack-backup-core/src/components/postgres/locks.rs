//! Bounded waits on other sessions' locks: naming who blocks, ending the
//! sessions of a database being replaced, and a watchdog for the tools
//! that reset `lock_timeout` themselves (`pg_restore` runs the archive's
//! `SET lock_timeout = 0`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// An SQL condition on a session's `pid`: the connected role may end that
/// session (a superuser any, a role its own and its member roles');
/// ending another raises an error. Used under `CASE WHEN` in the target
/// list over a materialized choice of sessions: conditions in `WHERE` are
/// reordered and pushed down by the planner, so `pg_terminate_backend`
/// there could run for sessions the other conditions exclude.
const MAY_END: &str = "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
     OR pg_has_role(current_user, (SELECT usesysid FROM pg_stat_activity sb_a WHERE sb_a.pid = {pid}), 'MEMBER')";

fn may_end(pid: &str) -> String {
    format!("({})", MAY_END.replace("{pid}", pid))
}

/// SQLSTATE 55P03 `lock_not_available`: `lock_timeout` expired.
#[must_use]
pub fn is_lock_timeout(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// One line per session of database `db` that holds a lock another
/// session waits for, or an `ACCESS EXCLUSIVE` lock on a relation: pid,
/// role, state, age of its transaction and its query (shortened).
pub fn blockers(client: &mut postgres::Client, db: &str) -> Vec<String> {
    describe(
        client,
        db,
        "a.pid IN (SELECT unnest(pg_blocking_pids(w.pid)) FROM pg_stat_activity w WHERE w.datname = $1) \
         OR a.pid IN (SELECT l.pid FROM pg_locks l WHERE l.granted AND l.mode = 'AccessExclusiveLock' \
                      AND l.locktype = 'relation' AND l.database = (SELECT oid FROM pg_database WHERE datname = $1))",
        "the blocking sessions",
    )
}

/// The sessions of `db` (other than this one) that `condition` selects,
/// one line each: pid, role, state, age of its transaction (or
/// connection) and its query, shortened.
fn describe(client: &mut postgres::Client, db: &str, condition: &str, what: &str) -> Vec<String> {
    let rows = client.query(
        &format!(
            "SELECT a.pid, coalesce(a.usename, '?'), coalesce(a.state, '?'), \
                    coalesce(extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start))::bigint, 0), \
                    left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 120) \
             FROM pg_stat_activity a \
             WHERE a.datname = $1 AND a.pid <> pg_backend_pid() AND ({condition}) ORDER BY a.pid"
        ),
        &[&db],
    );
    match rows {
        Ok(rows) => rows
            .iter()
            .map(|r| {
                let (pid, user, state, age, query): (i32, String, String, i64, String) =
                    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
                format!("pid {pid} (role {user}, {state} for {age}s): {query}")
            })
            .collect(),
        Err(e) => vec![format!("(could not list {what}: {e})")],
    }
}

/// Ends the sessions of `db` that hold an `ACCESS EXCLUSIVE` lock on a
/// relation (those the connected role may end); returns them as
/// [`blockers`] describes them.
pub fn end_blockers(client: &mut postgres::Client, db: &str) -> Vec<String> {
    let before = blockers(client, db);
    let ended = client.query(
        &format!(
            "WITH b AS MATERIALIZED (SELECT DISTINCT l.pid FROM pg_locks l \
               WHERE l.granted AND l.mode = 'AccessExclusiveLock' AND l.locktype = 'relation' \
               AND l.pid <> pg_backend_pid() \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = $1)) \
             SELECT CASE WHEN {} THEN pg_terminate_backend(b.pid) ELSE false END FROM b",
            may_end("b.pid")
        ),
        &[&db],
    );
    match ended {
        Ok(rows) if rows.iter().any(|r| r.get::<_, bool>(0)) => before,
        _ => Vec::new(),
    }
}

/// One line per other session connected to `db` (a rename waits for none
/// to be left).
pub fn sessions(client: &mut postgres::Client, db: &str) -> Vec<String> {
    describe(client, db, "true", "the sessions")
}

/// The error for a lock not granted within `timeout` on database `db`.
#[must_use]
pub fn timed_out(component: &str, db: &str, timeout: Duration, blockers: &[String]) -> Error {
    let who = if blockers.is_empty() {
        "the blocking session ended meanwhile".to_string()
    } else {
        format!("blocked by {}", blockers.join("; "))
    };
    Error::LockTimeout(format!(
        "{component}: a lock on database `{db}` was not granted within {}s ({who}); \
         end that session or raise lock-timeout-seconds",
        timeout.as_secs()
    ))
}

/// Ends every other session connected to `db` that the connected role may
/// end (its own, or any as a superuser); returns the pids ended.
pub fn terminate_sessions(client: &mut postgres::Client, db: &str) -> Result<Vec<i32>> {
    let rows = client
        .query(
            // The sessions are chosen in a materialized CTE and ended in
            // the target list: a condition in WHERE may be evaluated for
            // every session of the server before `datname` filters them
            // (it is pushed below the join that provides `datname`).
            &format!(
                "WITH s AS MATERIALIZED (SELECT pid FROM pg_stat_activity \
                   WHERE datname = $1 AND pid <> pg_backend_pid()) \
                 SELECT pid, CASE WHEN {} THEN pg_terminate_backend(pid) ELSE false END FROM s",
                may_end("s.pid")
            ),
            &[&db],
        )
        .map_err(|e| Error::component("postgres", format!("ending the sessions on `{db}`: {e}")));
    // Whoever could not be ended and still blocks is named when the wait
    // runs out.
    match rows {
        Ok(rows) => Ok(rows
            .iter()
            .filter(|r| r.get::<_, bool>(1))
            .map(|r| r.get(0))
            .collect()),
        Err(_) => Ok(Vec::new()),
    }
}

/// Watches a running tool's session (found by its `application_name`)
/// while it runs. A lock wait longer than `timeout` first ends the
/// blocking sessions of `db` it may end; when that does not free it, the
/// tool is killed and the blockers are kept for the error.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Watchdog {
    /// Starts watching. `monitor` is a second session on the same server
    /// with the tool's credentials (its own lock timeout applies to its
    /// queries); when the wait cannot be ended, the tool's session is
    /// terminated, which ends the tool (its transaction rolls back).
    pub fn start(
        mut monitor: postgres::Client,
        app_name: String,
        db: String,
        timeout: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut waiting_since: Option<Instant> = None;
            let mut terminated = false;
            while !flag.load(Ordering::Relaxed) {
                let waiting = monitor
                    .query_opt(
                        "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 \
                         AND wait_event_type = 'Lock'",
                        &[&app_name],
                    )
                    .map(|r| r.is_some())
                    .unwrap_or(false);
                if !waiting {
                    waiting_since = None;
                } else {
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if !terminated && since.elapsed() >= Duration::from_millis(500) {
                        // The database is being replaced: sessions left on
                        // it are ended, as for the swap of `beside`.
                        let _ = monitor.query(
                            &format!(
                                "WITH b AS MATERIALIZED (SELECT DISTINCT b FROM pg_stat_activity w, \
                                   unnest(pg_blocking_pids(w.pid)) b \
                                   WHERE w.application_name = $1 AND b IN \
                                   (SELECT pid FROM pg_stat_activity WHERE datname = $2)) \
                                 SELECT CASE WHEN {} THEN pg_terminate_backend(b.b) ELSE false END FROM b",
                                may_end("b.b")
                            ),
                            &[&app_name, &db],
                        );
                        terminated = true;
                    }
                    if since.elapsed() >= timeout {
                        let who = blockers(&mut monitor, &db);
                        // Its session, not its process: a backend waiting
                        // on a lock does not notice its client is gone, and
                        // would keep what its transaction already locked.
                        let _ = monitor.query(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                             WHERE application_name = $1",
                            &[&app_name],
                        );
                        return who;
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Vec::new()
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops watching; the blockers when the watchdog killed the tool.
    pub fn finish(mut self) -> Option<Vec<String>> {
        self.stop.store(true, Ordering::Relaxed);
        let who = self.handle.take()?.join().unwrap_or_default();
        (!who.is_empty()).then_some(who)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
