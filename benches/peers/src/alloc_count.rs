//! A counting global allocator, to show that a training loop allocates nothing after its
//! first step.
//!
//! This is the one place with `unsafe` in the project: a `GlobalAlloc` impl cannot be
//! written without it. It lives in this benchmark binary, not in the library (which keeps
//! `#![forbid(unsafe_code)]`), and it only forwards to the system allocator and counts.
//! The counters are relaxed atomics: about a nanosecond per allocation, paid equally by
//! every engine in the timings.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting calls that obtain memory (`alloc`, `alloc_zeroed`,
/// `realloc`).
pub struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

/// The number of allocations (including reallocations) so far, on any thread.
pub fn allocations() -> usize {
    ALLOCATIONS.load(Ordering::Relaxed)
}

#[expect(
    unsafe_code,
    reason = "a GlobalAlloc impl is unsafe by definition; see module docs"
)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
