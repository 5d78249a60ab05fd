//! Shared memory mapped by every process of the service (part of `sys`, the only module with
//! `unsafe`).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::BorrowedFd;

/// A memfd (or any file) mapped `MAP_SHARED` read-write as `u64` slots: every process that maps
/// the same file sees the same atomics (`crate::metrics`). Unmapped on drop.
#[derive(Debug)]
pub struct SharedSlots {
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    len: usize,
}

// SAFETY: the mapping is only ever accessed through `AtomicU64`, which is `Sync`; the pointer is
// owned by this value and valid until it is dropped.
unsafe impl Send for SharedSlots {}
// SAFETY: as above: shared access is atomic only.
unsafe impl Sync for SharedSlots {}

impl SharedSlots {
    /// Maps the first `slots * 8` bytes of `fd` (the file must be at least that long).
    pub fn map(fd: BorrowedFd<'_>, slots: usize) -> io::Result<SharedSlots> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap};
        let bytes = std::num::NonZeroUsize::new(slots * 8).ok_or_else(|| io::Error::other("no slots"))?;
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), so it aliases no Rust
        // object; the length is the file's (checked by the caller), so every byte is backed.
        let ptr = unsafe {
            mmap(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .map_err(io::Error::from)?;
        Ok(SharedSlots {
            ptr: ptr.cast(),
            len: slots,
        })
    }

    /// The slots. Page-aligned (so 8-byte aligned) and `len * 8` bytes long; other processes
    /// change them concurrently, which atomics allow.
    pub fn slots(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: the mapping is `len * 8` bytes, readable and writable, page-aligned, and lives
        // as long as `self`; `AtomicU64` has the size and alignment of `u64` and any bit
        // pattern is a valid value.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SharedSlots {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `map` with this length, and the slices `slots` lent
        // out borrow `self`, so none outlives it.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len * 8) };
    }
}
