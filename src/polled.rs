//! A future for a `select!` that is polled at every wake-up of a busy task (a connection beside
//! hyper), whose inner future is costly to poll (a `Notify` or semaphore registration takes a
//! lock; a `Sleep` looks at the timer). After its first poll the inner future holds the task's
//! waker, so it is polled again only when a cheap check says it may be ready, or when the
//! task's waker changed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// See the [module](self) doc. `may_be_ready` must turn true before the inner future's waker is
/// woken for the event (an atomic set before a notification, a timer's fired state).
pub struct PolledOften<F: ?Sized, G> {
    inner: Pin<Box<F>>,
    may_be_ready: G,
    /// The waker the inner future holds (from its last poll).
    waker: Option<Waker>,
}

impl<F: Future + ?Sized, G: Fn(&F) -> bool + Unpin> PolledOften<F, G> {
    pub fn new(inner: Pin<Box<F>>, may_be_ready: G) -> Self {
        PolledOften {
            inner,
            may_be_ready,
            waker: None,
        }
    }
}

impl<F: Future + ?Sized, G: Fn(&F) -> bool + Unpin> Future for PolledOften<F, G> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let registered = this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if registered && !(this.may_be_ready)(&this.inner) {
            return Poll::Pending;
        }
        let res = this.inner.as_mut().poll(cx);
        if res.is_pending() {
            this.waker = Some(cx.waker().clone());
        }
        res
    }
}
