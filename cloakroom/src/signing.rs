//! express-compatible cookie signing (`cookie-signature`): `s:<id>.<mac>`, where the mac is
//! HMAC-SHA256 of the id in standard base64 without padding. The first secret signs; every secret
//! is tried, in order, when verifying, which is how keys are rotated.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Characters in a signature: an HMAC-SHA256 (32 bytes) in base64 without padding.
pub(crate) const MAC_BASE64_LEN: usize = 43;

/// The signing secrets, newest first. Each holds a keyed HMAC state so signing does not
/// re-derive the key on every request.
#[derive(Clone)]
pub(crate) struct Secrets {
    keys: Box<[Hmac<Sha256>]>,
}

impl Secrets {
    /// `None` when the list is empty or a secret is empty (both are configuration errors).
    pub(crate) fn new<I, S>(secrets: I) -> Option<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let keys = secrets
            .into_iter()
            .map(|secret| {
                let secret = secret.as_ref();
                (!secret.is_empty()).then(|| {
                    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length")
                })
            })
            .collect::<Option<Box<[_]>>>()?;
        (!keys.is_empty()).then_some(Secrets { keys })
    }

    /// The cookie value for `id` before URL-encoding: `s:<id>.<mac>`, signed with the first secret.
    pub(crate) fn sign(&self, id: &str) -> String {
        let mut out = String::with_capacity(2 + id.len() + 1 + MAC_BASE64_LEN);
        out.push_str("s:");
        out.push_str(id);
        out.push('.');
        STANDARD_NO_PAD.encode_string(mac(&self.keys[0], id), &mut out);
        out
    }

    /// The id inside a decoded cookie value, when it carries the `s:` prefix and a valid
    /// signature by any of the secrets. Like `cookie-signature`, the id is everything before the
    /// last `.`. The comparison is constant-time.
    pub(crate) fn unsign<'a>(&self, value: &'a str) -> Option<&'a str> {
        self.unsign_body(value.strip_prefix("s:")?)
    }

    /// [`unsign`](Self::unsign) for a value whose `s:` prefix was already removed.
    pub(crate) fn unsign_body<'a>(&self, signed: &'a str) -> Option<&'a str> {
        let (id, given) = signed.rsplit_once('.')?;
        self.verifies(id, given.as_bytes()).then_some(id)
    }

    /// Whether `given` is the base64 signature of `id` by any of the secrets.
    pub(crate) fn verifies(&self, id: &str, given: &[u8]) -> bool {
        if given.len() != MAC_BASE64_LEN {
            return false;
        }
        let mut expected = [0u8; MAC_BASE64_LEN];
        for key in self.keys.iter() {
            let written = STANDARD_NO_PAD
                .encode_slice(mac(key, id), &mut expected)
                .expect("a SHA-256 mac is 43 base64 characters");
            debug_assert_eq!(written, MAC_BASE64_LEN);
            if bool::from(expected.ct_eq(given)) {
                return true;
            }
        }
        false
    }
}

fn mac(key: &Hmac<Sha256>, message: &str) -> [u8; 32] {
    let mut mac = key.clone();
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().into()
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyboard_cat() -> Secrets {
        Secrets::new(["keyboard cat"]).unwrap()
    }

    #[test]
    fn express_test_vectors() {
        // docs/wire-formats.md, before URL-encoding.
        let secrets = keyboard_cat();
        assert_eq!(
            secrets.sign("apple"),
            "s:apple.D8Y+pkTAmeR0PobOhY4G97PRW+j7bUnP/5m6/On1MCU"
        );
        assert_eq!(
            secrets.sign("%"),
            "s:%.kzQ6x52kKVdF35Qh62AWk4ZekS28K5XYCXKa/OTZ01g"
        );
        assert_eq!(
            secrets.sign("/foo"),
            "s:/foo.paEKBtAHbV5s1IB8B2zPnzAgYmmnRPIqObW4VRYj/MQ"
        );
    }

    #[test]
    fn unsign_round_trips_and_splits_on_the_last_dot() {
        let secrets = keyboard_cat();
        for id in ["apple", "a.b.c", "", "ünï"] {
            assert_eq!(secrets.unsign(&secrets.sign(id)), Some(id));
        }
    }

    #[test]
    fn unsign_rejects_tampering() {
        let secrets = keyboard_cat();
        let good = secrets.sign("apple");
        assert_eq!(secrets.unsign(&good[2..]), None, "no s: prefix");
        assert_eq!(secrets.unsign(&good.replace("apple", "apples")), None);
        assert_eq!(secrets.unsign(&good[..good.len() - 1]), None, "truncated");
        assert_eq!(secrets.unsign(&format!("{good}=")), None, "padded");
        assert_eq!(secrets.unsign("s:apple"), None, "no signature");
        assert_eq!(secrets.unsign("s:"), None);
    }

    #[test]
    fn first_secret_signs_and_every_secret_verifies() {
        let old = Secrets::new(["old secret"]).unwrap();
        let rotated = Secrets::new(["new secret", "old secret"]).unwrap();
        let old_cookie = old.sign("apple");
        assert_eq!(rotated.unsign(&old_cookie), Some("apple"));
        assert_ne!(rotated.sign("apple"), old_cookie);
        assert_eq!(old.unsign(&rotated.sign("apple")), None);
    }

    #[test]
    fn empty_secrets_are_refused() {
        assert!(Secrets::new(Vec::<&str>::new()).is_none());
        assert!(Secrets::new([""]).is_none());
        assert!(Secrets::new(["ok", ""]).is_none());
    }

    #[test]
    fn debug_redacts() {
        assert_eq!(format!("{:?}", keyboard_cat()), "Secrets(1 redacted)");
    }
}
