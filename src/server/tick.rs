//! A coarse clock for the HTTP/1.1 header-read check: one thread ticks once per period for
//! each connection and wakes the connections that wait for their tick.
//!
//! A tokio timer per connection would do the same job, but while any timer is armed the runtime
//! looks at its timer wheel and reads the clock each time a worker parks: about 230
//! instructions per request on a keep-alive connection, 1.7 % of a hello-world request
//! (bench/README, "Two more cuts"). A tick costs each connection one wake-up per period instead.
//!
//! The connections are spread over up to 64 slots, ticked one after another through the
//! period, so that 10 000 connections do not all wake in the same instant.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::polled::PolledOften;

/// The most slots; fewer when the period is short, so that the thread ticks at most once a
/// millisecond.
const MAX_SLOTS: usize = 64;

/// The clock. Dropping it stops its thread at once.
pub(super) struct Ticker {
    inner: Arc<Inner>,
    /// Dropped with the ticker: the thread's wait ends, and so does the thread.
    _stop: mpsc::Sender<()>,
}

struct Inner {
    slots: Vec<Slot>,
    /// The slot of the next connection (round robin).
    next: AtomicUsize,
}

struct Slot {
    /// Ticks of this slot so far; raised before its waiters are woken.
    epoch: AtomicU64,
    ticked: Notify,
}

impl Slot {
    fn tick(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.ticked.notify_waiters();
    }
}

/// One connection's view of the clock: its slot.
pub(super) struct Hand {
    inner: Arc<Inner>,
    slot: usize,
}

impl Ticker {
    /// Starts the thread that ticks each slot every `period` (at least every 10 ms: a zero
    /// period from the library API would spin).
    pub fn start(period: Duration) -> io::Result<Ticker> {
        let period = period.max(Duration::from_millis(10));
        let n = usize::try_from(period.as_millis()).map_or(MAX_SLOTS, |ms| ms.min(MAX_SLOTS));
        let inner = Arc::new(Inner {
            slots: (0..n)
                .map(|_| Slot {
                    epoch: AtomicU64::new(0),
                    ticked: Notify::new(),
                })
                .collect(),
            next: AtomicUsize::new(0),
        });
        let step = period / n as u32;
        let (stop, stopped) = mpsc::channel::<()>();
        let clock = inner.clone();
        std::thread::Builder::new()
            .name("heird-tick".into())
            .spawn(move || {
                for slot in clock.slots.iter().cycle() {
                    if !matches!(stopped.recv_timeout(step), Err(mpsc::RecvTimeoutError::Timeout)) {
                        return;
                    }
                    slot.tick();
                }
            })?;
        Ok(Ticker { inner, _stop: stop })
    }

    /// A new connection's hand on the clock (the slots in turn).
    pub fn hand(&self) -> Hand {
        let slot = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.slots.len();
        Hand {
            inner: self.inner.clone(),
            slot,
        }
    }
}

impl Hand {
    /// The ticks of this hand's slot so far.
    pub fn epoch(&self) -> u64 {
        self.inner.slots[self.slot].epoch.load(Ordering::SeqCst)
    }

    /// Resolves to the new epoch at the first tick of this hand's slot after epoch `seen`. For
    /// a `select!` polled at every wake-up of a busy task: after its first poll, a poll is one
    /// atomic load until the tick.
    pub fn after(&self, seen: u64) -> impl Future<Output = u64> + Send + Unpin + use<> {
        let (wait, flag, slot) = (self.inner.clone(), self.inner.clone(), self.slot);
        let next = async move {
            let slot = &wait.slots[slot];
            loop {
                let ticked = slot.ticked.notified();
                tokio::pin!(ticked);
                // Registered before the look at the epoch: a tick in between still wakes us.
                ticked.as_mut().enable();
                let now = slot.epoch.load(Ordering::SeqCst);
                if now != seen {
                    return now;
                }
                ticked.await;
            }
        };
        PolledOften::new(Box::pin(next), move |_: &_| {
            flag.slots[slot].epoch.load(Ordering::SeqCst) != seen
        })
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll, Wake, Waker};

    use super::*;

    #[tokio::test]
    async fn waiters_wake_at_each_tick_and_the_thread_stops_with_the_ticker() {
        let ticker = Ticker::start(Duration::from_millis(20)).unwrap();
        let hand = ticker.hand();
        let mut seen = hand.epoch();
        for _ in 0..3 {
            let next = tokio::time::timeout(Duration::from_secs(5), hand.after(seen))
                .await
                .expect("no tick within 5 s");
            assert!(next > seen);
            seen = next;
        }
        // A wait for a tick that has already come ends at its first poll.
        let at_once = tokio::time::timeout(Duration::ZERO, hand.after(seen - 1)).await;
        assert!(at_once.is_ok_and(|e| e >= seen));
        let inner = Arc::downgrade(&ticker.inner);
        drop((ticker, hand));
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

    /// A waker that counts its wakes, so that a test can say "not woken" without waiting.
    struct Counted(AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counted() -> (Arc<Counted>, Waker) {
        let c = Arc::new(Counted(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    fn poll<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn nothing_wakes_before_the_tick_and_the_tick_wakes() {
        // An hour's period: the thread's first tick is a minute away.
        let ticker = Ticker::start(Duration::from_secs(3600)).unwrap();
        let hand = ticker.hand();
        let (count, waker) = counted();
        let mut wait = hand.after(hand.epoch());
        assert!(poll(&mut wait, &waker).is_pending());
        assert!(poll(&mut wait, &waker).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        ticker.inner.slots[hand.slot].tick();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the tick did not wake the waiter"
        );
        assert_eq!(poll(&mut wait, &waker), Poll::Ready(1));
    }

    #[test]
    fn connections_are_spread_over_the_slots_and_a_tick_wakes_only_its_own() {
        let ticker = Ticker::start(Duration::from_secs(3600)).unwrap();
        assert_eq!(ticker.inner.slots.len(), MAX_SLOTS);
        let hands: Vec<Hand> = (0..2 * MAX_SLOTS).map(|_| ticker.hand()).collect();
        for s in 0..MAX_SLOTS {
            assert_eq!(hands.iter().filter(|h| h.slot == s).count(), 2, "slot {s}");
        }
        let (first, second) = (&hands[0], &hands[1]);
        assert_ne!(first.slot, second.slot);
        let (first_woken, first_waker) = counted();
        let (second_woken, second_waker) = counted();
        let mut wait_first = first.after(first.epoch());
        let mut wait_second = second.after(second.epoch());
        assert!(poll(&mut wait_first, &first_waker).is_pending());
        assert!(poll(&mut wait_second, &second_waker).is_pending());
        ticker.inner.slots[first.slot].tick();
        assert_eq!(first_woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut wait_first, &first_waker), Poll::Ready(1));
        assert_eq!(
            second_woken.0.load(Ordering::SeqCst),
            0,
            "another slot's tick woke it"
        );
        assert!(poll(&mut wait_second, &second_waker).is_pending());
    }

    #[test]
    fn short_periods_have_fewer_slots() {
        for (ms, slots) in [(10, 10), (40, 40), (64, 64), (30_000, 64)] {
            let ticker = Ticker::start(Duration::from_millis(ms)).unwrap();
            assert_eq!(ticker.inner.slots.len(), slots, "{ms} ms");
        }
    }
}
