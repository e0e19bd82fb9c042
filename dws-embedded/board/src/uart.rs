//! `embedded-io` over the HAL's USART halves (their `embedded-hal-nb` byte
//! interface): what `dws_embedded::protocol::Server` reads and writes.
//!
//! Between bytes the core sleeps (`WFI`), woken by the USART's "byte received"
//! interrupt, which stays pending and is never taken (interrupts are masked,
//! see `board.rs`). A core waiting that way draws less power on a board, and
//! under QEMU leaves the host's CPU to the thread that delivers the bytes
//! (about three times faster than polling on a busy machine).

use core::fmt;
use cortex_m::peripheral::NVIC;
use embedded_hal_nb::serial::{Read as _, Write as _};
use embedded_io::{ErrorKind, ErrorType, Read, Write};
use stm32f4xx_hal::pac::Interrupt;
use stm32f4xx_hal::serial::{self, Instance, Rx, Tx};
use stm32f4xx_hal::{block, nb};

/// The receiving half, with the interrupt that wakes the core for each byte.
pub struct UartRx<U: Instance> {
    rx: Rx<U>,
    wake: Interrupt,
}

impl<U: Instance> UartRx<U> {
    /// `rx` must raise `wake` when a byte arrives (its RXNE interrupt enabled).
    pub fn new(rx: Rx<U>, wake: Interrupt) -> Self {
        UartRx { rx, wake }
    }
}

/// The sending half: writes wait for room.
pub struct UartTx<U: Instance>(pub Tx<U>);

/// An overrun, noise, framing or parity error on the line. The server marks
/// the frame it hit as damaged (an error reply) and goes on.
#[derive(Debug, Clone, Copy)]
pub struct LineError(pub serial::Error);

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl core::error::Error for LineError {}

impl embedded_io::Error for LineError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidData
    }
}

impl<U: Instance> ErrorType for UartRx<U> {
    type Error = LineError;
}

impl<U: Instance> Read for UartRx<U> {
    /// Waits for one byte (the server reads a byte at a time).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LineError> {
        let Some(first) = buf.first_mut() else {
            return Ok(0);
        };
        loop {
            // The flag is checked before sleeping and the interrupt stays
            // pending until cleared here, so no byte can slip past the WFI.
            match self.rx.read() {
                Ok(b) => {
                    NVIC::unpend(self.wake);
                    *first = b;
                    return Ok(1);
                }
                Err(nb::Error::WouldBlock) => cortex_m::asm::wfi(),
                Err(nb::Error::Other(e)) => {
                    NVIC::unpend(self.wake);
                    return Err(LineError(e));
                }
            }
        }
    }
}

impl<U: Instance> ErrorType for UartTx<U> {
    type Error = LineError;
}

impl<U: Instance> Write for UartTx<U> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, LineError> {
        for &b in buf {
            block!(self.0.write(b)).map_err(LineError)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), LineError> {
        block!(self.0.flush()).map_err(LineError)
    }
}
