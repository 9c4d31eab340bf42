//! The calls the store batches ([`batch`](crate::store::batch)): a read of one session.
//! MySQL has no arrays, so many ids are read with `sid IN (…)`, one statement per power of two
//! (the list padded by repeating its last id), so each connection prepares a handful.

use sqlx::mysql::MySql;
use sqlx::pool::PoolConnection;

use super::{LoadableBytes, query_as, text, text_or_null};
use crate::store::batch::Kind;
use crate::store::sql::batch::{Read, Row};
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

    /// The statement for `n` ids (two or more): the shortest list that holds them.
    fn many_for(&self, n: usize) -> Option<&Statement> {
        let log2 = n.checked_next_power_of_two()?.trailing_zeros();
        self.many.get(usize::try_from(log2).ok()?.checked_sub(1)?)
    }
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
        let (Some(many), Some(last)) = (self.many_for(requests.len()), requests.last()) else {
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
