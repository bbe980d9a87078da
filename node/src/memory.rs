//! Giving the C library allocator's free memory back to the system.
//!
//! The node's own allocations go to jemalloc (`main.rs`), which returns freed pages within
//! about a second from its background thread (`.cargo/config.toml`). What still allocates
//! from glibc is RocksDB's C++ (memtables, block cache, compaction buffers). Before jemalloc,
//! everything did, and this measurement is why the trimmer exists: glibc's allocator keeps
//! memory a program freed in its arenas (one per thread group, up to eight per core) and
//! returns it only from the top of each. A validator under overload frees
//! as much as it allocates, but the holes stay resident: measured with glibc's own
//! `malloc_stats` at 2× the sustainable rate, a node held 416 MB from the system of which
//! 167–199 MB were in use. [`spawn_trimmer`] calls `malloc_trim(0)` on its own thread at a
//! fixed interval: it walks every arena and returns the free pages inside them
//! (`madvise`), whatever lies above. The cost is the walk plus the page faults when the
//! memory is used again, which is why the interval is a second, not milliseconds
//! (`docs/performance.md`, "Earlier rounds", the sixth session; `docs/architecture.md`,
//! "Decisions").
//!
//! `TALLY_MALLOC_TRIM_MS` sets the interval; `0` turns it off. Off glibc (musl, other
//! systems) there is nothing to do.

use std::time::Duration;

/// The interval when `TALLY_MALLOC_TRIM_MS` is not set.
pub const TRIM_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);

/// The interval from `TALLY_MALLOC_TRIM_MS`, `None` when turned off; an unreadable value
/// falls back to the default with a warning.
pub fn trim_interval() -> Option<Duration> {
    match std::env::var("TALLY_MALLOC_TRIM_MS") {
        Err(_) => Some(TRIM_INTERVAL_DEFAULT),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(0) => None,
            Ok(ms) => Some(Duration::from_millis(ms)),
            Err(_) => {
                tracing::warn!(
                    value = %v,
                    "TALLY_MALLOC_TRIM_MS is not a number of milliseconds; using the default"
                );
                Some(TRIM_INTERVAL_DEFAULT)
            }
        },
    }
}

/// Starts the thread that trims the allocator every `interval` for the life of the process.
pub fn spawn_trimmer(interval: Duration) {
    if !TRIM_SUPPORTED {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                trim();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("not trimming the allocator: {e}");
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_SUPPORTED: bool = true;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const TRIM_SUPPORTED: bool = false;

/// Returns the allocator's free pages to the system; true when any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointer and has no precondition; glibc serializes it with
    // every other allocator call (it takes each arena's lock in turn).
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident bytes of this process (`/proc/self/statm`, pages of 4 KiB).
    fn resident() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    #[test]
    fn a_trim_returns_the_holes_between_live_blocks_and_keeps_the_live_ones() {
        // 128 MiB in blocks of 64 KiB (below glibc's mmap threshold, so from an arena),
        // every other one freed: holes the allocator keeps resident until trimmed.
        let mut live = Vec::new();
        let mut freed = Vec::new();
        for i in 0..2_048u32 {
            let block = vec![(i % 251) as u8; 64 * 1024];
            if i % 2 == 0 {
                live.push(block);
            } else {
                freed.push(block);
            }
        }
        drop(freed);
        let before = resident();
        let released = trim();
        let after = resident();
        assert_eq!(released, TRIM_SUPPORTED);
        if TRIM_SUPPORTED {
            // 64 MiB were freed; allow for other tests' threads allocating meanwhile.
            assert!(
                before >= after + 32 * 1024 * 1024,
                "resident {before} -> {after} bytes"
            );
        }
        for (n, block) in live.iter().enumerate() {
            let i = (2 * n) as u32;
            assert!(block.iter().all(|&b| b == (i % 251) as u8));
        }
    }
}
