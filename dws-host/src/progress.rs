//! Progress on stderr for the long steps of `dws bench` and `dws quantize`: a bar
//! or a spinner with the elapsed time on a terminal, and nothing otherwise, so piped
//! or logged stderr keeps only the commands' own lines. (`dws run` and `dws eval`
//! have their own, which also prints a plain line now and then: see [`crate::eval`].)

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A bar or spinner on stderr, cleared when finished or dropped; a no-op where
/// stderr is not a terminal or progress is off.
#[derive(Debug)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar over `len` items: `{msg} [bar] {pos}/{len} [elapsed, ETA]`.
    pub fn bar(enabled: bool, len: u64, msg: &str) -> Progress {
        Self::new(
            enabled,
            Some(len),
            "{msg} {wide_bar} {pos}/{len} [{elapsed_precise}, ETA {eta}]",
            msg,
        )
    }

    /// A spinner: `{spinner} {msg} [elapsed]`, ticking on its own.
    pub fn spinner(enabled: bool, msg: &str) -> Progress {
        let p = Self::new(enabled, None, "{spinner} {msg} [{elapsed_precise}]", msg);
        if let Some(bar) = &p.0 {
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        p
    }

    fn new(enabled: bool, len: Option<u64>, template: &str, msg: &str) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(msg.to_string());
        Progress(Some(bar))
    }

    /// Counts `n` more items done.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }

    /// Sets how many items there are and how many are done.
    pub fn set(&self, done: u64, len: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(len);
            bar.set_position(done);
        }
    }

    /// Replaces the message.
    pub fn set_message(&self, msg: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(msg.to_string());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
