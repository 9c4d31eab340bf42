//! Reads that wait for their turn go together, as one `BatchGetItem` ([`batch`]).
//!
//! At most [`DynamoDbStoreBuilder::with_reads_in_flight`] reads are sent at a time; a read that
//! finds them all taken waits, and the first to get a turn sends every read waiting then (up to
//! 100, `BatchGetItem`'s limit) in one request; a key DynamoDB leaves out of the batch is read
//! again alone, in the same turn. A read with a turn free is a `GetItem` of its own, as without
//! batching.
//!
//! [`batch`]: crate::store::batch
//! [`DynamoDbStoreBuilder::with_reads_in_flight`]: super::DynamoDbStoreBuilder::with_reads_in_flight

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::calls::{self, CallFailed};
use crate::store::batch::{Kind, Lost, Slots};
use crate::store::{Error, ErrorKind};

/// `BatchGetItem`'s limit: keys per request.
const BATCH_GET_AT_MOST: usize = 100;

/// An item as stored, by attribute name.
pub(super) type Item = HashMap<String, AttributeValue>;

/// The turns of reads: so many in flight at once.
pub(super) struct InFlight(Arc<Semaphore>);

impl InFlight {
    pub(super) fn new(reads: usize) -> Self {
        InFlight(Arc::new(Semaphore::new(reads.max(1))))
    }
}

impl Slots for InFlight {
    type Slot = OwnedSemaphorePermit;
    type Error = Error;

    async fn acquire(&self) -> Result<OwnedSemaphorePermit, Error> {
        // Never closed: the store owns the semaphore.
        Arc::clone(&self.0)
            .acquire_owned()
            .await
            .map_err(|closed| Error::new(ErrorKind::Backend, closed))
    }
}

impl From<Lost> for Error {
    fn from(lost: Lost) -> Self {
        let kind = match lost {
            Lost::Abandoned => ErrorKind::Unavailable,
            Lost::Unanswered => ErrorKind::Backend,
        };
        Error::new(kind, lost)
    }
}

/// A strongly consistent read of items by key, from one table.
pub(super) struct Get {
    pub(super) client: Client,
    pub(super) table: String,
    pub(super) hash_key: String,
    pub(super) timeout: Duration,
}

impl Kind for Get {
    type Slots = InFlight;
    /// The key.
    type Request = String;
    /// The item under the key, if any.
    type Answer = Option<Item>;
    const REPEATABLE: bool = true;
    const AT_MOST: usize = BATCH_GET_AT_MOST;

    async fn run(
        &self,
        _turn: &mut OwnedSemaphorePermit,
        keys: &[String],
    ) -> Result<Vec<Option<Item>>, Error> {
        if let [key] = keys {
            return Ok(vec![self.get_one(key).await?]);
        }
        // DynamoDB refuses a batch that names a key twice.
        let unique: HashSet<&str> = keys.iter().map(String::as_str).collect();
        let request = unique
            .iter()
            .fold(KeysAndAttributes::builder(), |request, key| {
                request.keys(HashMap::from([(
                    self.hash_key.clone(),
                    AttributeValue::S((*key).to_owned()),
                )]))
            })
            .consistent_read(true)
            .build()
            .map_err(super::built)?;
        let output = calls::plain(
            "BatchGetItem",
            self.timeout,
            self.client
                .batch_get_item()
                .request_items(&self.table, request)
                .send(),
        )
        .await?;
        let mut found: HashMap<String, Item> = HashMap::with_capacity(unique.len());
        for item in output
            .responses
            .and_then(|mut tables| tables.remove(&self.table))
            .unwrap_or_default()
        {
            if let Some(AttributeValue::S(key)) = item.get(&self.hash_key) {
                found.insert(key.clone(), item);
            }
        }
        // Keys DynamoDB left out of the batch (throttled, or its answer over the 16 MB limit)
        // are read again, alone, in this batch's turn.
        let unprocessed = output
            .unprocessed_keys
            .and_then(|mut tables| tables.remove(&self.table))
            .map(|left| left.keys)
            .unwrap_or_default();
        for mut key in unprocessed {
            if let Some(AttributeValue::S(key)) = key.remove(&self.hash_key)
                && let Some(item) = self.get_one(&key).await?
            {
                found.insert(key, item);
            }
        }
        // Each item goes to the last read of its key, and a copy to any read of it before.
        let mut last_read: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
        for (at, key) in keys.iter().enumerate() {
            last_read.insert(key, at);
        }
        Ok(keys
            .iter()
            .enumerate()
            .map(|(at, key)| {
                if last_read.get(key.as_str()) == Some(&at) {
                    found.remove(key)
                } else {
                    found.get(key).cloned()
                }
            })
            .collect())
    }
}

impl Get {
    /// A strongly consistent `GetItem` of one key.
    async fn get_one(&self, key: &str) -> Result<Option<Item>, Error> {
        let output = calls::plain(
            "GetItem",
            self.timeout,
            self.client
                .get_item()
                .table_name(&self.table)
                .key(&self.hash_key, AttributeValue::S(key.to_owned()))
                .consistent_read(true)
                .send(),
        )
        .await?;
        Ok(output.item)
    }
}

/// A read with no answer within `timeout`, its wait for a turn included.
pub(super) fn timed_out(timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        CallFailed::new("GetItem", format!("no answer within {timeout:?}")),
    )
}
