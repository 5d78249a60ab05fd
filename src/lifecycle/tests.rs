//! Unit tests of the lifecycle's transition function: no processes, no sockets.

use super::*;
use Action as A;
use Event as E;

fn primary() -> State {
    State::start(1, false, "serving".into()).0
}

fn run(state: &mut State, events: impl IntoIterator<Item = Event>) -> Vec<Action> {
    events.into_iter().flat_map(|e| step(state, e)).collect()
}

fn replies(actions: &[Action]) -> Vec<(WaiterId, ControlAnswer)> {
    actions
        .iter()
        .filter_map(|a| match a {
            A::Reply(w, ans) => Some((*w, ans.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_first_process_says_ready_and_pings_the_watchdog() {
    let (s, actions) = State::start(1, false, "serving".into());
    assert_eq!(s.phase, Phase::Serving);
    assert_eq!(actions, vec![A::NotifyReady("serving".into()), A::StartWatchdog]);
    let (s, actions) = State::start(2, true, "serving".into());
    assert_eq!(s.phase, Phase::Waiting);
    assert!(
        actions.is_empty(),
        "a successor says nothing to systemd: {actions:?}"
    );
}

#[test]
fn a_handoff_hands_over_drains_and_exits_after_ack() {
    let mut s = primary();
    let a = step(&mut s, E::Reload(Some(1)));
    assert_eq!(a, vec![A::NotifyReloading, A::StartSuccessor]);
    let a = step(&mut s, E::SuccessorReady { pid: 50 });
    assert_eq!(a[0], A::HandOver);
    assert!(a.contains(&A::StartDrain(DrainTo::Successor)));
    assert!(a.contains(&A::WaitDrain));
    assert_eq!(
        replies(&a),
        vec![(
            1,
            ControlAnswer::Ok {
                pid: 50,
                generation: 2
            }
        )]
    );
    assert!(
        step(&mut s, E::DrainDone { left: 0 }).is_empty(),
        "waits for the ack"
    );
    assert_eq!(
        step(&mut s, E::SuccessorAcked),
        vec![A::Exit(Exit::HandedOver { successor: 50 })]
    );
    assert!(matches!(s.phase, Phase::Exited(_)));
}

#[test]
fn stop_during_handoff_cancels_the_successor_first() {
    let mut s = primary();
    run(&mut s, [E::Reload(Some(7))]);
    let a = step(&mut s, E::Stop);
    assert_eq!(a[0], A::CancelSuccessor);
    assert_eq!(replies(&a), vec![(7, ControlAnswer::Failed(STOPPING.into()))]);
    assert!(a.contains(&A::NotifyStopping));
    assert!(a.contains(&A::StartDrain(DrainTo::Store)));
    assert_eq!(s.phase, Phase::Stopping);
    // A readiness that raced in is ignored: nothing is handed over.
    assert!(step(&mut s, E::SuccessorReady { pid: 9 }).is_empty());
    assert_eq!(
        step(&mut s, E::DrainDone { left: 0 }),
        vec![A::Exit(Exit::Stopped)]
    );
}

#[test]
fn reloads_during_a_handoff_are_coalesced() {
    let mut s = primary();
    let a = run(&mut s, [E::Reload(Some(1)), E::Reload(None), E::Reload(Some(2))]);
    assert_eq!(a.iter().filter(|a| **a == A::StartSuccessor).count(), 1);
    let a = step(
        &mut s,
        E::SuccessorFailed {
            reason: "boom".into(),
        },
    );
    assert_eq!(
        replies(&a),
        vec![
            (1, ControlAnswer::Failed("boom".into())),
            (2, ControlAnswer::Failed("boom".into()))
        ]
    );
    assert!(a.contains(&A::NotifyReady("handoff failed: boom".into())));
    assert_eq!(s.phase, Phase::Serving);
    // The next reload starts a new handoff.
    assert_eq!(
        step(&mut s, E::Reload(None)),
        vec![A::NotifyReloading, A::StartSuccessor]
    );
}

#[test]
fn a_reload_before_primary_is_deferred() {
    let (mut s, _) = State::start(2, true, String::new());
    assert!(step(&mut s, E::Reload(Some(3))).is_empty());
    let a = step(&mut s, E::BecamePrimary { handed_over: true });
    assert_eq!(a, vec![A::StartWatchdog, A::NotifyReloading, A::StartSuccessor]);
    let a = step(&mut s, E::SuccessorReady { pid: 77 });
    assert_eq!(
        replies(&a),
        vec![(
            3,
            ControlAnswer::Ok {
                pid: 77,
                generation: 3
            }
        )]
    );
    // Our predecessor has not closed the channel yet: the drain waits until it has.
    assert!(!a.contains(&A::WaitDrain));
    assert_eq!(step(&mut s, E::PredecessorDone), vec![A::WaitDrain]);
}

#[test]
fn a_successor_dying_after_the_handover_is_taken_back() {
    let mut s = primary();
    run(
        &mut s,
        [E::Reload(None), E::SuccessorReady { pid: 5 }, E::SuccessorAcked],
    );
    let a = step(
        &mut s,
        E::SuccessorExited {
            clean: false,
            status: "killed by SIGKILL".into(),
        },
    );
    assert_eq!(
        a,
        vec![A::TakeBack {
            successor: 5,
            status: "killed by SIGKILL".into()
        }]
    );
    assert_eq!(s.phase, Phase::Serving);
    // And the service can hand over again.
    assert_eq!(
        step(&mut s, E::Reload(None)),
        vec![A::NotifyReloading, A::StartSuccessor]
    );
}

#[test]
fn a_successor_exiting_cleanly_is_no_reason_to_take_back() {
    let mut s = primary();
    run(&mut s, [E::Reload(None), E::SuccessorReady { pid: 5 }]);
    let a = step(
        &mut s,
        E::SuccessorExited {
            clean: true,
            status: "exit status 0".into(),
        },
    );
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(
        step(&mut s, E::DrainDone { left: 0 }),
        vec![A::Exit(Exit::HandedOver { successor: 5 })]
    );
}

#[test]
fn a_request_after_the_handover_is_told_to_retry() {
    let mut s = primary();
    run(&mut s, [E::Reload(None), E::SuccessorReady { pid: 5 }]);
    assert_eq!(
        step(&mut s, E::Reload(Some(4))),
        vec![A::Reply(4, ControlAnswer::Retry("handed over to pid 5".into()))]
    );
    // A signal asking for a reload is not the old process's business any more.
    assert!(step(&mut s, E::Reload(None)).is_empty());
}

#[test]
fn a_stop_after_the_handover_changes_nothing() {
    let mut s = primary();
    run(&mut s, [E::Reload(None), E::SuccessorReady { pid: 5 }]);
    let before = s.phase.clone();
    assert!(step(&mut s, E::Stop).is_empty());
    assert_eq!(s.phase, before, "still draining, successor untouched");
    assert!(step(&mut s, E::DrainDone { left: 0 }).is_empty());
    assert_eq!(
        step(&mut s, E::AckTimedOut),
        vec![A::Exit(Exit::HandedOver { successor: 5 })]
    );
}

#[test]
fn a_waiting_successor_that_is_stopped_closes_its_connections_and_says_nothing() {
    let (mut s, _) = State::start(2, true, String::new());
    step(&mut s, E::Reload(Some(1)));
    let a = step(&mut s, E::Stop);
    assert!(
        !a.contains(&A::NotifyStopping),
        "only the primary may send STOPPING=1"
    );
    assert!(a.contains(&A::StartDrain(DrainTo::Close)));
    assert_eq!(replies(&a), vec![(1, ControlAnswer::Failed(STOPPING.into()))]);
    // The predecessor going away after that does not make it primary.
    assert!(step(&mut s, E::BecamePrimary { handed_over: false }).is_empty());
    assert_eq!(
        step(&mut s, E::DrainDone { left: 0 }),
        vec![A::Exit(Exit::Stopped)]
    );
}

#[test]
fn requests_while_stopping_fail_and_nothing_happens_after_exit() {
    let mut s = primary();
    step(&mut s, E::Stop);
    assert_eq!(
        step(&mut s, E::Reload(Some(9))),
        vec![A::Reply(9, ControlAnswer::Failed(STOPPING.into()))]
    );
    assert!(step(&mut s, E::Stop).is_empty());
    step(&mut s, E::DrainDone { left: 3 });
    assert!(matches!(s.phase, Phase::Exited(_)));
    for e in [E::Stop, E::Reload(Some(1)), E::SuccessorReady { pid: 1 }] {
        assert!(step(&mut s, e).is_empty());
    }
}

#[test]
fn idle_exit_stops_accepting_before_anything_else_and_exits_idle() {
    let mut s = primary();
    assert!(s.idle_timer_armed());
    let a = step(&mut s, E::Idle);
    assert_eq!(
        a[0],
        A::StopAccepting,
        "accepting stops first, so later connections wait in the backlog: {a:?}"
    );
    assert!(a.contains(&A::NotifyStopping));
    // What raced in is closed, not stored: nothing would start a process for it.
    assert!(a.contains(&A::StartDrain(DrainTo::Close)), "{a:?}");
    assert!(!a.contains(&A::StartDrain(DrainTo::Store)), "{a:?}");
    assert!(a.contains(&A::WaitDrain));
    assert_eq!(s.phase, Phase::Stopping);
    assert!(!s.idle_timer_armed());
    assert_eq!(step(&mut s, E::DrainDone { left: 0 }), vec![A::Exit(Exit::Idle)]);
    assert_eq!(s.phase, Phase::Exited(Exit::Idle));
}

#[test]
fn after_the_idle_decision_nothing_accepts_or_hands_over_again() {
    let mut s = primary();
    run(&mut s, [E::Idle]);
    let a = run(&mut s, [E::Reload(None), E::Reload(Some(3)), E::Stop, E::Idle]);
    assert_eq!(replies(&a), vec![(3, ControlAnswer::Failed(STOPPING.into()))]);
    assert_eq!(
        a.len(),
        1,
        "no successor, no second drain, no second STOPPING: {a:?}"
    );
}

#[test]
fn idle_exit_never_fires_during_a_handoff() {
    let mut s = primary();
    run(&mut s, [E::Reload(None)]);
    assert!(!s.idle_timer_armed());
    assert!(step(&mut s, E::Idle).is_empty());
    assert_eq!(s.phase, Phase::HandingOver);
    run(&mut s, [E::SuccessorReady { pid: 5 }]);
    assert!(!s.idle_timer_armed());
    assert!(
        step(&mut s, E::Idle).is_empty(),
        "a handed-over process never says STOPPING"
    );
    assert!(matches!(s.phase, Phase::HandedOver(_)));
    // A failed handoff serves again, and the timer may run again.
    let mut s = primary();
    run(
        &mut s,
        [E::Reload(None), E::SuccessorFailed { reason: "x".into() }],
    );
    assert!(s.idle_timer_armed());
}

#[test]
fn idle_exit_waits_in_a_successor_until_it_is_primary_and_the_predecessor_is_done() {
    let (mut s, _) = State::start(2, true, "serving".into());
    assert!(!s.idle_timer_armed());
    assert!(step(&mut s, E::Idle).is_empty());
    assert_eq!(s.phase, Phase::Waiting);
    run(&mut s, [E::BecamePrimary { handed_over: true }]);
    assert_eq!(s.phase, Phase::Serving);
    assert!(
        !s.idle_timer_armed(),
        "the predecessor may still pass connections"
    );
    assert!(step(&mut s, E::Idle).is_empty());
    run(&mut s, [E::PredecessorDone]);
    assert!(s.idle_timer_armed());
    assert_eq!(step(&mut s, E::Idle)[0], A::StopAccepting);
}

#[test]
fn a_stop_still_exits_stopped() {
    let mut s = primary();
    run(&mut s, [E::Stop]);
    assert_eq!(
        step(&mut s, E::DrainDone { left: 0 }),
        vec![A::Exit(Exit::Stopped)]
    );
}

#[test]
fn an_accept_yes_process_ignores_reloads_and_exits_when_its_connection_closes() {
    let mut s = primary();
    s.serve_one_connection();
    let a = run(&mut s, [E::Reload(None), E::Reload(Some(4))]);
    assert!(!a.contains(&A::StartSuccessor), "nothing to hand over: {a:?}");
    assert!(!a.contains(&A::NotifyReloading), "{a:?}");
    assert_eq!(
        replies(&a),
        vec![(4, ControlAnswer::Failed(ONE_CONNECTION.into()))]
    );
    assert_eq!(s.phase, Phase::Serving);
    // Its connection closed: the idle rule (with no idle time) ends it.
    assert_eq!(step(&mut s, E::Idle)[0], A::StopAccepting);
    assert_eq!(step(&mut s, E::DrainDone { left: 0 }), vec![A::Exit(Exit::Idle)]);
}

fn lame_duck_primary() -> State {
    let mut s = primary();
    s.lame_duck_before_stop();
    s
}

#[test]
fn with_a_shutdown_delay_a_stop_goes_lame_duck_first_and_drains_only_after_it() {
    let mut s = lame_duck_primary();
    assert_eq!(step(&mut s, E::Stop), vec![A::StartLameDuck]);
    assert_eq!(s.phase, Phase::LameDuck);
    // Nothing else happens meanwhile: an idle timer that fires, or a stray event, is ignored.
    assert!(run(&mut s, [E::Idle, E::DrainDone { left: 0 }]).is_empty());
    let a = step(&mut s, E::LameDuckOver);
    assert_eq!(
        a,
        vec![
            A::NotifyStopping,
            A::StopControl,
            A::StopWatchdog,
            A::StartDrain(DrainTo::Store),
            A::WaitDrain
        ]
    );
    assert_eq!(
        step(&mut s, E::DrainDone { left: 0 }),
        vec![A::Exit(Exit::Stopped)]
    );
}

#[test]
fn a_lame_duck_refuses_reloads() {
    let mut s = lame_duck_primary();
    step(&mut s, E::Stop);
    let a = step(&mut s, E::Reload(Some(4)));
    assert_eq!(replies(&a), vec![(4, ControlAnswer::Failed(STOPPING.into()))]);
    assert!(step(&mut s, E::Reload(None)).is_empty(), "a signal: nothing");
    assert_eq!(s.phase, Phase::LameDuck);
}

#[test]
fn a_second_stop_cuts_the_lame_duck_short() {
    let mut s = lame_duck_primary();
    step(&mut s, E::Stop);
    let a = step(&mut s, E::Stop);
    assert!(a.contains(&A::StartDrain(DrainTo::Store)), "{a:?}");
    assert_eq!(s.phase, Phase::Stopping);
    assert!(step(&mut s, E::LameDuckOver).is_empty(), "the timer, late");
}

#[test]
fn a_stop_during_a_handoff_cancels_the_successor_then_goes_lame_duck() {
    let mut s = lame_duck_primary();
    step(&mut s, E::Reload(Some(1)));
    let a = step(&mut s, E::Stop);
    assert_eq!(a[0], A::CancelSuccessor);
    assert_eq!(a.last(), Some(&A::StartLameDuck));
    assert_eq!(replies(&a), vec![(1, ControlAnswer::Failed(STOPPING.into()))]);
    assert_eq!(s.phase, Phase::LameDuck);
}

#[test]
fn a_reload_never_goes_lame_duck() {
    let mut s = lame_duck_primary();
    let a = run(
        &mut s,
        [
            E::Reload(None),
            E::SuccessorReady { pid: 9 },
            E::Stop,
            E::SuccessorAcked,
            E::DrainDone { left: 0 },
        ],
    );
    assert!(!a.contains(&A::StartLameDuck), "{a:?}");
    assert_eq!(s.phase, Phase::Exited(Exit::HandedOver { successor: 9 }));
}

#[test]
fn no_lame_duck_for_a_successor_not_yet_primary_nor_for_one_connection() {
    let mut s = State::start(2, true, "serving".into()).0;
    s.lame_duck_before_stop();
    assert!(!step(&mut s, E::Stop).contains(&A::StartLameDuck));
    let mut s = lame_duck_primary();
    s.serve_one_connection();
    assert!(!step(&mut s, E::Stop).contains(&A::StartLameDuck));
    assert_eq!(s.phase, Phase::Stopping);
}

#[test]
fn without_a_shutdown_delay_a_stop_drains_at_once() {
    let mut s = primary();
    let a = step(&mut s, E::Stop);
    assert!(!a.contains(&A::StartLameDuck));
    assert!(a.contains(&A::StartDrain(DrainTo::Store)));
    assert!(step(&mut s, E::LameDuckOver).is_empty());
}
