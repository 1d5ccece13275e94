//! Copying one database's keys between two Redis servers, TTLs included,
//! and what the copy lets a check expect afterwards.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Keys asked for per `SCAN` and per pipeline.
const BATCH: usize = 1000;

/// Keys whose deadline is this close to a check may or may not be gone:
/// Redis expires keys lazily and by sampling, and the deadlines here are
/// taken on our clock when `PTTL` answered, a little before `RESTORE` set
/// them on the live server.
const EXPIRY_TOLERANCE: Duration = Duration::from_secs(1);

/// What a copy wrote.
#[derive(Debug, Clone, Default)]
pub(super) struct Copied {
    /// Keys written.
    pub keys: u64,
    /// Of those, keys without a TTL.
    pub persistent: u64,
    /// The deadlines of the others (when their TTL runs out).
    pub deadlines: Vec<Instant>,
    /// Keys of the RDB whose TTL ran out before they were copied.
    pub expired: u64,
    /// How long the copy took.
    pub took: Duration,
}

/// How many keys of a copy should exist at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expected {
    /// Certainly still there: without a TTL, or with a deadline further
    /// away than [`EXPIRY_TOLERANCE`].
    pub at_least: u64,
    /// Every key whose deadline had not passed.
    pub nominal: u64,
    /// At most every key copied (an expired key may still be counted until
    /// Redis reclaims it).
    pub at_most: u64,
}

impl Expected {
    /// Whether a `DBSIZE` of `n` fits.
    pub fn admits(self, n: u64) -> bool {
        (self.at_least..=self.at_most).contains(&n)
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at_least == self.at_most {
            write!(f, "{}", self.at_least)
        } else {
            write!(f, "{} to {}", self.at_least, self.at_most)
        }
    }
}

impl Copied {
    /// What should exist at `now`, if nobody but Redis's expiry touched the
    /// keys since the copy.
    pub fn expected(&self, now: Instant) -> Expected {
        let alive_after = |t: Instant| self.deadlines.iter().filter(|d| **d > t).count() as u64;
        Expected {
            at_least: self.persistent + alive_after(now + EXPIRY_TOLERANCE),
            nominal: self.persistent + alive_after(now),
            at_most: self.keys,
        }
    }
}

/// Copies every key of the database `src` is connected to into the one
/// `dst` is connected to, with `DUMP`/`PTTL` and `RESTORE … REPLACE`
/// (exact types, encodings and values; the remaining TTL). A key whose TTL
/// runs out before it is read is skipped and counted as expired. `SCAN`
/// may return a key twice; it is copied once.
pub(super) fn copy(
    src: &mut redis::Connection,
    dst: &mut redis::Connection,
    what: &dyn Fn(&str) -> Error,
) -> Result<Copied> {
    let started = Instant::now();
    let mut out = Copied::default();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(BATCH)
            .query(src)
            .map_err(|e| what(&format!("SCAN of the set's RDB failed: {e}")))?;
        let fresh: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| seen.insert(k.clone()))
            .collect();
        for chunk in fresh.chunks(BATCH) {
            copy_batch(src, dst, chunk, &mut out, what)?;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    out.took = started.elapsed();
    Ok(out)
}

fn copy_batch(
    src: &mut redis::Connection,
    dst: &mut redis::Connection,
    keys: &[Vec<u8>],
    out: &mut Copied,
    what: &dyn Fn(&str) -> Error,
) -> Result<()> {
    let mut read = redis::pipe();
    for k in keys {
        read.cmd("PTTL").arg(k).cmd("DUMP").arg(k);
    }
    let asked = Instant::now();
    let replies: Vec<redis::Value> = read
        .query(src)
        .map_err(|e| what(&format!("DUMP from the set's RDB failed: {e}")))?;
    let mut write = redis::pipe();
    let mut writes = 0;
    for (k, pair) in keys.iter().zip(replies.chunks(2)) {
        let pttl: i64 =
            redis::from_redis_value(&pair[0]).map_err(|e| what(&format!("PTTL answered {e}")))?;
        let payload: Option<Vec<u8>> =
            redis::from_redis_value(&pair[1]).map_err(|e| what(&format!("DUMP answered {e}")))?;
        // -2 and 0: gone, or going within the millisecond.
        let ttl = match (pttl, payload.is_some()) {
            (-1, true) => {
                out.persistent += 1;
                0
            }
            (t, true) if t > 0 => {
                out.deadlines
                    .push(asked + Duration::from_millis(t.unsigned_abs()));
                t
            }
            _ => {
                out.expired += 1;
                continue;
            }
        };
        write
            .cmd("RESTORE")
            .arg(k)
            .arg(ttl)
            .arg(payload)
            .arg("REPLACE")
            .ignore();
        out.keys += 1;
        writes += 1;
    }
    if writes == 0 {
        return Ok(());
    }
    write
        .query::<()>(dst)
        .map_err(|e| what(&format!("RESTORE into the live Redis failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_near_their_deadline_widen_the_range() {
        let now = Instant::now();
        let c = Copied {
            keys: 5,
            persistent: 2,
            deadlines: vec![
                now - Duration::from_secs(5),
                now + Duration::from_millis(300),
                now + Duration::from_secs(60),
            ],
            ..Copied::default()
        };
        let e = c.expected(now);
        assert_eq!((e.at_least, e.nominal, e.at_most), (3, 4, 5));
        assert!(e.admits(3) && e.admits(5) && !e.admits(2) && !e.admits(6));
        assert_eq!(e.to_string(), "3 to 5");
        let later = c.expected(now + Duration::from_secs(120));
        assert_eq!((later.at_least, later.nominal), (2, 2));
    }
}
