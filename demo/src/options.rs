//! Command-line options, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// The express-session tutorial apps on cloakroom: a visit counter, session data, and a login
/// with a dashboard, with sessions in an embedded SQLite file that survives restarts.
#[derive(Debug, Parser)]
#[command(name = "cloakroom-demo", version)]
pub(crate) struct Options {
    /// Address to listen on.
    #[arg(long, env = "CLOAKROOM_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// Where sessions live: sqlite://PATH, memory, redis://HOST:PORT, postgres://USER@HOST/DB,
    /// mysql://USER@HOST/DB (MariaDB or MySQL), or dynamodb://[HOST:PORT][/TABLE] (AWS, with
    /// region and credentials from the AWS configuration; a HOST for a local stand-in such as
    /// dynalite, which needs none).
    #[arg(long, env = "CLOAKROOM_STORE", default_value = "sqlite://cloakroom-demo.db", value_parser = parse_store)]
    pub store: StoreUrl,

    /// Cookie signing secret, 32 bytes or more; repeat the option to rotate: the first signs,
    /// all verify. The variable holds one secret, whole (commas included). Without one, a
    /// random secret is generated and kept in a file beside the SQLite database (or in
    /// ./cloakroom-demo.secret), readable by its owner only.
    #[arg(long = "secret", env = "CLOAKROOM_SECRET", hide_env_values = true)]
    pub secrets: Vec<String>,

    /// Accept secrets shorter than 32 bytes, which are refused otherwise: only to share the
    /// short secret of an existing Express deployment, until it is rotated (a long secret
    /// first, the short one second, then drop it).
    #[arg(long, env = "CLOAKROOM_ALLOW_SHORT_SECRET")]
    pub allow_short_secret: bool,

    /// The session cookie's name.
    #[arg(long, env = "CLOAKROOM_COOKIE_NAME", default_value = "connect.sid")]
    pub cookie_name: String,

    /// Session lifetime since the last request that refreshed it: 90s, 30m, 12h, 7d.
    #[arg(long, env = "CLOAKROOM_MAX_AGE", default_value = "30m", value_parser = parse_duration)]
    pub max_age: Duration,

    /// Send the cookie on every response, renewing its expiry (express's `rolling`).
    #[arg(long, env = "CLOAKROOM_ROLLING")]
    pub rolling: bool,

    /// The cookie's Secure attribute: `auto` sets it on sessions created over HTTPS.
    #[arg(long, env = "CLOAKROOM_SECURE", value_enum, default_value_t = Secure::Auto)]
    pub secure: Secure,

    /// Trust X-Forwarded-Proto from a reverse proxy to tell HTTPS requests (express's `proxy`).
    #[arg(long, env = "CLOAKROOM_TRUST_PROXY")]
    pub trust_proxy: bool,

    /// The one account that can log in, as NAME:PASSWORD.
    #[arg(long, env = "CLOAKROOM_USER", default_value = "admin:secret", value_parser = parse_user, hide_env_values = true)]
    pub user: User,
}

/// `--secure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Secure {
    /// Secure on sessions created over HTTPS.
    Auto,
    /// Always Secure (the cookie is then not sent over plain HTTP).
    True,
    /// Never Secure.
    False,
}

/// `--store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoreUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// This process's memory.
    Memory,
    /// A Redis server (the URL as given).
    Redis(String),
    /// A PostgreSQL database (the URL as given).
    Postgres(String),
    /// A MariaDB or MySQL database (the URL as given).
    Mysql(String),
    /// A DynamoDB table: at `endpoint` (a local stand-in, over plain HTTP), or where the
    /// standard AWS configuration says. Credentials and region always come from the latter.
    Dynamodb {
        /// `http://HOST:PORT`, from `dynamodb://HOST:PORT/…`.
        endpoint: Option<String>,
        /// The table, `sessions` (connect-dynamodb's) unless the URL names one.
        table: String,
    },
}

impl StoreUrl {
    /// What the store is, for logs and errors: the server's address, never the credentials the
    /// URL may hold.
    pub(crate) fn describe(&self) -> String {
        match self {
            StoreUrl::Sqlite(path) => format!("SQLite file {}", path.display()),
            StoreUrl::Memory => "memory".to_owned(),
            StoreUrl::Redis(url) => format!("Redis at {}", address(url)),
            StoreUrl::Postgres(url) => format!("PostgreSQL at {}", address(url)),
            StoreUrl::Mysql(url) => format!("MySQL at {}", address(url)),
            StoreUrl::Dynamodb { endpoint, table } => match endpoint {
                Some(endpoint) => format!("DynamoDB table {table} at {}", address(endpoint)),
                None => format!("DynamoDB table {table} (AWS configuration)"),
            },
        }
    }
}

/// `host:port/path` of a URL, without its scheme or its `user:password@`.
fn address(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    host.split(['?', '#']).next().unwrap_or(host)
}

/// `--user`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl User {
    /// Whether these are the built-in credentials, which deserve a warning.
    pub(crate) fn is_default(&self) -> bool {
        self.name == "admin" && self.password == "secret"
    }
}

fn parse_store(text: &str) -> Result<StoreUrl, String> {
    if text == "memory" {
        return Ok(StoreUrl::Memory);
    }
    if let Some(path) = text.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://sessions.db".into());
        }
        return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
    }
    if text.starts_with("redis://") || text.starts_with("rediss://") {
        return Ok(StoreUrl::Redis(text.to_owned()));
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(StoreUrl::Postgres(text.to_owned()));
    }
    if text.starts_with("mysql://") {
        return Ok(StoreUrl::Mysql(text.to_owned()));
    }
    if let Some(rest) = text.strip_prefix("dynamodb://") {
        return parse_dynamodb(rest);
    }
    Err("expected sqlite://PATH, memory, redis://…, postgres://…, mysql://… or dynamodb://…".into())
}

/// `dynamodb://[HOST:PORT][/TABLE]`: no host for DynamoDB where the standard AWS configuration
/// says (AWS itself, or `AWS_ENDPOINT_URL`); a host for a local stand-in over plain HTTP.
fn parse_dynamodb(rest: &str) -> Result<StoreUrl, String> {
    let (host, table) = rest.split_once('/').unwrap_or((rest, ""));
    if host.contains('@') {
        return Err(
            "dynamodb:// takes no credentials: they come from the standard AWS configuration \
             (AWS_ACCESS_KEY_ID, AWS_PROFILE, …)"
                .into(),
        );
    }
    let table = if table.is_empty() { "sessions" } else { table };
    let valid_table = (3..=255).contains(&table.len())
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid_table {
        return Err("a DynamoDB table name is 3 to 255 of A-Z a-z 0-9 _ - .".into());
    }
    let endpoint = if host.is_empty() {
        None
    } else if host.contains(['?', '#', ' ']) {
        return Err("dynamodb://HOST:PORT/TABLE takes no query".into());
    } else {
        Some(format!("http://{host}"))
    };
    Ok(StoreUrl::Dynamodb {
        endpoint,
        table: table.to_owned(),
    })
}

/// `90s`, `30m`, `12h`, `7d`, `1500ms`. A bare number is refused: express's `maxAge` is in
/// milliseconds and plenty of CLIs read seconds, so a number without its unit is a guess.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30m"))?;
    let seconds = match unit {
        "" => {
            return Err(format!(
                "`{text}` has no unit: write {text}ms, {text}s, {text}m, {text}h or {text}d"
            ));
        }
        "ms" => return Ok(Duration::from_millis(number)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit `{unit}`: use ms, s, m, h or d")),
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{text}` is not a usable lifetime"))
}

fn parse_user(text: &str) -> Result<User, String> {
    match text.split_once(':') {
        Some((name, password)) if !name.is_empty() && !password.is_empty() => Ok(User {
            name: name.to_owned(),
            password: password.to_owned(),
        }),
        _ => Err("expected NAME:PASSWORD".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        let bare = parse_duration("60000").unwrap_err();
        assert!(
            bare.contains("60000ms") && bare.contains("60000s"),
            "{bare}"
        );
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn stores() {
        assert_eq!(parse_store("memory"), Ok(StoreUrl::Memory));
        assert_eq!(
            parse_store("sqlite://a/b.db"),
            Ok(StoreUrl::Sqlite("a/b.db".into()))
        );
        assert!(matches!(
            parse_store("redis://127.0.0.1:6379"),
            Ok(StoreUrl::Redis(_))
        ));
        assert!(matches!(
            parse_store("postgres://u@h/d"),
            Ok(StoreUrl::Postgres(_))
        ));
        assert!(matches!(
            parse_store("mysql://u@h:3306/d"),
            Ok(StoreUrl::Mysql(_))
        ));
        assert!(parse_store("mongodb://nope").is_err());
        assert_eq!(
            parse_store("dynamodb://"),
            Ok(StoreUrl::Dynamodb {
                endpoint: None,
                table: "sessions".into()
            })
        );
        assert_eq!(
            parse_store("dynamodb://127.0.0.1:8000/app-sessions"),
            Ok(StoreUrl::Dynamodb {
                endpoint: Some("http://127.0.0.1:8000".into()),
                table: "app-sessions".into()
            })
        );
        assert!(parse_store("dynamodb://AKID:secret@127.0.0.1:8000").is_err());
        assert!(parse_store("dynamodb:///no").is_err());
        assert!(parse_store("dynamodb:///bad/name").is_err());
        assert!(parse_store("sqlite://").is_err());
    }

    #[test]
    fn descriptions_name_the_address_never_the_password() {
        let redis = parse_store("redis://user:hunter2@cache.internal:6380/2").unwrap();
        assert_eq!(redis.describe(), "Redis at cache.internal:6380/2");
        let postgres = parse_store("postgres://app:hunter2@db:5432/app?sslmode=require").unwrap();
        assert_eq!(postgres.describe(), "PostgreSQL at db:5432/app");
        let mysql = parse_store("mysql://app:hunter2@db:3306/app?ssl-mode=required").unwrap();
        assert_eq!(mysql.describe(), "MySQL at db:3306/app");
        let local = parse_store("dynamodb://127.0.0.1:8000/t-1").unwrap();
        assert_eq!(local.describe(), "DynamoDB table t-1 at 127.0.0.1:8000");
        let aws = parse_store("dynamodb://").unwrap();
        assert_eq!(
            aws.describe(),
            "DynamoDB table sessions (AWS configuration)"
        );
    }

    #[test]
    fn users() {
        let user = parse_user("ann:pa:ss").unwrap();
        assert_eq!(
            (user.name.as_str(), user.password.as_str()),
            ("ann", "pa:ss")
        );
        assert!(parse_user("ann").is_err());
        assert!(parse_user(":pw").is_err());
        assert!(
            !format!("{user:?}").contains("pa:ss"),
            "Debug hides the password"
        );
    }
}
