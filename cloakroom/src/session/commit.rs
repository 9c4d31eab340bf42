//! The end of a request: decide (see [`decide`](super::decide)), then destroy, save or touch,
//! then the cookie; and the save itself, with its compare-and-set retries.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::Session;
use super::decide::{Decision, Facts, SessionFacts, decide};
use super::state::{Current, SavedState, State, fingerprint};
use super::turns::{self, LastWrite, Verdict, Waiting};
use crate::cookie;
use crate::error::Error;
use crate::events::SessionEvent;
use crate::id::Id;
use crate::record::{Record, SessionCookie};
use crate::store::{Condition, SetOutcome, Version};
use crate::time::Timestamp;

/// How many rounds a save that keeps losing compare-and-set races makes. Within one process
/// writes to a session take turns, and one turn allows a reload and a second attempt, so one
/// round suffices there; the rest are for writers in other processes, with a growing pause
/// between rounds (taken without holding the turn).
const SAVE_ROUNDS: u32 = 16;
/// Attempts per round: onto the last write of this process (or as loaded), then after reloading
/// the newer record, once more.
const ATTEMPTS_PER_ROUND: u32 = 3;

/// What the middleware must do to the response.
#[derive(Default)]
pub(crate) struct Outcome {
    /// A `Set-Cookie` value to append.
    pub(crate) set_cookie: Option<HeaderValue>,
    /// The token header to set (the session's token, or empty for a destroyed session).
    pub(crate) token: Option<(HeaderName, HeaderValue)>,
    /// A fatal store failure: answer with the failure response instead.
    pub(crate) failure: Option<Error>,
    /// Non-fatal failures (touch, cleanup after regenerate, unlock): logged and attached.
    pub(crate) warnings: Vec<Error>,
}

impl Outcome {
    fn failed(failure: Error, warnings: Vec<Error>) -> Self {
        Outcome {
            failure: Some(failure),
            warnings,
            ..Outcome::default()
        }
    }
}

/// How a commit goes on, from [`Session::commit`].
pub(crate) enum Commit {
    /// Nothing waits for the store: apply this to the response now.
    Ready(Outcome),
    /// The store must be called first: finish it with [`Session::commit_later`].
    Later(Pending),
}

/// A commit that waits for the store.
pub(crate) enum Pending {
    /// The state was busy, or a lock must be released: decide later.
    Undecided,
    /// Decided; the store calls remain.
    Decided(Plan),
}

/// The end-of-request decisions, before any store call.
pub(crate) struct Plan {
    decision: Decision,
    now: Timestamp,
    warnings: Vec<Error>,
}

impl Plan {
    fn needs_store(&self) -> bool {
        self.decision.destroy || self.decision.save || self.decision.touch
    }
}

/// What a write onto the last write replaced: the record, version and expiry to restore.
type Trial = (Record, Option<Version>, Option<Timestamp>);

/// What [`Session::prepare`] found.
enum Prepared {
    /// Nothing to decide (an unused session, or a failure to report).
    Done(Outcome),
    Plan(Plan),
}

impl Session {
    /// Commits without waiting when the decisions need no store call (the common read-only
    /// request with a throttled touch); otherwise says what [`commit_later`](Self::commit_later)
    /// must finish.
    pub(crate) fn commit(&self) -> Commit {
        // Busy only if a clone of the handle (in a task the handler spawned) is mid-operation.
        let Ok(mut state) = self.shared.state.try_lock() else {
            return Commit::Later(Pending::Undecided);
        };
        // Releasing the session's lock is a store call.
        if state.lock.is_some() {
            return Commit::Later(Pending::Undecided);
        }
        match self.prepare(&mut state) {
            Prepared::Done(outcome) => Commit::Ready(outcome),
            Prepared::Plan(plan) if !plan.needs_store() => Commit::Ready(self.finish(&state, plan)),
            Prepared::Plan(plan) => Commit::Later(Pending::Decided(plan)),
        }
    }

    /// Finishes a commit that needs the store: destroy, save or touch, then the cookie; then
    /// releases the session's lock, if held, so the next holder loads what this one saved.
    pub(crate) async fn commit_later(&self, pending: Pending) -> Outcome {
        let mut state = self.shared.state.lock().await;
        let mut outcome = self.commit_with_store(&mut state, pending).await;
        if state.lock.is_some() {
            self.release_lock(&mut state).await;
            outcome.warnings.append(&mut state.warnings);
        }
        outcome
    }

    async fn commit_with_store(&self, state: &mut State, pending: Pending) -> Outcome {
        let mut plan = match pending {
            Pending::Decided(plan) => plan,
            Pending::Undecided => match self.prepare(state) {
                Prepared::Done(outcome) => return outcome,
                Prepared::Plan(plan) => plan,
            },
        };
        let store = self.shared.ctx.store();
        if plan.decision.destroy {
            let id = state
                .unset
                .take()
                .expect("destroy is decided only after unset");
            match store.destroy(&id).await {
                Ok(()) => {
                    self.emit(SessionEvent::Destroyed { id: id.clone() });
                    state.destroyed.push(id);
                }
                Err(e) => return Outcome::failed(Error::Destroy(e), plan.warnings),
            }
        }
        if plan.decision.save {
            // Boxed, as `write_batch` inside it is: the middleware boxes the whole commit, and
            // inline these made that one allocation 1,744 bytes, past what glibc's per-thread
            // cache serves (1,032), so every write paid for the slow path. Three boxes under
            // that size cost less (ad hoc, `/counter` 2 % less server CPU).
            if let Err(error) = Box::pin(self.write(state, true)).await {
                return Outcome::failed(error, plan.warnings);
            }
        } else if plan.decision.touch
            && let Some(current) = &state.current
            && let Err(e) = store.touch(&current.id, &current.record).await
        {
            plan.warnings.push(Error::Touch(e));
        }
        self.finish(state, plan)
    }

    /// The decisions, without any store call: marks the session finished, refreshes the expiry
    /// once (express's `req.session.touch()` on the way out), and asks [`decide`].
    fn prepare(&self, state: &mut State) -> Prepared {
        if state.finished || !state.loaded {
            state.finished = true;
            return Prepared::Done(Outcome::default());
        }
        state.finished = true;
        let warnings = std::mem::take(&mut state.warnings);
        if let Some(failure) = state.failure.take() {
            return Prepared::Done(Outcome::failed(failure, warnings));
        }
        let now = Timestamp::now();
        if !state.touched
            && let Some(current) = state.current.as_mut()
        {
            current.record.cookie_mut().touch_at(now);
        }
        let cookie_id = state.cookie_id.as_ref();
        let facts = Facts {
            session: state.current.as_ref().map(|current| SessionFacts {
                is_new: cookie_id != Some(&current.id),
                is_modified: current.is_modified_since_load(state.original_id.as_ref()),
                is_saved: Self::is_saved(state, current),
                has_saved_hash: !matches!(state.saved, SavedState::Unsaved),
                has_expires: current.record.cookie().expires().is_some(),
                secure_cookie: current.record.cookie().secure() == Some(true),
                stored_expiry: current.stored_expires_at,
                touched_expiry: self.store_expiry(&current.record, now),
            }),
            unset_called: state.unset.is_some(),
            cookie_session_unset: cookie_id.is_some() && state.unset.as_ref() == cookie_id,
            cookie_session_destroyed: cookie_id.is_some_and(|id| state.destroyed.contains(id)),
            request_secure: self.shared.request.secure,
        };
        let mut decision = decide(&self.shared.ctx.config, &facts);
        if let Some(current) = state.current.as_mut() {
            self.keep_lifetime(current, &mut decision, now);
        }
        Prepared::Plan(Plan {
            decision,
            now,
            warnings,
        })
    }

    /// When the store expires `record` if written or touched `now`: at the cookie's expiry, or
    /// after the store's default lifetime for a browser-session cookie.
    pub(super) fn store_expiry(&self, record: &Record, now: Timestamp) -> Option<Timestamp> {
        turns::store_expiry(self.shared.ctx.store(), record, now)
    }

    /// The cookie half of the commit: the session's cookie, or an expired one; or, for a
    /// request that came with a token header, the token (see `transport`).
    fn finish(&self, state: &State, plan: Plan) -> Outcome {
        let mut outcome = Outcome {
            warnings: plan.warnings,
            ..Outcome::default()
        };
        let transport = &self.shared.ctx.config.transport;
        let by_header = self.shared.request.token.is_some();
        if let Some(header) = &transport.header
            && (by_header || !transport.cookie || state.token_asked)
        {
            let token = match (&state.current, plan.decision.set_cookie) {
                (Some(current), true) => {
                    HeaderValue::from_str(&self.shared.ctx.secrets.sign(current.id.as_str())).ok()
                }
                // Destroyed: an empty token tells the client to forget its own.
                (_, false) if plan.decision.expire_cookie => Some(HeaderValue::from_static("")),
                _ => None,
            };
            outcome.token = token.map(|token| (header.response_header().clone(), token));
        }
        if by_header || !transport.cookie {
            return outcome;
        }
        if plan.decision.set_cookie {
            if let Some(current) = &state.current {
                outcome.set_cookie = self.cookie_header(&current.id, current.record.cookie(), None);
            }
        } else if plan.decision.expire_cookie
            && let Some(cookie_id) = &state.cookie_id
        {
            let template = self
                .shared
                .ctx
                .config
                .cookie
                .session_cookie(plan.now, self.shared.request.secure);
            outcome.set_cookie = self.cookie_header(cookie_id, &template, Some(Timestamp::EPOCH));
        }
        outcome
    }

    /// express's `isSaved`: the store holds exactly this data under this id.
    fn is_saved(state: &State, current: &Current) -> bool {
        state.original_id.as_ref() == Some(&current.id)
            && !current.cookie_unsaved
            && match state.saved {
                SavedState::Unsaved => false,
                SavedState::AsLoaded => !current.changes.is_modified(current.record.data()),
                SavedState::Saved(saved) => fingerprint(current.record.data()) == saved,
            }
    }

    fn cookie_header(
        &self,
        id: &Id,
        cookie: &SessionCookie,
        expires: Option<Timestamp>,
    ) -> Option<HeaderValue> {
        let ctx = &self.shared.ctx;
        let value = match expires {
            // An expiring cookie needs no valid value.
            Some(_) => String::new(),
            None => ctx.secrets.sign(id.as_str()),
        };
        cookie::set_cookie(&ctx.config.name, &value, cookie, expires)
            .inspect_err(|invalid| {
                tracing::error!(attribute = invalid.0, "failed to write the session cookie");
            })
            .ok()
    }

    /// Writes the live session: a new one only if its id is free, an existing one as a
    /// compare-and-set against the version loaded. On a conflict, reload the newer record, carry
    /// this request's changes over (see [`changes`]), and try again.
    ///
    /// `last` says no decision follows (the end-of-request commit), so nothing needs to remember
    /// what was saved.
    pub(super) async fn write(&self, state: &mut State, last: bool) -> Result<(), Error> {
        // The end-of-request write of a stored, unlocked session goes through its turn's queue.
        if last
            && state.lock.is_none()
            && let Some(written) = self.write_queued(state).await
        {
            return written;
        }
        self.write_alone(state, last).await
    }

    /// Leaves this request's changes in the queue of its session's turn, and waits for them to
    /// be written in a batch (see [`turns`]). `None` when they must be written alone: a new
    /// session, or changes that did not carry over onto the batch.
    async fn write_queued(&self, state: &mut State) -> Option<Result<(), Error>> {
        let ctx = &self.shared.ctx;
        let current = state.current.as_mut()?;
        let loaded = current.version.clone()?;
        let (reply, verdict) = tokio::sync::oneshot::channel();
        let waiting = Waiting {
            id: current.id.clone(),
            changes: std::mem::take(&mut current.changes),
            record: current.record.clone(),
            loaded,
            reply,
        };
        // Alone on its session (the common case), the write is made here; else it joins the
        // queue, and the queue's task (started here if none runs) answers it with a batch.
        if let Err(waiting) = turns::write_if_free(&ctx.write_locks, ctx.store(), waiting).await
            && ctx.write_locks.for_id(&current.id).enqueue(waiting)
        {
            let (turn_ctx, id) = (Arc::clone(ctx), current.id.clone());
            tokio::spawn(async move {
                turns::run_queue(&turn_ctx.write_locks, turn_ctx.store(), &id).await;
            });
        }
        let verdict = verdict.await.unwrap_or(Verdict::Failed(Error::Contended));
        let current = state.current.as_mut()?;
        match verdict {
            Verdict::Written(version, expires_at) => {
                current.version = Some(version);
                current.stored_expires_at = expires_at;
                current.cookie_unsaved = false;
                self.destroy_replaced(state).await;
                Some(Ok(()))
            }
            // Destroyed (a logout in another tab) or expired meanwhile: never resurrect it.
            Verdict::Vanished => {
                state.current = None;
                Some(Ok(()))
            }
            Verdict::Failed(error) => Some(Err(error)),
            Verdict::Alone(changes) => {
                current.changes = changes;
                None
            }
        }
    }

    /// Writes the live session without the queue (see [`write`](Self::write)).
    async fn write_alone(&self, state: &mut State, last: bool) -> Result<(), Error> {
        let ctx = Arc::clone(&self.shared.ctx);
        let Some(current) = state.current.as_ref() else {
            return Ok(());
        };
        // A session never stored has an id no other request knows yet: it needs no turn.
        let takes_turns = current.version.is_some();
        let id = current.id.clone();
        for round in 0..SAVE_ROUNDS {
            if round > 0 {
                // Only writers in other processes can beat us a whole round: give them room,
                // without holding up this process's other writers meanwhile.
                tokio::time::sleep(backoff(round)).await;
            }
            // No other request in this process writes this session until this round is over.
            let mut turn = if takes_turns {
                Some(ctx.write_locks.for_id(&id).turn.lock().await)
            } else {
                None
            };
            let current = state
                .current
                .as_mut()
                .expect("checked above; only this loop clears it");
            // What this process last wrote, if this request loaded something else: most likely
            // a write that came in between, so carry the changes onto it and write once.
            let mut before_trial = turn
                .as_deref()
                .and_then(Option::as_ref)
                .filter(|last| last.id == id && Some(&last.version) != current.version.as_ref())
                .and_then(|last| Self::onto_last_write(current, last));
            for _ in 0..ATTEMPTS_PER_ROUND {
                let current = state
                    .current
                    .as_mut()
                    .expect("checked above; only this loop clears it");
                let mut condition = match &current.version {
                    Some(version) => Condition::version(version),
                    None => Condition::absent(),
                };
                if let Some(held) = state.lock.as_ref().filter(|held| held.id == current.id) {
                    condition = condition.with_lease(&held.lease);
                }
                match ctx
                    .store()
                    .set(&current.id, &current.record, condition)
                    .await
                {
                    Ok(SetOutcome::Written(version)) => {
                        // A first save is a creation, unless it replaces sessions (regenerate:
                        // told when they are destroyed, below).
                        if current.version.is_none() && state.replaced.is_empty() {
                            self.emit(SessionEvent::Created {
                                id: current.id.clone(),
                            });
                        }
                        current.version = Some(version.clone());
                        current.stored_expires_at =
                            self.store_expiry(&current.record, Timestamp::now());
                        current.cookie_unsaved = false;
                        if let Some(slot) = turn.as_deref_mut() {
                            *slot = Some(LastWrite {
                                id: current.id.clone(),
                                version,
                                record: current.record.clone(),
                                expires_at: current.stored_expires_at,
                            });
                        }
                        if !last {
                            current.changes.written(current.record.data());
                            state.saved = SavedState::Saved(fingerprint(current.record.data()));
                        }
                        self.destroy_replaced(state).await;
                        return Ok(());
                    }
                    Ok(SetOutcome::Conflict) if current.version.is_none() => {
                        return Err(Error::IdInUse);
                    }
                    Ok(SetOutcome::Conflict) => {}
                    Ok(SetOutcome::LeaseLost) => return Err(Error::LeaseLost),
                    Err(e) => return Err(Error::Save(e)),
                }
                // The last write was not what the store holds (another process wrote): undo the
                // trial, so the reload below merges this request's own view.
                if let Some((record, version, expires_at)) = before_trial.take() {
                    current.record = record;
                    current.version = version;
                    current.stored_expires_at = expires_at;
                }
                match ctx.store().get(&current.id).await {
                    Ok(Some(newer)) => {
                        let mut merged = newer.record.into_data();
                        current
                            .changes
                            .rebase(current.record.data(), &mut merged)
                            .map_err(|conflict| Error::Conflict { key: conflict.key })?;
                        current.record.set_data(merged);
                        current.version = Some(newer.version);
                        current.stored_expires_at = newer.expires_at;
                    }
                    // Destroyed (a logout in another tab) or expired meanwhile: never resurrect it.
                    Ok(None) => {
                        tracing::debug!(
                            "session vanished while saving; dropping this request's changes"
                        );
                        state.current = None;
                        return Ok(());
                    }
                    Err(e) => return Err(Error::Load(e)),
                }
            }
        }
        Err(Error::Contended)
    }

    /// Puts this request's changes onto `last`, the record this process last wrote, to write at
    /// its version. Returns what to restore if that write finds `last` is not the stored record
    /// after all; `None`, changing nothing, when the changes do not carry over onto it (the
    /// reload decides then).
    fn onto_last_write(current: &mut Current, last: &LastWrite) -> Option<Trial> {
        let mut merged = last.record.data().clone();
        current
            .changes
            .merge_onto(current.record.data(), &mut merged)
            .ok()?;
        let mut record = current.record.clone();
        record.set_data(merged);
        let before = (
            std::mem::replace(&mut current.record, record),
            current.version.replace(last.version.clone()),
            std::mem::replace(&mut current.stored_expires_at, last.expires_at),
        );
        Some(before)
    }

    /// Releases the session's lock, if this request holds it. A failure is a warning: the
    /// lease runs out by itself.
    pub(super) async fn release_lock(&self, state: &mut State) {
        let Some(held) = state.lock.take() else {
            return;
        };
        if let Some(locking) = &self.shared.ctx.locking
            && let Err(error) = locking.release(held).await
        {
            state.warnings.push(error);
        }
    }

    /// Destroys the records `regenerate` replaced, now that the new one is saved. A failure is a
    /// warning, not fatal: the new session is safely stored, and the old record holds only what
    /// the session had before it was regenerated.
    pub(super) async fn destroy_replaced(&self, state: &mut State) {
        let new = state.current.as_ref().map(|current| current.id.clone());
        for id in std::mem::take(&mut state.replaced) {
            match self.shared.ctx.store().destroy(&id).await {
                Ok(()) => {
                    if let Some(new) = &new {
                        self.emit(SessionEvent::Regenerated {
                            old: id.clone(),
                            new: new.clone(),
                        });
                    }
                    state.destroyed.push(id);
                }
                Err(e) => state.warnings.push(Error::Destroy(e)),
            }
        }
    }
}

/// A jittered, growing pause before a retry: up to 0.1 ms × 2^attempt, capped at 50 ms, so
/// writers in several processes stop colliding.
fn backoff(attempt: u32) -> Duration {
    let ceiling_us = (100u64 << attempt.min(9)).min(50_000);
    let jitter = std::hash::RandomState::new().hash_one(std::time::Instant::now());
    Duration::from_micros(jitter % ceiling_us + 1)
}
