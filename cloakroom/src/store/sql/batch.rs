//! Batching ([`crate::store::batch`]) on a pool of SQL connections: the pool gives the slots,
//! and the read request and row the SQL stores share.

use std::collections::HashMap;

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

use crate::store::batch::{Lost, Slots};
use crate::store::sql::ops::Replacement;

impl<DB: Database> Slots for Pool<DB> {
    type Slot = PoolConnection<DB>;
    type Error = sqlx::Error;

    async fn acquire(&self) -> Result<PoolConnection<DB>, sqlx::Error> {
        Pool::acquire(self).await
    }
}

impl From<Lost> for sqlx::Error {
    fn from(lost: Lost) -> Self {
        match lost {
            // As a broken connection's error is: transient, and the write may have been made.
            Lost::Abandoned => sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                lost,
            )),
            Lost::Unanswered => sqlx::Error::Protocol(lost.to_string()),
        }
    }
}

/// A read of one session, as the stores batch it: its id, now in seconds (its row must be live
/// then), and the size limit.
pub(crate) struct Read {
    pub(crate) sid: String,
    pub(crate) now: i64,
    pub(crate) max_size: i64,
}

/// A session's row as `get` reads it: `sess` (NULL when over the size limit), its length in
/// bytes, and the expiry in milliseconds; `None` when there is no live row.
pub(crate) type Row = Option<(Option<String>, i64, i64)>;

impl Read {
    /// `get`'s parameters for a batch of reads: now, the latest of theirs, which is no earlier
    /// than any of them began (every row must be live then), and the size limit.
    pub(crate) fn parameters(reads: &[Read]) -> (i64, i64) {
        let now = reads.iter().map(|read| read.now).max().unwrap_or(0);
        let max_size = reads.iter().map(|read| read.max_size).max().unwrap_or(0);
        (now, max_size)
    }

    /// Each read's row among `rows` (`sid`, then the row), found by id: an id read twice gets
    /// its row twice.
    pub(crate) fn answers(
        reads: &[Read],
        rows: impl IntoIterator<Item = (String, (Option<String>, i64, i64))>,
    ) -> Vec<Row> {
        let rows: HashMap<String, (Option<String>, i64, i64)> = rows.into_iter().collect();
        reads
            .iter()
            .map(|read| rows.get(&read.sid).cloned())
            .collect()
    }
}

/// A compare-and-set of one session: the new `sess`, its expiry in seconds, the id, the `sess`
/// it must still hold, and now in seconds (the row must be live then).
pub(crate) struct Write {
    pub(crate) sess: String,
    pub(crate) expire: i64,
    pub(crate) sid: String,
    pub(crate) expected: String,
    pub(crate) now: i64,
}

impl Write {
    /// The batch's now: the latest of its writes', which is no earlier than any of them began
    /// (every row must be live then).
    pub(crate) fn now(writes: &[Write]) -> i64 {
        writes.iter().map(|write| write.now).max().unwrap_or(0)
    }

    /// The owned copy of `write`, to wait in the queue.
    pub(crate) fn new(write: Replacement<'_>) -> Self {
        Write {
            sess: write.sess.to_owned(),
            expire: write.expire,
            sid: write.sid.to_owned(),
            expected: write.expected.to_owned(),
            now: write.now,
        }
    }

    /// This write as `replace` takes it, live at `now`.
    pub(crate) fn at(&self, now: i64) -> Replacement<'_> {
        Replacement {
            sess: &self.sess,
            expire: self.expire,
            sid: &self.sid,
            expected: &self.expected,
            now,
        }
    }
}
