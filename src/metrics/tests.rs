use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::registry::Registry;

use super::collect::Shared;
use super::region::{self, Origin, Region};

fn dup(r: &Region) -> OwnedFd {
    r.fd().unwrap().try_clone_to_owned().unwrap()
}

fn memfd(bytes: &[u8]) -> OwnedFd {
    let fd = nix::sys::memfd::memfd_create(c"test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes).unwrap();
    f.into()
}

#[test]
fn a_second_mapping_of_the_memfd_shares_the_counters() {
    let a = Region::create().unwrap();
    assert_eq!(a.origin(), Origin::Fresh);
    a.slots()[region::REQUESTS].fetch_add(3, Ordering::SeqCst);
    let b = Region::open(dup(&a), Origin::Predecessor).unwrap();
    assert_eq!(b.get(region::REQUESTS), 3);
    b.slots()[region::REQUESTS].fetch_add(1, Ordering::SeqCst);
    assert_eq!(a.get(region::REQUESTS), 4, "both add to the same atomics");
    drop(a);
    assert_eq!(b.get(region::REQUESTS), 4, "the memfd outlives the first mapping");
}

#[test]
fn a_foreign_memfd_is_refused() {
    let right_size = vec![0u8; region::SLOTS * 8];
    let err = Region::open(memfd(&right_size), Origin::FdStore).unwrap_err();
    assert!(err.contains("not heird's"), "{err}");
    let err = Region::open(memfd(b"hello"), Origin::FdStore).unwrap_err();
    assert!(err.contains("5 bytes"), "{err}");
    // Another layout version of ours.
    let mut other = right_size.clone();
    other[..8].copy_from_slice(&region::MAGIC.to_le_bytes());
    other[8..16].copy_from_slice(&(region::VERSION + 1).to_le_bytes());
    other[16..24].copy_from_slice(&(region::SLOTS as u64).to_le_bytes());
    let err = Region::open(memfd(&other), Origin::FdStore).unwrap_err();
    assert!(err.contains("layout version 2"), "{err}");
    // Not even a file: a socket.
    let (s, _t) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(Region::open(s.as_fd().try_clone_to_owned().unwrap(), Origin::FdStore).is_err());
}

#[test]
fn open_connections_add_up_across_processes_and_never_show_below_zero() {
    let r = Region::create().unwrap();
    let s = r.slots();
    s[region::OPEN + 1].fetch_add(3, Ordering::SeqCst);
    // The next generation: one connection it took over closed there, one of its own is open.
    s[region::OPEN + 2].fetch_sub(1, Ordering::SeqCst);
    s[region::OPEN + 2].fetch_add(1, Ordering::SeqCst);
    s[region::OPEN + 2].fetch_sub(1, Ordering::SeqCst);
    assert_eq!(r.open_connections(), 2);
    s[region::OPEN + 1].store(0, Ordering::SeqCst);
    assert_eq!(r.open_connections(), 0);
}

static R: OnceLock<Region> = OnceLock::new();

fn test_region() -> &'static Region {
    R.get_or_init(|| Region::create().unwrap())
}

#[test]
fn the_collector_reads_the_slots_at_each_scrape() {
    let r = test_region();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Shared(test_region)));
    let scrape = || {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    };
    r.slots()[region::REQUESTS].fetch_add(2, Ordering::SeqCst);
    r.slots()[region::GENERATION].store(7, Ordering::SeqCst);
    r.slots()[region::PRIMARY_START_MS].store(1_500, Ordering::SeqCst);
    r.observe_drain(Duration::from_millis(300));
    r.observe_drain(Duration::from_secs(500));
    let text = scrape();
    for line in [
        "# TYPE heird_requests counter",
        "heird_requests_total 2\n",
        "heird_handoffs_failed_total 0\n",
        "# TYPE heird_open_connections gauge",
        "heird_generation 7\n",
        "heird_primary_start_time_seconds 1.5\n",
        "# TYPE heird_drain_duration_seconds histogram",
        "heird_drain_duration_seconds_count 2\n",
        "heird_drain_duration_seconds_sum 500.3\n",
        "heird_drain_duration_seconds_bucket{le=\"0.1\"} 0\n",
        "heird_drain_duration_seconds_bucket{le=\"0.5\"} 1\n",
        "heird_drain_duration_seconds_bucket{le=\"120.0\"} 1\n",
        "heird_drain_duration_seconds_bucket{le=\"+Inf\"} 2\n",
        "# EOF",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    r.slots()[region::REQUESTS].fetch_add(1, Ordering::SeqCst);
    assert!(scrape().contains("heird_requests_total 3\n"));
}
