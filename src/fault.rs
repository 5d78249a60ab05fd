//! Fault injection for tests, behind the cargo feature `fault-injection` (off in release builds
//! and packages; without it, [`point`] is an empty inline function and no hook exists).
//!
//! `HEIRD_FAULT=<step>:<action>` makes the first handoff attempt (generation 1 → 2) stop or kill
//! the old or the new process when either of them reaches `<step>`. Later attempts run clean: the
//! old process fires only during its first attempt and passes `HEIRD_FAULT` only to its first
//! successor. Actions: `kill-old`, `kill-new`,
//! `stop-old`, `stop-new` (SIGKILL or SIGSTOP).
// Without the feature most of this is unused; with it, `Step::ALL` serves its own tests.
#![allow(dead_code)]

/// The named steps of a handoff, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Old process: the successor was forked.
    SuccessorSpawned,
    /// New process: took its sockets.
    SuccessorTookFds,
    /// New process: serving, not yet said ready.
    Serving,
    /// New process: wrote "ready".
    ReadyWritten,
    /// Old process: sent MAINPID=.
    MainPidSent,
    /// Old process: the barrier returned.
    BarrierDone,
    /// Old process: stopped accepting, drain started.
    DrainStarted,
    /// Old process: the drain reached its deadline.
    DrainDeadline,
    /// Not a handoff: the primary decided to exit when idle and its accept loops have ended
    /// (`stop-old` pauses it there, so a test can connect while it exits).
    IdleAcceptStopped,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::SuccessorSpawned,
        Step::SuccessorTookFds,
        Step::Serving,
        Step::ReadyWritten,
        Step::MainPidSent,
        Step::BarrierDone,
        Step::DrainStarted,
        Step::DrainDeadline,
        Step::IdleAcceptStopped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::SuccessorSpawned => "successor-spawned",
            Step::SuccessorTookFds => "successor-took-fds",
            Step::Serving => "serving",
            Step::ReadyWritten => "ready-written",
            Step::MainPidSent => "mainpid-sent",
            Step::BarrierDone => "barrier-done",
            Step::DrainStarted => "drain-started",
            Step::DrainDeadline => "drain-deadline",
            Step::IdleAcceptStopped => "idle-accept-stopped",
        }
    }

    /// True for steps the new process reaches; the others happen in the old one.
    pub fn in_successor(self) -> bool {
        matches!(self, Step::SuccessorTookFds | Step::Serving | Step::ReadyWritten)
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_step: Step) {}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point_with_peer(_step: Step, _peer: u32) {}

/// Fires the configured fault if this process reached `step` (a new-process step; the peer is
/// the parent).
#[cfg(feature = "fault-injection")]
pub fn point(step: Step) {
    point_with_peer(step, std::os::unix::process::parent_id());
}

/// Fires the configured fault if this process reached `step`; `peer` is the other process.
#[cfg(feature = "fault-injection")]
pub fn point_with_peer(step: Step, peer: u32) {
    use nix::sys::signal::{Signal, kill};
    let Ok(spec) = std::env::var("HEIRD_FAULT") else {
        return;
    };
    let Some((want, action)) = spec.split_once(':') else {
        return;
    };
    if want != step.name() {
        return;
    }
    // Only the first handoff attempt: generation 1 (old) to 2 (new).
    let generation = GENERATION.load(std::sync::atomic::Ordering::SeqCst);
    let me_new = step.in_successor();
    let first_attempt = ATTEMPTS.load(std::sync::atomic::Ordering::SeqCst) <= 1;
    if (me_new && generation != 2) || (!me_new && (generation != 1 || !first_attempt)) {
        return;
    }
    let me = std::process::id();
    let (old, new) = if me_new { (peer, me) } else { (me, peer) };
    let (target, sig) = match action {
        "kill-old" => (old, Signal::SIGKILL),
        "kill-new" => (new, Signal::SIGKILL),
        "stop-old" => (old, Signal::SIGSTOP),
        "stop-new" => (new, Signal::SIGSTOP),
        _ => return,
    };
    tracing::warn!(step = step.name(), action, target, "fault injection");
    let _ = kill(nix::unistd::Pid::from_raw(target as i32), sig);
    if target != me {
        // Let the signal land before this process goes on, as if the peer had died right here.
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(feature = "fault-injection")]
static ATTEMPTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts a handoff attempt of this process; returns false when `HEIRD_FAULT` must not be passed
/// to this attempt's successor (it is not the first attempt). Always true without the feature.
pub fn handoff_attempt() -> bool {
    #[cfg(feature = "fault-injection")]
    return ATTEMPTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
    #[cfg(not(feature = "fault-injection"))]
    true
}

#[cfg(feature = "fault-injection")]
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Tells the fault hooks which generation this process is.
pub fn set_generation(_generation: u64) {
    #[cfg(feature = "fault-injection")]
    GENERATION.store(_generation, std::sync::atomic::Ordering::SeqCst);
}
