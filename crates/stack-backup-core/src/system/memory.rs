//! Memory a phase freed, given back to the system.

/// Returns the free pages of the allocator's heaps to the system
/// (glibc's `malloc_trim`). A restore's steps each build and free tables
/// with an entry per file of the set (300,000 small allocations are
/// freed in no order); glibc keeps the freed pages, scattered between
/// live ones, and the next step's peak comes on top of them. Walks the
/// heaps' free chunks: milliseconds. Elsewhere it does nothing.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
