//! The run loop: turns the world (signals, control requests, the handoff channel, the
//! successor's exit, timers) into [`lifecycle`] events, and performs the actions that
//! [`lifecycle::step`] returns. This is the only place that acts on them. The events come
//! from `events.rs`; the bigger actions are in `actions.rs`.

mod actions;
mod events;

use std::collections::HashMap;
use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::channel::Channel;
use crate::control;
use crate::drain::Drain;
use crate::fault::{self, Step};
use crate::handle::{Handles, StateProvider, StateSlot, Status};
use crate::handover;
use crate::lifecycle::{self, Action, Event, Exit, State, WaiterId};
use crate::listeners::Listener;
use crate::notify;
use crate::options::{Options, RunError};
use crate::pidfile;
use crate::server::{self, Routes, Server};
use crate::successor::{self, HandoffError, Successor};
use crate::wire::ControlAnswer;
pub(crate) use events::Signals;

/// What the run loop starts with.
pub(crate) struct Start {
    pub generation: u64,
    /// The channel to our predecessor, when this process is a successor.
    pub channel: Option<Channel>,
    /// The control socket, open before the first connection was served.
    pub control: control::Control,
    pub opts: Options,
    pub routes: Routes,
    pub listeners: Arc<Vec<Listener>>,
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    pub drain: Drain,
    pub server: Server,
    pub signals: Option<Signals>,
    pub handles: Handles,
    pub save_state: Option<StateProvider>,
    /// Kept naming the primary (see `pidfile`).
    pub pid_file: Option<PathBuf>,
    /// Serving the one connection of an `Accept=yes` socket unit: no handoff.
    pub one_connection: bool,
}

/// Runs the lifecycle until it says exit.
pub(crate) async fn run(start: Start) -> Result<Exit, RunError> {
    let Start {
        generation,
        channel,
        control,
        opts,
        routes,
        listeners,
        exe,
        args,
        drain,
        server,
        signals,
        handles,
        save_state,
        pid_file,
        one_connection,
    } = start;
    let Handles {
        requests_tx: _,
        requests: ctl_rx,
        stop,
        status: status_tx,
        state: state_slot,
    } = handles;
    let (events_tx, events) = mpsc::unbounded_channel();
    let status = format!("serving, generation {generation}, pid {}", std::process::id());
    let (mut state, first) = State::start(generation, channel.is_some(), status);
    if one_connection {
        state.serve_one_connection();
    }
    if !opts.shutdown_delay.is_zero() {
        state.lame_duck_before_stop();
    }
    let mut d = Driver {
        state,
        generation,
        opts,
        routes,
        listeners: Some(listeners),
        exe,
        args,
        drain,
        server,
        control,
        ctl_rx,
        events,
        watchdog: None,
        running: None,
        cancel: watch::Sender::new(false),
        handed: None,
        awaiting_ack: false,
        ack_timer: None,
        drain_wait: None,
        waiters: HashMap::new(),
        next_waiter: 0,
        channel_task: None,
        stop: stop.subscribe(),
        stop_asked: false,
        idle: None,
        lame_duck: None,
        status: status_tx,
        save_state,
        pid_file,
    };
    if let Some(ch) = channel {
        d.follow_predecessor(ch, events_tx, state_slot).await;
    } else {
        info!(generation, listeners = d.listeners().len(), "ready");
    }
    for a in first {
        d.perform(a).await?;
    }
    d.run(signals).await
}

type DrainWait = Pin<Box<dyn Future<Output = usize> + Send>>;

/// Everything the run loop owns; `perform` is the only place that acts on the world.
pub(crate) struct Driver {
    state: State,
    generation: u64,
    opts: Options,
    routes: Routes,
    /// The listening sockets, passed to each successor; released at a stop.
    listeners: Option<Arc<Vec<Listener>>>,
    exe: PathBuf,
    args: Vec<OsString>,
    drain: Drain,
    server: Server,
    control: control::Control,
    ctl_rx: mpsc::Receiver<control::Request>,
    /// Events from background tasks (the predecessor's channel).
    events: mpsc::UnboundedReceiver<Event>,
    watchdog: Option<JoinHandle<()>>,
    /// The successor being started.
    running: Option<JoinHandle<Result<Successor, HandoffError>>>,
    /// Set to cancel the successor being started.
    cancel: watch::Sender<bool>,
    /// The successor that took over, until it exits or we do.
    handed: Option<Successor>,
    awaiting_ack: bool,
    ack_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    drain_wait: Option<DrainWait>,
    waiters: HashMap<WaiterId, oneshot::Sender<String>>,
    next_waiter: WaiterId,
    channel_task: Option<JoinHandle<()>>,
    /// [`crate::Handle::stop`] was called (once seen, it is an event once).
    stop: watch::Receiver<bool>,
    stop_asked: bool,
    /// The idle timer of `Options::idle_exit`, while the lifecycle lets it run.
    idle: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The lame duck's timer (`Options::shutdown_delay`), once a stop started it.
    lame_duck: Option<Pin<Box<tokio::time::Sleep>>>,
    /// What [`crate::Handle`]s see.
    status: watch::Sender<Status>,
    /// The app's state for the next process.
    save_state: Option<StateProvider>,
    /// Kept naming the primary (see `pidfile`).
    pid_file: Option<PathBuf>,
}

impl Driver {
    fn listeners(&self) -> &[Listener] {
        self.listeners.as_deref().map(Vec::as_slice).unwrap_or(&[])
    }

    /// A successor: tells the predecessor it is ready, and from then on follows the channel
    /// (what the predecessor hands over, and its word that we are primary) in a task.
    async fn follow_predecessor(
        &mut self,
        ch: Channel,
        events: mpsc::UnboundedSender<Event>,
        state: StateSlot,
    ) {
        fault::point(Step::Serving);
        match successor::announce_ready(&ch).await {
            Ok(()) => info!(
                generation = self.generation,
                listeners = self.listeners().len(),
                "ready; waiting for the predecessor to hand over"
            ),
            // The predecessor is gone (its end of the channel is closed): the channel task
            // sees EOF at once and this process carries on as the primary.
            Err(e) => warn!(error = %e, "cannot tell the predecessor we are ready"),
        }
        fault::point(Step::ReadyWritten);
        self.channel_task = Some(tokio::spawn(handover::predecessor_channel(
            ch,
            events,
            self.server.clone(),
            state,
        )));
    }

    async fn run(mut self, mut sig: Option<Signals>) -> Result<Exit, RunError> {
        let mut exit = None;
        self.publish_status();
        while exit.is_none() {
            self.arm_idle_timer();
            let Some(event) = self.next_event(&mut sig).await else {
                continue;
            };
            exit = self.step(event).await?;
            self.publish_status();
        }
        let exit = exit.expect("loop ends with an exit");
        self.finish(exit).await;
        Ok(exit)
    }

    /// Steps the lifecycle with `event` and performs its actions; the exit, when one says so.
    async fn step(&mut self, event: Event) -> Result<Option<Exit>, RunError> {
        // A successor that died since the last look is noticed before anything else (its
        // exit may not have woken the loop yet), so that a handed-over process never exits
        // while nobody serves.
        let mut events = vec![event];
        if matches!(self.state.phase, lifecycle::Phase::HandedOver(_))
            && let Some(mut s) = self.handed.take_if(|s| s.child.has_exited())
        {
            let (clean, status) = s.child.reap().await;
            events.insert(0, Event::SuccessorExited { clean, status });
        }
        let mut exit = None;
        for event in events {
            actions::count_outcome(&self.state.phase, &event);
            for action in lifecycle::step(&mut self.state, event) {
                if let Action::Exit(e) = action {
                    exit = Some(e);
                }
                self.perform(action).await?;
            }
        }
        Ok(exit)
    }

    /// What is left to do before exiting: the counts logged, the listeners closed, every
    /// control client answered, the control socket and the pid file done with.
    async fn finish(mut self, exit: Exit) {
        server::log_moves(&self.server);
        self.server.close_listeners().await;
        // Control requests that raced in: the successor (if any) will take them, so ask the
        // client to retry; then let every answer be written before exiting.
        self.ctl_rx.close();
        while let Ok(req) = self.ctl_rx.try_recv() {
            let answer = match exit {
                Exit::HandedOver { successor } => {
                    ControlAnswer::Retry(format!("handed over to pid {successor}"))
                }
                Exit::Stopped | Exit::Idle => ControlAnswer::Failed(lifecycle::STOPPING.into()),
            };
            let _ = req.reply.send(answer.to_string());
        }
        for (_, w) in self.waiters.drain() {
            let _ = w.send(ControlAnswer::Failed(lifecycle::STOPPING.into()).to_string());
        }
        self.control
            .finish(!matches!(exit, Exit::HandedOver { .. }))
            .await;
        // Any exit but a handover is the service's last: the file would name nobody.
        if !matches!(exit, Exit::HandedOver { .. })
            && let Some(path) = &self.pid_file
        {
            pidfile::remove_if_names(path, std::process::id());
        }
        if let Some(t) = self.channel_task.take() {
            t.abort();
        }
    }

    /// Runs the idle timer while the lifecycle lets it (`Options::idle_exit` set); the timer
    /// itself counts only while no connection is open ([`crate::drain::Drain::idle_for`]).
    fn arm_idle_timer(&mut self) {
        match self.opts.idle_exit {
            Some(idle) if self.state.idle_timer_armed() => {
                if self.idle.is_none() {
                    let drain = self.drain.clone();
                    self.idle = Some(Box::pin(async move { drain.idle_for(idle).await }));
                }
            }
            _ => self.idle = None,
        }
    }

    fn publish_status(&self) {
        use lifecycle::Phase as P;
        let s = match &self.state.phase {
            P::Waiting => Status::Starting,
            P::Serving => Status::Primary,
            P::HandingOver => Status::HandingOver,
            P::LameDuck => Status::LameDuck,
            P::HandedOver(_) => Status::Draining,
            P::Stopping => Status::Stopping,
            P::Exited(_) => Status::Exited,
        };
        let mut was = s;
        self.status.send_if_modified(|old| {
            was = std::mem::replace(old, s);
            was != s
        });
        // Whoever becomes the service (first start, handed over, or taken back) says so in the
        // pid file; a failed handoff (HandingOver → Primary) changes nothing there.
        if s == Status::Primary && !was.is_primary() {
            crate::metrics::region::became_primary(self.generation);
            if let Some(path) = &self.pid_file {
                pidfile::write(path, std::process::id());
            }
        }
    }

    async fn perform(&mut self, action: Action) -> Result<(), RunError> {
        match action {
            Action::NotifyReady(status) => notify::ready(&status),
            Action::NotifyReloading => {
                notify::reloading(&format!("handing over to generation {}", self.generation + 1));
                info!(generation = self.generation, "handoff started");
            }
            Action::NotifyStopping => {
                notify::stopping(&format!(
                    "stopping, draining {} connections",
                    self.drain.open_connections()
                ));
                info!(generation = self.generation, "stopping");
            }
            Action::StartWatchdog => self.watchdog = notify::start_watchdog(),
            Action::StopWatchdog => {
                if let Some(w) = self.watchdog.take() {
                    w.abort();
                }
            }
            Action::StopControl => self.control.stop(),
            Action::StartSuccessor => {
                crate::metrics::region::inc(crate::metrics::region::HANDOFFS_STARTED);
                self.start_successor()
            }
            Action::CancelSuccessor => self.cancel_successor().await,
            Action::HandOver => {
                if let Some(s) = self.handed.as_mut() {
                    let state = self.save_state.as_ref().map(|f| f());
                    handover::hand_over(s, self.generation, self.opts.handoff_timeout, state).await;
                    // Beside MAINPID=: the file names the successor before `reload` is answered.
                    if let Some(path) = &self.pid_file {
                        pidfile::write(path, s.pid() as u32);
                    }
                    self.awaiting_ack = true;
                }
            }
            Action::StopAccepting => {
                // An accept loop ends only at an await: a connection it accepted is counted in
                // the drain before its loop is gone.
                self.server.close_listeners().await;
                info!("stopped accepting");
                fault::point_with_peer(Step::IdleAcceptStopped, 0);
            }
            Action::StartLameDuck => self.start_lame_duck(),
            Action::StartDrain(to) => self.start_drain(to),
            Action::WaitDrain => {
                let open = self.drain.open_connections();
                let drain = self.drain.clone();
                let timeout = self.opts.drain_timeout;
                let successor = self.handed.as_ref().map(|s| s.pid() as u32);
                self.drain_wait = Some(Box::pin(async move {
                    let left = drain.wait(timeout).await;
                    crate::drain::log_outcome(open, left, timeout);
                    if left > 0
                        && let Some(pid) = successor
                    {
                        fault::point_with_peer(Step::DrainDeadline, pid);
                    }
                    left
                }));
            }
            Action::ArmAckTimer => {
                self.ack_timer = Some(Box::pin(tokio::time::sleep(self.opts.handoff_timeout)));
            }
            Action::Reply(id, answer) => {
                if let Some(w) = self.waiters.remove(&id) {
                    let _ = w.send(answer.to_string());
                }
            }
            Action::TakeBack { successor, status } => self.take_back(successor, &status)?,
            Action::LogReloadIgnored => warn!("reload ignored: {}", lifecycle::ONE_CONNECTION),
            Action::Exit(_) => {}
        }
        Ok(())
    }
}
