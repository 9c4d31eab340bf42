//! The per-request work of the session layer, without store I/O.
//!
//! Run with `cargo bench -p cloakroom --bench hot_path`. Each `layer/*` figure is one request
//! driven through a tiny axum `Router` with `tower::ServiceExt::oneshot` (no sockets) on a
//! current-thread runtime, so it includes axum's routing and the handler; `layer/bare` is the
//! same request without the session layer, the floor to subtract. The store is a `MemoryStore`:
//! its load and save are a lock, a map lookup and a JSON decode or encode, no I/O. The layer
//! is configured as in the benchmark servers (`with_touch_after(60 s)`).
//!
//! What each figure includes, beyond `layer/bare`:
//! - `untouched`: a valid cookie, a handler that never calls the session: the layer alone.
//! - `read_no_cookie`: the handler reads a key of a session that does not exist (no cookie):
//!   the decision "nothing to save, no cookie to send".
//! - `read_bad_signature`: a cookie whose signature does not verify: cookie parsing, the HMAC
//!   check, then as `read_no_cookie`.
//! - `read`: a valid cookie: parsing, HMAC verification, the store load (JSON decode), the
//!   read, and the decision (nothing to save).
//! - `counter`: as `read`, plus a write: JSON encode and the store's compare-and-set (a plain
//!   `get` then `insert`).
//! - `counter_update`: the same with `Session::update`, the documented read-modify-write.
//! - `login`: no cookie; a new id from the OS CSPRNG, a write, the save (JSON encode, store
//!   insert), signing, and the `Set-Cookie` header. The store grows by one entry per
//!   iteration, bounded by `MemoryStore`'s entry limit.
//!
//! The `no_store/*` figures are the same requests over a store that does nothing at all (every
//! id holds the same record, every write succeeds without encoding): what is left over
//! `layer/bare` is the layer's own per-request work: parse and verify the cookie, decide, and
//! for `login` a new id, signing and the `Set-Cookie` header.
//!
//! The `pieces/*` figures are the public building blocks on their own.
//!
//! `benches/instructions.rs` drives the same requests a fixed number of times, for counting
//! instructions with callgrind (repeatable on a noisy machine).

#![allow(missing_docs)]

use cloakroom::{Id, Record};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;

mod app;

use app::{NullStore, runtime, send, session_cookie, tampered};

fn layer(c: &mut Criterion) {
    let rt = runtime();
    let bare = app::routes();
    let app = app::with_memory_store();
    let cookie = session_cookie(&rt, &app);
    let bad = tampered(&cookie);
    rt.block_on(send(&app, "/counter", Some(&cookie)));

    let mut group = c.benchmark_group("layer");
    group.bench_function("bare", |b| {
        b.iter(|| rt.block_on(send(&bare, "/untouched", Some(&cookie))))
    });
    let cases: [(&str, &str, Option<&str>); 7] = [
        ("untouched", "/untouched", Some(&cookie)),
        ("read_no_cookie", "/read", None),
        ("read_bad_signature", "/read", Some(&bad)),
        ("read", "/read", Some(&cookie)),
        ("counter", "/counter", Some(&cookie)),
        ("counter_update", "/counter_update", Some(&cookie)),
        ("login", "/login", None),
    ];
    for (name, path, cookie) in cases {
        group.bench_function(name, |b| b.iter(|| rt.block_on(send(&app, path, cookie))));
    }
    group.finish();

    // The same requests over a store that does nothing: the layer's own work.
    let app = app::with_store(NullStore::new());
    let mut group = c.benchmark_group("no_store");
    for (name, path, cookie) in &cases[3..] {
        group.bench_function(*name, |b| b.iter(|| rt.block_on(send(&app, path, *cookie))));
    }
    group.finish();
}

fn pieces(c: &mut Criterion) {
    let record = app::login_record();
    let json_text = record.to_json();
    debug_assert_eq!(
        serde_json::from_str::<Value>(&json_text)
            .ok()
            .map(|v| v["user"].clone()),
        Some(json!("bench"))
    );

    let mut group = c.benchmark_group("pieces");
    group.bench_function("id_generate", |b| b.iter(Id::generate));
    group.bench_function("record_to_json", |b| {
        b.iter(|| black_box(&record).to_json())
    });
    group.bench_function("record_from_json", |b| {
        b.iter(|| Record::from_json(black_box(&json_text)).expect("a valid record"))
    });
    group.finish();
}

criterion_group!(benches, layer, pieces);
criterion_main!(benches);
