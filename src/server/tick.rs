//! A coarse clock for the HTTP/1.1 header-read check: one thread ticks once per period and
//! wakes the connections that wait for a tick.
//!
//! A tokio timer per connection would do the same job, but while any timer is armed the runtime
//! looks at its timer wheel and reads the clock each time a worker parks: about 230
//! instructions per request on a keep-alive connection, 1.7 % of a hello-world request (bench/README,
//! "Where the rest goes"). A tick costs each connection one wake-up per period instead.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::polled::PolledOften;

/// The clock. Dropping it stops its thread at once.
pub(super) struct Ticker {
    inner: Arc<Inner>,
    /// Dropped with the ticker: the thread's wait ends, and so does the thread.
    _stop: mpsc::Sender<()>,
}

struct Inner {
    /// Ticks so far; raised before the waiters are woken.
    epoch: AtomicU64,
    ticked: Notify,
}

impl Ticker {
    /// Starts the thread that ticks every `period` (at least every 10 ms: a zero period from
    /// the library API would spin).
    pub fn start(period: Duration) -> io::Result<Ticker> {
        let period = period.max(Duration::from_millis(10));
        let inner = Arc::new(Inner {
            epoch: AtomicU64::new(0),
            ticked: Notify::new(),
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let clock = inner.clone();
        std::thread::Builder::new()
            .name("heird-tick".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    clock.epoch.fetch_add(1, Ordering::SeqCst);
                    clock.ticked.notify_waiters();
                }
            })?;
        Ok(Ticker { inner, _stop: stop })
    }

    /// The ticks so far.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::SeqCst)
    }

    /// Resolves to the new epoch at the first tick after epoch `seen`. For a `select!` polled at
    /// every wake-up of a busy task: after its first poll, a poll is one atomic load until the
    /// tick.
    pub fn after(&self, seen: u64) -> impl Future<Output = u64> + Send + Unpin + use<> {
        let (wait, flag) = (self.inner.clone(), self.inner.clone());
        let next = async move {
            loop {
                let ticked = wait.ticked.notified();
                tokio::pin!(ticked);
                // Registered before the look at the epoch: a tick in between still wakes us.
                ticked.as_mut().enable();
                let now = wait.epoch.load(Ordering::SeqCst);
                if now != seen {
                    return now;
                }
                ticked.await;
            }
        };
        PolledOften::new(Box::pin(next), move |_: &_| {
            flag.epoch.load(Ordering::SeqCst) != seen
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_at_each_tick_and_the_thread_stops_with_the_ticker() {
        let ticker = Ticker::start(Duration::from_millis(20)).unwrap();
        let mut seen = ticker.epoch();
        for _ in 0..3 {
            let next = tokio::time::timeout(Duration::from_secs(5), ticker.after(seen))
                .await
                .expect("no tick within 5 s");
            assert!(next > seen);
            seen = next;
        }
        // A wait for a tick that has already come ends at its first poll.
        let at_once = tokio::time::timeout(Duration::ZERO, ticker.after(seen - 1)).await;
        assert!(at_once.is_ok_and(|e| e >= seen));
        let inner = Arc::downgrade(&ticker.inner);
        drop(ticker);
        // The thread holds the clock until it ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while inner.strong_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the tick thread did not stop"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn nothing_wakes_before_the_tick() {
        let ticker = Ticker::start(Duration::from_secs(3600)).unwrap();
        let early = tokio::time::timeout(Duration::from_millis(50), ticker.after(ticker.epoch())).await;
        assert!(early.is_err(), "woke without a tick: {early:?}");
    }
}
