//! Paced moves: at a handoff, idle HTTP/1.1 connections leave in turns, not all at once.
//!
//! With thousands of idle keep-alive connections, a drain that woke every connection task at
//! once kept both runtimes busy for the whole move (the old one shutting down and sending
//! 10 000 connections, the successor adopting them), and requests of the busy connections
//! waited behind that work: p99 in the second after a handoff was 3× the steady p99 with 10 000
//! idle connections open (bench/README.md, section 6). Now each connection waits for its turn
//! in a queue (a semaphore with no permits, in the order the connections arrived), and the
//! drain hands out turns at a steady rate; a connection whose turn has not come keeps being
//! served here as before (a request on it is answered by this process, then it moves), and
//! nothing wakes it until its turn. A stop, or a drain with nowhere to move, gives every
//! connection its turn at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::drain::Drain;
use crate::polled::PolledOften;

/// Turns handed out per millisecond, at least: 5 000 connections a second. The unpaced moves
/// took 205–444 ms for 10 000 with both processes busy, so this rate costs the two together at
/// most a fifth to two fifths of a core (bench/README.md, sections 4 and 6). More when the
/// drain's budget needs it.
const MIN_PER_MS: usize = 5;

/// The queue of connections waiting for their turn in a drain.
pub(super) struct Pacer {
    turns: Arc<Semaphore>,
}

impl Pacer {
    pub fn new() -> Pacer {
        Pacer {
            turns: Arc::new(Semaphore::new(0)),
        }
    }

    /// Resolves once the drain has started and this connection's turn has come. Take it when
    /// the connection starts: the queue is in that order. Polled at every wake-up of its
    /// connection (beside hyper): until the drain has started, a poll is one atomic load, and
    /// the queue (which takes a lock) is polled again only when the task's waker changed.
    pub fn turn(&self, drain: &Drain) -> impl Future<Output = ()> + Send + use<> {
        let turns = self.turns.clone();
        let drain = drain.clone();
        let wait = Box::pin(async move {
            // A closed queue: everyone's turn.
            if let Ok(permit) = turns.acquire_owned().await {
                permit.forget();
            }
        });
        PolledOften::new(wait, move |_: &_| drain.is_draining())
    }

    /// Every connection's turn, now.
    pub fn release_all(&self) {
        self.turns.close();
    }

    /// Hands out `n` turns within about `within` (at least [`MIN_PER_MS`] a millisecond), then
    /// everyone's (connections that arrived meanwhile, say).
    pub async fn release_paced(&self, n: usize, within: Duration) {
        let ms = (within.as_millis() as usize).max(1);
        let per_tick = MIN_PER_MS.max(n.div_ceil(ms));
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut released = 0;
        while released < n {
            tick.tick().await;
            self.turns.add_permits(per_tick);
            released += per_tick;
        }
        self.release_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paced_turns_all_come_after_the_drain_started() {
        let drain = Drain::new();
        let pacer = Arc::new(Pacer::new());
        let turns: Vec<_> = (0..20).map(|_| tokio::spawn(pacer.turn(&drain))).collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(turns.iter().all(|t| !t.is_finished()), "a turn before the drain");
        drain.start();
        let p = pacer.clone();
        let releasing = tokio::spawn(async move { p.release_paced(20, Duration::from_millis(4)).await });
        for t in turns {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .unwrap()
                .unwrap();
        }
        releasing.await.unwrap();
    }

    #[tokio::test]
    async fn release_all_ends_every_turn_at_once() {
        let drain = Drain::new();
        let pacer = Pacer::new();
        let turns: Vec<_> = (0..100).map(|_| tokio::spawn(pacer.turn(&drain))).collect();
        drain.start();
        pacer.release_all();
        for t in turns {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .unwrap()
                .unwrap();
        }
    }
}
