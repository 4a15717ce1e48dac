//! The daemon's memory allocator: small blocks from mimalloc, the rest from the C
//! library's malloc.
//!
//! glibc's malloc was about a sixth of the daemon's CPU per event at 16 connections:
//! most objects of an event are made on a runtime worker and freed on the store thread,
//! or the other way round. mimalloc takes about a tenth off the CPU per event (README,
//! "Performance"). Blocks of 16 KiB and more stay with glibc: connections' buffers,
//! bodies, files. In mimalloc, a block freed on another thread than the one that made it
//! waits for that thread to allocate again, so after a flood of large bodies idle
//! workers kept tens of MiB (with 256 KiB here, the flood test's "memory given back"
//! failed in both full runs of the integration tests; with 16 KiB it passes).
//! glibc maps blocks of 128 KiB and more on their own and unmaps them when freed, and
//! `malloc_trim` returns the rest (`cli::spawn_memory_trim`).
//!
//! The binary installs it (`src/main.rs`); the library and its tests keep the system
//! allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::{c_int, c_long};

use mimalloc::MiMalloc;

/// From this size on, a block comes from glibc.
pub const LARGE: usize = 16 * 1024;

/// mimalloc's `mi_option_abandoned_page_purge` and `mi_option_purge_delay`: their places
/// in `mi_option_e` (mimalloc.h, v2), which the Rust bindings do not name.
const MI_OPTION_ABANDONED_PAGE_PURGE: c_int = 12;
const MI_OPTION_PURGE_DELAY: c_int = 15;

unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    #[cfg(test)]
    fn mi_option_get(option: c_int) -> c_long;
}

/// Small blocks from mimalloc, large ones from glibc. A block is always freed by the one
/// that made it: the layout given back to `dealloc` and `realloc` is the one it was made
/// with, and its size says which.
pub struct Allocator;

impl Allocator {
    /// Sets mimalloc up; call it first thing in `main`, before any thread starts.
    /// mimalloc then gives freed memory back to the system at once, and the memory of a
    /// thread that ends (the pool that spools unverified bodies lets its threads go after
    /// 10 s idle), instead of when another thread next allocates there.
    pub fn tune() {
        // SAFETY: each call only sets a parameter of mimalloc.
        unsafe {
            mi_option_set(MI_OPTION_PURGE_DELAY, 0);
            mi_option_set(MI_OPTION_ABANDONED_PAGE_PURGE, 1);
        }
    }
}

fn large(size: usize) -> bool {
    size >= LARGE
}

// SAFETY: each method passes the caller's contract on to the allocator that owns the
// block; `realloc` across the threshold copies into a block of the other and frees the
// old one with its maker.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if large(layout.size()) {
                System.alloc(layout)
            } else {
                MiMalloc.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if large(layout.size()) {
                System.alloc_zeroed(layout)
            } else {
                MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `layout` is the one the block was made with, so it names its maker.
        unsafe {
            if large(layout.size()) {
                System.dealloc(ptr, layout)
            } else {
                MiMalloc.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above. The new layout is valid: `realloc`'s caller guarantees that
        // `new_size`, rounded up to the alignment, does not overflow `isize`.
        unsafe {
            match (large(layout.size()), large(new_size)) {
                (true, true) => System.realloc(ptr, layout, new_size),
                (false, false) => MiMalloc.realloc(ptr, layout, new_size),
                _ => {
                    let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mimalloc's purge delay in milliseconds, as [`Allocator::tune`] sets it.
    fn purge_delay_ms() -> c_long {
        // SAFETY: reads a parameter.
        unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    /// A block grown and shrunk across the threshold, each way, keeps its bytes, and each
    /// side frees what it made (a block freed by the wrong allocator aborts the process).
    #[test]
    fn blocks_keep_their_bytes_across_the_threshold_both_ways() {
        let a = Allocator;
        for align in [1, 8, 64] {
            let sizes = [100, LARGE - 1, LARGE, 3 * LARGE, LARGE + 1, 4000, 10];
            let layout = Layout::from_size_align(sizes[0], align).unwrap();
            // SAFETY: a live block, its layout kept up to date at each step.
            unsafe {
                let mut ptr = a.alloc(layout);
                assert!(!ptr.is_null());
                let mut layout = layout;
                for i in 0..layout.size() {
                    *ptr.add(i) = (i % 251) as u8;
                }
                let mut filled = layout.size();
                for &size in &sizes[1..] {
                    ptr = a.realloc(ptr, layout, size);
                    assert!(!ptr.is_null(), "{size}");
                    assert_eq!(ptr as usize % align, 0, "{size} aligned to {align}");
                    let kept = filled.min(size);
                    for i in 0..kept {
                        assert_eq!(*ptr.add(i), (i % 251) as u8, "byte {i} at {size}");
                    }
                    for i in kept..size {
                        *ptr.add(i) = (i % 251) as u8;
                    }
                    filled = size;
                    layout = Layout::from_size_align(size, align).unwrap();
                }
                a.dealloc(ptr, layout);
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_on_both_sides() {
        let a = Allocator;
        for size in [64, LARGE + 64] {
            let layout = Layout::from_size_align(size, 16).unwrap();
            // SAFETY: a block of `layout`, read within it and freed with it.
            unsafe {
                let ptr = a.alloc_zeroed(layout);
                assert!(!ptr.is_null());
                assert!((0..size).all(|i| *ptr.add(i) == 0), "{size}");
                a.dealloc(ptr, layout);
            }
        }
    }

    /// The option's number is mimalloc's: its default (10 ms) reads back before `tune`.
    #[test]
    fn the_purge_delay_is_the_option_tune_sets() {
        // No other test calls `tune`; the neighbouring options' defaults are 1 and 0.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), 10);
        }
        Allocator::tune();
        assert_eq!(purge_delay_ms(), 0);
    }
}
