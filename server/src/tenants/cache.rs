//! The in-memory app cache: lookups by key and by id without SQL, refreshed when the store's
//! revision moves.

use crate::locks::RwLockExt;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{App, AppRef};

/// A change that running connections must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppChange {
    /// The app was disabled: close its sockets with 4003.
    Disabled(String),
    /// The app was deleted: close its sockets with 4001.
    Deleted(String),
    /// Keys of the app were revoked: close the sockets opened with them (4009).
    KeysRevoked(String, Vec<String>),
    /// What authorizes the app's Mercure subscribers changed (the key that verifies their
    /// tokens, the app's secret when that is the key, the audience, the issuer, anonymous
    /// access, the allowed origins): end its SSE streams, whose clients resubscribe under the
    /// new settings (with `Last-Event-ID`, so nothing is lost).
    MercureAuthChanged(String),
}

/// Whether `old` and `new` authorize Mercure subscribers differently.
fn mercure_auth_changed(old: &App, new: &App) -> bool {
    let (a, b) = (&old.mercure, &new.mercure);
    a.jwt_key != b.jwt_key
        || a.audience != b.audience
        || a.issuer != b.issuer
        || a.anonymous != b.anonymous
        || old.allowed_origins != new.allowed_origins
        || (a.jwt_key == super::MercureKey::AppSecret && old.secret != new.secret)
}

#[derive(Default)]
struct Snapshot {
    revision: Option<i64>,
    by_key: HashMap<String, AppRef>,
    by_id: HashMap<String, AppRef>,
}

/// Apps by key and by id. Readers take a short read lock and clone an `Arc`.
#[derive(Default)]
pub struct AppCache {
    // A std lock: it is held for a hash lookup only and never across an await.
    snapshot: RwLock<Arc<Snapshot>>,
}

impl std::fmt::Debug for AppCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCache").finish_non_exhaustive()
    }
}

impl AppCache {
    fn current(&self) -> Arc<Snapshot> {
        self.snapshot.read_or_recover().clone()
    }

    /// The app whose key is `key` at `now` (Unix seconds): its current key, or its previous key
    /// while that works.
    pub fn by_key(&self, key: &str, now: i64) -> Option<AppRef> {
        self.current()
            .by_key
            .get(key)
            .filter(|app| app.secret_for(key, now).is_some())
            .cloned()
    }

    /// The app whose id is `id`.
    pub fn by_id(&self, id: &str) -> Option<AppRef> {
        self.current().by_id.get(id).cloned()
    }

    /// Every app.
    pub fn all(&self) -> Vec<AppRef> {
        self.current().by_id.values().cloned().collect()
    }

    /// The revision the cache was loaded at.
    pub fn revision(&self) -> Option<i64> {
        self.current().revision
    }

    /// Replaces the cache with `apps` read at `revision`, and says which apps went away or were
    /// disabled, or lost a key, since the previous load (keys are judged at `now`, Unix seconds).
    pub fn replace(&self, revision: i64, apps: Vec<App>, now: i64) -> Vec<AppChange> {
        let mut next = Snapshot {
            revision: Some(revision),
            ..Snapshot::default()
        };
        for app in apps {
            let app = Arc::new(app);
            next.by_key.insert(app.key.clone(), app.clone());
            if let Some(previous) = &app.previous_key {
                next.by_key.insert(previous.key.clone(), app.clone());
            }
            next.by_id.insert(app.id.clone(), app);
        }
        let previous = self.current();
        let mut changes = Vec::new();
        for (id, old) in &previous.by_id {
            match next.by_id.get(id) {
                None => changes.push(AppChange::Deleted(id.clone())),
                Some(new) if old.enabled && !new.enabled => {
                    changes.push(AppChange::Disabled(id.clone()))
                }
                Some(new) => {
                    let kept: Vec<&str> = new.credentials(now).map(|(k, _)| k).collect();
                    let revoked: Vec<String> = old
                        .credentials(now)
                        .map(|(k, _)| k)
                        .filter(|k| !kept.contains(k))
                        .map(str::to_owned)
                        .collect();
                    if !revoked.is_empty() {
                        changes.push(AppChange::KeysRevoked(id.clone(), revoked));
                    }
                    if mercure_auth_changed(old, new) {
                        changes.push(AppChange::MercureAuthChanged(id.clone()));
                    }
                }
            }
        }
        *self.snapshot.write_or_recover() = Arc::new(next);
        changes
    }
}
