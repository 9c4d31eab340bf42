//! The store's connections to its file, each running one statement at a time, without sqlx's
//! pool.
//!
//! sqlx's pool spawns a task to take a connection back after every statement (it keeps a
//! minimum of connections that way), and a statement waits for a connection through its
//! semaphore and idle queue. A file's connections never go stale as a server's do, so a lock
//! per connection does the job: in the benchmark's setup (one core, `wrk -t1 -c64`, three
//! alternating runs each), `/read` went from 60,200–60,700 to 76,700–76,800 requests a second
//! with it, `/counter` from 18,800–19,500 to 23,600–24,100, and `/login` from 20,500–20,900
//! to 22,500–22,900.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tokio::sync::{Mutex, MutexGuard};

/// A fixed set of connections, handed out one statement at a time.
pub(super) struct Connections {
    slots: Box<[Mutex<SqliteConnection>]>,
    /// Where the next search for a free connection starts, so they take turns.
    next: AtomicUsize,
}

impl Connections {
    /// Opens `count` connections (at least one) with `options`, one after the other.
    pub(super) async fn open(
        options: &SqliteConnectOptions,
        count: usize,
    ) -> Result<Self, sqlx::Error> {
        let mut slots = Vec::with_capacity(count.max(1));
        for _ in 0..count.max(1) {
            slots.push(Mutex::new(options.connect().await?));
        }
        Ok(Connections {
            slots: slots.into(),
            next: AtomicUsize::new(0),
        })
    }

    /// A free connection if there is one; else the next in turn, once its statement is done
    /// (the lock is fair: waiters are served in the order they came).
    pub(super) async fn get(&self) -> MutexGuard<'_, SqliteConnection> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.slots.len();
        for offset in 0..count {
            if let Ok(connection) = self.slots[(start + offset) % count].try_lock() {
                return connection;
            }
        }
        self.slots[start % count].lock().await
    }
}

/// Runs `statement` (a statement on one of these connections), giving the core away once
/// after handing it over: sqlx runs each connection's statements on a thread of its own, and on
/// a busy core that thread otherwise waits for the scheduler to end the time slice of the
/// thread that handed it the work. For the writer, whose statements every write waits for in
/// turn, that wait was the write tail. In the benchmark's setup (one core, `wrk -t1 -c64`,
/// alternating runs), `/counter` without the yield: p99 8.1–9.6 ms at p50 2.3–2.5 ms in 11 of
/// 12 runs (12.0 ms in one), 23,200–24,500 requests a second; with it: 4.1–4.3 ms at p50
/// 2.9 ms in 7 of 9 runs (10.6 and 15.3 ms in two slower ones), 20,700–22,000 a second.
/// `/login` went from 21,900–22,700 to 24,700–24,800 requests a second, its p99 unchanged.
/// Where another core is free the writer runs there at once, and yielding with nothing else to
/// run costs one system call.
pub(super) async fn handed_over<F: Future>(statement: F) -> F::Output {
    let mut statement = pin!(statement);
    let mut handed = false;
    poll_fn(|cx| {
        let poll = statement.as_mut().poll(cx);
        if poll.is_pending() && !handed {
            handed = true;
            std::thread::yield_now();
        }
        poll
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Waker};

    use super::super::scratch::Scratch;
    use super::*;

    #[tokio::test]
    async fn connections_take_turns_and_wait_when_all_are_busy() {
        let scratch = Scratch::new("connections").await;
        let connections = Connections::open(&scratch.options, 2).await.unwrap();
        let first = connections.get().await;
        let second = connections.get().await;
        // Both taken: the next caller waits until one is given back.
        let third = connections.get();
        tokio::pin!(third);
        let mut context = Context::from_waker(Waker::noop());
        assert!(third.as_mut().poll(&mut context).is_pending());
        drop(first);
        let _third = third.await;
        drop(second);
    }

    #[tokio::test]
    async fn a_statement_handed_over_runs_to_its_end() {
        let scratch = Scratch::new("handed-over").await;
        let connections = Connections::open(&scratch.options, 1).await.unwrap();
        let mut connection = connections.get().await;
        let (answer,): (i64,) =
            handed_over(sqlx::query_as("SELECT 6 * 7").fetch_one(&mut *connection))
                .await
                .unwrap();
        assert_eq!(answer, 42);
    }
}
