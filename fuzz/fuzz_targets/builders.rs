//! Builds big inputs from small fuzz inputs, for the targets whose inputs are shapes libFuzzer
//! would take long to type out byte by byte: records nested thousands of levels deep or
//! thousands of elements wide (`record_shapes`), and `Cookie` headers of many cookies
//! (`many_cookies`). Each input is read as a little program ([`Program`]); every input builds
//! something, and the seeds in `corpus/<target>/` are such programs.
//!
//! `cloakroom/tests/fuzz_shapes.rs` replays the seeds and crash inputs through these same
//! builders on stable, so this file uses nothing but `std`.
// Each user uses only part of this; the test that includes it has the workspace's lints.
#![allow(dead_code, unreachable_pub)]

/// The fuzz input, read a few bytes at a time; zeros once it runs out.
pub struct Program<'a> {
    rest: &'a [u8],
}

impl<'a> Program<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Program { rest: input }
    }

    pub fn is_done(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&byte, rest)) => {
                self.rest = rest;
                byte
            }
            None => 0,
        }
    }

    /// A number in `0..=max`, from two bytes (little-endian).
    pub fn number(&mut self, max: usize) -> usize {
        let n = usize::from(u16::from_le_bytes([self.byte(), self.byte()]));
        n % (max + 1)
    }

    /// A size in `0..=max`, as [`number`](Self::number) then shifted right by 0 to 16 bits (a
    /// third byte): small sizes come as often as huge ones, which keeps the fuzzer fast.
    pub fn size(&mut self, max: usize) -> usize {
        self.number(max) >> (self.byte() % 17)
    }

    /// Up to `max` bytes: a length byte, then that many bytes (fewer where the input ends).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = (usize::from(self.byte()) % (max + 1)).min(self.rest.len());
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        taken
    }
}

/// The deepest nesting [`record_text`] builds: far past any JSON parser's limit.
pub const MAX_DEPTH: usize = 5000;

/// The most elements of an array or object [`record_text`] builds, and the most characters of
/// a long string.
pub const MAX_WIDTH: usize = 65_535;

/// A record's JSON built by [`record_text`].
pub struct RecordText {
    pub text: String,
    /// How deeply the data value `v` nests (a scalar is one level, `[[1]]` three), when the
    /// text is a well-formed record with `v` among its data; `None` otherwise.
    pub value_depth: Option<usize>,
}

/// A record's JSON from a program:
///
/// 1. where the nested value goes: a data value `v` (0), a data value after a wide run of
///    other keys (1), a field of the cookie (2), the cookie itself (3), or the whole text (4);
/// 2. how deep it nests (a [size](Program::size), up to [`MAX_DEPTH`]);
/// 3. which levels are objects (`{"k":…}`) rather than arrays, bit `i % 16` of two bytes;
/// 4. which levels have a sibling before the nested value, bit `i % 8` of a byte;
/// 5. whether it is cut short (a byte; one in eight is), then how many levels stay open;
/// 6. the innermost value (see [`leaf`]);
/// 7. for placement 1, how many other keys come first (a [size](Program::size)), then what they
///    hold.
pub fn record_text(input: &[u8]) -> RecordText {
    let mut program = Program::new(input);
    let placement = program.byte() % 5;
    let depth = program.size(MAX_DEPTH);
    let objects = u16::from_le_bytes([program.byte(), program.byte()]);
    let siblings = program.byte();
    let unclosed = if program.byte().is_multiple_of(8) {
        program.number(depth).max(1).min(depth)
    } else {
        0
    };

    let mut nested = String::new();
    let mut closers = Vec::with_capacity(depth);
    for level in 0..depth {
        let object = objects >> (level % 16) & 1 == 1;
        let sibling = siblings >> (level % 8) & 1 == 1;
        nested.push_str(match (object, sibling) {
            (false, false) => "[",
            (false, true) => "[0,",
            (true, false) => r#"{"k":"#,
            (true, true) => r#"{"s":0,"k":"#,
        });
        closers.push(if object { '}' } else { ']' });
    }
    let leaf_depth = leaf(&mut program, &mut nested);
    // Innermost first; the outermost `unclosed` levels stay open.
    nested.extend(closers.iter().rev().take(depth - unclosed));
    let well_formed = unclosed == 0;

    let cookie = r#"{"path":"/","httpOnly":true}"#;
    let (text, is_data) = match placement {
        0 => (format!(r#"{{"cookie":{cookie},"v":{nested}}}"#), true),
        1 => {
            let mut text = format!(r#"{{"cookie":{cookie}"#);
            let keys = program.size(MAX_WIDTH);
            let (value, _) = element(&mut program);
            for key in 0..keys {
                text.push_str(&format!(r#","k{key}":{value}"#));
            }
            text.push_str(&format!(r#","v":{nested}}}"#));
            (text, true)
        }
        2 => (
            format!(r#"{{"cookie":{{"path":"/","v":{nested}}}}}"#),
            false,
        ),
        3 => (format!(r#"{{"cookie":{nested}}}"#), false),
        _ => (nested, false),
    };
    let value_depth = match (is_data && well_formed, leaf_depth) {
        (true, Some(leaf_depth)) => Some(depth + leaf_depth),
        _ => None,
    };
    RecordText { text, value_depth }
}

/// Appends the innermost value, chosen by a byte: a scalar, an empty array or object, a wide
/// array or object (a [size](Program::size), then what each element holds; an object's keys all
/// differ or are all the same), a long string of escapes, or a number of many digits. Returns
/// its depth, or `None` when it is not a valid JSON value (a number too large for a double).
fn leaf(program: &mut Program<'_>, out: &mut String) -> Option<usize> {
    const SCALARS: [&str; 9] = [
        "1",
        r#""s""#,
        "null",
        "true",
        "-0.0",
        "1e308",
        r#""\u00e9\ud83d\ude00""#,
        "[]",
        "{}",
    ];
    let choice = usize::from(program.byte()) % (SCALARS.len() + 4);
    if let Some(scalar) = SCALARS.get(choice) {
        out.push_str(scalar);
        return Some(1);
    }
    let width = program.size(MAX_WIDTH);
    match choice - SCALARS.len() {
        0 => {
            let (item, depth) = element(program);
            out.push('[');
            for n in 0..width {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(item);
            }
            out.push(']');
            Some(if width == 0 { 1 } else { 1 + depth })
        }
        1 => {
            let (item, depth) = element(program);
            let same_key = program.byte().is_multiple_of(2);
            out.push('{');
            for n in 0..width {
                if n > 0 {
                    out.push(',');
                }
                if same_key {
                    out.push_str(r#""k":"#);
                } else {
                    out.push_str(&format!(r#""k{n}":"#));
                }
                out.push_str(item);
            }
            out.push('}');
            Some(if width == 0 { 1 } else { 1 + depth })
        }
        2 => {
            out.push('"');
            for n in 0..width {
                out.push_str([r"\u0000", r#"\""#, r"\\", "é", r"\ud83d\ude00"][n % 5]);
            }
            out.push('"');
            Some(1)
        }
        _ => {
            // A double holds integers up to 309 digits long.
            let digits = width % 400 + 1;
            out.push_str(&"9".repeat(digits));
            (digits < 309).then_some(1)
        }
    }
}

/// An element of a wide array or object, chosen by a byte, and its depth.
fn element(program: &mut Program<'_>) -> (&'static str, usize) {
    const ELEMENTS: [(&str, usize); 6] = [
        ("0", 1),
        (r#""e""#, 1),
        ("[]", 1),
        ("{}", 1),
        ("[[1]]", 3),
        (r#"{"a":[1,{"b":null}]}"#, 4),
    ];
    ELEMENTS[usize::from(program.byte()) % ELEMENTS.len()]
}

/// The most bytes of headers [`cookie_headers`] builds.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// The most times [`cookie_headers`] repeats a run of cookies at once.
pub const MAX_REPEATS: usize = 4096;

/// `Cookie` headers built by [`cookie_headers`].
pub struct CookieHeaders {
    /// The header values, in order (a request may carry several; they read as one list).
    pub headers: Vec<Vec<u8>>,
    /// The first cookie named as the session cookie (`name=value`, maybe with spaces around
    /// the name and value), alone: the whole headers must read as this cookie alone does.
    pub first_session_cookie: Option<Vec<u8>>,
    /// Whether that cookie carries the signed value unchanged, in one of the forms a browser
    /// or an Express app may send: it must verify.
    pub first_is_genuine: bool,
}

/// One `name=value` of a header being built.
#[derive(Clone)]
struct Pair {
    bytes: Vec<u8>,
    session: bool,
    genuine: bool,
    header: usize,
}

/// `Cookie` headers from a program, around the session cookie `name` and its genuine signed
/// value `signed` (`s:<id>.<mac>`). A byte picks the separator between cookies (`; `, `;`,
/// ` ; ` or `;\t`), then each step a byte picks what comes next:
///
/// - 0: another cookie, with a name and value from the input;
/// - 1: the session cookie, genuine, in one of five forms (encoded as the layer writes it, raw,
///   quoted, padded with spaces and tabs, with lowercase escapes);
/// - 2: the session cookie with one byte of the encoded value changed, or cut short;
/// - 3: the session cookie with a value from the input (escapes, bytes that are not UTF-8);
/// - 4: the last 1 to 8 cookies again, up to [`MAX_REPEATS`] times;
/// - 5: a cookie with a value of up to 64 KiB, the session's or another's;
/// - 6: a new header, or a word without `=` (which is no cookie);
/// - 7: a name close to the session cookie's (padded, which is the same name, or changed,
///   which is another), with a genuine value or not.
///
/// It stops when the input runs out or the headers reach [`MAX_HEADER_BYTES`]. Names from the
/// input are at most 8 characters and values never hold `;`, so what is a cookie and which
/// cookie is the session's follows from the steps.
pub fn cookie_headers(input: &[u8], name: &str, signed: &str) -> CookieHeaders {
    let mut program = Program::new(input);
    let separator: &[u8] = [&b"; "[..], b";", b" ; ", b";\t"][usize::from(program.byte() % 4)];
    let encoded = encode_uri_component(signed);
    let mut pairs: Vec<Pair> = Vec::new();
    let mut header = 0;
    let mut total = 0;
    while !program.is_done() && total < MAX_HEADER_BYTES {
        let session = |bytes: Vec<u8>, genuine| Pair {
            bytes,
            session: true,
            genuine,
            header,
        };
        let mut added = match program.byte() % 8 {
            0 => {
                let other = other_name(&mut program);
                let value = value_bytes(program.bytes(32));
                vec![Pair {
                    bytes: [other.as_slice(), b"=", &value].concat(),
                    session: false,
                    genuine: false,
                    header,
                }]
            }
            1 => {
                let value = match program.byte() % 5 {
                    0 => encoded.clone(),
                    1 => signed.to_owned(),
                    2 => format!("\"{encoded}\""),
                    3 => format!(" \t{encoded} "),
                    _ => encoded.replace("%3A", "%3a").replace("%2F", "%2f"),
                };
                vec![session(format!("{name}={value}").into_bytes(), true)]
            }
            2 => {
                let mut value = encoded.clone().into_bytes();
                let at = program.number(value.len().saturating_sub(1));
                let replacement = value_byte(program.byte());
                if program.byte().is_multiple_of(4) {
                    value.truncate(at);
                } else if let Some(byte) = value.get_mut(at) {
                    *byte = replacement;
                }
                // A changed byte may keep the value as it was (a hex digit's case): no claim.
                vec![session([name.as_bytes(), b"=", &value].concat(), false)]
            }
            3 => {
                let value = value_bytes(program.bytes(64));
                vec![session([name.as_bytes(), b"=", &value].concat(), false)]
            }
            4 => {
                let run = (usize::from(program.byte()) % 8 + 1).min(pairs.len());
                let times = program.size(MAX_REPEATS);
                let repeated = &pairs[pairs.len() - run..];
                let run_bytes: usize = repeated
                    .iter()
                    .map(|pair| pair.bytes.len() + separator.len())
                    .sum();
                // As many times as asked, or as fit.
                let room = (MAX_HEADER_BYTES - total) / run_bytes.max(1) + 1;
                let mut added = Vec::with_capacity(run * times.min(room));
                for _ in 0..times.min(room) {
                    added.extend(repeated.iter().cloned().map(|pair| Pair { header, ..pair }));
                }
                added
            }
            5 => {
                let len = program.size(64 * 1024);
                let value = vec![value_byte(program.byte()); len];
                if program.byte().is_multiple_of(2) {
                    vec![session([name.as_bytes(), b"=", &value].concat(), false)]
                } else {
                    let other = other_name(&mut program);
                    vec![Pair {
                        bytes: [other.as_slice(), b"=", &value].concat(),
                        session: false,
                        genuine: false,
                        header,
                    }]
                }
            }
            6 => {
                if program.byte().is_multiple_of(2) {
                    header += 1;
                    Vec::new()
                } else {
                    let word = other_name(&mut program);
                    vec![Pair {
                        bytes: word,
                        session: false,
                        genuine: false,
                        header,
                    }]
                }
            }
            _ => {
                let padded = [
                    format!(" {name}"),
                    format!("{name}\t"),
                    format!("\t {name} "),
                ];
                let changed = [
                    name.to_ascii_uppercase(),
                    format!("{name}2"),
                    name[..name.len().saturating_sub(1)].to_owned(),
                    format!("\"{name}\""),
                    name.replace('.', "%2E"),
                ];
                let pick = usize::from(program.byte()) % (padded.len() + changed.len());
                let genuine_value = program.byte().is_multiple_of(2);
                let value = if genuine_value {
                    encoded.clone().into_bytes()
                } else {
                    value_bytes(program.bytes(16))
                };
                let (cookie_name, is_session) = match padded.get(pick) {
                    Some(padded) => (padded.clone(), true),
                    None => (changed[pick - padded.len()].clone(), false),
                };
                vec![Pair {
                    bytes: [cookie_name.as_bytes(), b"=", &value].concat(),
                    session: is_session,
                    genuine: is_session && genuine_value,
                    header,
                }]
            }
        };
        total += added
            .iter()
            .map(|pair| pair.bytes.len() + separator.len())
            .sum::<usize>();
        pairs.append(&mut added);
    }

    let mut headers = vec![Vec::new(); header + 1];
    for pair in &pairs {
        let out = &mut headers[pair.header];
        if !out.is_empty() {
            out.extend_from_slice(separator);
        }
        out.extend_from_slice(&pair.bytes);
    }
    let first = pairs.iter().find(|pair| pair.session);
    CookieHeaders {
        headers,
        first_session_cookie: first.map(|pair| pair.bytes.clone()),
        first_is_genuine: first.is_some_and(|pair| pair.genuine),
    }
}

/// A cookie name of 1 to 8 characters from the input, never the session cookie's (too short).
fn other_name(program: &mut Program<'_>) -> Vec<u8> {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789._-!#$&'*+^`|~";
    let mut name: Vec<u8> = program
        .bytes(8)
        .iter()
        .map(|&b| CHARS[usize::from(b) % CHARS.len()])
        .collect();
    if name.is_empty() {
        name.push(b'x');
    }
    name
}

/// The input's bytes as a cookie value: any byte a header value may hold but `;`.
fn value_bytes(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|&b| value_byte(b)).collect()
}

/// A byte a header value may hold, and never `;` (which would end the cookie): controls other
/// than tab become `%`, which makes escapes more likely.
fn value_byte(byte: u8) -> u8 {
    match byte {
        b';' | 0x7f => b'%',
        b'\t' => b'\t',
        0..0x20 => b'%',
        _ => byte,
    }
}

/// `encodeURIComponent`, as the layer writes a cookie value.
fn encode_uri_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
