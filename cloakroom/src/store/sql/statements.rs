//! The SQL the SQL stores run, written once: a [`Dialect`] says how each database spells
//! parameters, times, columns and the JSON column, and [`Statements::new`] splices that and
//! the (validated, quoted) table names in.

use std::fmt;
use std::ops::Deref;

use crate::store::OwnerPath;

/// How a database spells what the statements need.
pub(crate) trait Dialect {
    /// The `n`th bind parameter (1-based), or `None` where parameters are positional only
    /// (MySQL's `?`, bound in order of appearance): each [`Statement`] then records which
    /// argument each `?` takes.
    fn param(&self, n: usize) -> Option<String>;
    /// A value for the `expire` column from a parameter of whole seconds since the epoch.
    fn time(&self, param: &str) -> String;
    /// The `expire` column as milliseconds since the epoch.
    fn expire_ms(&self) -> String;
    /// The `sess` column as text, byte for byte as written.
    fn sess_text(&self) -> &str;
    /// The length of that text in bytes, a 64-bit integer.
    fn sess_len(&self) -> &str;
    /// A value for the `sess` column from a text parameter.
    fn sess_value(&self, param: &str) -> String;
    /// Now, in milliseconds since the epoch, by the database's clock (session locks are timed
    /// by it, so processes whose clocks disagree still agree on when a lease runs out).
    fn now_ms(&self) -> &'static str;
    /// The column types of the locks' table: text, then a 64-bit integer.
    fn lock_columns(&self) -> (&'static str, &'static str);
    /// The owner `sess` names at `path`, as text, or NULL. The owner index is on this
    /// expression, so every write evaluates it: it must never fail, whatever a row holds (a
    /// failing index expression fails the write, Express's writes included). It may give text
    /// where the data names no owner (a float's digits): readers check each row.
    fn owner(&self, path: &OwnerPath) -> String;
    /// The owner parameter as [`owner`](Self::owner) would give it (a database that cuts the
    /// indexed owner short cuts the parameter alike).
    fn owner_param(&self, param: &str) -> String {
        param.to_owned()
    }
    /// The statement that creates the owner index on `table`, named `index`.
    fn create_owner_index(&self, table: &str, index: &str, path: &OwnerPath) -> String {
        let owner = self.owner(path);
        // Partial: a session without an owner (most are) gets no entry, so its writes add
        // no index insert, and the query's `= owner` implies the condition.
        format!(
            "CREATE INDEX IF NOT EXISTS {index} ON {table} (({owner})) \
             WHERE ({owner}) IS NOT NULL"
        )
    }
    /// The session id, data and expiry columns, as spliced into statements.
    fn columns(&self) -> [&str; 3] {
        ["sid", "sess", "expire"]
    }
    /// A column name of the locks' table, quoted.
    fn quote(&self, name: &str) -> String {
        format!("\"{name}\"")
    }
    /// Whether an insert can replace a row on a key conflict only where a condition holds
    /// (`ON CONFLICT … DO UPDATE … WHERE`). MySQL's `ON DUPLICATE KEY UPDATE` cannot tell
    /// its callers whether it did (with `CLIENT_FOUND_ROWS`, which sqlx sets, a row left as it
    /// was counts one, as an insert does): there the insert is plain, and a duplicate key is
    /// followed by an `UPDATE` under the condition ([`Statements::replace_expired`],
    /// [`Statements::relock`]).
    fn conditional_upsert(&self) -> bool {
        true
    }
    /// Whether the database has arrays (PostgreSQL's `ANY`, `unnest`): one statement can then
    /// read or write many sessions ([`Statements::get_many`], [`Statements::replace_many`]).
    fn has_arrays(&self) -> bool {
        false
    }
}

/// Marks a parameter's number in SQL being built for a positional-only database: never in
/// the SQL itself (names are validated, literals are constants).
const MARK: char = '\u{1}';

/// One statement: its SQL, and, where parameters are positional only, the argument (by
/// number, from 1) each `?` takes, in order.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    sql: String,
    order: Option<Box<[usize]>>,
}

impl Statement {
    fn new(sql: String) -> Self {
        if !sql.contains(MARK) {
            return Statement { sql, order: None };
        }
        let mut plain = String::with_capacity(sql.len());
        let mut order = Vec::new();
        // Between marks, in odd places: the numbers.
        for (i, part) in sql.split(MARK).enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            } else {
                order.push(part.parse().unwrap_or(0));
                plain.push('?');
            }
        }
        Statement {
            sql: plain,
            order: Some(order.into()),
        }
    }

    /// The arguments (numbered from 1) in the order the statement binds them.
    // Only MySQL's statements have positional parameters.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    pub(crate) fn bind_order<T: Copy>(&self, args: &[T]) -> Vec<T> {
        match &self.order {
            None => args.to_vec(),
            Some(order) => order
                .iter()
                .filter_map(|&n| args.get(n.wrapping_sub(1)).copied())
                .collect(),
        }
    }
}

impl Deref for Statement {
    type Target = str;
    fn deref(&self) -> &str {
        &self.sql
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql)
    }
}

impl fmt::Debug for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.sql, f)
    }
}

impl PartialEq<&str> for Statement {
    fn eq(&self, other: &&str) -> bool {
        self.sql == *other
    }
}

impl PartialEq<String> for Statement {
    fn eq(&self, other: &String) -> bool {
        self.sql == *other
    }
}

/// The store's SQL, made once per store.
pub(crate) struct Statements {
    pub(crate) get: Statement,
    /// `get` for many ids at once (`$1` an array; `sid` first in each row), where the dialect
    /// has arrays.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) get_many: Option<Statement>,
    pub(crate) is_live: Statement,
    pub(crate) insert: Statement,
    /// Where the dialect has no conditional upsert: after `insert` found the id taken, replaces
    /// the row only if it has expired (same arguments).
    pub(crate) replace_expired: Statement,
    pub(crate) delete: Statement,
    pub(crate) replace: Statement,
    /// `replace` for many sessions at once, where the dialect has arrays: `$1`…`$4` arrays of
    /// `replace`'s `$1`…`$4` (`sess`, expiry, id, expected `sess`), `$5` now; returns the
    /// (1-based) positions of the writes that were made.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) replace_many: Option<Statement>,
    pub(crate) replace_leased: Statement,
    pub(crate) delete_if_unchanged: Statement,
    pub(crate) delete_if_unchanged_leased: Statement,
    pub(crate) touch: Statement,
    pub(crate) all: Statement,
    pub(crate) len: Statement,
    pub(crate) clear: Statement,
    pub(crate) prune: Statement,
    pub(crate) create_locks: Statement,
    pub(crate) lock: Statement,
    /// Where the dialect has no conditional upsert: after `lock` found a row, takes it over
    /// only if its lease has run out (same arguments).
    pub(crate) relock: Statement,
    pub(crate) unlock: Statement,
    pub(crate) holds_lock: Statement,
    pub(crate) prune_locks: Statement,
    pub(crate) sessions_of: Statement,
    pub(crate) create_owner_index: Statement,
}

/// The `n`th bind parameter (1-based), spelled as the dialect spells it or marked for
/// [`Statement::new`] to number.
fn param(dialect: &impl Dialect, n: usize) -> String {
    dialect
        .param(n)
        .unwrap_or_else(|| format!("{MARK}{n}{MARK}"))
}

/// `sess` as a read returns it: the text only within the size limit (the parameter numbered
/// `limit`), NULL over it, so a record over the limit is never transferred. Reads return its
/// length as well.
fn sess_within(dialect: &impl Dialect, limit: usize) -> String {
    format!(
        "CASE WHEN {} > {} THEN NULL ELSE {} END",
        dialect.sess_len(),
        param(dialect, limit),
        dialect.sess_text()
    )
}

impl Statements {
    /// `get` for `n` ids at once, for a database without arrays: `sid IN (…)`. Parameters: 1
    /// now in seconds, 2 the size limit, 3 to `n + 2` the ids; `sid` first in each row.
    // Only MySQL reads this way (Postgres has arrays).
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    pub(crate) fn get_in(dialect: &impl Dialect, table: &str, n: usize) -> Statement {
        let [sid, _, expire] = dialect.columns();
        let ids: Vec<String> = (3..n + 3).map(|k| param(dialect, k)).collect();
        Statement::new(format!(
            "SELECT {sid}, {}, {}, {} FROM {table} WHERE {sid} IN ({}) AND {expire} >= {}",
            sess_within(dialect, 2),
            dialect.sess_len(),
            dialect.expire_ms(),
            ids.join(", "),
            dialect.time(&param(dialect, 1))
        ))
    }

    /// `replace` for `n` writes at once, for a database without arrays: the `UPDATE` joined to
    /// the writes as a derived table. Parameters: 1 now in seconds, then four a write from 2: the
    /// new `sess`, its expiry, the id and the expected `sess`. It says how many rows its
    /// conditions matched, not which: callers run it in a transaction and keep it only when
    /// every write was made.
    // Only MySQL writes this way (Postgres has arrays and `RETURNING`).
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    pub(crate) fn replace_in(dialect: &impl Dialect, table: &str, n: usize) -> Statement {
        let [sid, sess_column, expire] = dialect.columns();
        let writes: Vec<String> = (0..n)
            .map(|i| {
                let k = 2 + 4 * i;
                let [sess, expiry, id, expected] =
                    [k, k + 1, k + 2, k + 3].map(|k| param(dialect, k));
                if i == 0 {
                    format!(
                        "SELECT {sess} AS v_sess, {expiry} AS v_expire, {id} AS v_sid, \
                         {expected} AS v_expected"
                    )
                } else {
                    format!("SELECT {sess}, {expiry}, {id}, {expected}")
                }
            })
            .collect();
        Statement::new(format!(
            "UPDATE {table} JOIN ({}) AS v ON {sid} = v_sid AND {} = v_expected \
             AND {expire} >= {} SET {sess_column} = {}, {expire} = {}",
            writes.join(" UNION ALL "),
            dialect.sess_text(),
            dialect.time(&param(dialect, 1)),
            dialect.sess_value("v_sess"),
            dialect.time("v_expire")
        ))
    }

    /// `table` and `locks`: the quoted (and, for Postgres, schema-qualified) names of the
    /// sessions' table and of the locks' table; `owner_index`: the quoted, unqualified name of
    /// the index on the owner at `owner_path` (an index is made in its table's schema).
    pub(crate) fn new(
        dialect: &impl Dialect,
        table: &str,
        locks: &str,
        owner_index: &str,
        owner_path: &OwnerPath,
    ) -> Self {
        let p = |n: usize| param(dialect, n);
        let time = |n| dialect.time(&p(n));
        let [sid, sess_column, expire] = dialect.columns();
        let sess = dialect.sess_text();
        let sess_len = dialect.sess_len();
        let sess_within = |limit: usize| sess_within(dialect, limit);
        let now_ms = dialect.now_ms();
        // A write under the session lock: only while the lease still holds it (fencing).
        let leased = |sid: usize, token: usize| {
            format!(
                " AND EXISTS (SELECT 1 FROM {locks} l WHERE l.sid = {} AND l.token = {} \
                 AND l.until > {now_ms})",
                p(sid),
                p(token)
            )
        };
        let replace = format!(
            "UPDATE {table} SET {sess_column} = {}, {expire} = {} \
             WHERE {sid} = {} AND {sess} = {} AND {expire} >= {}",
            dialect.sess_value(&p(1)),
            time(2),
            p(3),
            p(4),
            time(5)
        );
        let delete_if_unchanged = format!(
            "DELETE FROM {table} WHERE {sid} = {} AND {sess} = {} AND {expire} >= {}",
            p(1),
            p(2),
            time(3)
        );
        // connect-pg-simple's `set`, for a new session only: it replaces an expired row, never
        // a live one.
        let insert = if dialect.conditional_upsert() {
            format!(
                "INSERT INTO {table} AS s ({sess_column}, {expire}, {sid}) VALUES ({}, {}, {}) \
                 ON CONFLICT ({sid}) DO UPDATE SET {sess_column} = excluded.{sess_column}, \
                 {expire} = excluded.{expire} WHERE s.{expire} < {}",
                dialect.sess_value(&p(1)),
                time(2),
                p(3),
                time(4)
            )
        } else {
            format!(
                "INSERT INTO {table} ({sess_column}, {expire}, {sid}) VALUES ({}, {}, {})",
                dialect.sess_value(&p(1)),
                time(2),
                p(3)
            )
        };
        let lock = if dialect.conditional_upsert() {
            format!(
                "INSERT INTO {locks} AS l (sid, token, until) VALUES ({}, {}, {now_ms} + {}) \
                 ON CONFLICT (sid) DO UPDATE SET token = excluded.token, until = excluded.until \
                 WHERE l.until <= {now_ms}",
                p(1),
                p(2),
                p(3)
            )
        } else {
            format!(
                "INSERT INTO {locks} (sid, token, until) VALUES ({}, {}, {now_ms} + {})",
                p(1),
                p(2),
                p(3)
            )
        };
        let (text, integer) = dialect.lock_columns();
        let q = |name| dialect.quote(name);
        // The query spells the owner exactly as the index does, or the planner cannot use it.
        let owner = dialect.owner(owner_path);
        let s = Statement::new;
        Statements {
            get: s(format!(
                "SELECT {}, {sess_len}, {} FROM {table} WHERE {sid} = {} AND {expire} >= {}",
                sess_within(3),
                dialect.expire_ms(),
                p(1),
                time(2)
            )),
            get_many: dialect.has_arrays().then(|| {
                s(format!(
                    "SELECT {sid}, {}, {sess_len}, {} FROM {table} \
                     WHERE {sid} = ANY({}::text[]) AND {expire} >= {}",
                    sess_within(3),
                    dialect.expire_ms(),
                    p(1),
                    time(2)
                ))
            }),
            // Two writes to one session in a batch: the update joins the row to both, writes
            // one of them and returns its position only, as if it had come first.
            replace_many: dialect.has_arrays().then(|| {
                s(format!(
                    "UPDATE {table} SET {sess_column} = {}, {expire} = {} \
                     FROM unnest({}::text[], {}::int8[], {}::text[], {}::text[]) \
                     WITH ORDINALITY AS v(v_sess, v_expire, v_sid, v_expected, v_n) \
                     WHERE {sid} = v_sid AND {sess} = v_expected AND {expire} >= {} \
                     RETURNING v_n",
                    dialect.sess_value("v_sess"),
                    dialect.time("v_expire"),
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    time(5)
                ))
            }),
            is_live: s(format!(
                "SELECT count(*) FROM {table} WHERE {sid} = {} AND {expire} >= {}",
                p(1),
                time(2)
            )),
            insert: s(insert),
            replace_expired: s(format!(
                "UPDATE {table} SET {sess_column} = {}, {expire} = {} \
                 WHERE {sid} = {} AND {expire} < {}",
                dialect.sess_value(&p(1)),
                time(2),
                p(3),
                time(4)
            )),
            delete: s(format!("DELETE FROM {table} WHERE {sid} = {}", p(1))),
            replace_leased: s(format!("{replace}{}", leased(3, 6))),
            replace: s(replace),
            delete_if_unchanged_leased: s(format!("{delete_if_unchanged}{}", leased(1, 4))),
            delete_if_unchanged: s(delete_if_unchanged),
            touch: s(format!(
                "UPDATE {table} SET {expire} = {} WHERE {sid} = {} AND {expire} >= {}",
                time(1),
                p(2),
                time(3)
            )),
            all: s(format!(
                "SELECT {sid}, {}, {sess_len} FROM {table} WHERE {expire} >= {}",
                sess_within(2),
                time(1)
            )),
            len: s(format!(
                "SELECT count(*) FROM {table} WHERE {expire} >= {}",
                time(1)
            )),
            clear: s(format!("DELETE FROM {table}")),
            prune: s(format!("DELETE FROM {table} WHERE {expire} < {}", time(1))),
            create_locks: s(format!(
                "CREATE TABLE IF NOT EXISTS {locks} ({} {text} NOT NULL PRIMARY KEY, \
                 {} {text} NOT NULL, {} {integer} NOT NULL)",
                q("sid"),
                q("token"),
                q("until")
            )),
            lock: s(lock),
            relock: s(format!(
                "UPDATE {locks} SET token = {}, until = {now_ms} + {} \
                 WHERE sid = {} AND until <= {now_ms}",
                p(2),
                p(3),
                p(1)
            )),
            unlock: s(format!(
                "DELETE FROM {locks} WHERE sid = {} AND token = {}",
                p(1),
                p(2)
            )),
            holds_lock: s(format!(
                "SELECT count(*) FROM {locks} WHERE sid = {} AND token = {} AND until > {now_ms}",
                p(1),
                p(2)
            )),
            prune_locks: s(format!("DELETE FROM {locks} WHERE until <= {now_ms}")),
            // Read as `get` reads, by owner instead of id.
            sessions_of: s(format!(
                "SELECT {sid}, {}, {sess_len}, {} FROM {table} \
                 WHERE ({owner}) = {} AND {expire} >= {}",
                sess_within(3),
                dialect.expire_ms(),
                dialect.owner_param(&p(1)),
                time(2)
            )),
            create_owner_index: s(dialect.create_owner_index(table, owner_index, owner_path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_parameters_are_bound_in_order_of_appearance() {
        let statement = Statement::new(format!("a {MARK}3{MARK} b {MARK}1{MARK} c"));
        assert_eq!(statement, "a ? b ? c");
        assert_eq!(
            statement.bind_order(&["one", "two", "three"]),
            ["three", "one"]
        );
        let numbered = Statement::new("a $2 b $1".to_owned());
        assert_eq!(numbered.bind_order(&[1, 2]), [1, 2]);
    }
}
