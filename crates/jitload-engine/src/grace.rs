//! Deferred freeing: code that a call may still be running is freed only after that call
//! returns.
//!
//! Each call through the Python API holds the current [`Epoch`] while it runs. Retiring an
//! item (say, "remove this module's code") attaches it to the current epoch and starts a new
//! one. Every epoch keeps its successor alive, so an epoch's items run only once every call
//! that began in it *or earlier* has returned. Under steady load old epochs still drain,
//! because new calls join the new epoch.

use std::sync::{Arc, Mutex, OnceLock};

type Retired = Box<dyn FnOnce() + Send>;

/// One generation of calls; its retired items run when it is dropped.
#[derive(Default)]
pub struct Epoch {
    retired: Mutex<Vec<Retired>>,
    next: OnceLock<Arc<Epoch>>,
}

impl Drop for Epoch {
    fn drop(&mut self) {
        for item in std::mem::take(&mut *self.retired.lock().unwrap_or_else(|e| e.into_inner())) {
            item();
        }
        // Release the chain of successors iteratively: a long chain (one call running while
        // many items were retired) would otherwise recurse once per epoch.
        let mut next = self.next.take();
        while let Some(epoch) = next {
            match Arc::try_unwrap(epoch) {
                Ok(mut owned) => next = owned.next.take(), // `owned` drops here without recursing
                Err(_) => break,
            }
        }
    }
}

/// The epochs of one owner (a session: a call entering one library may run another's code).
#[derive(Default)]
pub struct Epochs {
    current: Mutex<Arc<Epoch>>,
}

impl Epochs {
    /// Marks the start of a call; the call is over when the returned guard is dropped.
    pub fn enter(&self) -> Arc<Epoch> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `item` once every call that has entered so far has returned (at once if none).
    pub fn retire(&self, item: impl FnOnce() + Send + 'static) {
        let old = {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            current.retired.lock().unwrap_or_else(|e| e.into_inner()).push(Box::new(item));
            let fresh = Arc::new(Epoch::default());
            let _ = current.next.set(fresh.clone());
            std::mem::replace(&mut *current, fresh)
        };
        // Dropped outside the lock: if no call holds it, the items run now, and they may
        // re-enter the owner.
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn retired_items_wait_for_earlier_calls() {
        let epochs = Epochs::default();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        epochs.retire(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 1, "nothing in flight: runs at once");

        let call = epochs.enter();
        let r = ran.clone();
        epochs.retire(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let later_call = epochs.enter();
        let r = ran.clone();
        epochs.retire(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 1, "calls in flight hold both items");
        drop(later_call);
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the older call still holds both");
        drop(call);
        assert_eq!(ran.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn long_chains_do_not_recurse() {
        let epochs = Epochs::default();
        let call = epochs.enter();
        for _ in 0..200_000 {
            epochs.retire(|| {});
        }
        drop(call);
    }
}
