//! [`Kept`]: the common case of state for the next process in one line. A value that serde can
//! write starts as what the previous process saved (or its `Default`), and is saved for the next
//! one at the handover and at a stop: [`crate::Service::save_state`] and
//! [`crate::Handle::take_state`] underneath, in JSON.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::handle::{Handle, Status};

/// A value that carries on across handoffs and restarts, from
/// [`Service::keep_state`](crate::Service::keep_state). Cheap to clone: every clone is the same
/// value, so it fits axum's `State`.
///
/// ```no_run
/// use axum::{Router, extract::State, routing::get};
///
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Counts { hits: u64 }
///
/// async fn hit(State(counts): State<heird::Kept<Counts>>) -> String {
///     let mut c = counts.lock().await; // what the previous process counted, once handed over
///     c.hits += 1;
///     format!("{}\n", c.hits)
/// }
///
/// fn main() -> std::process::ExitCode {
///     heird::main(heird::Acquire::bind(&["127.0.0.1:8080"]), |mut service| async move {
///         let counts = service.keep_state::<Counts>();
///         let app = Router::new().route("/", get(hit)).with_state(counts);
///         service.run(app, heird::Options::default()).await
///     })
/// }
/// ```
pub struct Kept<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    value: Mutex<T>,
    /// The previous process's value has been looked for (set under the lock).
    restored: AtomicBool,
    handle: Handle,
}

impl<T> Clone for Kept<T> {
    fn clone(&self) -> Self {
        Kept {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Kept<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("type", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<T> Kept<T>
where
    T: Serialize + DeserializeOwned + Default + Send + 'static,
{
    /// A value that starts as `T::default()`, registered with `handle`'s service.
    pub(crate) fn new(handle: Handle) -> Kept<T> {
        Kept {
            inner: Arc::new(Inner {
                value: Mutex::new(T::default()),
                restored: AtomicBool::new(false),
                handle,
            }),
        }
    }

    /// Locks the value. In a successor this first waits until the predecessor has handed over
    /// (the value it saved arrives with the handover), then starts from that value; a first
    /// process starts from `T::default()`, a process after `systemctl restart` from what the
    /// stopped one saved in the fd store. The guard is a `std::sync::MutexGuard`: change the
    /// value and drop it, without an `.await` in between.
    pub async fn lock(&self) -> MutexGuard<'_, T> {
        let mut status = self.inner.handle.status.clone();
        let _ = status.wait_for(|s| *s != Status::Starting).await;
        let mut guard = self.inner.value.lock().unwrap_or_else(PoisonError::into_inner);
        self.restore(&mut guard);
        guard
    }

    /// The bytes to save for the next process (the value, in JSON).
    pub(crate) fn save(&self) -> Vec<u8> {
        let mut guard = self.inner.value.lock().unwrap_or_else(PoisonError::into_inner);
        // Nobody locked it in this process yet: what it holds is still the previous process's.
        self.restore(&mut guard);
        serde_json::to_vec(&*guard).unwrap_or_else(|e| {
            warn!(error = %e, "cannot write the kept state; the next process starts from the default");
            Vec::new()
        })
    }

    /// Once: replaces the default by what the previous process saved, if anything.
    fn restore(&self, value: &mut T) {
        if self.inner.restored.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(bytes) = self.inner.handle.take_state() {
            match serde_json::from_slice(&bytes) {
                Ok(v) => *value = v,
                Err(e) => warn!(
                    error = %e,
                    bytes = bytes.len(),
                    "cannot read the state the previous process saved; starting from the default"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::handle::Handles;

    #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Counts {
        hits: u64,
    }

    fn handed(state: Option<&[u8]>) -> (Handles, Kept<Counts>) {
        let handles = Handles::new();
        *handles.state.lock().unwrap() = state.map(<[u8]>::to_vec);
        let kept = Kept::new(handles.handle());
        (handles, kept)
    }

    #[tokio::test]
    async fn waits_for_the_handover_then_starts_from_the_saved_value() {
        let (handles, kept) = handed(None);
        let k = kept.clone();
        let locked = tokio::spawn(async move { k.lock().await.hits });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!locked.is_finished(), "locked while still Starting");
        // The handover: the state first, then the status.
        *handles.state.lock().unwrap() = Some(br#"{"hits":41}"#.to_vec());
        handles.status.send_replace(Status::Primary);
        assert_eq!(locked.await.unwrap(), 41);
        kept.lock().await.hits += 1;
        assert_eq!(kept.save(), br#"{"hits":42}"#);
    }

    #[tokio::test]
    async fn saves_the_previous_value_when_nobody_locked_it() {
        let (_handles, kept) = handed(Some(br#"{"hits":7}"#));
        assert_eq!(kept.save(), br#"{"hits":7}"#);
    }

    #[tokio::test]
    async fn defaults_without_a_saved_value_or_with_a_bad_one() {
        for state in [None, Some(&b"not json"[..])] {
            let (handles, kept) = handed(state);
            handles.status.send_replace(Status::Primary);
            assert_eq!(*kept.lock().await, Counts::default(), "{state:?}");
        }
    }
}
