//! A second thread for one input at a time: it runs the second part of every
//! [`Kernels::join`](dws_core::quantized::Kernels::join) while the
//! calling thread runs the first, so that a single input uses two cores.
//!
//! The executor joins twice per destination tensor of every layer (the blocks'
//! map outputs, then the destination rows) and once per batch norm: about 60
//! hand-offs per paper-default input, a few microseconds apart. So the helper
//! spins while it waits (then parks), and the caller spins until the helper
//! is done. A caller that finishes its part before the helper has taken the
//! other (a helper thread that the OS has not scheduled, on a busy machine)
//! takes it back and runs it itself, so a busy machine costs at most the
//! one-thread time, not the wait for the helper.

use super::HostQ;
use crate::fast::Isa;
use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// The second part of a join, borrowing data that lives for `'j`.
type Part<'j> = Box<dyn FnOnce(&mut HostQ, &mut [u8]) + Send + 'j>;

/// A part as the helper holds it (see the SAFETY comment in [`Helper::run`]).
type Job = Part<'static>;

const IDLE: u8 = 0;
const READY: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;

/// How long a waiting helper spins before it parks, and a waiting caller
/// before it yields its core between checks.
const SPIN: Duration = Duration::from_micros(100);

/// A helper thread, owned by one set of kernels at a time (so one join at a
/// time); the thread ends when its `Helper` is dropped.
#[derive(Debug)]
pub struct Helper {
    shared: Arc<Shared>,
    /// The process that started the thread (a forked child has no such thread).
    pid: u32,
}

/// What the caller and the helper thread share.
#[derive(Default)]
struct Shared {
    /// IDLE, READY (a job waits), RUNNING (the helper took it) or DONE (the
    /// job has run and is dropped). Whoever moves READY on (the helper to
    /// RUNNING, the caller back to IDLE) runs the job.
    state: AtomicU8,
    job: Mutex<Option<(Job, usize)>>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    quit: AtomicBool,
    thread: OnceLock<Thread>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Spins on `done` for up to [`SPIN`], then calls `idle` between checks;
/// returns once `done()` holds.
fn wait_for(mut done: impl FnMut() -> bool, idle: impl Fn()) {
    let start = Instant::now();
    let mut spins = 0u32;
    while !done() {
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(64) || start.elapsed() < SPIN {
            std::hint::spin_loop();
        } else {
            idle();
        }
    }
}

impl Helper {
    /// Starts a helper thread with its own kernels for `isa` (`None` if the
    /// thread cannot be started).
    pub fn spawn(isa: Isa) -> Option<Helper> {
        let shared = Arc::new(Shared::default());
        let serving = Arc::clone(&shared);
        let t = thread::Builder::new()
            .name("dws-int8-helper".into())
            .spawn(move || serving.serve(&mut HostQ::new(isa)))
            .ok()?;
        let _ = shared.thread.set(t.thread().clone());
        Some(Helper {
            shared,
            pid: std::process::id(),
        })
    }

    /// Whether the thread exists in this process: not in a child forked
    /// after it started (Python's `multiprocessing`, for one).
    pub fn in_this_process(&self) -> bool {
        self.pid == std::process::id()
    }

    /// Runs `there` on the helper thread (with its kernels and as many bytes
    /// of scratch as `scratch`) while `here` runs on this one with `k` and
    /// `scratch`; returns `here`'s result once both are done, and re-raises a
    /// panic of `there`. If the helper has not taken `there` by the time
    /// `here` is done, `there` runs here after it, with `k` and `scratch`.
    pub fn run<'j, R>(
        &mut self,
        k: &mut HostQ,
        scratch: &mut [u8],
        there: impl FnOnce(&mut HostQ, &mut [u8]) + Send + 'j,
        here: impl FnOnce(&mut HostQ, &mut [u8]) -> R,
    ) -> R {
        let bytes = scratch.len();
        let shared = &*self.shared;
        debug_assert_eq!(shared.state.load(Ordering::Relaxed), IDLE);
        // A payload left by a run whose own part panicked as well.
        drop(
            shared
                .panic
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let job: Part<'j> = Box::new(there);
        // SAFETY: only the lifetime changes (the same fat pointer type). The
        // job may borrow data that lives for `'j` only, and it is gone before
        // `'j` ends: the helper consumes it before it stores DONE, and this
        // function does not return or unwind before it has seen DONE or taken
        // the job back (`Wait` does either in its drop, which also runs if
        // `here` panics). No other job
        // can take its place meanwhile: `run` borrows the only handle
        // mutably, and the thread ends only when the handle is dropped.
        let job: Job = unsafe { std::mem::transmute::<Part<'j>, Job>(job) };
        *shared.job.lock().unwrap_or_else(PoisonError::into_inner) = Some((job, bytes));
        shared.state.store(READY, Ordering::Release);
        if let Some(t) = shared.thread.get() {
            t.unpark();
        }
        let wait = Wait(shared);
        let r = here(k, scratch);
        if let Some(job) = wait.take_back() {
            // The helper has not started: run its part here (after `here`, as
            // `join` without a helper would). A panic unwinds from here.
            job(k, scratch);
        }
        if let Some(p) = shared
            .panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            resume_unwind(p);
        }
        r
    }
}

impl Drop for Helper {
    /// Ends the thread (no job is in progress: `run` holds the handle).
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Release);
        if let Some(t) = self.shared.thread.get() {
            t.unpark();
        }
    }
}

impl Shared {
    /// The helper thread's loop: runs each job, until the handle is dropped.
    fn serve(&self, k: &mut HostQ) {
        // 8-aligned, as a 16x8 executor's scratch must be.
        let mut scratch: Vec<u64> = Vec::new();
        loop {
            wait_for(
                || self.state.load(Ordering::Acquire) == READY || self.quit.load(Ordering::Acquire),
                thread::park,
            );
            if self.quit.load(Ordering::Acquire) {
                return;
            }
            let taken =
                self.state
                    .compare_exchange(READY, RUNNING, Ordering::AcqRel, Ordering::Acquire);
            if taken.is_err() {
                continue; // the caller took the job back
            }
            let job = self
                .job
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some((job, bytes)) = job {
                scratch.resize(bytes.div_ceil(8), 0);
                let s = &mut bytemuck::cast_slice_mut(&mut scratch)[..bytes];
                // The job is consumed (dropped) here, before DONE, even if it panics.
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| job(k, s))) {
                    *self.panic.lock().unwrap_or_else(PoisonError::into_inner) = Some(p);
                }
            }
            self.state.store(DONE, Ordering::Release);
        }
    }
}

/// The caller's side of a posted job: takes it back, or waits until the
/// helper has finished it (also when dropped).
struct Wait<'h>(&'h Shared);

impl Wait<'_> {
    /// The job, if the helper has not taken it yet (it never will then).
    /// `None` means the helper has it: in state READY the job is always in
    /// its slot (`run` puts it there first).
    fn reclaim(&self) -> Option<Job> {
        let back = self
            .0
            .state
            .compare_exchange(READY, IDLE, Ordering::AcqRel, Ordering::Acquire);
        back.ok()?;
        let job = self
            .0
            .job
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        job.map(|(job, _)| job)
    }

    /// The job, if the helper has not taken it yet; else waits until the
    /// helper has finished it.
    fn take_back(self) -> Option<Job> {
        let job = self.reclaim();
        if job.is_some() {
            std::mem::forget(self); // IDLE already: nothing to wait for
        }
        job // else dropping `self` waits for DONE
    }
}

impl Drop for Wait<'_> {
    /// Waits for the helper, or (if it has not started) drops the job.
    fn drop(&mut self) {
        if self.reclaim().is_some() {
            return;
        }
        wait_for(
            || self.0.state.load(Ordering::Acquire) == DONE,
            thread::yield_now,
        );
        self.0.state.store(IDLE, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dws_core::quantized::Kernels;

    /// `Kernels::join` of the int8 kernels (the 16x8 ones run the same code).
    fn join<RA: Send, RB: Send>(
        k: &mut HostQ,
        scratch: &mut [u8],
        a: impl FnOnce(&mut HostQ, &mut [u8]) -> RA + Send,
        b: impl FnOnce(&mut HostQ, &mut [u8]) -> RB + Send,
    ) -> (RA, RB) {
        Kernels::<i8>::join(k, scratch, a, b)
    }

    fn paired() -> HostQ {
        let mut k = HostQ::new(Isa::detect());
        k.helper = Some(Helper::spawn(Isa::detect()).expect("a helper thread"));
        k
    }

    /// A first part long enough for the helper to take the second: it runs
    /// there, with its own scratch, at the same time.
    #[test]
    fn join_runs_a_long_first_part_beside_the_second_on_the_helper() {
        let mut k = paired();
        let mut scratch = vec![0u8; 64];
        let main = thread::current().id();
        for round in 0..20u8 {
            let (a, b) = join(
                &mut k,
                &mut scratch,
                |_, s| {
                    s.fill(round);
                    thread::sleep(Duration::from_millis(20));
                    (thread::current().id(), s.iter().all(|&v| v == round))
                },
                |_, s| {
                    s.fill(!round);
                    (thread::current().id(), s.len())
                },
            );
            assert_eq!(a, (main, true));
            assert_ne!(b.0, main);
            assert_eq!(b.1, 64);
        }
    }

    /// A first part done before the helper takes the second (here: at once,
    /// with the helper parked): the caller may run the second itself, after
    /// the first; either way both run, each with the scratch's length.
    #[test]
    fn join_runs_a_second_part_the_helper_has_not_taken_here() {
        let mut k = paired();
        let mut scratch = vec![0u8; 64];
        let main = thread::current().id();
        for round in 0..100u8 {
            if round % 10 == 0 {
                thread::sleep(SPIN * 3); // the helper parks
            }
            let (a, b) = join(
                &mut k,
                &mut scratch,
                |_, s| (thread::current().id(), s.len()),
                |_, s| {
                    s.fill(round);
                    (thread::current().id(), s.len())
                },
            );
            assert_eq!(a, (main, 64));
            assert_eq!(b.1, 64);
            if b.0 == main {
                assert!(
                    scratch.iter().all(|&v| v == round),
                    "ran after the first part"
                );
            }
        }
    }

    #[test]
    fn a_join_inside_a_part_runs_on_the_calling_thread() {
        let mut k = paired();
        let mut scratch = vec![0u8; 8];
        let (inner, ()) = join(
            &mut k,
            &mut scratch,
            |k, s| {
                let here = thread::current().id();
                let (x, y) = join(
                    k,
                    s,
                    |_, _| thread::current().id(),
                    |_, _| thread::current().id(),
                );
                x == here && y == here
            },
            |_, _| (),
        );
        assert!(inner);
    }

    #[test]
    fn a_panic_on_the_helper_reaches_the_caller_and_the_helper_goes_on() {
        let mut k = paired();
        let mut scratch = vec![0u8; 8];
        let caught = catch_unwind(AssertUnwindSafe(|| {
            join(
                &mut k,
                &mut scratch,
                |_, _| 1,
                |_, _| -> i32 { panic!("in the second part") },
            )
        }));
        assert!(caught.is_err());
        assert!(k.helper.is_some());
        assert_eq!(join(&mut k, &mut scratch, |_, _| 1, |_, _| 2), (1, 2));
    }
}
