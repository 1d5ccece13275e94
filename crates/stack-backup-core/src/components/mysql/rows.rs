//! The `rows-v1` dump format
//! (`docs/decisions/0046-mysql-rows-as-text-loaded-with-load-data.md`):
//! the schema as SQL (`mariadb-dump --no-data`, taken under the table
//! locks of decision 0032) and every base table's rows as one text file in
//! `LOAD DATA`'s default format, read by the counting session in its
//! consistent snapshot and loaded back with `LOAD DATA LOCAL INFILE`.
//!
//! Contract: a database is dumped this way only when every column that is
//! stored has a type whose text form `LOAD DATA` reads back to the same
//! value ([`eligible`]); anything else keeps the SQL dump. The row counts
//! of a `rows-v1` set are the rows written, in the same snapshot.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use ::mysql::prelude::Queryable;
use serde::{Deserialize, Serialize};

use super::server::{component, error_text, exec, migration_state, quote_ident, quote_str};
use crate::error::{Error, Result};
use crate::manifest::{safe_file_name, MigrationState};

/// The manifest's `format` of this layout.
pub const FORMAT: &str = "rows-v1";

/// The session settings both sides use: `+00:00` so that `TIMESTAMP`
/// values read and loaded are the same instants whatever the server's
/// zone, no value of 0 in an `AUTO_INCREMENT` column turned into a new
/// one (what `mariadb-dump` sets too), and a date stored under
/// `ALLOW_INVALID_DATES` (`2024-02-31`) loaded as stored, not refused with
/// a warning (which fails the load).
const SESSION: &str =
    "SET SESSION time_zone = '+00:00', sql_mode = 'NO_AUTO_VALUE_ON_ZERO,ALLOW_INVALID_DATES'";

/// One base table's rows in the set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RowsFile {
    /// The table.
    pub table: String,
    /// The file in the set ([`rows_path`]).
    pub path: String,
    /// The stored columns, in the file's order (generated ones left out).
    pub columns: Vec<String>,
}

/// Where the schema of a `rows-v1` set is.
#[must_use]
pub fn schema_path(name: &str, db: &str) -> String {
    format!("mysql/{name}/{}.schema.sql", safe_file_name(db))
}

/// Where the rows of `table` are (always ending in `.tsv`: no name is `.`
/// or `..`).
#[must_use]
pub fn rows_path(name: &str, db: &str, table: &str) -> String {
    format!(
        "mysql/{name}/{}.rows/{}.tsv",
        safe_file_name(db),
        safe_file_name(table)
    )
}

/// Column types whose text form (as the server writes it with
/// `character_set_results = binary`) `LOAD DATA … CHARACTER SET binary`
/// reads back to the same value. Not here, so the SQL dump: FLOAT and
/// DOUBLE (text is rounded to the shortest form; not proven exact), BIT
/// (written as raw bits), spatial types, MariaDB's INET4/INET6/UUID, and
/// ENUM and SET: a stored value need not have a text that loads back to
/// it (an ENUM's error value 0 reads as `''`, which loads as a `''`
/// member or fails; a SET's `''` member reads as no member).
const EXACT_TYPES: &[&str] = &[
    "tinyint",
    "smallint",
    "mediumint",
    "int",
    "bigint",
    "decimal",
    "char",
    "varchar",
    "tinytext",
    "text",
    "mediumtext",
    "longtext",
    "binary",
    "varbinary",
    "tinyblob",
    "blob",
    "mediumblob",
    "longblob",
    "date",
    "datetime",
    "timestamp",
    "time",
    "year",
];

/// Character sets in which the bytes `\`, tab, newline, CR and NUL never
/// occur inside a multi-byte character, so escaping them byte by byte is
/// exact (not so in e.g. sjis or gbk).
const SAFE_CHARSETS: &[&str] = &["utf8mb4", "utf8mb3", "utf8", "latin1", "ascii", "binary"];

/// The rows files of the session's database, or why it keeps the SQL dump
/// (`Err` inside `Ok`): any entry that is not an InnoDB base table (views,
/// sequences, system-versioned tables, MyISAM: their rows are not in the
/// snapshot, or not all visible), triggers, routines or events, a stored
/// column of a type not in [`EXACT_TYPES`] or a character set not in
/// [`SAFE_CHARSETS`], a table or column name with a control character
/// ([`plain_name`]), two tables whose file names would be equal, or base
/// tables other than `locked` (one created or dropped between the listing
/// and `LOCK TABLES` was never locked). Read with the tables locked, so
/// the definitions cannot change before the schema is dumped.
pub fn eligible(
    name: &str,
    c: &mut ::mysql::Conn,
    db: &str,
    locked: &[String],
) -> Result<std::result::Result<Vec<RowsFile>, String>> {
    let fail = |what: &str, e: &::mysql::Error| {
        Error::component(component(name), format!("{what}: {}", error_text(e)))
    };
    // Read again under the lock: one may have been created since.
    if !super::server::objects(name, c)?.is_empty() {
        return Ok(Err(
            "the database has views, triggers, routines or events".into()
        ));
    }
    let entries: Vec<(String, String, Option<String>)> = c
        .query(
            "SELECT TABLE_NAME, TABLE_TYPE, ENGINE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
        )
        .map_err(|e| fail("listing tables", &e))?;
    if let Some((t, ty, engine)) = entries
        .iter()
        .find(|(_, ty, engine)| ty != "BASE TABLE" || engine.as_deref() != Some("InnoDB"))
    {
        return Ok(Err(format!(
            "`{t}` is a {ty} ({})",
            engine.as_deref().unwrap_or("no engine")
        )));
    }
    let listed: Vec<&String> = entries.iter().map(|(t, _, _)| t).collect();
    if let Some(why) = same_tables(locked, &listed) {
        return Ok(Err(why));
    }
    if let Some((t, _, _)) = entries.iter().find(|(t, _, _)| !plain_name(t)) {
        return Ok(Err(format!(
            "table {t:?} has a control character in its name"
        )));
    }
    let columns: Vec<Column> = c
        .query(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME, IS_GENERATED \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             ORDER BY TABLE_NAME, ORDINAL_POSITION",
        )
        .map_err(|e| fail("listing columns", &e))?;
    let mut files: BTreeMap<String, Vec<String>> = entries
        .iter()
        .map(|(t, _, _)| (t.clone(), Vec::new()))
        .collect();
    for (t, col, ty, charset, generated) in columns {
        if generated.as_deref() == Some("ALWAYS") {
            continue;
        }
        if !plain_name(&col) {
            return Ok(Err(format!(
                "`{t}`.{col:?} has a control character in its name"
            )));
        }
        let ty = ty.to_ascii_lowercase();
        if !EXACT_TYPES.contains(&ty.as_str()) {
            return Ok(Err(format!("`{t}`.`{col}` is {ty}")));
        }
        if let Some(cs) = charset.filter(|cs| !SAFE_CHARSETS.contains(&cs.as_str())) {
            return Ok(Err(format!("`{t}`.`{col}` is in character set {cs}")));
        }
        if let Some(cols) = files.get_mut(&t) {
            cols.push(col);
        }
    }
    let mut paths = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (table, columns) in files {
        let path = rows_path(name, db, &table);
        if columns.is_empty() || !paths.insert(path.clone()) {
            return Ok(Err(format!(
                "`{table}` has no stored column or shares its file name with another table"
            )));
        }
        out.push(RowsFile {
            table,
            path,
            columns,
        });
    }
    Ok(Ok(out))
}

/// Whether a table or column name has no control character (`\n`, `\r`,
/// NUL, any byte below 0x20, DEL): MariaDB accepts them in quoted names,
/// and a name that spans lines could end a line of the export's load
/// script or the manifest it is shown in. Such a database keeps the SQL
/// dump; a set naming one is refused.
#[must_use]
pub fn plain_name(s: &str) -> bool {
    !s.is_empty() && !s.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// Why the base tables read under the lock are not the ones locked
/// (`None`: the same, in the same order).
fn same_tables(locked: &[String], listed: &[&String]) -> Option<String> {
    if locked.iter().eq(listed.iter().copied()) {
        None
    } else {
        Some(format!(
            "the tables changed between listing and locking them (locked {locked:?}, now {listed:?})"
        ))
    }
}

/// A column of `information_schema.COLUMNS`: table, name, data type,
/// character set, `IS_GENERATED`.
type Column = (String, String, String, Option<String>, Option<String>);

/// Appends one field in `LOAD DATA`'s default format: `\`, tab, newline,
/// CR and NUL escaped with `\`; every other byte as is.
pub fn encode_field(v: &[u8], out: &mut Vec<u8>) {
    let mut start = 0;
    for (i, &b) in v.iter().enumerate() {
        let esc = match b {
            b'\\' => b'\\',
            b'\t' => b't',
            b'\n' => b'n',
            b'\r' => b'r',
            0 => b'0',
            _ => continue,
        };
        out.extend_from_slice(&v[start..i]);
        out.push(b'\\');
        out.push(esc);
        start = i + 1;
    }
    out.extend_from_slice(&v[start..]);
}

/// Appends one row: fields separated by tabs, NULL as `\N`, ended by a
/// newline.
pub fn encode_row<'a>(fields: impl IntoIterator<Item = Option<&'a [u8]>>, out: &mut Vec<u8>) {
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match f {
            Some(v) => encode_field(v, out),
            None => out.extend_from_slice(b"\\N"),
        }
    }
    out.push(b'\n');
}

/// What the session thread sends a table's reader.
enum Chunk {
    Data(Vec<u8>),
    End,
    Fail(String),
}

/// What the archiver's readers ask the session thread.
enum Request {
    /// Stream the rows of `files[i]` into the channel.
    Table(usize, SyncSender<Chunk>),
    /// The archive run is over: commit and return.
    Done,
}

/// Bytes per chunk handed to a reader.
const CHUNK: usize = 256 * 1024;

/// The reader of one table's rows: blocks until the session thread
/// serves it (one table at a time, in the order the archiver opens them);
/// a failure or a thread gone before the end is an error, never a clean
/// end.
struct ChunkReader {
    table: String,
    rx: Receiver<Chunk>,
    buf: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Chunk::Data(d)) => {
                    self.buf = d;
                    self.pos = 0;
                }
                Ok(Chunk::End) => self.ended = true,
                Ok(Chunk::Fail(m)) => return Err(std::io::Error::other(m)),
                Err(_) => {
                    return Err(std::io::Error::other(format!(
                        "the rows of `{}` ended before their end",
                        self.table
                    )))
                }
            }
        }
        let n = (self.buf.len() - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// One table's rows as an artifact: opened, it asks the session thread.
#[derive(Debug)]
pub struct TableRows {
    index: usize,
    table: String,
    requests: Sender<Request>,
}

impl crate::source::Produce for TableRows {
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        let (tx, rx) = mpsc::sync_channel(4);
        self.requests
            .send(Request::Table(self.index, tx))
            .map_err(|_| std::io::Error::other("the rows session has ended"))?;
        Ok(Box::new(ChunkReader {
            table: self.table.clone(),
            rx,
            buf: Vec::new(),
            pos: 0,
            ended: false,
        }))
    }
}

/// What the session read: rows written per table, and the migration
/// state, both in its snapshot.
pub type RowsRead = (BTreeMap<String, i64>, Vec<MigrationState>);

/// The session that reads every table's rows in its snapshot (opened
/// under the table locks by the caller), serving the archiver's readers
/// one at a time.
pub struct Session {
    requests: Sender<Request>,
    thread: Option<std::thread::JoinHandle<Result<RowsRead>>>,
}

impl Session {
    /// Starts serving `files` from `conn` (its snapshot open): the
    /// migration state is read first, then rows with no character set
    /// conversion.
    pub fn start(name: &str, mut conn: ::mysql::Conn, files: Vec<RowsFile>) -> Self {
        let (requests, rx) = mpsc::channel::<Request>();
        let name = name.to_string();
        let thread = std::thread::spawn(move || -> Result<RowsRead> {
            let migrations = migration_state(&name, &mut conn)?;
            exec(
                &name,
                &mut conn,
                "reading rows without conversion",
                "SET SESSION character_set_results = binary",
            )?;
            let mut counts = BTreeMap::new();
            let mut failed: Option<String> = None;
            while let Ok(Request::Table(i, tx)) = rx.recv() {
                let f = &files[i];
                if let Some(m) = &failed {
                    let _ = tx.send(Chunk::Fail(m.clone()));
                    continue;
                }
                match stream_table(&mut conn, f, &tx) {
                    Ok(n) => {
                        counts.insert(f.table.clone(), n);
                        let _ = tx.send(Chunk::End);
                    }
                    Err(m) => {
                        let _ = tx.send(Chunk::Fail(m.clone()));
                        failed = Some(m);
                    }
                }
            }
            let _ = conn.query_drop("COMMIT");
            match failed {
                Some(m) => Err(Error::component(component(&name), m)),
                None => Ok((counts, migrations)),
            }
        });
        Self {
            requests,
            thread: Some(thread),
        }
    }

    /// The artifact of `files[index]`.
    #[must_use]
    pub fn table(&self, index: usize, table: &str) -> TableRows {
        TableRows {
            index,
            table: table.to_string(),
            requests: self.requests.clone(),
        }
    }

    /// Ends the session (after the archive run) and returns what it read.
    pub fn finish(mut self, name: &str) -> Result<RowsRead> {
        let _ = self.requests.send(Request::Done);
        self.thread.take().map_or_else(
            || {
                Err(Error::component(
                    component(name),
                    "the rows session is gone",
                ))
            },
            |t| {
                t.join().unwrap_or_else(|_| {
                    Err(Error::component(component(name), "reading rows panicked"))
                })
            },
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Done);
    }
}

/// Streams `SELECT <columns> FROM <table>` (text protocol, row by row)
/// into `tx`; returns the rows written.
fn stream_table(
    conn: &mut ::mysql::Conn,
    f: &RowsFile,
    tx: &SyncSender<Chunk>,
) -> std::result::Result<i64, String> {
    let cols: Vec<String> = f.columns.iter().map(|c| quote_ident(c)).collect();
    let sql = format!("SELECT {} FROM {}", cols.join(", "), quote_ident(&f.table));
    let gone = || format!("the reader of `{}` went away", f.table);
    let mut result = conn
        .query_iter(sql)
        .map_err(|e| format!("reading the rows of `{}`: {}", f.table, error_text(&e)))?;
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    let mut n: i64 = 0;
    for row in result.by_ref() {
        let row =
            row.map_err(|e| format!("reading the rows of `{}`: {}", f.table, error_text(&e)))?;
        let values = row.unwrap_raw();
        let mut fields = Vec::with_capacity(values.len());
        for v in &values {
            fields.push(match v {
                None | Some(::mysql::Value::NULL) => None,
                Some(::mysql::Value::Bytes(b)) => Some(b.as_slice()),
                Some(other) => {
                    return Err(format!(
                        "`{}`: a value that is not text ({other:?})",
                        f.table
                    ))
                }
            });
        }
        encode_row(fields, &mut buf);
        n += 1;
        if n == 1 && crate::system::fault::point("backup-mysql-rows").is_err() {
            // Tests: a read that breaks after some rows went out.
            let _ = tx.send(Chunk::Data(std::mem::take(&mut buf)));
            return Err(format!(
                "reading the rows of `{}`: broken (fault point)",
                f.table
            ));
        }
        if buf.len() >= CHUNK {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 4096));
            tx.send(Chunk::Data(full)).map_err(|_| gone())?;
        }
    }
    drop(result);
    if !buf.is_empty() {
        tx.send(Chunk::Data(buf)).map_err(|_| gone())?;
    }
    Ok(n)
}

/// Prepares the counting session for reading rows: `+00:00` (see
/// [`SESSION`]); call before its snapshot opens. The session waits on
/// the archiver whenever the repository is slower than the rows (a
/// remote one retrying): `net_write_timeout` (60 s by default) would make
/// the server abort the read, so it gets an hour.
pub fn prepare_reader(name: &str, c: &mut ::mysql::Conn) -> Result<()> {
    exec(name, c, "setting the session for reading rows", SESSION)?;
    exec(
        name,
        c,
        "setting the session for reading rows",
        "SET SESSION net_write_timeout = 3600",
    )
}

/// The schema of the connection's database, dumped now (with the tables
/// locked) into memory: `tool --no-data …` with the option file first.
pub fn dump_schema(
    name: &str,
    program: &Path,
    option_arg: &str,
    args: &[String],
) -> Result<Vec<u8>> {
    let comp = component(name);
    let out = crate::process::command(program)
        .arg(option_arg)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::component(&comp, format!("cannot run `{}`: {e}", program.display())))?;
    if !out.status.success() {
        return Err(Error::component(
            &comp,
            format!(
                "`{} {}` failed ({}): {}",
                program.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(out.stdout)
}

/// `LOAD DATA` of one rows file, the format spelled out (it is the
/// default) so that a server's settings cannot change it.
#[must_use]
pub fn load_statement(f: &RowsFile, file: &str) -> String {
    let cols: Vec<String> = f.columns.iter().map(|c| quote_ident(c)).collect();
    format!(
        "LOAD DATA LOCAL INFILE {} INTO TABLE {} CHARACTER SET binary \
         FIELDS TERMINATED BY '\\t' ENCLOSED BY '' ESCAPED BY '\\\\' \
         LINES STARTING BY '' TERMINATED BY '\\n' ({})",
        quote_str(file),
        quote_ident(&f.table),
        cols.join(", ")
    )
}

/// The session settings of a load, for the export's instructions too.
#[must_use]
pub fn load_session() -> String {
    format!("{SESSION}, foreign_key_checks = 0, unique_checks = 0")
}

/// Whether the server accepts `LOAD DATA LOCAL` (`@@local_infile`).
pub fn local_infile_on(name: &str, c: &mut ::mysql::Conn) -> Result<()> {
    let on: Option<i64> = c.query_first("SELECT @@GLOBAL.local_infile").map_err(|e| {
        Error::component(
            component(name),
            format!("reading local_infile: {}", error_text(&e)),
        )
    })?;
    // Tests: the server's answer when the variable is OFF (turning it
    // off on the shared test server would break every other load).
    let on = if crate::system::fault::value("mysql-local-infile-off").is_some() {
        Some(0)
    } else {
        on
    };
    if on == Some(1) {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "{}: the set holds rows as text (format {FORMAT}), loaded with LOAD DATA LOCAL INFILE, and the server's `local_infile` variable is OFF; turn it on for the restore (SET GLOBAL local_infile = ON) or restore the export by hand",
        component(name)
    )))
}

/// The only file name the local-infile handler answers: the one in the
/// restore's `LOAD DATA` statement.
const INFILE_NAME: &str = "stack-backup-rows";

/// The local-infile handler's answer: the rows in `slot`, once, and only
/// when the server asks for [`INFILE_NAME`]. A server (or a statement)
/// asking for any other name — a file of this host — gets an error and
/// nothing is read.
fn serve_rows<R: Read, W: std::io::Write>(
    file_name: &[u8],
    slot: &Mutex<Option<R>>,
    out: &mut W,
) -> std::io::Result<()> {
    if file_name != INFILE_NAME.as_bytes() {
        return Err(std::io::Error::other("the server asked for another file"));
    }
    let Some(mut r) = slot.lock().ok().and_then(|mut s| s.take()) else {
        return Err(std::io::Error::other("the rows were already sent"));
    };
    std::io::copy(&mut r, out).map(|_| ())
}

/// Loads every rows file of the set into the connection's database (the
/// schema already created), each streamed from the set through the
/// driver's local-infile handler (nothing else is ever sent: the handler
/// answers only the name it was given); checks each table got exactly
/// its recorded rows and no warning (with `LOCAL`, the server turns bad
/// values and duplicate keys into warnings and skips).
pub fn load(
    set: &crate::components::restoring::SetContext,
    id: &crate::components::ComponentId,
    conn: &mut ::mysql::Conn,
    files: &[RowsFile],
    counts: &BTreeMap<String, i64>,
) -> Result<()> {
    let comp = id.as_str();
    exec(id.name(), conn, "preparing the load", &load_session())?;
    for f in files {
        let node = set.node(id, &f.path)?;
        let (reader, mut writer) = std::io::pipe()
            .map_err(|e| Error::component(comp, format!("a pipe for the rows: {e}")))?;
        let slot: Arc<Mutex<Option<std::io::PipeReader>>> = Arc::new(Mutex::new(Some(reader)));
        let handler_slot = slot.clone();
        let expected_name = INFILE_NAME;
        conn.set_local_infile_handler(Some(::mysql::LocalInfileHandler::new(
            move |file_name, out| serve_rows(file_name, &handler_slot, out),
        )));
        let repo = set.repo;
        let loaded = std::thread::scope(|s| {
            let feeder = s.spawn(move || {
                let r = repo.dump(&node, &mut writer);
                drop(writer);
                r
            });
            let loaded = conn
                .query_drop(load_statement(f, expected_name))
                .map(|()| (conn.affected_rows(), conn.warnings()));
            // A load that failed before reading everything leaves the
            // feeder writing into a pipe nobody reads: close it.
            if let Ok(mut unread) = slot.lock() {
                drop(unread.take());
            }
            let fed = feeder.join();
            (loaded, fed)
        });
        conn.set_local_infile_handler(None);
        let (loaded, fed) = loaded;
        let (rows, warnings) = loaded.map_err(|e| {
            Error::component(
                comp,
                format!("loading the rows of `{}`: {}", f.table, error_text(&e)),
            )
        })?;
        match fed {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Error::component(
                    comp,
                    format!(
                        "reading the rows of `{}` from the set: {}",
                        f.table,
                        e.display_log()
                    ),
                ))
            }
            Err(_) => return Err(Error::component(comp, "reading the set panicked")),
        }
        let mut want = counts.get(&f.table).copied().unwrap_or(-1);
        if let Some(n) = crate::system::fault::value("mysql-load-rows") {
            // Tests: a table that did not load its recorded rows.
            want += n.parse::<i64>().unwrap_or(1);
        }
        if warnings > 0 || i64::try_from(rows).ok() != Some(want) {
            return Err(Error::Verification(format!(
                "{comp}: loading `{}` gave {rows} rows and {warnings} warnings; the set holds {want} rows (a value the server did not take as written, or a duplicate key)",
                f.table
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `LOAD DATA`'s reading of one line in the default format (what the
    /// server does; here to check the encoder against).
    fn decode_line(line: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let mut cur = Vec::new();
        let mut raw_null = false;
        let mut i = 0;
        while i < line.len() {
            match line[i] {
                b'\\' => {
                    let e = line[i + 1];
                    if e == b'N' && cur.is_empty() && (i + 2 == line.len() || line[i + 2] == b'\t')
                    {
                        raw_null = true;
                    } else {
                        cur.push(match e {
                            b't' => b'\t',
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b'0' => 0,
                            other => other,
                        });
                    }
                    i += 2;
                }
                b'\t' => {
                    out.push(if raw_null {
                        None
                    } else {
                        Some(std::mem::take(&mut cur))
                    });
                    raw_null = false;
                    i += 1;
                }
                b => {
                    cur.push(b);
                    i += 1;
                }
            }
        }
        out.push(if raw_null { None } else { Some(cur) });
        out
    }

    #[test]
    fn every_special_byte_is_escaped_and_nothing_else() {
        let mut out = Vec::new();
        encode_field(b"a\\b\tc\nd\re\0f", &mut out);
        assert_eq!(out, b"a\\\\b\\tc\\nd\\re\\0f");
        let mut plain = Vec::new();
        let text = "NULL \\N? no: 'NULL' ☃ 😀 \"q\" , ;".as_bytes();
        encode_field(b"NULL", &mut plain);
        assert_eq!(plain, b"NULL", "the word NULL stays text");
        let mut out = Vec::new();
        encode_field(text, &mut out);
        assert_eq!(out.iter().filter(|&&b| b == b'\\').count(), 2);
    }

    #[test]
    fn null_empty_and_the_text_backslash_n_differ() {
        let mut out = Vec::new();
        encode_row(
            [None, Some(&b""[..]), Some(&b"\\N"[..]), Some(&b"NULL"[..])],
            &mut out,
        );
        assert_eq!(out, b"\\N\t\t\\\\N\tNULL\n");
        let line = &out[..out.len() - 1];
        assert_eq!(
            decode_line(line),
            vec![
                None,
                Some(vec![]),
                Some(b"\\N".to_vec()),
                Some(b"NULL".to_vec())
            ]
        );
    }

    #[test]
    fn every_byte_value_round_trips_through_the_load_data_reading() {
        let all: Vec<u8> = (0..=255u8).collect();
        let values: Vec<Vec<u8>> = vec![
            all.clone(),
            all.iter().rev().copied().collect(),
            b"\\".to_vec(),
            b"\\\\N".to_vec(),
            b"tab\tat end\t".to_vec(),
            b"\n".to_vec(),
            "😀 é".as_bytes().to_vec(),
            Vec::new(),
        ];
        let mut out = Vec::new();
        encode_row(values.iter().map(|v| Some(v.as_slice())), &mut out);
        // One line: no raw newline inside, and the last byte ends it.
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(out.last(), Some(&b'\n'));
        assert!(!out.contains(&0) && !out.contains(&b'\r'));
        let got = decode_line(&out[..out.len() - 1]);
        assert_eq!(got, values.into_iter().map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn the_infile_handler_answers_only_its_own_name_and_only_once() {
        let slot = Mutex::new(Some(&b"1\ta\n"[..]));
        for other in [
            &b"/etc/passwd"[..],
            b"",
            b"stack-backup-rows ",
            b"STACK-BACKUP-ROWS",
        ] {
            let mut out = Vec::new();
            assert!(serve_rows(other, &slot, &mut out).is_err(), "{other:?}");
            assert!(out.is_empty());
        }
        // Refusing another name did not use up the rows.
        let mut out = Vec::new();
        serve_rows(b"stack-backup-rows", &slot, &mut out).unwrap();
        assert_eq!(out, b"1\ta\n");
        let mut again = Vec::new();
        assert!(serve_rows(b"stack-backup-rows", &slot, &mut again).is_err());
        assert!(again.is_empty());
    }

    #[test]
    fn names_with_control_characters_are_not_plain() {
        assert!(plain_name("orders") && plain_name("we`ird 😀 name"));
        for bad in [
            "x\nSTACK_BACKUP_ROWS_END\ntouch /tmp/pwned #",
            "a\rb",
            "a\0b",
            "a\tb",
            "\x7f",
            "",
        ] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_table_created_or_dropped_before_the_lock_is_not_read_as_rows() {
        let locked = vec!["a".to_string(), "b".to_string()];
        let (a, b, c) = ("a".to_string(), "b".to_string(), "c".to_string());
        assert_eq!(same_tables(&locked, &[&a, &b]), None);
        assert!(same_tables(&locked, &[&a, &b, &c]).is_some(), "created");
        assert!(same_tables(&locked, &[&a]).is_some(), "dropped");
        assert!(same_tables(&locked, &[&a, &c]).is_some(), "renamed");
    }

    #[test]
    fn file_names_stay_inside_the_rows_directory() {
        assert_eq!(rows_path("app", "shop", ".."), "mysql/app/shop.rows/...tsv");
        assert_eq!(
            rows_path("app", "shop", "a/b"),
            "mysql/app/shop.rows/a_b.tsv"
        );
        assert_eq!(schema_path("app", "shop"), "mysql/app/shop.schema.sql");
    }

    #[test]
    fn the_load_statement_names_every_column_and_the_format() {
        let f = RowsFile {
            table: "we`ird".into(),
            path: String::new(),
            columns: vec!["a".into(), "b`c".into()],
        };
        assert_eq!(
            load_statement(&f, "x"),
            "LOAD DATA LOCAL INFILE 'x' INTO TABLE `we``ird` CHARACTER SET binary FIELDS TERMINATED BY '\\t' ENCLOSED BY '' ESCAPED BY '\\\\' LINES STARTING BY '' TERMINATED BY '\\n' (`a`, `b``c`)"
        );
    }
}
