//! The agent's malloc arenas: at most [`ARENAS`], set before any thread starts.
//!
//! glibc gives each thread that meets a locked arena an arena of its own, up to eight
//! per core, and memory freed into an arena stays with it (only the top of each is
//! trimmed, and the trim threshold rises with the largest buffer freed). The agent's
//! work moves between threads (tokio's blocking pool, the compactor's thread), so each
//! phase of a VACUUM's capture and compaction left its freed buffers in another arena:
//! measured at 979 MiB, the agent's RSS rose 96 MiB above idle while the heap in use
//! never passed 25 MiB (heaptrack); with two arenas the same run rose 30 MiB above idle
//! (docs/BENCHMARKS.md, "the agent's memory when a connector VACUUMs, 979 MiB").
//! Two arenas: the tokio runtime runs two worker threads on this 2-core design, and the
//! threads that allocate much (capture, compaction, the store's writer) mostly work
//! one at a time.
//!
//! An operator's `MALLOC_ARENA_MAX` in the environment wins (glibc reads it at start).

/// Arenas the agent uses at most.
pub const ARENAS: i32 = 2;

/// Limits malloc to [`ARENAS`] arenas unless `MALLOC_ARENA_MAX` is set; returns the
/// limit set (`None`: left as it was, or not glibc). Call it before threads start:
/// arenas already made stay.
pub fn limit_arenas() -> Option<i32> {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return None;
    }
    set_arena_max(ARENAS).then_some(ARENAS)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(n: i32) -> bool {
    // SAFETY: mallopt only changes malloc's parameters; M_ARENA_MAX takes a count.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_: i32) -> bool {
    false
}

/// The number of malloc arenas in the process now (glibc's `malloc_info`: one `<heap>`
/// each), for tests and diagnostics; `None` where it cannot be read.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn arenas() -> Option<usize> {
    let mut buf: *mut libc::c_char = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: open_memstream allocates the buffer it writes into; it is read only after
    // fclose (which finishes it) and freed with free, as its manual says.
    let text = unsafe {
        let f = libc::open_memstream(&mut buf, &mut len);
        if f.is_null() {
            return None;
        }
        let ok = libc::malloc_info(0, f) == 0;
        libc::fclose(f);
        let text = (ok && !buf.is_null()).then(|| {
            String::from_utf8_lossy(std::slice::from_raw_parts(buf.cast(), len)).into_owned()
        });
        libc::free(buf.cast());
        text?
    };
    Some(text.matches("<heap nr=").count())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn arenas() -> Option<usize> {
    None
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// Set in the process [`arenas_in_a_fresh_process`] starts: "limit" or "default".
    const CHILD: &str = "HUBVAULT_TEST_MALLOC_CHILD";
    const THREADS: usize = 8;

    /// Runs only in a fresh process of this test binary: sets the limit (or not), then
    /// THREADS threads allocate and hold their blocks while the arenas are counted.
    #[test]
    fn arenas_child() {
        let Some(mode) = std::env::var_os(CHILD) else {
            return;
        };
        if mode == "limit" {
            assert_eq!(limit_arenas(), Some(ARENAS));
        }
        let hold = Arc::new(Barrier::new(THREADS + 1));
        let done = Arc::new(Barrier::new(THREADS + 1));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (hold, done) = (hold.clone(), done.clone());
                std::thread::spawn(move || {
                    let blocks: Vec<Vec<u8>> = (0..256).map(|i| vec![i as u8; 1024]).collect();
                    hold.wait();
                    done.wait();
                    drop(blocks);
                })
            })
            .collect();
        hold.wait();
        println!("arenas={}", arenas().expect("malloc_info reads"));
        done.wait();
        for t in threads {
            t.join().expect("thread");
        }
    }

    fn arenas_in_a_fresh_process(mode: &str) -> usize {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "agent::malloc::tests::arenas_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, mode)
            .env_remove("MALLOC_ARENA_MAX")
            .output()
            .expect("run the test binary");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // libtest prints the test's name on the same line.
        let after = text
            .split("arenas=")
            .nth(1)
            .unwrap_or_else(|| panic!("no arena count in {text}"));
        let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().expect("a count")
    }

    #[test]
    fn the_agents_threads_share_at_most_two_malloc_arenas_however_many_allocate() {
        let limited = arenas_in_a_fresh_process("limit");
        assert!(
            limited <= ARENAS as usize,
            "{limited} arenas with the limit"
        );
        // The control: without it, each new thread gets an arena of its own.
        let default = arenas_in_a_fresh_process("default");
        assert!(default > THREADS, "{default} arenas without the limit");
    }
}
