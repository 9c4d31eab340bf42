//! Scratch database files for the store's unit tests.

use std::path::PathBuf;

use sqlx::ConnectOptions as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode};

/// A new WAL database in the temporary folder with a table `t`, its files removed on drop.
pub(super) struct Scratch {
    path: PathBuf,
    pub(super) options: SqliteConnectOptions,
}

impl Scratch {
    pub(super) async fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "cloakroom-{name}-{}.db",
            crate::id::Id::generate().as_str()
        ));
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("wal_autocheckpoint", "0")
            .busy_timeout(std::time::Duration::from_secs(2));
        let mut connection = options.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (k TEXT NOT NULL PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&mut connection)
            .await
            .unwrap();
        Scratch { path, options }
    }

    pub(super) async fn connect(&self) -> SqliteConnection {
        self.options.connect().await.unwrap()
    }

    /// The rows of `t` another connection sees.
    pub(super) async fn rows(&self) -> i64 {
        let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM t")
            .fetch_one(&mut self.connect().await)
            .await
            .unwrap();
        rows
    }

    /// The log's length in pages.
    pub(super) async fn log_pages(&self) -> i64 {
        let (_, pages, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut self.connect().await)
            .await
            .unwrap();
        pages
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}
