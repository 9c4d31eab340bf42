//! The hot-path requests a fixed number of times, for counting instructions with callgrind:
//! unlike time, the count repeats exactly on a busy machine.
//!
//! ```text
//! cargo bench -p cloakroom --bench instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/instructions-* login 1
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/instructions-* login 10001
//! ```
//!
//! The difference of the two totals divided by 10,000 is the instructions per request, setup
//! excluded. Scenarios: `bare` (no layer), `untouched` (the layer, a handler that never calls
//! the session), `read`, `counter`, `login`, `login_owned` (`login` with `set_owner`; memory
//! store), `read_metered` and `counter_metered` (`read` and `counter` with `with_metrics` and no
//! recorder installed; needs `--features metrics`) and `no_store_read`,
//! `no_store_counter`, `no_store_login` (the store that does nothing, see `benches/app`).
//! Valgrind hides the CPU's SHA extensions, so the HMAC counts as software SHA-256 here.

#![allow(missing_docs)]

mod app;

use app::{NullStore, runtime, send, session_cookie};

fn main() {
    let mut args = std::env::args().skip(1).filter(|arg| arg != "--bench");
    let scenario = args.next().unwrap_or_else(|| usage());
    let count: u64 = args
        .next()
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| usage());

    let rt = runtime();
    let (router, path, with_cookie) = match scenario.as_str() {
        "bare" => (app::routes(), "/untouched", true),
        "untouched" => (app::with_memory_store(), "/untouched", true),
        "read" => (app::with_memory_store(), "/read", true),
        "counter" => (app::with_memory_store(), "/counter", true),
        "login" => (app::with_memory_store(), "/login", false),
        "login_owned" => (app::with_memory_store(), "/login_owned", false),
        #[cfg(feature = "metrics")]
        "read_metered" => (app::with_metered_memory_store(), "/read", true),
        #[cfg(feature = "metrics")]
        "counter_metered" => (app::with_metered_memory_store(), "/counter", true),
        "no_store_read" => (app::with_store(NullStore::new()), "/read", true),
        "no_store_counter" => (app::with_store(NullStore::new()), "/counter", true),
        "no_store_login" => (app::with_store(NullStore::new()), "/login", false),
        _ => usage(),
    };
    // The bare router has no /login; its cookie comes from a layer of its own, unused after.
    let issuer = match scenario.as_str() {
        "bare" => app::with_memory_store(),
        _ => router.clone(),
    };
    let cookie = with_cookie.then(|| session_cookie(&rt, &issuer));
    for _ in 0..count {
        rt.block_on(send(&router, path, cookie.as_deref()));
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: instructions <bare|untouched|read|counter|login|no_store_read|no_store_counter|no_store_login> <count>"
    );
    std::process::exit(2)
}
