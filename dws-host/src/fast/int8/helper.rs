//! A second thread for one input at a time: it runs the second part of every
//! [`Int8Kernels::join`](dws_core::int8::kernels::Int8Kernels::join) while the
//! calling thread runs the first, so that a single input uses two cores.
//!
//! The executor joins twice per destination tensor of every layer (the blocks'
//! map outputs, then the destination rows): about 60 hand-offs per
//! paper-default input, a few microseconds apart. So the helper spins while
//! it waits (then parks), and the caller spins until the helper is done.

use super::HostInt8;
use crate::fast::Isa;
use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::{self, Thread};

/// The second part of a join, borrowing data that lives for `'j`.
type Part<'j> = Box<dyn FnOnce(&mut HostInt8, &mut [u8]) + Send + 'j>;

/// A part as the helper holds it (see the SAFETY comment in [`Helper::run`]).
type Job = Part<'static>;

const IDLE: u8 = 0;
const READY: u8 = 1;
const DONE: u8 = 2;
const QUIT: u8 = 3;

/// Spins (about 100 µs) before the waiting helper parks, or before the
/// waiting caller starts yielding its core.
const SPINS: u32 = 1 << 15;

/// The shared state of one helper thread.
#[derive(Default)]
pub struct Helper {
    state: AtomicU8,
    job: Mutex<Option<(Job, usize)>>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    thread: OnceLock<Thread>,
}

impl std::fmt::Debug for Helper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helper")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Helper {
    /// Starts a helper thread with its own kernels for `isa` (`None` if the
    /// thread cannot be started); it runs until [`Helper::quit`].
    pub fn spawn(isa: Isa) -> Option<Arc<Helper>> {
        let h = Arc::new(Helper::default());
        let serving = Arc::clone(&h);
        let t = thread::Builder::new()
            .name("dws-int8-helper".into())
            .spawn(move || serving.serve(&mut HostInt8::new(isa)))
            .ok()?;
        let _ = h.thread.set(t.thread().clone());
        Some(h)
    }

    /// The helper thread's loop: runs each job, until [`Helper::quit`].
    fn serve(&self, k: &mut HostInt8) {
        let mut scratch: Vec<u32> = Vec::new();
        loop {
            let mut spins = 0;
            loop {
                match self.state.load(Ordering::Acquire) {
                    READY => break,
                    QUIT => return,
                    _ if spins < SPINS => {
                        spins += 1;
                        std::hint::spin_loop();
                    }
                    _ => thread::park(),
                }
            }
            let job = self
                .job
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some((job, bytes)) = job {
                scratch.resize(bytes.div_ceil(4), 0);
                let s = &mut bytemuck::cast_slice_mut(&mut scratch)[..bytes];
                // The job is consumed (dropped) here, before DONE, even if it panics.
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| job(k, s))) {
                    *self.panic.lock().unwrap_or_else(PoisonError::into_inner) = Some(p);
                }
            }
            self.state.store(DONE, Ordering::Release);
        }
    }

    /// Ends [`Helper::serve`] (after the job in progress, if any).
    pub fn quit(&self) {
        self.state.store(QUIT, Ordering::Release);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Runs `there` on the helper thread (with its kernels and `bytes` bytes
    /// of scratch) while `here` runs on this one; returns `here`'s result once
    /// both are done, and re-raises a panic of `there`.
    pub fn run<'j, R>(
        &self,
        bytes: usize,
        there: impl FnOnce(&mut HostInt8, &mut [u8]) + Send + 'j,
        here: impl FnOnce() -> R,
    ) -> R {
        let job: Part<'j> = Box::new(there);
        // SAFETY: only the lifetime changes (the same fat pointer type). The
        // job may borrow data that lives for `'j` only, and it is gone before
        // `'j` ends: the helper consumes it before it stores DONE, and this
        // function does not return or unwind before it has seen DONE (`Wait`
        // waits in its drop, which also runs if `here` panics).
        let job: Job = unsafe { std::mem::transmute::<Part<'j>, Job>(job) };
        *self.job.lock().unwrap_or_else(PoisonError::into_inner) = Some((job, bytes));
        self.state.store(READY, Ordering::Release);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
        let wait = Wait(self);
        let r = here();
        drop(wait);
        if let Some(p) = self
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

/// Waits, when dropped, until the helper has finished its job.
struct Wait<'h>(&'h Helper);

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let mut spins = 0;
        while self.0.state.load(Ordering::Acquire) != DONE {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        self.0.state.store(IDLE, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dws_core::int8::kernels::Int8Kernels;

    fn paired() -> (HostInt8, Arc<Helper>) {
        let helper = Helper::spawn(Isa::detect()).expect("a helper thread");
        let mut k = HostInt8::new(Isa::detect());
        k.helper = Some(Arc::clone(&helper));
        (k, helper)
    }

    #[test]
    fn join_runs_both_parts_on_two_threads_with_their_own_scratch() {
        let (mut k, helper) = paired();
        let mut scratch = vec![0u8; 64];
        let main = thread::current().id();
        for round in 0..100u8 {
            let (a, b) = k.join(
                &mut scratch,
                |_, s| {
                    s.fill(round);
                    (thread::current().id(), s.len())
                },
                |_, s| {
                    s.fill(!round);
                    (thread::current().id(), s.len())
                },
            );
            assert_eq!(a, (main, 64));
            assert_ne!(b.0, main);
            assert_eq!(b.1, 64);
            assert!(scratch.iter().all(|&v| v == round));
        }
        helper.quit();
    }

    #[test]
    fn a_join_inside_a_part_runs_on_the_calling_thread() {
        let (mut k, helper) = paired();
        let mut scratch = vec![0u8; 8];
        let (inner, ()) = k.join(
            &mut scratch,
            |k, s| {
                let here = thread::current().id();
                let (x, y) = k.join(
                    s,
                    |_, _| thread::current().id(),
                    |_, _| thread::current().id(),
                );
                x == here && y == here
            },
            |_, _| (),
        );
        assert!(inner);
        helper.quit();
    }

    #[test]
    fn a_panic_on_the_helper_reaches_the_caller_and_the_helper_goes_on() {
        let (mut k, helper) = paired();
        let mut scratch = vec![0u8; 8];
        let caught = catch_unwind(AssertUnwindSafe(|| {
            k.join(
                &mut scratch,
                |_, _| 1,
                |_, _| -> i32 { panic!("in the second part") },
            )
        }));
        assert!(caught.is_err());
        assert!(k.helper.is_some());
        assert_eq!(k.join(&mut scratch, |_, _| 1, |_, _| 2), (1, 2));
        helper.quit();
    }
}
