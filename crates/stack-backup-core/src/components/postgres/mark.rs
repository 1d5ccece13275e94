//! The change mark of a PostgreSQL database: what proves a later backup's
//! database equal to the one a parent set dumped, so that the parent's dump
//! is reused unread (`docs/decisions/0048-postgres-unchanged-backups.md`).
//!
//! Read in the dump's own snapshot transaction (`REPEATABLE READ`, the one
//! `pg_dump --snapshot` imports), with the stack's own role:
//! - `txid_current_snapshot()`, the dump's snapshot as `xmin:xmax:xip`.
//!   Every transactional change (rows, DDL, roles, large objects, on any
//!   database of the cluster) needs a transaction ID; two equal snapshots
//!   mean no ID was assigned in between and the same ones still run, so
//!   the same rows are visible.
//! - Every sequence's `last_value`, `log_cnt` and `is_called`: `nextval`
//!   and `setval` change a sequence without a transaction ID (and `nextval`
//!   mostly without WAL); `pg_dump` reads their current values.
//! - `pg_current_wal_insert_lsn()`: whatever else is WAL-logged without a
//!   transaction ID (`VACUUM`'s in-place updates of `pg_class`) moves it.
//!   A database with an unlogged sequence (which changes with neither)
//!   gets no mark.
//! - The cluster (`system_identifier`, the postmaster's start time) and the
//!   database's OID, and a SHA-256 of the dump's arguments.
//!
//! A backup keeps its mark only when the moving parts (LSN, sequences) read
//! again after its dump are as before it: then the mark describes exactly
//! what the dump holds.

use serde::{Deserialize, Serialize};

/// `PostgresRecord.mark`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PgMark {
    /// `txid_current_snapshot()` of the dump's snapshot.
    pub snapshot: String,
    /// `pg_current_wal_insert_lsn()`.
    pub lsn: String,
    /// `system_identifier` and `pg_postmaster_start_time()`.
    pub cluster: String,
    /// The database's OID.
    pub database_oid: u32,
    /// SHA-256 of every sequence's name, `last_value`, `log_cnt` and
    /// `is_called`, in name order.
    pub sequences: String,
    /// SHA-256 of the dump's arguments (the snapshot's name left out).
    pub args: String,
}

/// Reads the mark in `client`'s snapshot transaction (already open, with
/// the snapshot `pg_dump` imports), inside a savepoint: a failed read (a
/// standby, a sequence the role may not read) is rolled back to it and
/// leaves the transaction, its locks and its exported snapshot as they
/// were. `args` is the digest of the dump's arguments. `None`: no mark
/// can stand for this database (it has unlogged sequences).
pub(super) fn read(
    client: &mut postgres::Client,
    args: &str,
) -> Result<Option<PgMark>, postgres::Error> {
    client.batch_execute("SAVEPOINT stack_backup_mark")?;
    match read_in(client, args) {
        Ok(mark) => {
            client.batch_execute("RELEASE SAVEPOINT stack_backup_mark")?;
            Ok(mark)
        }
        Err(e) => {
            client.batch_execute("ROLLBACK TO SAVEPOINT stack_backup_mark")?;
            Err(e)
        }
    }
}

fn read_in(client: &mut postgres::Client, args: &str) -> Result<Option<PgMark>, postgres::Error> {
    if crate::system::fault::point("postgres-mark-fails").is_err() {
        // A test's stand-in for a read the server refuses (a standby):
        // a real error, which aborts the transaction up to the savepoint.
        client.query_one("SELECT 1 / 0", &[])?;
    }
    // An unlogged sequence changes with neither a transaction ID nor WAL,
    // and `setval` can bring it back to a state read before: nothing here
    // could tell.
    let unlogged: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relkind = 'S' AND relpersistence = 'u'",
            &[],
        )?
        .get(0);
    if unlogged > 0 {
        return Ok(None);
    }
    let row = client.query_one(
        "SELECT txid_current_snapshot()::text, \
                (SELECT system_identifier FROM pg_control_system())::text \
                  || ' ' || pg_postmaster_start_time()::text, \
                (SELECT oid FROM pg_database WHERE datname = current_database())",
        &[],
    )?;
    let (lsn, sequences) = moving(client)?;
    Ok(Some(PgMark {
        snapshot: row.get(0),
        lsn,
        cluster: row.get(1),
        database_oid: row.get::<_, postgres::types::Oid>(2),
        sequences,
        args: args.to_string(),
    }))
}

/// The parts of the mark that change outside transactions: the WAL
/// position and the sequences' digest.
pub(super) fn moving(client: &mut postgres::Client) -> Result<(String, String), postgres::Error> {
    let names: Vec<String> = client
        .query(
            "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut text = String::new();
    for name in &names {
        // Not MVCC: the sequence as it is now, as pg_dump reads it.
        let row = client.query_one(
            &format!("SELECT last_value::text, log_cnt::text, is_called FROM {name}"),
            &[],
        )?;
        let (value, log_cnt, called): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        text.push_str(&format!("{name} {value} {log_cnt} {called}\n"));
    }
    // The insert position: the write position lags behind records
    // already made (an in-place update just before the read).
    let lsn: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])?
        .get(0);
    Ok((lsn, crate::ledger::sha256_hex(text.as_bytes())))
}

impl PgMark {
    /// Whether the moving parts read after the dump are still this mark's.
    #[must_use]
    pub fn still(&self, moving: &(String, String)) -> bool {
        (&self.lsn, &self.sequences) == (&moving.0, &moving.1)
    }
}
