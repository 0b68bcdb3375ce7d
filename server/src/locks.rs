//! The one policy for poisoned locks: take the guard back and go on.
//!
//! A `std::sync` lock is poisoned when a thread panicked while holding it. Herald's locks guard
//! in-memory state whose every update is a single step (an insert, a remove, a counter change,
//! one `Arc` swapped for another), so the data behind a poisoned lock is still consistent; and
//! one node serves every tenant, so turning one task's panic into a panic of every later caller
//! would make a bug in one request an outage for all. Every lock in the server is therefore
//! taken through these methods (clippy's `disallowed-methods` refuses the plain ones), never
//! with `unwrap()` and never with a local variation. A leaf module: it imports nothing of ours.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `Mutex::lock` under the policy above.
pub trait MutexExt<T: ?Sized> {
    /// The guard, whether or not an earlier holder panicked.
    fn lock_or_recover(&self) -> MutexGuard<'_, T>;
}

/// `RwLock::read` and `RwLock::write` under the policy above.
pub trait RwLockExt<T: ?Sized> {
    /// A read guard, whether or not an earlier writer panicked.
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T>;
    /// The write guard, whether or not an earlier writer panicked.
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    #[inline]
    #[allow(clippy::disallowed_methods, reason = "the one place a Mutex is locked")]
    fn lock_or_recover(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    #[inline]
    #[allow(clippy::disallowed_methods, reason = "the one place an RwLock is read")]
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[inline]
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place an RwLock is written"
    )]
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T> {
        self.write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_lock_is_recovered_with_its_data() {
        let mutex = Arc::new(Mutex::new(vec![1]));
        let rw = Arc::new(RwLock::new(7));
        let (m, r) = (mutex.clone(), rw.clone());
        let _ = std::thread::spawn(move || {
            let _m = m.lock_or_recover();
            let _r = r.write_or_recover();
            panic!("poison both");
        })
        .join();
        assert!(mutex.is_poisoned() && rw.is_poisoned());
        mutex.lock_or_recover().push(2);
        assert_eq!(*mutex.lock_or_recover(), vec![1, 2]);
        *rw.write_or_recover() += 1;
        assert_eq!(*rw.read_or_recover(), 8);
    }
}
