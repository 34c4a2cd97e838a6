//! State in a SQLite file (`state.path`), durable across restarts.
//!
//! One thread owns the connection and runs every call as its own
//! transaction, in order, so the async runtime never blocks on the disk
//! and calls are atomic for the plugin. Writes are IMMEDIATE transactions
//! (with a busy timeout of `state.timeout`), so several processes on one
//! host may share the file safely. The journal is a WAL with
//! `synchronous = NORMAL`: a committed call survives wsgate crashing or
//! being killed; a power cut may lose the last moments of writes.
//!
//! Deadlines are Unix milliseconds, so they hold across a restart (and
//! move with the system clock). Expired rows are filtered on every read,
//! purged for a plugin whose write would go over its quota, and swept
//! every [`SWEEP_EVERY`].

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::table::{self, Stored, Table};
use super::{Backend, StateError, cost};

/// How often expired rows of every plugin are deleted.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Calls waiting for the thread. Each running hook call waits on at most
/// one, so this is never reached unless the disk stops keeping up; then
/// calls fail with `unavailable` rather than queue without bound.
const QUEUE: usize = 4096;
/// The schema this code writes; a newer file is refused.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS state (
    plugin TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    expires_ms INTEGER,
    cost INTEGER NOT NULL,
    PRIMARY KEY (plugin, key)
);
CREATE INDEX IF NOT EXISTS state_expiry ON state (plugin, expires_ms)
    WHERE expires_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS usage (
    plugin TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL
);
";

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

pub struct Sqlite {
    jobs: SyncSender<Job>,
    quota: u64,
}

impl Sqlite {
    /// Opens (or creates) the file and starts its thread. A file that
    /// cannot be opened, is not a database, or was written by a newer
    /// wsgate is an error here, at startup.
    pub fn open(path: &Path, quota: u64, busy: Duration) -> anyhow::Result<Sqlite> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(busy)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "cannot use a write-ahead log (journal_mode is {mode})"
        );
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        anyhow::ensure!(
            version <= SCHEMA_VERSION,
            "written by a newer wsgate (schema {version}, this one knows {SCHEMA_VERSION})"
        );
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        let (jobs, rx) = mpsc::sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("wsgate-state".into())
            .spawn(move || serve(conn, rx))
            .context("starting the state thread")?;
        Ok(Sqlite { jobs, quota })
    }

    /// Runs `op` on the state thread and waits (asynchronously) for it.
    async fn run<R: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Connection) -> Result<R, StateError> + Send + 'static,
    ) -> Result<R, StateError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(op(conn));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(StateError::Unavailable(format!(
                    "{QUEUE} calls wait for the SQLite file"
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(StateError::Unavailable("the state thread stopped".into()));
            }
        }
        rx.await
            .map_err(|_| StateError::Unavailable("the state thread stopped".into()))?
    }

    /// Runs `op` on `plugin`'s rows in one IMMEDIATE transaction, with
    /// the time now. A refusal (over the quota, not a number) commits
    /// too: what a purge freed stays freed.
    async fn write<R: Send + 'static>(
        &self,
        plugin: &str,
        op: impl FnOnce(&mut Rows<'_>, u64) -> Result<R, StateError> + Send + 'static,
    ) -> Result<R, StateError> {
        let plugin = plugin.to_owned();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let result = op(
                &mut Rows {
                    tx: &tx,
                    plugin: &plugin,
                },
                now_ms(),
            );
            match result {
                Err(StateError::Unavailable(why)) => Err(StateError::Unavailable(why)),
                result => {
                    tx.commit().map_err(db)?;
                    result
                }
            }
        })
        .await
    }
}

fn now_ms() -> u64 {
    crate::unix_ms(SystemTime::now())
}

fn db(e: rusqlite::Error) -> StateError {
    StateError::Unavailable(format!("SQLite: {e}"))
}

/// The state thread: runs calls in order, and sweeps expired rows every
/// [`SWEEP_EVERY`]. Ends when the server drops the backend.
fn serve(mut conn: Connection, jobs: mpsc::Receiver<Job>) {
    let mut swept = Instant::now();
    loop {
        match jobs.recv_timeout(SWEEP_EVERY) {
            Ok(job) => job(&mut conn),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if swept.elapsed() >= SWEEP_EVERY {
            if let Err(e) = sweep(&mut conn, now_ms()) {
                tracing::warn!("plugin state: sweeping expired entries failed: {e}");
            }
            swept = Instant::now();
        }
    }
}

/// Deletes every plugin's expired rows.
fn sweep(conn: &mut Connection, now: u64) -> Result<(), StateError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    let plugins: Vec<String> = {
        let mut stmt = tx
            .prepare("SELECT DISTINCT plugin FROM state WHERE expires_ms <= ?1")
            .map_err(db)?;
        let rows = stmt.query_map([now], |r| r.get(0)).map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    for plugin in &plugins {
        Rows { tx: &tx, plugin }.purge(now)?;
    }
    tx.commit().map_err(db)
}

/// One plugin's rows inside a transaction.
struct Rows<'a> {
    tx: &'a Transaction<'a>,
    plugin: &'a str,
}

impl Table for Rows<'_> {
    fn load(&mut self, key: &str) -> Result<Option<Stored>, StateError> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT value, expires_ms FROM state WHERE plugin = ?1 AND key = ?2")
            .map_err(db)?;
        stmt.query_row(params![self.plugin, key], |r| {
            Ok(Stored {
                value: r.get(0)?,
                expires: r.get(1)?,
            })
        })
        .optional()
        .map_err(db)
    }

    fn store(&mut self, key: &str, value: &[u8], expires: Option<u64>) -> Result<(), StateError> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO state (plugin, key, value, expires_ms, cost) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (plugin, key) DO UPDATE SET
                    value = excluded.value, expires_ms = excluded.expires_ms, cost = excluded.cost",
            )
            .map_err(db)?;
        let cost = cost(key, value.len());
        stmt.execute(params![self.plugin, key, value, expires, cost])
            .map_err(db)?;
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), StateError> {
        let mut stmt = self
            .tx
            .prepare_cached("DELETE FROM state WHERE plugin = ?1 AND key = ?2")
            .map_err(db)?;
        stmt.execute(params![self.plugin, key]).map_err(db)?;
        Ok(())
    }

    fn used(&mut self) -> Result<u64, StateError> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT bytes FROM usage WHERE plugin = ?1")
            .map_err(db)?;
        let bytes: Option<u64> = stmt
            .query_row([self.plugin], |r| r.get(0))
            .optional()
            .map_err(db)?;
        Ok(bytes.unwrap_or(0))
    }

    fn set_used(&mut self, bytes: u64) -> Result<(), StateError> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO usage (plugin, bytes) VALUES (?1, ?2)
                 ON CONFLICT (plugin) DO UPDATE SET bytes = excluded.bytes",
            )
            .map_err(db)?;
        stmt.execute(params![self.plugin, bytes]).map_err(db)?;
        Ok(())
    }

    fn purge(&mut self, now: u64) -> Result<(), StateError> {
        let freed: u64 = self
            .tx
            .prepare_cached(
                "SELECT COALESCE(SUM(cost), 0) FROM state
                 WHERE plugin = ?1 AND expires_ms IS NOT NULL AND expires_ms <= ?2",
            )
            .and_then(|mut s| s.query_row(params![self.plugin, now], |r| r.get(0)))
            .map_err(db)?;
        if freed == 0 {
            return Ok(());
        }
        self.tx
            .prepare_cached(
                "DELETE FROM state WHERE plugin = ?1 AND expires_ms IS NOT NULL AND expires_ms <= ?2",
            )
            .and_then(|mut s| s.execute(params![self.plugin, now]))
            .map_err(db)?;
        let used = self.used()?;
        self.set_used(used.saturating_sub(freed))
    }

    fn keys(&mut self, prefix: &str, limit: usize, now: u64) -> Result<Vec<String>, StateError> {
        // Keys compare as bytes (SQLite's BINARY collation): those with
        // the prefix come first from it on, and the scan stops at the
        // first that lacks it.
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT key FROM state
                 WHERE plugin = ?1 AND key >= ?2 AND (expires_ms IS NULL OR expires_ms > ?3)
                 ORDER BY key",
            )
            .map_err(db)?;
        let mut rows = stmt.query(params![self.plugin, prefix, now]).map_err(db)?;
        let mut keys = Vec::new();
        while keys.len() < limit
            && let Some(row) = rows.next().map_err(db)?
        {
            let key: String = row.get(0).map_err(db)?;
            if !key.starts_with(prefix) {
                break;
            }
            keys.push(key);
        }
        Ok(keys)
    }
}

#[async_trait]
impl Backend for Sqlite {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let (plugin, key) = (plugin.to_owned(), key.to_owned());
        self.run(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            table::get(
                &mut Rows {
                    tx: &tx,
                    plugin: &plugin,
                },
                &key,
                now_ms(),
            )
        })
        .await
    }

    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        let (key, quota) = (key.to_owned(), self.quota);
        self.write(plugin, move |rows, now| {
            let expires = table::expiry(ttl, now);
            table::set(rows, &key, value.as_deref(), expires, quota, now)
        })
        .await
    }

    async fn increment(&self, plugin: &str, key: &str, delta: i64) -> Result<i64, StateError> {
        let (key, quota) = (key.to_owned(), self.quota);
        self.write(plugin, move |rows, now| {
            table::increment(rows, &key, delta, quota, now)
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StateError> {
        let (key, quota) = (key.to_owned(), self.quota);
        self.write(plugin, move |rows, now| {
            let (expected, new) = (expected.as_deref(), new.as_deref());
            table::compare_and_swap(rows, &key, expected, new, quota, now)
        })
        .await
    }

    async fn keys(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        let (plugin, prefix) = (plugin.to_owned(), prefix.to_owned());
        self.run(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            table::keys(
                &mut Rows {
                    tx: &tx,
                    plugin: &plugin,
                },
                &prefix,
                limit,
                now_ms(),
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::ENTRY_OVERHEAD;
    use super::*;

    fn open(dir: &tempfile::TempDir, quota: u64) -> Sqlite {
        Sqlite::open(&dir.path().join("state.db"), quota, Duration::from_secs(2)).unwrap()
    }

    #[tokio::test]
    async fn entries_quota_and_counters_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let quota = 3 * ENTRY_OVERHEAD + 20;
        {
            let db = open(&dir, quota);
            db.set("p", "greeting", Some(b"hi".to_vec()), None)
                .await
                .unwrap();
            assert_eq!(db.increment("p", "n", 41).await, Ok(41));
            db.set("q", "other", Some(b"x".to_vec()), None)
                .await
                .unwrap();
        }
        let db = open(&dir, quota);
        assert_eq!(db.get("p", "greeting").await.unwrap(), Some(b"hi".to_vec()));
        assert_eq!(db.increment("p", "n", 1).await, Ok(42));
        assert_eq!(db.keys("p", "", 10).await.unwrap(), ["greeting", "n"]);
        // The byte count came back with the rows: 8+2 + 1+2 = 13 of 20.
        assert_eq!(
            db.set("p", "k", Some(vec![0; 7]), None).await,
            Err(StateError::LimitReached)
        );
        db.set("p", "k", Some(vec![0; 6]), None).await.unwrap();
        assert_eq!(db.get("q", "other").await.unwrap(), Some(b"x".to_vec()));
    }

    #[tokio::test]
    async fn expired_rows_are_filtered_then_purged() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir, 2 * ENTRY_OVERHEAD + 4);
        db.set(
            "p",
            "a",
            Some(b"1".to_vec()),
            Some(Duration::from_millis(50)),
        )
        .await
        .unwrap();
        db.set("p", "b", Some(b"2".to_vec()), None).await.unwrap();
        assert_eq!(db.get("p", "a").await.unwrap(), Some(b"1".to_vec()));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(db.get("p", "a").await.unwrap(), None);
        assert_eq!(db.keys("p", "", 10).await.unwrap(), ["b"]);
        assert!(
            !db.compare_and_swap("p", "a", Some(b"1".to_vec()), None)
                .await
                .unwrap()
        );
        // The quota is full until a write purges the expired row.
        db.set("p", "c", Some(b"3".to_vec()), None).await.unwrap();
        assert_eq!(db.keys("p", "", 10).await.unwrap(), ["b", "c"]);
    }

    #[test]
    fn the_sweep_deletes_expired_rows_and_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(Sqlite::open(&path, 1 << 20, Duration::from_secs(2)).unwrap());
        let mut conn = Connection::open(&path).unwrap();
        {
            let tx = conn.transaction().unwrap();
            {
                let mut rows = Rows {
                    tx: &tx,
                    plugin: "p",
                };
                table::set(&mut rows, "gone", Some(b"x"), Some(10), 1 << 20, 0).unwrap();
                table::set(&mut rows, "kept", Some(b"y"), None, 1 << 20, 0).unwrap();
            }
            tx.commit().unwrap();
        }
        sweep(&mut conn, 10).unwrap();
        let count: u64 = conn
            .query_row("SELECT COUNT(*) FROM state", [], |r| r.get(0))
            .unwrap();
        let used: u64 = conn
            .query_row("SELECT bytes FROM usage WHERE plugin = 'p'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!((count, used), (1, cost("kept", 1)));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(
            &path,
            "not a database, just text that is long enough to have a header",
        )
        .unwrap();
        assert!(Sqlite::open(&path, 1, Duration::from_secs(1)).is_err());
    }
}
