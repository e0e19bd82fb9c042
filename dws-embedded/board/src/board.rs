//! The board: clocks, the USART to the host and the timing pin. The one file to
//! change for another board or another pin-out.
//!
//! * USART3, 115200 baud 8N1: TX on PB10, RX on PB11. Its "byte received"
//!   interrupt wakes the core from `WFI` (`uart.rs`); it is enabled in the
//!   NVIC but never taken: interrupts stay masked (PRIMASK).
//! * Timing pin PC1: high while the model computes.
//! * System clock 168 MHz from the internal 16 MHz oscillator through the PLL
//!   (no crystal needed; for a crystal use `Config::hse(..)`).
//!
//! Built with `--features qemu` (QEMU's netduinoplus2) the clocks stay as they
//! are at reset: QEMU 7.2 does not model the RCC (its registers read as zero),
//! so waiting for the PLL to lock would hang, and its USART ignores the baud
//! rate. Everything else is the same code on QEMU and on a board.

use crate::timing::TimingPin;
use crate::uart::{UartRx, UartTx};
use cortex_m::peripheral::NVIC;
use stm32f4xx_hal::pac::{self, Interrupt, USART3};
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Rcc;
use stm32f4xx_hal::serial::{Config, RxListen};

/// Baud rate of the host link (`dws serial --port /dev/ttyUSB0@115200`).
pub const BAUD: u32 = 115_200;

/// The peripherals the server uses.
pub struct Board {
    /// Bytes from the host.
    pub rx: UartRx<USART3>,
    /// Bytes to the host.
    pub tx: UartTx<USART3>,
    /// High during each inference.
    pub pin: TimingPin<'C', 1>,
}

impl Board {
    /// Sets up the clocks, the USART and the timing pin.
    pub fn init() -> Board {
        let Some(dp) = pac::Peripherals::take() else {
            defmt::panic!("the peripherals were taken twice");
        };
        let mut rcc = clocks(dp.RCC);
        let gpiob = dp.GPIOB.split(&mut rcc);
        let gpioc = dp.GPIOC.split(&mut rcc);
        let config = Config::default().baudrate(BAUD.bps());
        let serial = match dp.USART3.serial((gpiob.pb10, gpiob.pb11), config, &mut rcc) {
            Ok(s) => s,
            Err(_) => defmt::panic!("USART3 cannot run at {=u32} baud", BAUD),
        };
        let (tx, mut rx) = serial.split();
        // A debug probe keeps reading the RTT log while the core sleeps.
        dp.DBGMCU.cr().modify(|_, w| w.dbg_sleep().set_bit());
        // Wake from WFI on each received byte, without taking the interrupt.
        rx.listen();
        cortex_m::interrupt::disable();
        // SAFETY: unmasking an interrupt can break a critical section that
        // relies on it being masked; none does here, and with PRIMASK set (the
        // line above, never undone) no handler runs: the pending interrupt only
        // ends a WFI, and `UartRx::read` clears it.
        #[allow(unsafe_code)]
        unsafe {
            NVIC::unmask(Interrupt::USART3)
        };
        Board {
            rx: UartRx::new(rx, Interrupt::USART3),
            tx: UartTx(tx),
            pin: TimingPin::new(gpioc.pc1.into_push_pull_output()),
        }
    }
}

/// A real board: 168 MHz from HSI through the PLL.
#[cfg(not(feature = "qemu"))]
fn clocks(rcc: pac::RCC) -> Rcc {
    use stm32f4xx_hal::rcc::{Config, RccExt};
    rcc.freeze(Config::hsi().sysclk(168.MHz()))
}

/// QEMU: the reset clock (HSI, 16 MHz), untouched.
#[cfg(feature = "qemu")]
fn clocks(rcc: pac::RCC) -> Rcc {
    use stm32f4xx_hal::rcc::RccExt;
    rcc.constrain()
}
