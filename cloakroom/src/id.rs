//! Session ids: generation, and a type that never prints its value by accident.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A session id: the key of the record in the store and the value the cookie signs.
///
/// The default generator makes 24 bytes from the operating system's CSPRNG, written as 32
/// base64url characters (as express-session's `uid-safe`). A custom generator
/// ([`with_genid`](crate::SessionLayerBuilder::with_genid)) may produce any string.
///
/// # Security
/// Holding an id is holding the session, so `Debug` redacts it and there is no `Display`.
/// Reach for [`as_str`](Id::as_str) only to hand it to a store.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Id(Arc<str>);

/// Bytes of randomness in a generated id (express's `uid-safe` uses 24).
const RANDOM_BYTES: usize = 24;

impl Id {
    /// Generates a fresh id: 24 bytes from the OS CSPRNG as 32 base64url characters.
    ///
    /// # Panics
    /// If the operating system cannot provide randomness, which leaves no safe way to continue.
    pub fn generate() -> Self {
        let bytes = random_bytes();
        let mut text = [0u8; RANDOM_BYTES / 3 * 4];
        URL_SAFE_NO_PAD
            .encode_slice(bytes, &mut text)
            .expect("24 bytes are exactly 32 base64 characters");
        Id(std::str::from_utf8(&text).expect("base64 is ASCII").into())
    }

    /// Wraps an id read from a store or produced by a custom generator.
    pub fn from_string(id: impl Into<Arc<str>>) -> Self {
        Id(id.into())
    }

    /// The id as text, for a store's key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Ids' worth of OS randomness fetched per system call: one `getrandom` per 32 ids instead of
/// one per id (a system call is a visible share of creating a session).
const BATCH: usize = RANDOM_BYTES * 32;

/// 24 bytes straight from the OS CSPRNG, fetched in batches per thread. Bytes are handed out
/// once and wiped as they go. The batch is the OS's output, not a seed stretched in user space;
/// the one caveat of any user-space buffer is `fork` without `exec`, which would copy the
/// unused rest into the child (an async server does not fork; `Command` execs).
fn random_bytes() -> [u8; RANDOM_BYTES] {
    struct Batch {
        bytes: [u8; BATCH],
        used: usize,
    }
    thread_local! {
        static RANDOM: std::cell::RefCell<Batch> = const {
            std::cell::RefCell::new(Batch { bytes: [0; BATCH], used: BATCH })
        };
    }
    RANDOM.with_borrow_mut(|batch| {
        if batch.used == BATCH {
            getrandom::fill(&mut batch.bytes)
                .expect("the OS random number generator must be available");
            batch.used = 0;
        }
        let taken = &mut batch.bytes[batch.used..batch.used + RANDOM_BYTES];
        let mut bytes = [0u8; RANDOM_BYTES];
        bytes.copy_from_slice(taken);
        taken.fill(0);
        batch.used += RANDOM_BYTES;
        bytes
    })
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Id(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ten_thousand_generated_ids_are_distinct_base64url_of_32_chars() {
        let ids: HashSet<String> = (0..10_000)
            .map(|_| Id::generate().as_str().to_owned())
            .collect();
        assert_eq!(ids.len(), 10_000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
    }

    #[test]
    fn threads_draw_from_batches_of_their_own() {
        let batches: Vec<HashSet<String>> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..100)
                        .map(|_| Id::generate().as_str().to_owned())
                        .collect()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .collect();
        let all: HashSet<&String> = batches.iter().flatten().collect();
        assert_eq!(all.len(), 400);
    }

    #[test]
    fn debug_redacts() {
        let id = Id::from_string("not-for-logs");
        assert_eq!(format!("{id:?}"), "Id(<redacted>)");
    }
}
