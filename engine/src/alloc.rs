//! Allocator settings for a process that runs tensor code.
//!
//! Every candle op allocates its output, and the outputs of an encoder or decoder
//! layer are megabytes each. glibc serves allocations above its mmap threshold
//! (128 KiB, raised dynamically up to 32 MiB) with fresh `mmap`s and gives them back
//! with `munmap` when freed, so each op paid for page faults and the kernel zeroing
//! pages it had just unmapped: a profile of `kura bench embed` showed a sixth of the
//! time in `exc_page_fault`, `clear_page` and memcg accounting. Serving those blocks
//! from the heap and keeping freed memory for reuse removes most of that: passage
//! embedding ran 1.2–2× faster (a noisy shared 2-core machine; `kura bench embed`
//! with and without the equivalent `MALLOC_*_` variables) with the same peak RSS —
//! the working set is the same, only reused instead of remapped.
//!
//! [`tune`] is called once at the start of `kura`; other programs embedding the
//! library may call it too. Without glibc it does nothing.

/// Blocks below this size come from the heap, not from `mmap` (32 MiB is the most
/// glibc accepts on 64-bit).
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory at the top of the heap kept for reuse rather than returned.
pub const TRIM_THRESHOLD: usize = 1 << 30;
/// Extra space requested each time the heap grows.
pub const TOP_PAD: usize = 256 << 20;

/// Applies the settings (see the module docs). Environment variables
/// (`MALLOC_MMAP_THRESHOLD_` …) set by the user still win: they are read by glibc
/// before `main`, and an explicit setting is left alone.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_set = [
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_TOP_PAD_",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
        if user_set {
            return;
        }
        // SAFETY: mallopt only changes allocator parameters; it is called before
        // the program starts its threads.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
            libc::mallopt(libc::M_TOP_PAD, TOP_PAD as libc::c_int);
        }
    }
}
