//! [`RedisStore`]'s owner index (see the store's docs, "Owner index"): one sorted set per
//! owner, the scripts and commands that keep it, and [`OwnerIndex`] on it.

use super::*;

/// How long past its score an index member is kept, in milliseconds, and how far back
/// `sessions_of` looks: scores come from the clocks of the processes that wrote them, and
/// are computed a moment before the key's TTL starts, so a member is never pruned, nor a
/// session missed, while its key may still be live.
pub(super) const INDEX_SLACK_MS: i64 = 30_000;

/// The score of an owned session whose key has no TTL (written by another program): the
/// latest expiry a cookie can have, so the member stays until the session is rewritten. Far
/// below 2^53, so Lua's numbers hold it exactly.
pub(super) const NEVER_EXPIRES_MS: i64 = MAX_TTL_SECS as i64 * 1000;

/// Lua: adds the session `id` to the owner index `key` with the score `expires` (ms), unless
/// it is there with a later one; removes the members whose score is `horizon` (now minus the
/// slack, ms) or less; and sets the key's TTL to last until its latest member's score is past
/// the horizon. Every number arrives as decimal text, and all are below 2^53.
pub(super) const INDEX_LUA: &str = r"local function index(key, id, expires, horizon)
  local current = redis.call('ZSCORE', key, id)
  if not current or tonumber(current) < tonumber(expires) then
    redis.call('ZADD', key, expires, id)
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', horizon)
  local latest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if latest[2] then
    redis.call('PEXPIRE', key, string.format('%.0f', tonumber(latest[2]) - tonumber(horizon)))
  end
end
";

/// A conditional write of an owned session and, if it is made and keeps the key, the owner
/// index's update, atomically (standalone only: the keys are in different Cluster slots).
/// KEYS[1]: the session's key; KEYS[2]: the owner's index key; KEYS[3], with a lease only: the
/// session's lock key. ARGV[1] to ARGV[4]: as for [`CONDITIONAL_SET`]; ARGV[5]: the session
/// id; ARGV[6]: the key's expiry (ms); ARGV[7]: the index horizon (ms); ARGV[8], with a lease
/// only: the lease's token. Returns what [`WRITE_LUA`] does.
pub(super) static OWNED_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{WRITE_LUA}{INDEX_LUA}local written = write(KEYS[1], KEYS[3], ARGV[8], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
if written == 1 and tonumber(ARGV[4]) > 0 then
  index(KEYS[2], ARGV[5], ARGV[6], ARGV[7])
end
return written"
    ))
});

/// A touch of an owned session: `EXPIRE`, and the owner index's update if the key exists
/// (standalone only). KEYS[1]: the session's key; KEYS[2]: the owner's index key. ARGV[1]:
/// the TTL in seconds (> 0); ARGV[2]: the session id; ARGV[3]: the key's expiry (ms);
/// ARGV[4]: the index horizon (ms).
pub(super) static OWNED_TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{INDEX_LUA}if redis.call('EXPIRE', KEYS[1], ARGV[1]) == 1 then
  index(KEYS[2], ARGV[2], ARGV[3], ARGV[4])
end
return 1"
    ))
});

/// The owner index's update alone ([`INDEX_LUA`]), for Cluster, where it cannot share a
/// script with the session's key. KEYS[1]: the owner's index key. ARGV[1]: the session id;
/// ARGV[2]: the key's expiry (ms); ARGV[3]: the index horizon (ms).
pub(super) static INDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{INDEX_LUA}index(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
return 1"
    ))
});

/// Removes index members whose session ended or changed hands, only while that is still so
/// (standalone only: it reads the session keys). KEYS[1]: the owner's index key; KEYS[i + 1]:
/// a session's key. ARGV[2i - 1]: its id; ARGV[2i]: what `sessions_of` read there (empty for
/// no session, which an empty value also is). A session written since holds something else,
/// and keeps its member. Returns how many members it removed.
pub(super) static DROP_HINTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local removed = 0
for i = 2, #KEYS do
  local stored = redis.call('GET', KEYS[i]) or ''
  if stored == ARGV[2 * i - 2] then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[2 * i - 3])
  end
end
return removed",
    )
});

/// A session's member in its owner's index, as a write or touch sends it.
pub(super) struct IndexEntry<'a> {
    /// The owner's index key.
    pub(super) key: String,
    /// The session id: the member.
    pub(super) id: &'a str,
    /// The score: when the session's key expires, in ms since the epoch.
    pub(super) expires_ms: i64,
    /// Members scored at this or earlier are removed (ms since the epoch).
    pub(super) horizon_ms: i64,
}

impl IndexEntry<'_> {
    /// When the index key may expire, at the earliest: the slack past the member's score.
    fn key_lasts_until(&self) -> i64 {
        self.expires_ms.saturating_add(INDEX_SLACK_MS)
    }
}

impl<'a> IndexEntry<'a> {
    /// The entry of a session written or touched at `now` with a TTL of `ttl_secs` (> 0).
    pub(super) fn new(key: String, id: &'a Id, now: Timestamp, ttl_secs: i64) -> Self {
        IndexEntry {
            key,
            id: id.as_str(),
            expires_ms: now
                .as_millis()
                .saturating_add(ttl_secs.saturating_mul(1000)),
            horizon_ms: horizon(now),
        }
    }
}

/// What [`INDEX_LUA`] does, as plain commands for Redis 7 and later: adds the member unless it
/// is there with a later score (`ZADD GT`); on about one write in [`PRUNE_ONE_IN`], prunes the
/// members past the horizon; and makes the key last until its latest member is past the
/// horizon, if that is later than its TTL (`PEXPIREAT … GT`). Returns how many commands it
/// pushed: the last one's reply goes to [`RedisStore::finish_index`]. Not atomic as the script
/// is, and needs not be: each command only ever adds a member, removes one past its session's
/// expiry, or lengthens the key's life.
pub(super) fn index_commands(commands: &mut Commands, entry: &IndexEntry<'_>) -> usize {
    commands.push("ZADD", |args| {
        args.arg(&entry.key)
            .arg("GT")
            .arg(entry.expires_ms)
            .arg(entry.id);
    });
    let prunes = prunes(entry.id);
    if prunes {
        commands.push("ZREMRANGEBYSCORE", |args| {
            args.arg(&entry.key).arg("-inf").arg(entry.horizon_ms);
        });
    }
    commands.push("PEXPIREAT", |args| {
        args.arg(&entry.key).arg(entry.key_lasts_until()).arg("GT");
    });
    2 + usize::from(prunes)
}

/// One owned write in this many prunes its owner's index (by the session id, see [`prunes`]):
/// pruning on every write cost Redis about a tenth of a login, while an owner's stale members
/// only need to leave before they pile up. An index then holds, besides its live sessions, the
/// members that expired since its last prune: on average, at most those of its last sixteen
/// writes (a session id and a score each). `sessions_of` never returns them, and the script
/// path prunes on every call.
pub(super) const PRUNE_ONE_IN: u32 = 16;

/// Whether a write of the session `id` prunes its owner's index: a hash of the id (FNV-1a),
/// so even custom ids that share a prefix or suffix spread evenly.
fn prunes(id: &str) -> bool {
    let hash = id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % PRUNE_ONE_IN == 0
}

/// Index members scored at or before this are past their session's expiry, whatever the
/// clocks of the processes that scored them (see [`INDEX_SLACK_MS`]).
pub(super) fn horizon(now: Timestamp) -> i64 {
    now.as_millis().saturating_sub(INDEX_SLACK_MS)
}

/// What an owner index key begins with after the prefix.
pub(super) const INDEX_KEY_INFIX: &str = "owner:{";

/// The index key of `owner` under `prefix`: `<prefix>owner:{<hex>}`, the owner's UTF-8 bytes
/// in lowercase hexadecimal. Hexadecimal has no braces, so the braces always form a Redis
/// Cluster hash tag (unless the prefix has one of its own, which then decides), whatever the
/// owner text holds.
pub(super) fn index_key_for(prefix: &str, owner: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(prefix.len() + INDEX_KEY_INFIX.len() + owner.len() * 2 + 1);
    key.push_str(prefix);
    key.push_str(INDEX_KEY_INFIX);
    for byte in owner.bytes() {
        key.push(char::from(DIGITS[usize::from(byte >> 4)]));
        key.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    key.push('}');
    key
}

/// Every owner's sessions, from one sorted set per owner (see the [module
/// docs](super#owner-index)).
#[async_trait]
impl OwnerIndex for RedisStore {
    /// `ZRANGEBYSCORE` of the owner's index from a little before now, then a read of each
    /// session it names, as `get` makes (routed to each session's node in Cluster), a batch
    /// at a time. A session that cannot be decoded or is over the size limit is left out, as
    /// `get` cannot load it either.
    async fn sessions_of(&self, owner: &str) -> Result<Vec<(Id, Loaded)>, Error> {
        let index_key = self.index_key(owner);
        let mut range = redis::cmd("ZRANGEBYSCORE");
        range
            .arg(&index_key)
            .arg(horizon(Timestamp::now()))
            .arg("+inf");
        let Value::Array(members) = self.query(&range).await? else {
            return Err(unexpected("ZRANGEBYSCORE"));
        };
        let mut ids = Vec::with_capacity(members.len());
        for member in members {
            let Value::BulkString(member) = member else {
                return Err(unexpected("ZRANGEBYSCORE"));
            };
            // Members are ids as written; anything else is not a session of this store.
            if let Ok(id) = String::from_utf8(member)
                && !id.is_empty()
            {
                ids.push(Id::from_string(id));
            }
        }
        let standalone = matches!(self.connection, Connection::Standalone(_));
        let mut found = Vec::new();
        for batch in ids.chunks(self.scan_count) {
            let keys: Vec<String> = batch.iter().map(|id| self.key(id)).collect();
            let loads = join_all(keys.iter().map(|key| self.load(key.as_bytes()))).await;
            // Hints to drop: the session's key, its id, and what was read there.
            let mut stale: Vec<(&str, &Id, Vec<u8>)> = Vec::new();
            for ((id, key), load) in batch.iter().zip(&keys).zip(loads) {
                match load {
                    Ok(Some(loaded)) => {
                        if self.owner_path.owner_of(loaded.record.data()).as_deref() == Some(owner)
                        {
                            found.push((id.clone(), loaded));
                        } else if let Some(read) = loaded.version.as_bytes() {
                            stale.push((key, id, read.to_vec()));
                        }
                    }
                    Ok(None) => stale.push((key, id, Vec::new())),
                    Err(error) if is_bad_record(&error) => {}
                    Err(error) => return Err(error),
                }
            }
            // In Cluster, a hint whose session is missing may be a write in flight (the index
            // is updated first): only the score removes it.
            if standalone && !stale.is_empty() {
                let stale: Vec<(&str, &Id, &[u8])> = stale
                    .iter()
                    .map(|(key, id, read)| (*key, *id, read.as_slice()))
                    .collect();
                self.drop_hints(&index_key, &stale).await;
            }
        }
        Ok(found)
    }
}

impl RedisStore {
    /// Adds every live session under the prefix that has an owner to its owner's index, and
    /// returns how many it added. For migrations: sessions written before the index existed,
    /// or by an Express app, are not indexed until cloakroom writes or touches them (see the
    /// [module docs](super#sessions-written-by-express)); run this once, after every cloakroom
    /// process sharing the prefix maintains the index, so nothing written meanwhile is missed.
    ///
    /// It scans as [`all`](SessionStore::all) does, then reads each session as `get` does and
    /// runs the index script for each owned one, a batch at a time: a maintenance call, which
    /// costs time in proportion to everything stored in Redis. A session whose key has no TTL
    /// is indexed as never expiring. A session that cannot be decoded or is over the size
    /// limit is left out, as its owner cannot be read.
    ///
    /// # Errors
    /// When Redis fails or cannot be reached; sessions indexed before the failure stay indexed,
    /// and running it again is harmless.
    pub async fn reindex(&self) -> Result<usize, Error> {
        let keys: Vec<Vec<u8>> = self.keys().await?.sessions.into_iter().collect();
        let mut indexed = 0;
        for batch in keys.chunks(self.scan_count) {
            let loads = join_all(batch.iter().map(|key| self.load(key))).await;
            let mut owned: Vec<(Id, String, i64)> = Vec::new();
            for (key, load) in batch.iter().zip(loads) {
                let loaded = match load {
                    Ok(Some(loaded)) => loaded,
                    // Gone since the scan.
                    Ok(None) => continue,
                    Err(error) if is_bad_record(&error) => continue,
                    Err(error) => return Err(error),
                };
                let Some(owner) = self.owner_path.owner_of(loaded.record.data()) else {
                    continue;
                };
                let Ok(id) = self.id_of(key) else {
                    continue;
                };
                let expires_ms = loaded
                    .expires_at
                    .map_or(NEVER_EXPIRES_MS, Timestamp::as_millis);
                owned.push((id, self.index_key(&owner), expires_ms));
            }
            let horizon_ms = horizon(Timestamp::now());
            let entries: Vec<IndexEntry<'_>> = owned
                .iter()
                .map(|(id, key, expires_ms)| IndexEntry {
                    key: key.clone(),
                    id: id.as_str(),
                    expires_ms: *expires_ms,
                    horizon_ms,
                })
                .collect();
            for added in join_all(entries.iter().map(|entry| self.add_to_index(entry))).await {
                added?;
                indexed += 1;
            }
        }
        Ok(indexed)
    }

    /// The key of `owner`'s index (see the [module docs](super#owner-index)).
    pub(super) fn index_key(&self, owner: &str) -> String {
        index_key_for(&self.prefix, owner)
    }

    /// Writes an owned session and updates its owner's index in one script (standalone).
    pub(super) async fn write_owned(
        &self,
        id: &Id,
        write: &Write<'_>,
        entry: &IndexEntry<'_>,
    ) -> Result<SetOutcome, Error> {
        let lock_key = write.lease.map(|_| self.lock_key(id)).transpose()?;
        let keys = 2 + usize::from(lock_key.is_some());
        let reply = self
            .invoke(&OWNED_SET, keys, |call| {
                call.arg(write.key).arg(&entry.key).arg(lock_key.as_deref());
                write.add_args(call);
                call.arg(id.as_str())
                    .arg(entry.expires_ms)
                    .arg(entry.horizon_ms)
                    .arg(write.lease.map(Lease::token));
            })
            .await?;
        write.outcome(reply)
    }

    /// The major version the server reports in `INFO server` (in Cluster, one node's); 0 when
    /// it says none (a proxy, say), which keeps the scripts.
    pub(super) async fn server_major_version(&self) -> Result<u32, Error> {
        let info = match self.query(redis::cmd("INFO").arg("server")).await? {
            Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Value::VerbatimString { text, .. } => text,
            _ => return Ok(0),
        };
        Ok(info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .and_then(|version| version.split('.').next()?.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Writes a new owned session (standalone, Redis 7 and later): its owner's index first,
    /// then `SET … NX`, pipelined in one round trip with no script (a script costs Redis about
    /// as much as the commands together again; a login is the write this is for), and a second
    /// round trip when the index key is new (see [`finish_index`](Self::finish_index)). The
    /// index comes first, so a failure between the two leaves a hint, never an unindexed
    /// session.
    pub(super) async fn create_owned(
        &self,
        write: &Write<'_>,
        entry: &IndexEntry<'_>,
    ) -> Result<SetOutcome, Error> {
        let mut commands = self.commands();
        let index = index_commands(&mut commands, entry);
        write.push_create(&mut commands);
        let mut replies = self.ask(&commands).await?;
        let set = replies.pop();
        self.finish_index(entry, replies.get(index - 1)).await?;
        write.create_outcome(set)
    }

    /// Adds a session to its owner's index alone: plain commands on Redis 7 and later, else
    /// the index script.
    pub(super) async fn add_to_index(&self, entry: &IndexEntry<'_>) -> Result<(), Error> {
        if self.index_commands {
            let mut commands = self.commands();
            let index = index_commands(&mut commands, entry);
            let replies = self.ask(&commands).await?;
            return self.finish_index(entry, replies.get(index - 1)).await;
        }
        let reply = self
            .invoke(&INDEX, 1, |call| {
                call.arg(&entry.key)
                    .arg(entry.id)
                    .arg(entry.expires_ms)
                    .arg(entry.horizon_ms);
            })
            .await?;
        match reply {
            Value::Int(1) => Ok(()),
            _ => Err(unexpected("EVALSHA")),
        }
    }

    /// After [`index_commands`], given the reply to their `PEXPIREAT … GT`: when it set
    /// nothing, the key may have no TTL at all (`ZADD` just made it, and `GT` never applies to
    /// a key without one), so `PEXPIREAT … NX` in a second round trip. Redis has no single
    /// command for "a TTL if none, else a later one only", and sending `NX` with every write
    /// cost a login more than this round trip for an owner's first session. Should the second
    /// never arrive (the connection drops in between), the key has no TTL until the owner's
    /// next write or touch gives it one.
    async fn finish_index(
        &self,
        entry: &IndexEntry<'_>,
        reply: Option<&Value>,
    ) -> Result<(), Error> {
        match reply {
            Some(Value::Int(1)) => Ok(()),
            Some(Value::Int(0)) => {
                let mut commands = self.commands();
                commands.push("PEXPIREAT", |args| {
                    args.arg(&entry.key).arg(entry.key_lasts_until()).arg("NX");
                });
                self.ask(&commands).await?;
                Ok(())
            }
            _ => Err(unexpected("PEXPIREAT")),
        }
    }

    /// Removes from the index `index_key` the members in `stale` (a session's key, its id, and
    /// what was read there, empty for nothing) whose key still holds what was read. Best
    /// effort: the members are hints, which reading filters anyway, and their scores prune them
    /// later; so a failure is not reported. Standalone only (see the [module
    /// docs](super#owner-index)).
    pub(super) async fn drop_hints(&self, index_key: &str, stale: &[(&str, &Id, &[u8])]) {
        let hints = |call: &mut Args<'_>| {
            call.arg(index_key);
            for (key, _, _) in stale {
                call.arg(*key);
            }
            for (_, id, read) in stale {
                call.arg(id.as_str()).arg(*read);
            }
        };
        let _ = self.invoke(&DROP_HINTS, 1 + stale.len(), hints).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_index_keys_are_hex_in_one_hash_tag() {
        assert_eq!(index_key_for("sess:", "alice"), "sess:owner:{616c696365}");
        let awkward = "{a} b}{ ü";
        let key = index_key_for("sess:", awkward);
        assert_eq!(key, "sess:owner:{7b617d20627d7b20c3bc}");
        assert_eq!(hash_tag(&key), Some("7b617d20627d7b20c3bc"));
        // A prefix's own hash tag decides: sessions and indexes then share its slot.
        assert_eq!(hash_tag(&index_key_for("{app}sess:", awkward)), Some("app"));
        // An owner is never empty, but its key would still be well formed.
        assert_eq!(index_key_for("s:", ""), "s:owner:{}");
    }

    #[test]
    fn index_scores_fit_lua_numbers() {
        // Lua's numbers are doubles: every score and TTL the scripts compute must be exact.
        let latest = NEVER_EXPIRES_MS.max(
            Timestamp::from_millis(253_402_300_799_999)
                .as_millis()
                .saturating_add(i64::try_from(MAX_TTL_SECS).unwrap() * 1000),
        );
        assert!(latest < 1 << 53);
        let id = Id::from_string("x");
        let entry = IndexEntry::new("k".into(), &id, Timestamp::from_millis(1_000_000), 90);
        assert_eq!(entry.expires_ms, 1_090_000);
        assert_eq!(entry.horizon_ms, 1_000_000 - INDEX_SLACK_MS);
    }
}
