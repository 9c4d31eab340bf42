//! The generated signing secret, kept in a file so sessions survive restarts. Whoever can read
//! the file can sign any session id, and whoever can put a symbolic link at its path could
//! make the demo read a secret they chose or write over another file: so the file is created
//! only where nothing is (never over a file, never through a link), readable by its owner
//! alone, and read only if it is a regular file at that very path. A kept file that group or
//! others can read is narrowed to 0600, with a warning (the secret may have leaked: rotate it).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, bail};

/// The secret kept in `path`, or a new random one, written there first when there is no file.
pub(crate) fn load_or_generate(path: &Path) -> anyhow::Result<String> {
    if let Some(kept) = read(path)? {
        tracing::warn!(
            "no --secret given: using the one kept in {}",
            path.display()
        );
        return Ok(kept);
    }
    let secret = random_secret();
    create(path, &secret)?;
    tracing::warn!(
        "no --secret given: generated one and kept it in {}",
        path.display()
    );
    Ok(secret)
}

/// 32 random bytes, as 64 hex digits.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator must be available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The secret in `path`; `None` when there is no file.
fn read(path: &Path) -> anyhow::Result<Option<String>> {
    let mut options = OpenOptions::new();
    options.read(true);
    refuse_links(&mut options);
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) if is_link_refused(&error) => bail!(
            "{} is a symbolic link: refusing to read a secret through it (put the file itself \
             there, or pass --secret)",
            path.display()
        ),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if !metadata.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    owner_only(&file, path)?;
    let mut kept = String::new();
    file.read_to_string(&mut kept)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let kept = kept.trim();
    if kept.is_empty() {
        bail!(
            "{} is empty: delete it to generate a new secret, or pass --secret",
            path.display()
        );
    }
    Ok(Some(kept.to_owned()))
}

/// Writes `secret` to a new file at `path`, readable by its owner only.
fn create(path: &Path, secret: &str) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    // `create_new`: fails if anything is at the path, a dangling link included.
    options.write(true).create_new(true);
    refuse_links(&mut options);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::AlreadyExists => bail!(
            "{} appeared while the demo was starting (another one starting beside it?): start \
             again",
            path.display()
        ),
        Err(error) => {
            return Err(error).with_context(|| {
                format!("cannot keep the generated secret in {}", path.display())
            });
        }
    };
    file.write_all(secret.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot keep the generated secret in {}", path.display()))
}

/// `O_NOFOLLOW`: opening a path whose last part is a symbolic link fails (with `ELOOP`).
#[cfg(unix)]
fn refuse_links(options: &mut OpenOptions) {
    std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_NOFOLLOW);
}

#[cfg(unix)]
fn is_link_refused(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(libc::ELOOP)
}

#[cfg(not(unix))]
fn refuse_links(_options: &mut OpenOptions) {}

#[cfg(not(unix))]
fn is_link_refused(_error: &std::io::Error) -> bool {
    false
}

/// Narrows a kept secret file that group or others may read to 0600.
#[cfg(unix)]
fn owner_only(file: &File, path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| {
            format!(
                "{} can be read by others (mode {mode:03o}) and its mode cannot be changed",
                path.display()
            )
        })?;
    tracing::warn!(
        "{} could be read by others (mode {mode:03o}): changed it to 600; if anyone else could \
         read it, delete it (a new secret is generated; everyone is logged out)",
        path.display()
    );
    Ok(())
}

#[cfg(not(unix))]
fn owner_only(_file: &File, _path: &Path) -> anyhow::Result<()> {
    Ok(())
}
