//! The shared region: one page of `u64` slots in a memfd mapped `MAP_SHARED`, a header (magic,
//! layout version, slot count) and then the counters. The first process creates it; every
//! successor maps the same memfd (`HEIRD_METRICS_FD`), and the fd store keeps it across a
//! `systemctl restart` ([`NAME`]), so all processes of the service add to the same atomics and
//! a counter never goes down, whichever process answers a scrape.
//!
//! One region per process ([`region`]), set up by [`init`] before serving; counting before that
//! (or where no memfd can be made) goes to a region of this process only.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::sys::SharedSlots;

/// The fd-store name of the region's memfd.
pub const NAME: &str = crate::fdstore::METRICS_NAME;
/// Names the inherited fd (the region's memfd) that a predecessor passes to its successor.
pub const FD_VAR: &str = "HEIRD_METRICS_FD";

/// `heirdmet`, little-endian: the region's first slot.
pub const MAGIC: u64 = u64::from_le_bytes(*b"heirdmet");
/// The layout below; a region of another version is not used (fresh counters instead).
pub const VERSION: u64 = 1;
/// Slots in the region: one page.
pub const SLOTS: usize = 512;

const H_MAGIC: usize = 0;
const H_VERSION: usize = 1;
const H_SLOTS: usize = 2;

/// HTTP requests routed to the app.
pub const REQUESTS: usize = 8;
/// Handoffs started (a successor spawned).
pub const HANDOFFS_STARTED: usize = 9;
/// Handoffs whose successor became primary.
pub const HANDOFFS_SUCCEEDED: usize = 10;
/// Handoffs whose successor failed (the old process served on).
pub const HANDOFFS_FAILED: usize = 11;
/// Keep-alive connections moved to a successor or into the fd store.
pub const CONNECTIONS_MOVED: usize = 12;
/// WebSockets moved to a successor or into the fd store.
pub const WEBSOCKETS_MOVED: usize = 13;
/// The primary's generation.
pub const GENERATION: usize = 14;
/// When the primary process started, in milliseconds since the Unix epoch.
pub const PRIMARY_START_MS: usize = 15;
/// The drains' durations added up, in microseconds.
pub const DRAIN_MICROS: usize = 16;
/// Drains per duration bucket ([`DRAIN_BOUNDS`], then one for longer ones).
pub const DRAIN_BUCKETS: usize = 24;
/// Upper bounds of the drain-duration buckets, in seconds.
pub const DRAIN_BOUNDS: [f64; 9] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
/// Open connections, one slot per generation modulo [`OPEN_SLOTS`]: each process adds to and
/// takes from its own, so a process that died (its successor's, taken back; everyone's at a
/// restart) can be forgotten by zeroing its slot. Two processes are alive at once at most.
pub const OPEN: usize = 40;
/// How many [`OPEN`] slots.
pub const OPEN_SLOTS: usize = 8;

/// Where the region came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Made by this process.
    Fresh,
    /// Mapped from the predecessor's memfd.
    Predecessor,
    /// Mapped from the memfd in systemd's fd store (a restart).
    FdStore,
    /// Not shared: no memfd could be made.
    Local,
}

/// The counters' memory and where it came from.
#[derive(Debug)]
pub struct Region {
    slots: Backing,
    origin: Origin,
}

#[derive(Debug)]
enum Backing {
    Shared { map: SharedSlots, fd: OwnedFd },
    Local(Box<[AtomicU64]>),
}

impl Region {
    /// A new memfd of [`SLOTS`] zeroed slots with the header written.
    pub fn create() -> io::Result<Region> {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let fd = memfd_create(c"heird-metrics", MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
        nix::unistd::ftruncate(&fd, (SLOTS * 8) as i64).map_err(io::Error::from)?;
        let map = SharedSlots::map(fd.as_fd(), SLOTS)?;
        let s = map.slots();
        s[H_VERSION].store(VERSION, Ordering::SeqCst);
        s[H_SLOTS].store(SLOTS as u64, Ordering::SeqCst);
        s[H_MAGIC].store(MAGIC, Ordering::SeqCst);
        Ok(Region {
            slots: Backing::Shared { map, fd },
            origin: Origin::Fresh,
        })
    }

    /// Maps a memfd another process made; an error when it is not a region of this layout
    /// (wrong size, magic or version).
    pub fn open(fd: OwnedFd, origin: Origin) -> Result<Region, String> {
        let size = nix::sys::stat::fstat(fd.as_fd())
            .map_err(|e| e.to_string())?
            .st_size;
        if size != (SLOTS * 8) as i64 {
            return Err(format!("{size} bytes, not {}", SLOTS * 8));
        }
        let map = SharedSlots::map(fd.as_fd(), SLOTS).map_err(|e| e.to_string())?;
        let s = map.slots();
        let (magic, version) = (
            s[H_MAGIC].load(Ordering::SeqCst),
            s[H_VERSION].load(Ordering::SeqCst),
        );
        if magic != MAGIC || version != VERSION || s[H_SLOTS].load(Ordering::SeqCst) != SLOTS as u64 {
            return Err(format!(
                "magic {magic:#018x}, layout version {version}: not heird's"
            ));
        }
        Ok(Region {
            slots: Backing::Shared { map, fd },
            origin,
        })
    }

    /// A fresh shared region, else (no memfd) one of this process only.
    pub fn fresh() -> Region {
        Region::create().unwrap_or_else(|e| {
            warn!(error = %e, "metrics: cannot make the shared memory; counting in this process only");
            Region {
                slots: Backing::Local((0..SLOTS).map(|_| AtomicU64::new(0)).collect()),
                origin: Origin::Local,
            }
        })
    }

    /// The slots, header included.
    pub fn slots(&self) -> &[AtomicU64] {
        match &self.slots {
            Backing::Shared { map, .. } => map.slots(),
            Backing::Local(s) => s,
        }
    }

    /// The memfd, to pass on or to store.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.slots {
            Backing::Shared { fd, .. } => Some(fd.as_fd()),
            Backing::Local(_) => None,
        }
    }

    /// Where it came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Slot `i`'s value.
    pub fn get(&self, i: usize) -> u64 {
        self.slots()[i].load(Ordering::SeqCst)
    }

    /// Open connections of every process: the [`OPEN`] slots added up (each wraps below 0
    /// while a connection a process took over closes in it).
    pub fn open_connections(&self) -> i64 {
        let s = self.slots();
        (OPEN..OPEN + OPEN_SLOTS)
            .map(|i| s[i].load(Ordering::SeqCst) as i64)
            .sum::<i64>()
            .max(0)
    }

    /// Adds a drain that took `d` to the histogram.
    pub fn observe_drain(&self, d: Duration) {
        let s = self.slots();
        let secs = d.as_secs_f64();
        let bucket = DRAIN_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DRAIN_BOUNDS.len());
        s[DRAIN_MICROS].fetch_add(d.as_micros() as u64, Ordering::SeqCst);
        s[DRAIN_BUCKETS + bucket].fetch_add(1, Ordering::SeqCst);
    }
}

static REGION: OnceLock<Region> = OnceLock::new();
/// This process's [`OPEN`] slot.
static OPEN_SLOT: AtomicUsize = AtomicUsize::new(OPEN);
/// This process's start, in milliseconds since the Unix epoch.
static STARTED_MS: AtomicU64 = AtomicU64::new(0);
/// The region is kept in systemd's fd store (it takes one of its slots).
static IN_FD_STORE: AtomicBool = AtomicBool::new(false);
/// The memfd the fd store gave back was refused: it is replaced there.
static STORED_REFUSED: AtomicBool = AtomicBool::new(false);

/// This process's region.
pub fn region() -> &'static Region {
    REGION.get_or_init(Region::fresh)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sets up this process's region (before serving): the predecessor's memfd, else the one in the
/// fd store (a restart), else a fresh one. One that is not a region of this layout is logged
/// and replaced by fresh counters.
pub fn init(inherited: Option<Result<OwnedFd, String>>, stored: Option<OwnedFd>, generation: u64) {
    STARTED_MS.store(now_ms(), Ordering::SeqCst);
    let candidate = match (inherited, stored) {
        (Some(Ok(fd)), _) => Some((fd, Origin::Predecessor)),
        (Some(Err(e)), _) => {
            warn!(error = %e, "metrics: the predecessor's counters cannot be taken; counting anew");
            None
        }
        (None, Some(fd)) => Some((fd, Origin::FdStore)),
        (None, None) => None,
    };
    let fresh_or_mapped = match candidate.map(|(fd, origin)| (Region::open(fd, origin), origin)) {
        Some((Ok(r), _)) => r,
        Some((Err(e), origin)) => {
            STORED_REFUSED.store(origin == Origin::FdStore, Ordering::SeqCst);
            warn!(error = %e, from = ?origin, "metrics: not a counters memfd; counting anew");
            Region::fresh()
        }
        None => Region::fresh(),
    };
    let slot = OPEN + (generation as usize % OPEN_SLOTS);
    OPEN_SLOT.store(slot, Ordering::SeqCst);
    let s = fresh_or_mapped.slots();
    if fresh_or_mapped.origin() == Origin::FdStore {
        // A restart: no other process is alive, whatever the slots say.
        for open in &s[OPEN..OPEN + OPEN_SLOTS] {
            open.store(0, Ordering::SeqCst);
        }
    }
    s[slot].store(0, Ordering::SeqCst);
    let origin = fresh_or_mapped.origin();
    if REGION.set(fresh_or_mapped).is_err() {
        warn!("metrics: this process set up its counters already; keeping those");
        return;
    }
    info!(from = ?origin, requests = region().get(REQUESTS), "metrics: counters ready");
}

/// The requests counter itself, for the request path to keep per connection (one atomic add
/// per request, no lookup).
pub fn requests_counter() -> &'static AtomicU64 {
    &region().slots()[REQUESTS]
}

/// Adds one to counter slot `i`.
pub fn inc(i: usize) {
    region().slots()[i].fetch_add(1, Ordering::SeqCst);
}

/// This process is primary from now on: its generation and start time are the service's.
pub fn became_primary(generation: u64) {
    let s = region().slots();
    s[GENERATION].store(generation, Ordering::SeqCst);
    s[PRIMARY_START_MS].store(STARTED_MS.load(Ordering::SeqCst), Ordering::SeqCst);
}

/// The process of `generation` died (a successor, taken back from): its open connections went
/// with it.
pub fn forget_open(generation: u64) {
    let slot = OPEN + (generation as usize % OPEN_SLOTS);
    if slot != OPEN_SLOT.load(Ordering::SeqCst) {
        region().slots()[slot].store(0, Ordering::SeqCst);
    }
}

/// Counts a connection as open in this process until dropped.
#[derive(Debug)]
pub struct OpenConn(usize);

impl OpenConn {
    /// One more open connection.
    pub fn new() -> OpenConn {
        let slot = OPEN_SLOT.load(Ordering::SeqCst);
        region().slots()[slot].fetch_add(1, Ordering::SeqCst);
        OpenConn(slot)
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        region().slots()[self.0].fetch_sub(1, Ordering::SeqCst);
    }
}

/// Keeps the region in systemd's fd store, when there is one, so that a `systemctl restart`
/// finds the counters again. A region that came from a predecessor or from the store is there
/// already.
pub fn keep_in_fd_store() {
    let r = region();
    let Some(fd) = r.fd() else { return };
    if !crate::fdstore::available() || IN_FD_STORE.swap(true, Ordering::SeqCst) {
        return;
    }
    if r.origin() == Origin::Fresh {
        if STORED_REFUSED.load(Ordering::SeqCst) {
            crate::fdstore::remove_quietly(NAME);
        }
        match crate::fdstore::store(NAME, fd) {
            Ok(()) => info!("metrics: counters kept in the fd store"),
            Err(e) => warn!(error = %e, "metrics: cannot keep the counters in the fd store"),
        }
    }
}

/// Whether the region takes a slot of the fd store.
pub fn in_fd_store() -> bool {
    IN_FD_STORE.load(Ordering::SeqCst)
}

/// The region's memfd for a successor (`None` when counting in this process only).
pub fn fd_for_successor() -> Option<BorrowedFd<'static>> {
    region().fd()
}
