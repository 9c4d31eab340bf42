//! The connection to a standalone Redis: one socket that every clone of the store shares.
//!
//! A request is written to the socket's queue whole, under one lock, together with the slot its
//! answer goes to; Redis answers in the order it reads, so the answers fill the slots in order.
//! One task per connection writes what is queued (everything queued since its last write, in
//! one system call, after the tasks ready to run have had their turn to add to it) and reads
//! the answers. That is all it does: a round trip costs a few allocations and one lock, where
//! redis-rs's `ConnectionManager` adds a codec, a channel and a reconnection layer to each.
//! Under callgrind, a benchmark `/counter` request (two round trips) went from about 80,000
//! instructions to 73,000 when this link replaced it.
//!
//! Each request has until the store's response timeout for its answer, including any wait for
//! the link to be back. One timer of the link's watches the earliest deadline of the requests
//! in flight: a timer for each request cost a `/read` 2–6 % of its throughput (ad hoc, server
//! and Redis on one core: 112–116k req/s against 118–119k). A request that runs out fails with
//! a timeout (an I/O error of kind `TimedOut`); its answer, should it come, is read and
//! dropped.
//!
//! When the socket fails, every request in flight fails with it (as an I/O error, which the
//! store reports as [`ErrorKind::Unavailable`](crate::store::ErrorKind::Unavailable)): such a
//! request may or may not have been carried out, and nothing is retried. The link reconnects by
//! itself, at once and then with a growing pause of up to a second; a request made meanwhile
//! waits for it (bounded by the store's response timeout).
//!
//! The link speaks RESP2 whatever the URL asks for: it needs no RESP3 type.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, Value,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

use super::resp::{malformed, parse};

/// Connection attempts when the store is built, before it reports Redis unreachable.
const FIRST_ATTEMPTS: u32 = 3;
/// The pause after the first failed reconnection attempt; it doubles with each failure.
const FIRST_PAUSE: Duration = Duration::from_millis(25);
/// The longest pause between two reconnection attempts, before up to as much again of jitter.
const MAX_PAUSE: Duration = Duration::from_millis(500);
/// A write buffer grown past this (by a large record) is let go once written.
const KEEP_BUFFER: usize = 64 * 1024;

/// One standalone Redis connection, shared by every clone.
#[derive(Clone)]
pub(super) struct Link {
    shared: Arc<Shared>,
    /// Dropped with the last clone: the connection's task then ends and closes the socket.
    _alive: Arc<watch::Sender<()>>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer when the queue's bytes go from none to some.
    queued: Notify,
    /// Wakes the deadline watcher when a request is queued while it watches none.
    watch: Notify,
    /// How long a request waits for its answer.
    response_timeout: Duration,
    /// Wakes the requests that wait for the link to be back.
    reconnected: Notify,
    server: Server,
}

/// Requests not yet answered.
#[derive(Default)]
struct Queue {
    /// The socket works; when it does not, requests fail at once.
    up: bool,
    /// Requests not yet written, packed.
    unwritten: Vec<u8>,
    /// Every request written or to be written, oldest first.
    waiting: VecDeque<Waiter>,
    /// The deadline watcher is waiting for a deadline (or about to look for one), so a new
    /// request need not wake it.
    watched: bool,
}

/// Where the answer to one request goes.
struct Waiter {
    /// Replies to drop before the wanted ones.
    skip: usize,
    /// Replies wanted: 1 for a command, the command count for a pipeline.
    wanted: usize,
    replies: Vec<Value>,
    /// When the request times out.
    deadline: Instant,
    /// `None` once the request has been answered with a timeout (its replies are then dropped).
    answer: Option<oneshot::Sender<RedisResult<Vec<Value>>>>,
}

/// Where and how to connect.
struct Server {
    address: ConnectionAddr,
    db: i64,
    username: Option<String>,
    password: Option<String>,
    connection_timeout: Duration,
}

impl Link {
    /// Connects to the server `url` names (`redis://` or `redis+unix://`), and sets up the
    /// connection (`AUTH`, `SELECT`), in a few attempts. Every request then waits up to
    /// `response_timeout` for its answer.
    pub(super) async fn connect(
        url: &str,
        connection_timeout: Duration,
        response_timeout: Duration,
    ) -> RedisResult<Link> {
        let info: ConnectionInfo = url.into_connection_info()?;
        let settings = info.redis_settings();
        let server = Server {
            address: info.addr().clone(),
            db: settings.db(),
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            connection_timeout,
        };
        let mut attempt = 1;
        let stream = loop {
            match server.open().await {
                Ok(stream) => break stream,
                // A refusal by Redis itself (a wrong password, say) will not change by asking
                // again.
                Err(error) if error.is_io_error() && attempt < FIRST_ATTEMPTS => {
                    tokio::time::sleep(FIRST_PAUSE * 4u32.pow(attempt - 1)).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                up: true,
                ..Queue::default()
            }),
            queued: Notify::new(),
            watch: Notify::new(),
            response_timeout,
            reconnected: Notify::new(),
            server,
        });
        let (alive, closed) = watch::channel(());
        tokio::spawn(run(Arc::clone(&shared), stream, closed));
        Ok(Link {
            shared,
            _alive: Arc::new(alive),
        })
    }

    /// Sends `count` commands already packed (see [`Commands`](super::resp::Commands)) and
    /// returns their replies, in order; an error reply is one of them. Fails with a timeout
    /// when they do not come within the response timeout.
    pub(super) async fn send(&self, packed: &[u8], count: usize) -> RedisResult<Vec<Value>> {
        self.request(|out| out.extend_from_slice(packed), 0, count)
            .await
    }

    /// Sends one request (`pack` writes it) and waits for its answer, `skip + wanted`
    /// replies, up to the response timeout. While the link is down, waits for it to be back
    /// first, within the same time.
    async fn request(
        &self,
        pack: impl Fn(&mut Vec<u8>),
        skip: usize,
        wanted: usize,
    ) -> RedisResult<Vec<Value>> {
        if skip + wanted == 0 {
            // Nothing to send. Queued, it would take the next request's answer.
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + self.shared.response_timeout;
        let (answer, answered) = oneshot::channel();
        let mut waiter = Some(Waiter {
            skip,
            wanted,
            replies: Vec::new(),
            deadline,
            answer: Some(answer),
        });
        self.queue(&pack, &mut waiter);
        if waiter.is_some() {
            // Boxed: the wait's timer and notification would otherwise make every request's
            // future (and each store call's, which embeds it) larger for a rare path.
            Box::pin(self.queue_when_up(&pack, &mut waiter, deadline)).await?;
        }
        answered
            .await
            .unwrap_or_else(|_| Err(connection_lost("the connection's task ended").into()))
    }

    /// While the link is down: waits for it to be back and queues the request then, until the
    /// deadline.
    async fn queue_when_up(
        &self,
        pack: impl Fn(&mut Vec<u8>),
        waiter: &mut Option<Waiter>,
        deadline: Instant,
    ) -> RedisResult<()> {
        while waiter.is_some() {
            // Registered before looking again, so that a reconnection in between is not missed.
            let mut reconnected = pin!(self.shared.reconnected.notified());
            reconnected.as_mut().enable();
            self.queue(&pack, waiter);
            if waiter.is_some()
                && tokio::time::timeout_at(deadline, reconnected)
                    .await
                    .is_err()
            {
                return Err(timed_out().into());
            }
        }
        Ok(())
    }

    /// Appends a request and its waiter to the queue, under one lock, so that answers and
    /// waiters stay in the same order; leaves `waiter` where it is while the link is down.
    fn queue(&self, pack: impl Fn(&mut Vec<u8>), waiter: &mut Option<Waiter>) {
        let (was_empty, unwatched) = {
            let mut queue = self.shared.lock();
            if !queue.up {
                return;
            }
            let was_empty = queue.unwritten.is_empty();
            pack(&mut queue.unwritten);
            queue.waiting.extend(waiter.take());
            (was_empty, !std::mem::replace(&mut queue.watched, true))
        };
        if was_empty {
            self.shared.queued.notify_one();
        }
        if unwatched {
            self.shared.watch.notify_one();
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut replies = self
                .request(|out| cmd.write_packed_command(out), 0, 1)
                .await?;
            Ok(replies.pop().unwrap_or(Value::Nil))
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let pack = |out: &mut Vec<u8>| {
            if pipeline.is_transaction() {
                // MULTI and EXEC are added in packing.
                out.extend_from_slice(&pipeline.get_packed_pipeline());
            } else {
                for cmd in pipeline.cmd_iter() {
                    cmd.write_packed_command(out);
                }
            }
        };
        Box::pin(self.request(pack, offset, count))
    }

    fn get_db(&self) -> i64 {
        self.shared.server.db
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding it; a poisoned queue is still whole.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the link down and fails every request in flight with `error`.
    fn fail_all(&self, error: &io::Error) {
        let waiting = {
            let mut queue = self.lock();
            queue.up = false;
            queue.unwritten.clear();
            std::mem::take(&mut queue.waiting)
        };
        for answer in waiting.into_iter().filter_map(|waiter| waiter.answer) {
            let lost = io::Error::new(error.kind(), error.to_string());
            let _ = answer.send(Err(RedisError::from(lost)));
        }
    }

    /// Fails the requests whose deadline is at or before `now` with a timeout, and returns
    /// the earliest deadline of those still waiting, or `None` (and stops watching) when none
    /// is.
    fn time_out(&self, now: Instant) -> Option<Instant> {
        let mut overdue = Vec::new();
        let next = {
            let mut queue = self.lock();
            let mut next: Option<Instant> = None;
            for waiter in &mut queue.waiting {
                if waiter.answer.is_none() {
                    continue;
                }
                if waiter.deadline <= now {
                    overdue.extend(waiter.answer.take());
                } else {
                    next = Some(next.map_or(waiter.deadline, |next| next.min(waiter.deadline)));
                }
            }
            queue.watched = next.is_some();
            next
        };
        for answer in overdue {
            let _ = answer.send(Err(timed_out().into()));
        }
        next
    }
}

/// The connection's task: serves the socket until it fails, then reconnects, until the last
/// clone of the link is dropped.
async fn run(shared: Arc<Shared>, first: Stream, mut closed: watch::Receiver<()>) {
    let mut stream = Some(first);
    loop {
        let current = match stream.take() {
            Some(stream) => stream,
            None => {
                let reconnecting = pin!(reconnect(&shared.server));
                match first_of(reconnecting, closed.changed()).await {
                    Either::First(stream) => stream,
                    Either::Second(_) => return,
                }
            }
        };
        shared.lock().up = true;
        shared.reconnected.notify_waiters();
        let error = match first_of(pin!(serve(&shared, current)), closed.changed()).await {
            Either::First(error) => error,
            Either::Second(_) => return,
        };
        shared.fail_all(&error);
    }
}

/// Connects again, pausing longer after each failure.
async fn reconnect(server: &Server) -> Stream {
    let mut pause = FIRST_PAUSE;
    loop {
        if let Ok(stream) = server.open().await {
            return stream;
        }
        tokio::time::sleep(pause + jitter(pause)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Up to `limit` more, so that processes that lost Redis together do not come back in step.
fn jitter(limit: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |now| now.subsec_nanos());
    limit.mul_f64(f64::from(nanos % 1024) / 1024.0)
}

/// Writes what is queued and reads the answers, until the socket fails.
async fn serve(shared: &Shared, stream: Stream) -> io::Error {
    match stream {
        Stream::Tcp(mut tcp) => {
            let (reader, writer) = tcp.split();
            serve_halves(shared, reader, writer).await
        }
        #[cfg(unix)]
        Stream::Unix(mut unix) => {
            let (reader, writer) = unix.split();
            serve_halves(shared, reader, writer).await
        }
    }
}

async fn serve_halves(
    shared: &Shared,
    reader: impl AsyncRead + Unpin,
    writer: impl AsyncWrite + Unpin,
) -> io::Error {
    // One task polls all three: the reader keeps reading while a write waits for room, so a
    // large answer never blocks a large request, and requests time out while either waits.
    let reading = pin!(read_answers(shared, reader));
    let writing = pin!(write_requests(shared, writer));
    match first_of(reading, first_of(writing, watch_deadlines(shared))).await {
        Either::First(error) | Either::Second(Either::First(error)) => error,
        Either::Second(Either::Second(never)) => match never {},
    }
}

/// Times requests out: sleeps until the earliest deadline of those in flight, or while there
/// are none until one is queued. Under steady load that is one timer for each response
/// timeout's worth of time, not one for each request.
async fn watch_deadlines(shared: &Shared) -> std::convert::Infallible {
    loop {
        match shared.time_out(Instant::now()) {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => shared.watch.notified().await,
        }
    }
}

async fn write_requests(shared: &Shared, mut writer: impl AsyncWrite + Unpin) -> io::Error {
    let mut batch = Vec::new();
    loop {
        std::mem::swap(&mut shared.lock().unwritten, &mut batch);
        if batch.is_empty() {
            shared.queued.notified().await;
            // Let the tasks that are ready run first, and the runtime poll its sockets once:
            // under load they queue more requests, which then go in the same write (one system
            // call here and one read in Redis for all of them); when nothing else is ready this
            // costs one poll. Measured (server and Redis on one core, 64 connections): /read
            // 104-108k -> 112-115k req/s, /counter 54-58k -> 60-62k; a second yield added nothing.
            tokio::task::yield_now().await;
            continue;
        }
        if let Err(error) = writer.write_all(&batch).await {
            return error;
        }
        batch.clear();
        if batch.capacity() > KEEP_BUFFER {
            batch = Vec::new();
        }
    }
}

async fn read_answers(shared: &Shared, mut reader: impl AsyncRead + Unpin) -> io::Error {
    let mut buffer: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut parsed = Vec::new();
    let mut answered = Vec::new();
    loop {
        if buffer.capacity() - buffer.len() < 4096 {
            buffer.reserve(buffer.len().max(16 * 1024));
        }
        match reader.read_buf(&mut buffer).await {
            Ok(0) => {
                return io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "Redis closed the connection",
                );
            }
            Ok(_) => {}
            Err(error) => return error,
        }
        let mut used = 0;
        loop {
            match parse(&buffer[used..], 0) {
                Ok(Some((value, length))) => {
                    parsed.push(value);
                    used += length;
                }
                Ok(None) => break,
                Err(error) => return error,
            }
        }
        buffer.drain(..used);
        if buffer.is_empty() && buffer.capacity() > KEEP_BUFFER {
            buffer = Vec::with_capacity(16 * 1024);
        }
        if parsed.is_empty() {
            continue;
        }
        {
            let mut queue = shared.lock();
            for value in parsed.drain(..) {
                let Some(waiter) = queue.waiting.front_mut() else {
                    return malformed("an answer to no request");
                };
                if waiter.skip > 0 {
                    waiter.skip -= 1;
                    continue;
                }
                waiter.replies.push(value);
                if waiter.replies.len() == waiter.wanted {
                    answered.extend(queue.waiting.pop_front());
                }
            }
        }
        // Outside the lock: each send wakes a request's task.
        for waiter in answered.drain(..) {
            if let Some(answer) = waiter.answer {
                let _ = answer.send(Ok(waiter.replies));
            }
        }
    }
}

/// An open, set-up socket.
enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl Server {
    /// Connects and sets up one socket, within the connection timeout.
    async fn open(&self) -> RedisResult<Stream> {
        match tokio::time::timeout(self.connection_timeout, self.open_unbounded()).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::from(io::Error::new(
                io::ErrorKind::TimedOut,
                "connecting to Redis timed out",
            ))),
        }
    }

    async fn open_unbounded(&self) -> RedisResult<Stream> {
        let mut stream = match &self.address {
            ConnectionAddr::Tcp(host, port) => {
                let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                tcp.set_nodelay(true)?;
                Stream::Tcp(tcp)
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => {
                Stream::Unix(tokio::net::UnixStream::connect(path).await?)
            }
            _ => {
                return Err(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "only redis:// and redis+unix:// URLs are supported (this build has no TLS)",
                )));
            }
        };
        if let Some(password) = &self.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = &self.username {
                auth.arg(username);
            }
            auth.arg(password);
            stream.ask(&auth).await?;
        }
        if self.db != 0 {
            stream.ask(redis::cmd("SELECT").arg(self.db)).await?;
        }
        Ok(stream)
    }
}

impl Stream {
    /// Sends one command and reads its answer, before the socket is shared.
    async fn ask(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        let request = cmd.get_packed_command();
        match self {
            Stream::Tcp(tcp) => ask_on(tcp, &request).await,
            #[cfg(unix)]
            Stream::Unix(unix) => ask_on(unix, &request).await,
        }
    }
}

async fn ask_on(
    socket: &mut (impl AsyncRead + AsyncWrite + Unpin),
    request: &[u8],
) -> RedisResult<Value> {
    socket.write_all(request).await?;
    let mut buffer = Vec::with_capacity(256);
    loop {
        if socket.read_buf(&mut buffer).await? == 0 {
            return Err(connection_lost("Redis closed the connection").into());
        }
        if let Some((value, _)) = parse(&buffer, 0)? {
            return value.extract_error();
        }
    }
}

fn connection_lost(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, what)
}

/// The error of a request that had no answer within the response timeout.
pub(super) fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "Redis did not answer within the response timeout",
    )
}

enum Either<A, B> {
    First(A),
    Second(B),
}

/// Whichever of two futures finishes first (the first one when both are ready).
async fn first_of<A: Future, B: Future>(
    first: std::pin::Pin<&mut A>,
    second: B,
) -> Either<A::Output, B::Output> {
    let mut first = first;
    let mut second = pin!(second);
    poll_fn(|cx| {
        if let Poll::Ready(output) = first.as_mut().poll(cx) {
            return Poll::Ready(Either::First(output));
        }
        second.as_mut().poll(cx).map(Either::Second)
    })
    .await
}
