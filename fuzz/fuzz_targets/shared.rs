//! What the targets share with each other and with `cloakroom/tests/fuzz_regressions.rs`, which
//! replays the seeds and crash inputs on stable: keep the values the same in both places.
// Each target uses only part of this.
#![allow(dead_code)]

use cloakroom::fuzzing::Secrets;

/// An obviously fake secret: every signed seed in `fuzz/corpus` is signed with it.
pub const SECRET: &str = "fuzzing secret, not a real one";

/// express-session's default cookie name.
pub const COOKIE_NAME: &str = "connect.sid";

/// The id of the one session the `layer` target's store holds; seeds named `known-*` carry its
/// signed cookie.
pub const KNOWN_ID: &str = "fuzz-known-session";

pub fn secrets() -> Secrets {
    Secrets::new(&[SECRET.as_bytes()]).expect("the fuzzing secret is not empty")
}
