//! The runner's timing pin: a GPIO that is high for exactly each inference (a
//! scope or a logic analyser measures it on a board), and a call of
//! [`dws_mark`] on each edge, between which QEMU's instruction counter
//! (`qemu-plugin/insn.c`) counts.

use core::convert::Infallible;
use core::sync::atomic::{compiler_fence, AtomicU32, Ordering};
use embedded_hal::digital::{ErrorType, OutputPin};
use stm32f4xx_hal::gpio::{Output, Pin, PushPull};

/// Edges so far: two per inference.
static MARKS: AtomicU32 = AtomicU32::new(0);

/// The instruction counter's marker: `qemu-uart.sh` gives its address to the
/// QEMU plugin, which counts the instructions between consecutive calls.
#[inline(never)]
fn dws_mark() {
    compiler_fence(Ordering::SeqCst);
    MARKS.fetch_add(1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
}

/// Inferences timed so far.
pub fn inferences() -> u32 {
    MARKS.load(Ordering::Relaxed) / 2
}

/// A push-pull output, marked on each edge.
pub struct TimingPin<const P: char, const N: u8>(Pin<P, N, Output<PushPull>>);

impl<const P: char, const N: u8> TimingPin<P, N> {
    /// Low until the first inference.
    pub fn new(mut pin: Pin<P, N, Output<PushPull>>) -> Self {
        pin.set_low();
        TimingPin(pin)
    }
}

impl<const P: char, const N: u8> ErrorType for TimingPin<P, N> {
    type Error = Infallible;
}

impl<const P: char, const N: u8> OutputPin for TimingPin<P, N> {
    fn set_high(&mut self) -> Result<(), Infallible> {
        self.0.set_high();
        dws_mark();
        Ok(())
    }

    fn set_low(&mut self) -> Result<(), Infallible> {
        dws_mark();
        self.0.set_low();
        Ok(())
    }
}
