//! How the daemon asks glibc's allocator to give memory back.
//!
//! The daemon's memory comes in two kinds: the socket table, which grows
//! and shrinks with the machine, and one-off buffers as large as a dump
//! (the start-up seed, the /proc owner scan, full reconciliations). The
//! second kind must not stay resident once freed.
//!
//! glibc works against that by default. Its mmap threshold is dynamic:
//! freeing one mmapped block raises the threshold to that block's size (up
//! to 32 MiB), so the next buffers of that size come from an arena instead,
//! and a thread arena's free top is only returned above twice that
//! threshold. `malloc_trim` does not trim a thread arena's top either.
//! With 108k sockets, what the blocking threads had freed (the /proc owner
//! scan's tables, the dump's buffers) stayed resident for the daemon's
//! whole life: 35.7 MiB instead of 28.2, 60 % of what the table needs.

/// Blocks at least this large are mapped on their own and unmapped when
/// freed (glibc's default, made fixed: setting it turns the dynamic
/// adjustment off).
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Fixes the mmap threshold at [`MMAP_THRESHOLD`]. Call once at start-up,
/// before other threads exist.
pub fn bound_retention() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; it has no
    // preconditions, and no other thread is allocating yet.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 {
            log::debug!("mallopt(M_MMAP_THRESHOLD) refused; freed dumps may stay resident");
        }
    }
}

/// Hands memory freed after a large one-off (the start-up dump, the owner
/// scan, a full reconciliation) back to the kernel: the free pages inside
/// the arenas, and the main arena's top.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
