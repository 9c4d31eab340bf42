//! The SQL both SQL stores run, written once: a [`Dialect`] says how each database spells
//! parameters, times and the JSON column, and [`Statements::new`] splices that and the
//! (validated, quoted) table names in.

use crate::store::OwnerPath;

/// How a database spells what the statements need.
pub(crate) trait Dialect {
    /// The `n`th bind parameter (1-based).
    fn param(&self, n: usize) -> String;
    /// A value for the `expire` column from a parameter of whole seconds since the epoch.
    fn time(&self, param: &str) -> String;
    /// The `expire` column as milliseconds since the epoch.
    fn expire_ms(&self) -> String;
    /// The `sess` column as text, byte for byte as written.
    fn sess_text(&self) -> &'static str;
    /// The length of that text in bytes, a 64-bit integer.
    fn sess_len(&self) -> &'static str;
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
}

/// The store's SQL, made once per store.
pub(crate) struct Statements {
    pub(crate) get: String,
    pub(crate) is_live: String,
    pub(crate) insert: String,
    pub(crate) delete: String,
    pub(crate) replace: String,
    pub(crate) replace_leased: String,
    pub(crate) delete_if_unchanged: String,
    pub(crate) delete_if_unchanged_leased: String,
    pub(crate) touch: String,
    pub(crate) all: String,
    pub(crate) len: String,
    pub(crate) clear: String,
    pub(crate) prune: String,
    pub(crate) create_locks: String,
    pub(crate) lock: String,
    pub(crate) unlock: String,
    pub(crate) holds_lock: String,
    pub(crate) prune_locks: String,
    pub(crate) sessions_of: String,
    pub(crate) create_owner_index: String,
}

impl Statements {
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
        let p = |n| dialect.param(n);
        let time = |n| dialect.time(&p(n));
        let sess = dialect.sess_text();
        let sess_len = dialect.sess_len();
        // A read returns the length of `sess` always, and the text only within the size limit
        // (the parameter numbered `limit`): a record over it is never transferred.
        let sess_within = |limit: usize| {
            format!(
                "CASE WHEN {sess_len} > {} THEN NULL ELSE {sess} END",
                p(limit)
            )
        };
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
            "UPDATE {table} SET sess = {}, expire = {} \
             WHERE sid = {} AND {sess} = {} AND expire >= {}",
            dialect.sess_value(&p(1)),
            time(2),
            p(3),
            p(4),
            time(5)
        );
        let delete_if_unchanged = format!(
            "DELETE FROM {table} WHERE sid = {} AND {sess} = {} AND expire >= {}",
            p(1),
            p(2),
            time(3)
        );
        let (text, integer) = dialect.lock_columns();
        // The query spells the owner exactly as the index does, or the planner cannot use it.
        let owner = dialect.owner(owner_path);
        Statements {
            get: format!(
                "SELECT {}, {sess_len}, {} FROM {table} WHERE sid = {} AND expire >= {}",
                sess_within(3),
                dialect.expire_ms(),
                p(1),
                time(2)
            ),
            is_live: format!(
                "SELECT count(*) FROM {table} WHERE sid = {} AND expire >= {}",
                p(1),
                time(2)
            ),
            // connect-pg-simple's `set`, for a new session only: it replaces an expired row,
            // never a live one.
            insert: format!(
                "INSERT INTO {table} AS s (sess, expire, sid) VALUES ({}, {}, {}) \
                 ON CONFLICT (sid) DO UPDATE SET sess = excluded.sess, expire = excluded.expire \
                 WHERE s.expire < {}",
                dialect.sess_value(&p(1)),
                time(2),
                p(3),
                time(4)
            ),
            delete: format!("DELETE FROM {table} WHERE sid = {}", p(1)),
            replace_leased: format!("{replace}{}", leased(3, 6)),
            replace,
            delete_if_unchanged_leased: format!("{delete_if_unchanged}{}", leased(1, 4)),
            delete_if_unchanged,
            touch: format!(
                "UPDATE {table} SET expire = {} WHERE sid = {} AND expire >= {}",
                time(1),
                p(2),
                time(3)
            ),
            all: format!(
                "SELECT sid, {}, {sess_len} FROM {table} WHERE expire >= {}",
                sess_within(2),
                time(1)
            ),
            len: format!("SELECT count(*) FROM {table} WHERE expire >= {}", time(1)),
            clear: format!("DELETE FROM {table}"),
            prune: format!("DELETE FROM {table} WHERE expire < {}", time(1)),
            create_locks: format!(
                "CREATE TABLE IF NOT EXISTS {locks} (\"sid\" {text} NOT NULL PRIMARY KEY, \
                 \"token\" {text} NOT NULL, \"until\" {integer} NOT NULL)"
            ),
            lock: format!(
                "INSERT INTO {locks} AS l (sid, token, until) VALUES ({}, {}, {now_ms} + {}) \
                 ON CONFLICT (sid) DO UPDATE SET token = excluded.token, until = excluded.until \
                 WHERE l.until <= {now_ms}",
                p(1),
                p(2),
                p(3)
            ),
            unlock: format!(
                "DELETE FROM {locks} WHERE sid = {} AND token = {}",
                p(1),
                p(2)
            ),
            holds_lock: format!(
                "SELECT count(*) FROM {locks} WHERE sid = {} AND token = {} AND until > {now_ms}",
                p(1),
                p(2)
            ),
            prune_locks: format!("DELETE FROM {locks} WHERE until <= {now_ms}"),
            // Read as `get` reads, by owner instead of id.
            sessions_of: format!(
                "SELECT sid, {}, {sess_len}, {} FROM {table} WHERE ({owner}) = {} AND expire >= {}",
                sess_within(3),
                dialect.expire_ms(),
                p(1),
                time(2)
            ),
            // Partial: a session without an owner (most are) gets no entry, so its writes add
            // no index insert, and the query's `= owner` implies the condition.
            create_owner_index: format!(
                "CREATE INDEX IF NOT EXISTS {owner_index} ON {table} (({owner})) \
                 WHERE ({owner}) IS NOT NULL"
            ),
        }
    }
}
