//! `sign`/`unsign` with arbitrary secrets and ids: a signed id verifies (also after rotation),
//! another secret refuses it, and any one-character change, truncation or extension is refused.
//! Input: `<secret>\0<id>`; without a NUL byte the whole input is the id, signed with the shared
//! fake secret.
#![no_main]

mod shared;

use cloakroom::fuzzing::Secrets;
use libfuzzer_sys::fuzz_target;

const OTHER: &[u8] = b"another fuzzing secret";

fuzz_target!(|data: &[u8]| {
    let (secret, id) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (shared::SECRET.as_bytes(), data),
    };
    let Some(secrets) = Secrets::new(&[secret]) else {
        assert!(secret.is_empty(), "a non-empty secret was refused");
        return;
    };
    let id = String::from_utf8_lossy(id);
    let signed = secrets.sign(&id);
    assert!(secrets.unsign(&signed) == Some(&*id), "round trip failed");

    let rotated = Secrets::new(&[OTHER, secret]).expect("two non-empty secrets");
    assert!(
        rotated.unsign(&signed) == Some(&*id),
        "an old secret no longer verifies"
    );
    if secret != OTHER {
        let stranger = Secrets::new(&[OTHER]).expect("a non-empty secret");
        assert!(
            stranger.unsign(&signed).is_none(),
            "another secret verified"
        );
    }

    // One changed character: every position of `s:`, the separator and the mac, and one
    // position inside the id picked by the input's length.
    let chars: Vec<(usize, char)> = signed.char_indices().collect();
    let id_chars = chars.len() - 2 - 1 - 43;
    let mut positions: Vec<usize> = (0..2).chain(chars.len() - 44..chars.len()).collect();
    if id_chars > 0 {
        positions.push(2 + data.len() % id_chars);
    }
    for position in positions {
        let (at, old) = chars[position];
        let new = if old == 'A' { 'B' } else { 'A' };
        let mut tampered = signed.clone();
        tampered.replace_range(at..at + old.len_utf8(), new.encode_utf8(&mut [0; 4]));
        assert!(
            secrets.unsign(&tampered).is_none(),
            "a changed character verified"
        );
    }
    assert!(
        secrets.unsign(&signed[..signed.len() - 1]).is_none(),
        "truncated"
    );
    for suffix in ["A", "=", ".", ".x"] {
        let extended = format!("{signed}{suffix}");
        assert!(secrets.unsign(&extended).is_none(), "extended");
    }

    // The raw input as a cookie value: only what `sign` produced verifies.
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(id) = secrets.unsign(text)
    {
        assert!(
            secrets.sign(id) == text,
            "unsign accepted a value sign did not produce"
        );
    }
});
