//! The first start of a store: the demo app when there is no app, the platform operator when
//! there is no user. Generated secrets go to the first-run file (mode 0600 in the data dir, and
//! to a terminal), never to the log.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::{io_error, StartupError};
use crate::config::Settings;
use crate::tenants::{NewApp, Store, UserRole};

/// The first-run file: where generated secrets go instead of the log.
pub fn first_run_path(data_dir: &Path) -> PathBuf {
    data_dir.join("first-run.txt")
}

/// The first start of a store: the demo app when there is no app, the operator when there is no
/// user. Generated secrets go to the first-run file (and to a terminal), never to the log.
pub(super) async fn first_start(settings: &Settings, store: &Store) -> Result<(), StartupError> {
    let mut generated = String::new();
    let needs_operator = !store.has_users().await?;
    let admin_email = settings
        .admin
        .email
        .clone()
        .unwrap_or_else(|| "admin@localhost".into());
    if needs_operator {
        // Refuse a bad HERALD_ADMIN_EMAIL / _PASSWORD before anything is created, so a failed
        // first start never leaves generated credentials that nobody recorded.
        if let Some(password) = &settings.admin.password {
            crate::tenants::check_new_user(&admin_email, password.expose())?;
        } else {
            crate::tenants::check_new_user(&admin_email, "long enough")?;
        }
    }
    if store.is_empty().await? {
        let defaults = &settings.default_app;
        let app = store
            .create_app(NewApp {
                name: "Demo app".into(),
                id: defaults.id.clone(),
                key: defaults.key.clone(),
                secret: defaults.secret.clone(),
                client_events: Some(true),
                ..NewApp::default()
            })
            .await?;
        tracing::info!(app_id = %app.id, key = %app.key, tenant_id = %app.tenant_id, "created the default app");
        if defaults.secret.is_none() {
            generated.push_str(&format!(
                "Default app (tenant {})\n  id:     {}\n  key:    {}\n  secret: {}\n\n",
                app.tenant_id,
                app.id,
                app.key,
                app.secret.expose()
            ));
        }
    }
    if needs_operator {
        let email = admin_email;
        let (password, random) = match &settings.admin.password {
            Some(password) => (password.expose().to_owned(), false),
            None => (crate::tenants::random_password(), true),
        };
        let user = store
            .create_user(&email, &password, UserRole::Operator, None)
            .await?;
        tracing::info!(email = %user.email, "created the platform operator");
        if random {
            generated.push_str(&format!(
                "Operator (dashboard sign-in)\n  email:    {}\n  password: {}\n\n",
                user.email, password
            ));
        }
    }
    if generated.is_empty() {
        return Ok(());
    }
    let path = first_run_path(&settings.data_dir);
    // Appended: an upgrade that adds the operator keeps the app secret written before.
    let text = match std::fs::read_to_string(&path) {
        Ok(earlier) if !earlier.is_empty() => format!("{earlier}\n{generated}"),
        _ => format!("Herald first run\n\n{generated}"),
    };
    write_private(&path, &text).map_err(io_error(format!("cannot write {}", path.display())))?;
    tracing::info!(path = %path.display(), "generated credentials were written to the first-run file");
    if std::io::stdout().is_terminal() {
        let _ = std::io::stdout().write_all(format!("Herald first run\n\n{generated}").as_bytes());
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // `mode` applies only when the file is created: tighten a file that was already there.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())
}
