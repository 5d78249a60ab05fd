//! One test per rule of the supervisor's machine (see the list in `machine.rs`).

use super::*;

const T0: Duration = Duration::ZERO;

fn at(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A datagram whose sender is not known (the rules for a known sender have their own test).
fn notified(lines: Vec<Line>) -> Event {
    Event::Notified { from: None, lines }
}

/// A supervisor whose first worker (pid 10) said ready.
fn running() -> Machine {
    let (mut m, first) = Machine::start();
    assert_eq!(first, vec![Action::Spawn]);
    assert_eq!(m.step(Event::Started(10), T0), vec![]);
    m.step(notified(vec![Line::Ready]), T0);
    assert_eq!(m.phase, Phase::Running);
    m
}

#[test]
fn lines_are_classified() {
    assert_eq!(Line::parse("MAINPID=42"), Line::MainPid(42));
    assert_eq!(Line::parse("MAINPID=x"), Line::Drop);
    assert_eq!(Line::parse("READY=1"), Line::Ready);
    assert_eq!(Line::parse("RELOADING=1"), Line::Relay("RELOADING=1".into()));
    assert_eq!(
        Line::parse("MONOTONIC_USEC=5"),
        Line::Relay("MONOTONIC_USEC=5".into())
    );
    assert_eq!(Line::parse("STATUS=a=b"), Line::Relay("STATUS=a=b".into()));
    assert_eq!(Line::parse("BARRIER=1"), Line::Drop);
    assert_eq!(Line::parse("FDSTORE=1"), Line::Drop);
    assert_eq!(Line::parse("FDNAME=x"), Line::Drop);
}

#[test]
fn mainpid_follows_the_handoff_and_is_never_relayed() {
    let mut m = running();
    let acts = m.step(
        notified(vec![
            Line::MainPid(11),
            Line::Ready,
            Line::Relay("STATUS=gen 2".into()),
        ]),
        at(1),
    );
    assert_eq!(m.main, Some(11));
    assert_eq!(
        acts,
        vec![Action::Relay(vec!["READY=1".into(), "STATUS=gen 2".into()])]
    );
    // The old worker's exit is not the service's.
    assert_eq!(m.step(Event::Exited { pid: 10, status: 0 }, at(2)), vec![]);
    assert_eq!(m.phase, Phase::Running);
    // A take-back names the old worker again.
    m.step(notified(vec![Line::MainPid(10)]), at(3));
    assert_eq!(m.main, Some(10));
}

#[test]
fn only_the_main_worker_speaks_for_the_service() {
    let mut m = running();
    let said = |from: i32, lines: Vec<Line>| Event::Notified {
        from: Some(from),
        lines,
    };
    // A successor that took over after its parent died says STOPPING when stopped: not ours.
    assert_eq!(
        m.step(said(11, vec![Line::Relay("STOPPING=1".into())]), at(1)),
        vec![]
    );
    assert_eq!(m.step(said(11, vec![Line::Ready]), at(1)), vec![]);
    assert_eq!(m.main, Some(10));
    // The main worker hands over: its datagram names the successor and says READY.
    let acts = m.step(said(10, vec![Line::MainPid(11), Line::Ready]), at(2));
    assert_eq!(acts, vec![Action::Relay(vec!["READY=1".into()])]);
    assert_eq!(m.main, Some(11));
    // The old one takes the service back (its successor died): it names itself, and speaks.
    let acts = m.step(said(10, vec![Line::MainPid(10), Line::Ready]), at(3));
    assert_eq!(acts, vec![Action::Relay(vec!["READY=1".into()])]);
    assert_eq!(m.main, Some(10));
    // Another worker naming a new main worker is followed, but says nothing else.
    assert_eq!(
        m.step(said(12, vec![Line::MainPid(13), Line::Ready]), at(4)),
        vec![]
    );
    assert_eq!(m.main, Some(13));
}

#[test]
fn barrier_and_store_lines_stay_here() {
    let mut m = running();
    assert_eq!(m.step(notified(vec![Line::Drop, Line::Drop]), at(1)), vec![]);
}

#[test]
fn reload_goes_to_the_main_worker_once_ready() {
    let (mut m, _) = Machine::start();
    m.step(Event::Started(10), T0);
    assert_eq!(
        m.step(Event::Signal(Sig::Usr2), T0),
        vec![],
        "dropped before READY"
    );
    m.step(notified(vec![Line::Ready]), T0);
    assert_eq!(
        m.step(Event::Signal(Sig::Hup), T0),
        vec![Action::Forward(10, Sig::Hup)]
    );
    m.step(notified(vec![Line::MainPid(11)]), T0);
    assert_eq!(
        m.step(Event::Signal(Sig::Usr2), T0),
        vec![Action::Forward(11, Sig::Usr2)]
    );
}

#[test]
fn a_reload_during_a_handoff_is_held_for_the_worker_that_serves_after_it() {
    let mut m = running();
    assert_eq!(
        m.step(Event::Signal(Sig::Usr2), at(1)),
        vec![Action::Forward(10, Sig::Usr2)]
    );
    m.step(
        notified(vec![
            Line::Relay("RELOADING=1".into()),
            Line::Relay("MONOTONIC_USEC=1".into()),
        ]),
        at(1),
    );
    // Worker 10 is handing over: the second signal waits.
    assert_eq!(m.step(Event::Signal(Sig::Usr2), at(1)), vec![]);
    let acts = m.step(notified(vec![Line::MainPid(11), Line::Ready]), at(2));
    assert_eq!(
        acts,
        vec![
            Action::Relay(vec!["READY=1".into()]),
            Action::Forward(11, Sig::Usr2)
        ]
    );
    // Once passed on, it is not passed again.
    m.step(notified(vec![Line::Relay("RELOADING=1".into())]), at(3));
    assert_eq!(
        m.step(notified(vec![Line::MainPid(12), Line::Ready]), at(3)),
        vec![Action::Relay(vec!["READY=1".into()])]
    );
    assert_eq!(
        m.step(Event::Signal(Sig::Hup), at(4)),
        vec![Action::Forward(12, Sig::Hup)]
    );
}

#[test]
fn stop_goes_to_the_main_worker_and_exits_with_its_status_when_all_are_gone() {
    let mut m = running();
    m.step(notified(vec![Line::MainPid(11)]), at(1));
    assert_eq!(
        m.step(Event::Signal(Sig::Term), at(2)),
        vec![Action::Forward(11, Sig::Term)]
    );
    assert_eq!(m.phase, Phase::Stopping);
    assert_eq!(
        m.step(Event::Signal(Sig::Usr2), at(2)),
        vec![],
        "no reload while stopping"
    );
    assert_eq!(
        m.step(Event::Exited { pid: 11, status: 0 }, at(3)),
        vec![Action::Grace(STOP_GRACE)]
    );
    // The old worker (10) still drains: no exit yet.
    assert_eq!(m.step(Event::Exited { pid: 10, status: 0 }, at(3)), vec![]);
    assert_eq!(m.step(Event::NoChildren, at(3)), vec![Action::Exit(0)]);
    assert_eq!(m.phase, Phase::Exited);
}

#[test]
fn stop_exits_with_a_failed_workers_status() {
    let mut m = running();
    m.step(Event::Signal(Sig::Int), at(1));
    m.step(Event::Exited { pid: 10, status: 1 }, at(2));
    assert_eq!(m.step(Event::NoChildren, at(2)), vec![Action::Exit(1)]);
}

#[test]
fn stop_gives_up_on_leftovers_after_the_grace() {
    let mut m = running();
    m.step(Event::Signal(Sig::Term), at(1));
    m.step(Event::Exited { pid: 10, status: 0 }, at(2));
    assert_eq!(m.step(Event::GraceDone, at(40)), vec![Action::Exit(0)]);
}

#[test]
fn a_worker_that_never_got_ready_ends_the_supervisor_with_its_status() {
    let (mut m, _) = Machine::start();
    m.step(Event::Started(10), T0);
    assert_eq!(
        m.step(Event::Exited { pid: 10, status: 78 }, at(1)),
        vec![Action::Grace(STOP_GRACE)]
    );
    assert_eq!(m.step(Event::NoChildren, at(1)), vec![Action::Exit(78)]);
}

#[test]
fn a_crash_after_ready_restarts_with_a_growing_backoff() {
    let mut m = running();
    let acts = m.step(Event::Exited { pid: 10, status: 137 }, at(1));
    assert_eq!(m.phase, Phase::Restarting);
    assert!(matches!(&acts[0], Action::Relay(l) if l[0].starts_with("STATUS=worker 10 failed (status 137)")));
    assert_eq!(
        acts[1],
        Action::StopOthers,
        "a successor the dead worker started must not serve on"
    );
    assert_eq!(acts[2], Action::Backoff(BACKOFF_MIN));
    assert_eq!(
        m.step(Event::NoChildren, at(1)),
        vec![],
        "no exit while restarting"
    );
    assert_eq!(m.step(Event::BackoffDone, at(1)), vec![Action::Spawn]);
    m.step(Event::Started(12), at(1));
    // It dies again before READY: twice the delay.
    let acts = m.step(Event::Exited { pid: 12, status: 1 }, at(2));
    assert_eq!(acts[2], Action::Backoff(BACKOFF_MIN * 2));
    assert_eq!(m.step(Event::BackoffDone, at(2)), vec![Action::Spawn]);
    m.step(Event::Started(13), at(2));
    m.step(notified(vec![Line::Ready]), at(2));
    assert_eq!(m.phase, Phase::Running);
    assert_eq!(
        m.step(Event::Signal(Sig::Usr2), at(2)),
        vec![Action::Forward(13, Sig::Usr2)]
    );
}

#[test]
fn the_backoff_is_capped_and_starts_over_after_a_stable_worker() {
    assert_eq!(Machine::backoff(1), BACKOFF_MIN);
    assert_eq!(Machine::backoff(4), BACKOFF_MIN * 8);
    assert_eq!(Machine::backoff(40), BACKOFF_MAX);
    let mut m = running();
    for i in 0..3 {
        m.step(
            Event::Exited {
                pid: 10 + i,
                status: 1,
            },
            at(1),
        );
        m.step(Event::BackoffDone, at(1));
        m.step(Event::Started(11 + i), at(1));
    }
    m.step(notified(vec![Line::Ready]), at(1));
    // Up for longer than STABLE_AFTER: the next crash starts over at the minimum.
    let acts = m.step(Event::Exited { pid: 13, status: 1 }, at(1) + STABLE_AFTER);
    assert_eq!(acts[2], Action::Backoff(BACKOFF_MIN));
}

#[test]
fn a_stop_during_the_backoff_exits_without_a_restart() {
    let mut m = running();
    m.step(Event::Exited { pid: 10, status: 1 }, at(1));
    assert_eq!(
        m.step(Event::Signal(Sig::Term), at(1)),
        vec![Action::Grace(STOP_GRACE)]
    );
    assert_eq!(
        m.step(Event::BackoffDone, at(1)),
        vec![],
        "no restart after a stop"
    );
    assert_eq!(m.step(Event::NoChildren, at(1)), vec![Action::Exit(0)]);
}

#[test]
fn a_main_worker_that_exits_0_on_its_own_ends_the_service() {
    let mut m = running();
    assert_eq!(
        m.step(Event::Exited { pid: 10, status: 0 }, at(1)),
        vec![Action::Grace(STOP_GRACE)]
    );
    assert_eq!(m.step(Event::NoChildren, at(1)), vec![Action::Exit(0)]);
}

#[test]
fn a_worker_that_cannot_be_started_at_first_ends_the_supervisor() {
    let (mut m, _) = Machine::start();
    m.step(Event::SpawnFailed("no such file".into()), T0);
    assert_eq!(m.step(Event::NoChildren, T0), vec![Action::Exit(127)]);
}

#[test]
fn nothing_happens_after_exit() {
    let (mut m, _) = Machine::start();
    m.step(Event::SpawnFailed("x".into()), T0);
    m.step(Event::NoChildren, T0);
    assert_eq!(m.step(Event::Signal(Sig::Term), T0), vec![]);
    assert_eq!(m.step(Event::BackoffDone, T0), vec![]);
}
