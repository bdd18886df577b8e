//! How the process's allocator holds memory.

/// Sets glibc's allocator to hold less memory, unless its environment variables say
/// otherwise: one arena (`MALLOC_ARENA_MAX`) and a fixed 128 KiB threshold above which
/// a block is mapped on its own (`MALLOC_MMAP_THRESHOLD_`).
///
/// By default glibc gives each thread that meets contention an arena of its own (up to
/// eight per core) and keeps what is freed in each, and it raises the mapping threshold
/// as large blocks are freed, so the batches' large buffers end up in the heap, where
/// their pages stay after they are freed. With both set the daemon peaked at about 46
/// MiB under full load instead of 50 to 53, with no loss of throughput on two cores
/// (docs/BENCHMARKS.md). Called before any thread starts.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes process-wide allocator settings; it is called
        // from `main` before any other thread exists.
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
            }
        }
    }
}

/// Hands the allocator's free pages back to the system every `every` until `stop`.
///
/// With one arena, what a pile-up allocated (posts waiting while the broker's confirms
/// are slow) is freed in scattered chunks, and glibc by itself returns only the free
/// top of its heap: in the hour-long soak the resident size rose with each pile-up and
/// never came down. `malloc_trim` releases every free page; it briefly holds the arena's
/// lock, so it runs on a blocking thread, seldom.
pub async fn trim_periodically(
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    crate::startup::run_every(every, stop, || async {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // SAFETY: malloc_trim only releases free memory back to the system; it takes
            // the allocator's own locks.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    })
    .await
}
