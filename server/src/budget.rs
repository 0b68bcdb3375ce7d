//! The node-wide budget of bytes for REST bodies not yet authenticated, and the error a body
//! ends with when its client sends it too slowly. A leaf module: the node holds the budget, the
//! REST API takes shares of it, the server's body guard raises [`BodyTooSlow`].

use std::sync::atomic::{AtomicUsize, Ordering};

/// The node-wide budget of bytes for REST bodies not yet authenticated. Taken without waiting
/// (a lock-free counter: no mutex on the REST path), given back when a [`Share`] drops.
#[derive(Debug)]
pub struct BodyBudget {
    available: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> BodyBudget {
        BodyBudget {
            available: AtomicUsize::new(bytes),
        }
    }

    /// The bytes not taken right now.
    pub fn available(&self) -> usize {
        self.available.load(Ordering::Relaxed)
    }

    /// An empty share of this budget, to grow with [`Share::take`].
    pub fn share(&self) -> Share<'_> {
        Share {
            budget: self,
            bytes: 0,
        }
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |available| {
                available.checked_sub(bytes)
            })
            .is_ok()
    }
}

/// A share of a [`BodyBudget`], given back on drop.
#[derive(Debug)]
pub struct Share<'a> {
    budget: &'a BodyBudget,
    bytes: usize,
}

impl Share<'_> {
    /// Takes `bytes` more into this share; `false` (and nothing taken) when the budget has not
    /// that many left.
    pub fn take(&mut self, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        if !self.budget.try_take(bytes) {
            return false;
        }
        self.bytes += bytes;
        true
    }

    /// The bytes this share holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        self.budget
            .available
            .fetch_add(self.bytes, Ordering::AcqRel);
    }
}

/// The error a request body ends with when its client does not send it in time.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request body not received in time")]
pub struct BodyTooSlow;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_take_what_is_left_and_give_it_back_on_drop() {
        let budget = BodyBudget::new(10);
        let mut first = budget.share();
        assert!(first.take(6));
        assert!(first.take(0));
        assert_eq!((first.bytes(), budget.available()), (6, 4));
        let mut second = budget.share();
        assert!(!second.take(5), "only 4 bytes are left");
        assert!(second.take(4));
        assert_eq!(budget.available(), 0);
        drop(first);
        assert_eq!(budget.available(), 6);
        drop(second);
        assert_eq!(budget.available(), 10);
    }
}
