//! RESP, the protocol Redis speaks: the store's commands packed into bytes, and replies read.
//!
//! [`Commands`] packs the commands of one round trip as they are built, straight into the bytes
//! the standalone [`Link`](super::link::Link) sends: no redis-rs `Cmd` or `Pipeline` per
//! request. Under callgrind, the store's `set` of an owned login (the same five commands, then)
//! went from about 25,000 instructions with a redis-rs pipeline to 15,000. For Cluster, which
//! routes each command by its key, the same calls build a redis-rs pipeline.

use std::io;

use redis::{Cmd, Pipeline, Value};

/// Deeper replies are refused: Redis's own replies to the store's commands nest two levels.
const MAX_DEPTH: usize = 16;
/// Redis's own ceiling on a string (`proto-max-bulk-len`'s default): a longer length is garbage.
const MAX_BULK: usize = 512 * 1024 * 1024;

/// The commands of one round trip, in order.
pub(super) struct Commands {
    form: Form,
}

/// What [`Commands`] are built as: packed bytes for a standalone link, a pipeline for Cluster.
pub(super) enum Form {
    /// For the link: the commands packed as they go on the wire, and how many there are.
    Packed { bytes: Vec<u8>, count: usize },
    /// For Cluster.
    Pipeline(Pipeline),
}

impl Commands {
    /// Commands packed for a standalone link.
    pub(super) fn packed() -> Self {
        Commands {
            form: Form::Packed {
                // Room for an owned login's three commands with a few hundred bytes of session
                // (about 500 bytes), so they rarely grow the buffer, and under 1 KiB: glibc's
                // malloc serves that from its per-thread cache, where a reallocation to 1 KiB or
                // more goes to its large bins, which first consolidate its free lists.
                bytes: Vec::with_capacity(1000),
                count: 0,
            },
        }
    }

    /// Commands built as a redis-rs pipeline, for Cluster.
    pub(super) fn pipeline() -> Self {
        Commands {
            form: Form::Pipeline(redis::pipe()),
        }
    }

    /// Appends the command `name`, whose arguments `args` adds.
    pub(super) fn push(&mut self, name: &str, args: impl FnOnce(&mut Args<'_>)) -> &mut Self {
        match &mut self.form {
            Form::Packed { bytes, count } => {
                // The argument count heads the command but is known only once they are written:
                // the command is written after a gap, then the header is put in front of it.
                let start = bytes.len();
                let mut command = Args {
                    sink: Sink::Bytes(bytes),
                    count: 0,
                };
                command.arg(name);
                args(&mut command);
                let arguments = command.count;
                let mut header = [0u8; 24];
                header[0] = b'*';
                let length = 1 + write_decimal(&mut header[1..], arguments as i64);
                header[length..length + 2].copy_from_slice(b"\r\n");
                let header = &header[..length + 2];
                let end = bytes.len();
                bytes.resize(end + header.len(), 0);
                bytes.copy_within(start..end, start + header.len());
                bytes[start..start + header.len()].copy_from_slice(header);
                *count += 1;
            }
            Form::Pipeline(pipeline) => {
                let mut command = redis::cmd(name);
                args(&mut Args {
                    sink: Sink::Cmd(&mut command),
                    count: 1,
                });
                pipeline.add_command(command);
            }
        }
        self
    }

    /// What the commands were built as.
    pub(super) fn form(&self) -> &Form {
        &self.form
    }
}

/// The arguments of one command, as [`Commands::push`] adds them.
pub(super) struct Args<'a> {
    sink: Sink<'a>,
    count: usize,
}

enum Sink<'a> {
    Bytes(&'a mut Vec<u8>),
    Cmd(&'a mut Cmd),
}

impl Args<'_> {
    /// Adds one argument; `None` adds nothing.
    pub(super) fn arg(&mut self, value: impl Arg) -> &mut Self {
        value.add_to(self);
        self
    }

    fn bulk(&mut self, value: &[u8]) {
        self.count += 1;
        match &mut self.sink {
            Sink::Bytes(out) => {
                // `$<length>\r\n<value>\r\n`
                let mut header = [0u8; 24];
                header[0] = b'$';
                let length = 1 + write_decimal(&mut header[1..], value.len() as i64);
                header[length..length + 2].copy_from_slice(b"\r\n");
                out.reserve(length + value.len() + 4);
                out.extend_from_slice(&header[..length + 2]);
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
            Sink::Cmd(cmd) => {
                cmd.arg(value);
            }
        }
    }

    fn integer(&mut self, value: i64) {
        let mut digits = [0u8; 24];
        let length = write_decimal(&mut digits, value);
        self.bulk(&digits[..length]);
    }
}

/// What a command argument can be: text, bytes or an integer (sent in decimal), or an optional
/// one.
pub(super) trait Arg {
    fn add_to(self, args: &mut Args<'_>);
}

impl Arg for &str {
    fn add_to(self, args: &mut Args<'_>) {
        args.bulk(self.as_bytes());
    }
}

impl Arg for &String {
    fn add_to(self, args: &mut Args<'_>) {
        args.bulk(self.as_bytes());
    }
}

impl Arg for &[u8] {
    fn add_to(self, args: &mut Args<'_>) {
        args.bulk(self);
    }
}

impl Arg for i64 {
    fn add_to(self, args: &mut Args<'_>) {
        args.integer(self);
    }
}

impl Arg for usize {
    fn add_to(self, args: &mut Args<'_>) {
        // A count or length: far below i64::MAX.
        args.integer(i64::try_from(self).unwrap_or(i64::MAX));
    }
}

impl<T: Arg> Arg for Option<T> {
    fn add_to(self, args: &mut Args<'_>) {
        if let Some(value) = self {
            value.add_to(args);
        }
    }
}

/// Writes `value` in decimal at the start of `out` (at least 20 bytes) and returns its length.
fn write_decimal(out: &mut [u8], value: i64) -> usize {
    // Most lengths and counts.
    if (0..10).contains(&value) {
        out[0] = b'0' + value as u8;
        return 1;
    }
    let mut digits = [0u8; 20];
    let mut rest = value.unsigned_abs();
    let mut first = digits.len();
    loop {
        first -= 1;
        digits[first] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut length = 0;
    if value < 0 {
        out[0] = b'-';
        length = 1;
    }
    let digits = &digits[first..];
    out[length..length + digits.len()].copy_from_slice(digits);
    length + digits.len()
}

/// One RESP2 reply at the start of `input` and its length, or `None` if it has not all arrived.
pub(super) fn parse(input: &[u8], depth: usize) -> io::Result<Option<(Value, usize)>> {
    let Some(line_end) = input.iter().position(|&byte| byte == b'\r') else {
        return Ok(None);
    };
    if input.len() < line_end + 2 {
        return Ok(None);
    }
    if input[line_end + 1] != b'\n' || line_end == 0 {
        return Err(malformed("a malformed reply"));
    }
    let line = &input[1..line_end];
    let after_line = line_end + 2;
    let value = match input[0] {
        b'+' if line == b"OK" => Value::Okay,
        b'+' => Value::SimpleString(
            std::str::from_utf8(line)
                .map_err(|_| malformed("a status that is not UTF-8"))?
                .to_owned(),
        ),
        // Rare, and redis-rs knows every error's kind (NOSCRIPT, LOADING, MOVED, …).
        b'-' => redis::parse_redis_value(&input[..after_line])
            .map_err(|_| malformed("a malformed error"))?,
        b':' => Value::Int(integer(line)?),
        b'$' => {
            let length = integer(line)?;
            if length < 0 {
                return Ok(Some((Value::Nil, after_line)));
            }
            let length = usize::try_from(length)
                .ok()
                .filter(|&length| length <= MAX_BULK)
                .ok_or_else(|| malformed("a bad length"))?;
            let end = after_line + length;
            if input.len() < end + 2 {
                return Ok(None);
            }
            if &input[end..end + 2] != b"\r\n" {
                return Err(malformed("a malformed bulk string"));
            }
            return Ok(Some((
                Value::BulkString(input[after_line..end].to_vec()),
                end + 2,
            )));
        }
        b'*' => {
            let count = integer(line)?;
            if count < 0 {
                return Ok(Some((Value::Nil, after_line)));
            }
            if depth >= MAX_DEPTH {
                return Err(malformed("a reply nested too deep"));
            }
            let count = usize::try_from(count).map_err(|_| malformed("a bad length"))?;
            // Each element takes at least 3 bytes: a count past what has arrived says nothing
            // about the memory to set aside.
            let mut items = Vec::with_capacity(count.min(input.len() / 3));
            let mut used = after_line;
            for _ in 0..count {
                let Some((item, length)) = parse(&input[used..], depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                used += length;
            }
            return Ok(Some((Value::Array(items), used)));
        }
        _ => return Err(malformed("a reply of an unknown type")),
    };
    Ok(Some((value, after_line)))
}

/// A RESP integer: an optional minus sign and decimal digits.
fn integer(text: &[u8]) -> io::Result<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return Err(malformed("a malformed number"));
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return Err(malformed("a malformed number"));
        }
        value = value
            .checked_mul(10)
            .and_then(|value| value.checked_add(i64::from(digit - b'0')))
            .ok_or_else(|| malformed("a number out of range"))?;
    }
    Ok(if negative { -value } else { value })
}

/// Redis sent what it never sends: the connection can no longer be trusted.
pub(super) fn malformed(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("Redis sent {what}"))
}

#[cfg(test)]
mod tests {
    use redis::RedisError;

    use super::*;

    fn parsed(input: &[u8]) -> Option<(Value, usize)> {
        parse(input, 0).unwrap()
    }

    #[test]
    fn commands_are_packed_as_redis_rs_packs_them() {
        let mut commands = Commands::packed();
        commands
            .push("SET", |args| {
                args.arg("sess:a\r\nb")
                    .arg(&b""[..])
                    .arg(None::<&str>)
                    .arg("EX")
                    .arg(86_400i64)
                    .arg(Some("NX"));
            })
            .push("ZADD", |args| {
                args.arg(&"k".to_owned()).arg(i64::MIN).arg(0usize);
            });
        let mut expected = redis::cmd("SET")
            .arg("sess:a\r\nb")
            .arg(&b""[..])
            .arg("EX")
            .arg(86_400)
            .arg("NX")
            .get_packed_command();
        expected.extend(
            redis::cmd("ZADD")
                .arg("k")
                .arg(i64::MIN)
                .arg(0)
                .get_packed_command(),
        );
        let Form::Packed { bytes, count } = commands.form() else {
            panic!("not packed");
        };
        assert_eq!(bytes, &expected);
        assert_eq!(*count, 2);

        let mut built = Commands::pipeline();
        built.push("PTTL", |args| {
            args.arg("k").arg(None::<i64>).arg(-1i64);
        });
        let Form::Pipeline(pipeline) = built.form() else {
            panic!("not a pipeline");
        };
        assert_eq!(pipeline.cmd_iter().count(), 1);
        assert_eq!(
            pipeline.get_packed_pipeline(),
            redis::cmd("PTTL").arg("k").arg(-1).get_packed_command()
        );
    }

    #[test]
    fn decimals_are_written_whole() {
        for value in [0, 7, -7, 10, 1_000_000, i64::MAX, i64::MIN] {
            let mut out = [0u8; 24];
            let length = write_decimal(&mut out, value);
            assert_eq!(&out[..length], value.to_string().as_bytes());
        }
    }

    #[test]
    fn every_reply_type_the_store_meets_is_read() {
        assert_eq!(parsed(b"+OK\r\n"), Some((Value::Okay, 5)));
        assert_eq!(
            parsed(b"+QUEUED\r\n"),
            Some((Value::SimpleString("QUEUED".into()), 9))
        );
        assert_eq!(parsed(b":-42\r\n"), Some((Value::Int(-42), 6)));
        assert_eq!(parsed(b"$-1\r\n"), Some((Value::Nil, 5)));
        assert_eq!(parsed(b"$0\r\n\r\n"), Some((Value::BulkString(vec![]), 6)));
        assert_eq!(
            parsed(b"$5\r\na\r\nbc\r\n"),
            Some((Value::BulkString(b"a\r\nbc".to_vec()), 11))
        );
        assert_eq!(
            parsed(b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n"),
            Some((
                Value::Array(vec![
                    Value::BulkString(b"0".to_vec()),
                    Value::Array(vec![Value::BulkString(b"k".to_vec())]),
                ]),
                22
            ))
        );
        let reply = parsed(b"-NOSCRIPT No matching script\r\n");
        let Some((Value::ServerError(error), 30)) = reply else {
            panic!("not a server error: {reply:?}");
        };
        let error = RedisError::from(error);
        assert_eq!(
            error.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        );
    }

    #[test]
    fn a_reply_cut_anywhere_waits_for_the_rest() {
        let whole = b"*3\r\n:1\r\n$3\r\nabc\r\n*-1\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parsed(&whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(parsed(whole).map(|(_, length)| length), Some(whole.len()));
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for bad in [
            &b"?\r\n"[..],
            b"\r\n",
            b":12a\r\n",
            b":-\r\n",
            b":99999999999999999999\r\n",
            b"$3\r\nabcd\r\n",
            b"$-9223372036854775808\r\n",
            b"$9223372036854775807\r\nab",
            b"+OK\rX",
        ] {
            assert!(parse(bad, 0).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes(), 0).is_err());
    }
}
