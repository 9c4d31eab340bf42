//! The calls the store batches ([`batch`](crate::store::batch)): a read of one session, and a
//! compare-and-set of one session's data. MySQL has no arrays: many ids are read with
//! `sid IN (…)`, and many writes made by one `UPDATE` joined to them, one statement per power of
//! two (the list padded by repeating its last entry), so each connection prepares a handful.

use sqlx::Connection as _;
use sqlx::mysql::MySql;
use sqlx::pool::PoolConnection;

use super::{LoadableBytes, query, query_as, text, text_or_null};
use crate::store::batch::Kind;
use crate::store::sql::batch::{Read, Row, Write};
use crate::store::sql::{Arg, Dialect, Statement, Statements};

/// The largest `IN` list: 2 to the power of this.
const MOST_IDS_LOG2: u32 = 7;

/// `get`: `one` reads one session, `many[k]` 2^(k+1) ids at once.
pub(super) struct Get {
    one: Statement,
    many: Vec<Statement>,
}

impl Get {
    pub(super) fn new(dialect: &impl Dialect, table: &str, one: Statement) -> Self {
        let many = (1..=MOST_IDS_LOG2)
            .map(|log2| Statements::get_in(dialect, table, 1 << log2))
            .collect();
        Get { one, many }
    }
}

/// Of statements for 2, 4 … entries, the one for `n` (two or more): the shortest list that holds
/// them.
fn many_for(many: &[Statement], n: usize) -> Option<&Statement> {
    let log2 = n.checked_next_power_of_two()?.trailing_zeros();
    many.get(usize::try_from(log2).ok()?.checked_sub(1)?)
}

impl Kind for Get {
    type Slots = sqlx::Pool<MySql>;
    type Request = Read;
    type Answer = Row;
    const REPEATABLE: bool = true;
    const AT_MOST: usize = 128;

    async fn run(
        &self,
        connection: &mut PoolConnection<MySql>,
        requests: &[Read],
    ) -> Result<Vec<Row>, sqlx::Error> {
        let (now, max_size) = Read::parameters(requests);
        if let [read] = requests {
            let args = [Arg::Text(&read.sid), Arg::Int(now), Arg::Int(max_size)];
            let row: Option<(Option<Vec<u8>>, i64, i64)> = query_as(&self.one, &args)
                .fetch_optional(&mut **connection)
                .await?;
            let row = match row {
                Some((sess, len, expires)) => Some((text_or_null(sess)?, len, expires)),
                None => None,
            };
            return Ok(vec![row]);
        }
        let (Some(many), Some(last)) = (many_for(&self.many, requests.len()), requests.last())
        else {
            // Never: batches are no larger than the longest list.
            return Err(sqlx::Error::Protocol(format!(
                "{} reads in one batch, more than {}",
                requests.len(),
                1 << MOST_IDS_LOG2
            )));
        };
        let mut args = vec![Arg::Int(now), Arg::Int(max_size)];
        args.extend(requests.iter().map(|read| Arg::Text(&read.sid)));
        // Padded to the list's length with the last id again.
        args.resize(2 + requests.len().next_power_of_two(), Arg::Text(&last.sid));
        let rows: Vec<LoadableBytes> = query_as(many, &args).fetch_all(&mut **connection).await?;
        let mut found = Vec::with_capacity(rows.len());
        for (sid, sess, len, expires) in rows {
            found.push((text(sid)?, (text_or_null(sess)?, len, expires)));
        }
        Ok(Read::answers(requests, found))
    }
}

/// `replace`: `one` writes one session under its condition, `many[k]` 2^(k+1) at once.
pub(super) struct Replace {
    one: Statement,
    many: Vec<Statement>,
}

impl Replace {
    pub(super) fn new(dialect: &impl Dialect, table: &str, one: Statement) -> Self {
        let many = (1..=MOST_IDS_LOG2)
            .map(|log2| Statements::replace_in(dialect, table, 1 << log2))
            .collect();
        Replace { one, many }
    }

    /// Makes each write alone, in order; whether each was made.
    async fn each_alone(
        &self,
        connection: &mut PoolConnection<MySql>,
        writes: &[Write],
        now: i64,
    ) -> Result<Vec<bool>, sqlx::Error> {
        let mut answers = Vec::with_capacity(writes.len());
        for write in writes {
            answers.push(self.one(connection, write, now).await?);
        }
        Ok(answers)
    }

    /// Makes one write alone; whether it was made.
    async fn one(
        &self,
        connection: &mut PoolConnection<MySql>,
        write: &Write,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = query(&self.one, &write.at(now).args())
            .execute(&mut **connection)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// A write's four parameters in `Statements::replace_in`.
fn fields(write: &Write) -> [Arg<'_>; 4] {
    [
        Arg::Text(&write.sess),
        Arg::Int(write.expire),
        Arg::Text(&write.sid),
        Arg::Text(&write.expected),
    ]
}

impl Kind for Replace {
    type Slots = sqlx::Pool<MySql>;
    type Request = Write;
    /// Whether the write was made.
    type Answer = bool;
    const REPEATABLE: bool = false;
    const AT_MOST: usize = 1 << MOST_IDS_LOG2;

    /// Many writes: one `UPDATE` in a transaction, committed when it matched a row for every
    /// write (sqlx sets `CLIENT_FOUND_ROWS`, so the count is of rows matched); otherwise rolled
    /// back and each write made alone, since the count does not say which failed. Two writes to
    /// one session match one row, so they too are made one after the other.
    async fn run(
        &self,
        connection: &mut PoolConnection<MySql>,
        requests: &[Write],
    ) -> Result<Vec<bool>, sqlx::Error> {
        let now = Write::now(requests);
        // One write alone; and never more than the longest list (batches are no larger).
        let (Some(many), true) = (many_for(&self.many, requests.len()), requests.len() > 1) else {
            return self.each_alone(connection, requests, now).await;
        };
        // In the ids' order, so that batches running at once lock their rows in one order and
        // never deadlock each other.
        let mut sorted: Vec<&Write> = requests.iter().collect();
        sorted.sort_unstable_by(|a, b| a.sid.cmp(&b.sid));
        let mut args = vec![Arg::Int(now)];
        args.extend(sorted.iter().flat_map(|write| fields(write)));
        // Padded with the highest id's write again: the server counts a row the join finds
        // several times once (as it does two writes to one session: see the test
        // `a_row_found_several_times_in_a_batch_counts_once`), so padding adds nothing.
        let last = sorted[sorted.len() - 1];
        let padded = 1 + 4 * requests.len().next_power_of_two();
        while args.len() < padded {
            args.extend(fields(last));
        }
        let mut transaction = (**connection).begin().await?;
        match query(many, &args).execute(&mut *transaction).await {
            Ok(matched)
                if usize::try_from(matched.rows_affected()).ok() == Some(requests.len()) =>
            {
                transaction.commit().await?;
                return Ok(vec![true; requests.len()]);
            }
            Ok(_) => {}
            // A deadlock or a lock wait that ran out (with a single write of another process):
            // after the rollback nothing of the batch is made, so each write can run alone.
            Err(sqlx::Error::Database(_)) => {}
            Err(error) => return Err(error),
        }
        transaction.rollback().await?;
        self.each_alone(connection, requests, now).await
    }
}
