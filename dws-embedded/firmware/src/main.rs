//! Self-test firmware for a Cortex-M4F (STM32F405; QEMU's `netduinoplus2`).
//!
//! Runs every input of every reference case that fits the chip (chosen and
//! sized by `build.rs`), checks each output with the suite's tolerance, logs
//! with defmt over semihosting, prints `N passed, M failed` on the semihosting
//! stderr and exits with status 0 iff every case passed.
//!
//! The largest carried model runs with [`MarkPin`] as its timing pin: under
//! QEMU the `qemu-plugin/` instruction counter measures between the marks;
//! on a board, the same place would drive a GPIO.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::sync::atomic::{compiler_fence, AtomicU32, Ordering};
use cortex_m as _; // its `critical-section-single-core` implementation
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, heprintln};
use defmt_semihosting as _;
use dws_embedded::dws_core::case::CaseRepr;
use dws_embedded::{check_case, Arena, CaseReport, Failure, Sizes};
use embedded_hal::digital::{ErrorType, OutputPin};

/// A blob in flash at a 16-byte aligned address (the core reads its f32
/// parameters in place and needs 4).
#[repr(C, align(16))]
pub struct Aligned<T: ?Sized>(pub T);

/// One reference case carried in flash.
pub struct Fixture {
    /// The fixture's folder name.
    pub name: &'static str,
    /// `model.dws`.
    pub blob: &'static [u8],
    /// `case.bin` (a postcard `CaseRepr`).
    pub case: &'static [u8],
    /// What the model needs, computed by build.rs.
    pub sizes: Sizes,
}

// INPUT_LEN, SCRATCH_LEN, OUTPUT_LEN, FIXTURE_FLASH, BENCH, SKIPPED, FIXTURES.
include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));

/// Exactly large enough for every carried model.
type FirmwareArena = Arena<INPUT_LEN, SCRATCH_LEN, OUTPUT_LEN>;

/// How often [`dws_mark`] ran.
static MARKS: AtomicU32 = AtomicU32::new(0);

/// The instruction counter's marker: its address is given to the QEMU plugin,
/// which counts the instructions between consecutive calls.
#[inline(never)]
fn dws_mark() {
    compiler_fence(Ordering::SeqCst);
    MARKS.fetch_add(1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
}

/// The timing pin of the benchmarked model: a mark on each edge.
struct MarkPin;

impl ErrorType for MarkPin {
    type Error = core::convert::Infallible;
}

impl OutputPin for MarkPin {
    fn set_high(&mut self) -> Result<(), Self::Error> {
        dws_mark();
        Ok(())
    }
    fn set_low(&mut self) -> Result<(), Self::Error> {
        dws_mark();
        Ok(())
    }
}

fn run_fixture(arena: &mut FirmwareArena, f: &Fixture, bench: bool) -> Result<CaseReport, Failure> {
    let case = CaseRepr::new_checked(f.case).map_err(|e| Failure::Case(e.into()))?;
    let runner = arena.open(f.blob).map_err(Failure::Case)?;
    if bench {
        check_case(&mut runner.with_pin(MarkPin), &case)
    } else {
        let mut runner = runner;
        check_case(&mut runner, &case)
    }
}

#[entry]
fn main() -> ! {
    static mut ARENA: FirmwareArena = FirmwareArena::new();

    defmt::info!(
        "dws-embedded firmware: {=usize} reference cases, {=usize} bytes of them in flash, arena {=usize} bytes",
        FIXTURES.len(),
        FIXTURE_FLASH,
        FirmwareArena::SIZES.ram_bytes()
    );
    for name in SKIPPED {
        defmt::info!("  skip  {=str} (does not fit the chip)", name);
    }
    let (mut passed, mut failed) = (0u32, 0u32);
    for (i, f) in FIXTURES.iter().enumerate() {
        match run_fixture(ARENA, f, i == BENCH) {
            Ok(r) => {
                passed += 1;
                defmt::info!(
                    "  ok    {=str}: {=u32} inputs, worst error {=f32} of tolerance",
                    f.name,
                    r.inputs,
                    r.worst
                );
            }
            Err(e) => {
                failed += 1;
                defmt::error!("  FAIL  {=str}: {}", f.name, e);
                heprintln!("FAIL {}", f.name);
            }
        }
    }
    defmt::info!(
        "{=u32} passed, {=u32} failed; benchmark {=str}: {=u32} marks",
        passed,
        failed,
        FIXTURES[BENCH].name,
        MARKS.load(Ordering::Relaxed)
    );
    // Plain text as well, for scripts that do not decode defmt.
    heprintln!("bench model: {}", FIXTURES[BENCH].name);
    heprintln!("{} passed, {} failed", passed, failed);
    debug::exit(if failed == 0 {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    heprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}
