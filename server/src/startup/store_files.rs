//! Opening the store: for SQLite, the data dir and the database files are made private (they
//! hold every app secret and password hash), whatever the umask.

use std::path::{Path, PathBuf};

use super::{io_error, StartupError};
use crate::config::Settings;
use crate::tenants::Store;

/// Opens the store named by `settings`. For SQLite the data dir is created 0700 and the
/// database file with its `-wal` and `-shm` 0600 (they hold every app secret and password hash),
/// whatever the umask; looser modes found on existing ones are tightened (and logged).
pub async fn open_store(settings: &Settings) -> Result<Store, StartupError> {
    let sqlite_file = sqlite_path(&settings.database_url);
    if settings.database_url.starts_with("sqlite:") {
        private_dir(&settings.data_dir).map_err(io_error(format!(
            "cannot create data dir {}",
            settings.data_dir.display()
        )))?;
    }
    if let Some(file) = &sqlite_file {
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            // A directory of the operator's choosing outside the data dir is created private
            // when missing, never changed when it exists (it may be shared, like /tmp).
            if parent != settings.data_dir && !parent.exists() {
                private_dir(parent)
                    .map_err(io_error(format!("cannot create {}", parent.display())))?;
            }
        }
        private_files(file, true).map_err(io_error(format!("cannot create {}", file.display())))?;
    }
    let store = Store::open(&settings.database_url, settings.clock.clone()).await?;
    if let Some(file) = &sqlite_file {
        // SQLite creates `-wal` and `-shm` with the database file's mode; check anyway (by
        // path only: closing a descriptor of the open database would drop SQLite's locks).
        private_files(file, false)
            .map_err(io_error(format!("cannot secure {}", file.display())))?;
    }
    Ok(store)
}

/// The file behind a `sqlite:` URL (`None` for other stores and in-memory databases).
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

/// Creates `dir` (and its missing parents) with mode 0700, or tightens it to 0700 (except a
/// shared directory with the sticky bit, such as /tmp, which is left as it is, with a warning).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(dir)?.permissions().mode() & 0o1000 != 0 {
            tracing::warn!(
                path = %dir.display(),
                "the data dir is a shared directory (sticky bit): its mode is left as it is; use a directory of Herald's own"
            );
            return Ok(());
        }
    }
    tighten(dir, 0o700)
}

/// Creates the database file 0600 when missing (`create`, before SQLite opens it), and tightens
/// it, its `-wal` and its `-shm` to 0600 when they exist with a looser mode.
fn private_files(file: &Path, create: bool) -> std::io::Result<()> {
    if create && !file.exists() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        drop(options.open(file)?);
    }
    if file.exists() {
        tighten(file, 0o600)?;
    }
    for suffix in ["-wal", "-shm"] {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        let companion = PathBuf::from(name);
        if companion.exists() {
            tighten(&companion, 0o600)?;
        }
    }
    Ok(())
}

/// Sets `path`'s permission bits to `mode` when it grants more (group or other bits).
#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        tracing::warn!(
            path = %path.display(),
            was = %format!("{current:o}"),
            now = %format!("{mode:o}"),
            "tightened the permissions of the store"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}
