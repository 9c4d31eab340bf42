//! The calls the store batches ([`batch`](crate::store::batch)): a read of one session, and a
//! compare-and-set of one session's data.

use sqlx::Postgres;
use sqlx::pool::PoolConnection;

use super::query_as;
use crate::store::batch::Kind;
use crate::store::sql::batch::{Read, Row, Write};
use crate::store::sql::{Arg, Statement};

/// `get`: `one` reads one session, `many` the same for many ids.
pub(super) struct Get {
    pub(super) one: Statement,
    pub(super) many: Statement,
}

impl Kind for Get {
    type Slots = sqlx::Pool<sqlx::Postgres>;
    type Request = Read;
    type Answer = Row;
    const REPEATABLE: bool = true;
    const AT_MOST: usize = 128;

    async fn run(
        &self,
        connection: &mut PoolConnection<Postgres>,
        requests: &[Read],
    ) -> Result<Vec<Row>, sqlx::Error> {
        let (now, max_size) = Read::parameters(requests);
        if let [read] = requests {
            let args = [Arg::Text(&read.sid), Arg::Int(now), Arg::Int(max_size)];
            let row = query_as(&self.one, &args)
                .fetch_optional(&mut **connection)
                .await?;
            return Ok(vec![row]);
        }
        let sids: Vec<&str> = requests.iter().map(|read| read.sid.as_str()).collect();
        let rows: Vec<(String, Option<String>, i64, i64)> = sqlx::query_as(&self.many)
            .bind(&sids)
            .bind(now)
            .bind(max_size)
            .fetch_all(&mut **connection)
            .await?;
        let rows = rows
            .into_iter()
            .map(|(sid, sess, len, expires)| (sid, (sess, len, expires)));
        Ok(Read::answers(requests, rows))
    }
}

/// `replace`: `one` writes one session under its condition, `many` the same for many.
pub(super) struct Replace {
    pub(super) one: Statement,
    pub(super) many: Statement,
}

impl Kind for Replace {
    type Slots = sqlx::Pool<sqlx::Postgres>;
    type Request = Write;
    /// Whether the write was made.
    type Answer = bool;
    const REPEATABLE: bool = false;
    const AT_MOST: usize = 128;

    async fn run(
        &self,
        connection: &mut PoolConnection<Postgres>,
        requests: &[Write],
    ) -> Result<Vec<bool>, sqlx::Error> {
        let now = Write::now(requests);
        if let [write] = requests {
            let args = write.at(now).args();
            let written = super::query(&self.one, &args)
                .execute(&mut **connection)
                .await?;
            return Ok(vec![written.rows_affected() > 0]);
        }
        let column =
            |field: fn(&Write) -> &str| -> Vec<&str> { requests.iter().map(field).collect() };
        let expires: Vec<i64> = requests.iter().map(|write| write.expire).collect();
        let written: Vec<(i64,)> = sqlx::query_as(&self.many)
            .bind(column(|write| &write.sess))
            .bind(&expires)
            .bind(column(|write| &write.sid))
            .bind(column(|write| &write.expected))
            .bind(now)
            .fetch_all(&mut **connection)
            .await?;
        let mut answers = vec![false; requests.len()];
        for (position,) in written {
            if let Some(answer) = usize::try_from(position - 1)
                .ok()
                .and_then(|index| answers.get_mut(index))
            {
                *answer = true;
            }
        }
        Ok(answers)
    }
}
