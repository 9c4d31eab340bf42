//! One-time messages for the next page ("Wrong password", "Signed out"), stored the way
//! connect-flash stores them, so an Express app and a cloakroom app sharing sessions see each
//! other's: `"flash": {"<kind>": [<message>, …]}` in the session's data, kinds in the order
//! first added, messages in the order added.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::Session;
use crate::error::Error;

/// The session data key connect-flash keeps its messages under.
pub const FLASH_KEY: &str = "flash";

impl Session {
    /// Leaves `message` for the next page under `kind` (`"error"`, `"info"`, `"success"`:
    /// names are the application's), after those already waiting: connect-flash's
    /// `req.flash(kind, message)`. Returns how many messages of that kind now wait.
    ///
    /// The message may be any serializable value (connect-flash stores strings, numbers and
    /// objects as they are). Messages added by concurrent requests all stay: the addition is an
    /// [`update`](Self::update), replayed onto a record another request saved meanwhile.
    ///
    /// ```
    /// # async fn failed_login(session: cloakroom::Session) -> Result<(), cloakroom::Error> {
    /// session.flash("error", "Invalid username or password.").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Serialize`] when `message` is not JSON; [`Error::Load`] when the store fails.
    pub async fn flash(&self, kind: &str, message: impl Serialize) -> Result<usize, Error> {
        let message = serde_json::to_value(message).map_err(|e| Error::serialize(FLASH_KEY, e))?;
        let kind_added = kind.to_owned();
        let flashes = self
            .update(FLASH_KEY, move |flashes: Option<Value>| {
                let mut flashes = messages_by_kind(flashes);
                let waiting = flashes
                    .entry(kind_added.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !waiting.is_array() {
                    *waiting = Value::Array(Vec::new());
                }
                if let Value::Array(waiting) = waiting {
                    waiting.push(message.clone());
                }
                Value::Object(flashes)
            })
            .await?;
        Ok(flashes
            .get(kind)
            .and_then(Value::as_array)
            .map_or(0, Vec::len))
    }

    /// Takes the messages waiting under `kind`, oldest first, and clears them: connect-flash's
    /// `req.flash(kind)`. Nothing waiting gives an empty list and changes nothing (connect-flash
    /// would add an empty `flash` object, and so save a new visitor's session: cloakroom does
    /// not).
    ///
    /// # Errors
    /// [`Error::Deserialize`] when a waiting message is not a `T` (they are taken all the
    /// same); [`Error::Load`] when the store fails.
    pub async fn take_flash<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>, Error> {
        let Some(Value::Object(flashes)) = self.get_value(FLASH_KEY).await? else {
            return Ok(Vec::new());
        };
        let Some(waiting) = flashes.get(kind).cloned() else {
            return Ok(Vec::new());
        };
        let kind_taken = kind.to_owned();
        self.update(FLASH_KEY, move |flashes: Option<Value>| {
            let mut flashes = messages_by_kind(flashes);
            flashes.shift_remove(&kind_taken);
            Value::Object(flashes)
        })
        .await?;
        let waiting = match waiting {
            Value::Array(waiting) => waiting,
            other => vec![other],
        };
        waiting
            .into_iter()
            .map(|message| T::deserialize(message).map_err(|_| Error::deserialize::<T>(FLASH_KEY)))
            .collect()
    }

    /// Takes every waiting message, by kind, and clears them all: connect-flash's
    /// `req.flash()`, which leaves an empty `flash` object behind (so does this). Nothing
    /// waiting gives an empty map and changes nothing.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn take_all_flashes(&self) -> Result<Map<String, Value>, Error> {
        let Some(Value::Object(flashes)) = self.get_value(FLASH_KEY).await? else {
            return Ok(Map::new());
        };
        if flashes.is_empty() {
            return Ok(flashes);
        }
        self.update(FLASH_KEY, |_: Option<Value>| Value::Object(Map::new()))
            .await?;
        Ok(flashes)
    }
}

/// The stored `flash` value as an object; anything else (absent, or not an object, written by
/// something other than connect-flash or cloakroom) counts as no messages.
fn messages_by_kind(flashes: Option<Value>) -> Map<String, Value> {
    match flashes {
        Some(Value::Object(flashes)) => flashes,
        _ => Map::new(),
    }
}
