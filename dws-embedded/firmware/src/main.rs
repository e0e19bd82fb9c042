//! Self-test firmware for a Cortex-M4F (STM32F405; QEMU's `netduinoplus2`).
//!
//! Runs every input of every reference case that fits the chip (chosen and
//! sized by `build.rs`: the paper-default classifier in int8 and as many small
//! cases as keep 15% of flash and RAM free), checks each output (f32 cases with
//! the suite's tolerance, int8 and 16x8 cases bit for bit), logs with defmt over
//! semihosting, prints `N passed, M failed` and the stack high-water mark on
//! the semihosting stderr and exits with status 0 iff every case passed and the
//! stack stayed within its reserve.
//!
//! Every case runs with [`MarkPin`] as its timing pin: under QEMU the
//! `qemu-plugin/` instruction counter measures between the marks (each
//! inference), and after each case the firmware prints how many inferences
//! it marked, so `run-qemu.sh` can tell the cases' intervals apart; on a
//! board, the same place would drive a GPIO. The benchmarked case is the
//! paper-default int8 classifier.
#![no_std]
#![no_main]
// Denied, not forbidden: `stack_high_water` reads the painted stack (one
// audited `unsafe` block). Everything else is safe code.
#![deny(unsafe_code)]

use core::sync::atomic::{compiler_fence, AtomicU32, Ordering};
use cortex_m as _; // its `critical-section-single-core` implementation
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, heprintln};
use defmt_semihosting as _;
use dws_embedded::dws_core::case::CaseRepr;
use dws_embedded::dws_core::Model;
use dws_embedded::{check_case, Arena, CaseReport, Failure, Runner, Sizes};
use embedded_hal::digital::{ErrorType, OutputPin};

/// A blob in flash at a 16-byte aligned address (the core reads its f32
/// parameters in place and needs 4).
#[repr(C, align(16))]
pub struct Aligned<T: ?Sized>(pub T);

/// One reference case carried in flash.
pub struct Fixture {
    /// The fixture's folder name.
    pub name: &'static str,
    /// `f32` (`model.dws`, `case.bin`: the suite's tolerance), `int8`
    /// (`model.int8.dws`, `case_int8.bin`) or `16x8` (`model.16x8.dws`,
    /// `case_16x8.bin`), the quantized ones bit-exact.
    pub kind: &'static str,
    /// The model blob.
    pub blob: &'static [u8],
    /// The case (a postcard `CaseRepr`; quantized cases have zero tolerance).
    pub case: &'static [u8],
    /// What the model needs, computed by build.rs.
    pub sizes: Sizes,
}

// INPUT_LEN, SCRATCH_LEN, OUTPUT_LEN, FIXTURE_FLASH, BENCH, STACK_TOP,
// STACK_RESERVE, SKIPPED, FIXTURES.
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

/// The timing pin of every case: a mark on each edge.
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

/// Bytes of stack used so far (the high-water mark).
///
/// cortex-m-rt (feature `paint-stack`) fills all RAM between the end of the
/// statics (`_stack_end`, which is also `heap_start()`) and the stack top with
/// `STACK_PAINT_VALUE` before `main`; the lowest word that no longer holds it
/// is the deepest the stack has been.
#[allow(unsafe_code)]
fn stack_high_water() -> usize {
    let mut p = cortex_m_rt::heap_start() as usize;
    while p < STACK_TOP {
        // SAFETY: `p` is 4-aligned and in `[_stack_end, _stack_start)`, RAM
        // that the linker leaves to the stack (no static lives there) and that
        // is always mapped. The scan stops at the first word the stack ever
        // wrote, so it reads no live data but that one word (read only); a
        // volatile 32-bit read has no side effects and creates no reference.
        let word = unsafe { core::ptr::read_volatile(p as *const u32) };
        if word != cortex_m_rt::STACK_PAINT_VALUE {
            break;
        }
        p += 4;
    }
    STACK_TOP - p
}

/// Opens a blob (the whole validation). Not inlined: validation needs a deep
/// frame, which is then gone before the inferences run.
#[inline(never)]
fn open<'a>(
    arena: &'a mut FirmwareArena,
    blob: &'static [u8],
) -> Result<Runner<'a, Model<'static>>, Failure> {
    arena.open(blob).map_err(Failure::Case)
}

/// Runs a case, each inference between two marks; not inlined into `main`,
/// whose frame stays small (see [`open`]).
#[inline(never)]
fn run_fixture(arena: &mut FirmwareArena, f: &Fixture) -> Result<CaseReport, Failure> {
    let case = CaseRepr::new_checked(f.case).map_err(|e| Failure::Case(e.into()))?;
    let runner = open(arena, f.blob)?;
    check_case(&mut runner.with_pin(MarkPin), &case)
}

/// A header whose `plan_len` (0xFFFF_FFF0) wraps a 32-bit offset, with a
/// valid checksum, such as an over-the-air update could carry: rejected as
/// truncated, not a panic.
#[inline(never)]
fn hostile_header_is_rejected() -> bool {
    #[repr(align(16))]
    struct Blob([u8; 64]);
    let mut b = Blob([0; 64]);
    b.0[..4].copy_from_slice(b"DWSB");
    b.0[4] = 2; // format version 2; flags 0 (f32)
    b.0[8..12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes()); // plan_len
    b.0[12..16].copy_from_slice(&48u32.to_le_bytes()); // params_len
    b.0[16..20].copy_from_slice(&0x190A_55ADu32.to_le_bytes()); // CRC-32 of 32 zero bytes
    matches!(
        Model::new_checked(&b.0),
        Err(dws_embedded::dws_core::Error::Truncated)
    )
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
    for f in FIXTURES.iter() {
        let marks = MARKS.load(Ordering::Relaxed);
        let result = run_fixture(ARENA, f);
        // For run-qemu.sh: which of the plugin's intervals are this case's.
        let marked = (MARKS.load(Ordering::Relaxed) - marks) / 2;
        heprintln!("inferences: {} {} {}", f.name, f.kind, marked);
        match result {
            Ok(r) if f.kind != "f32" => {
                passed += 1;
                defmt::info!(
                    "  ok    {=str} ({=str}): {=u32} inputs, bit-exact",
                    f.name,
                    f.kind,
                    r.inputs
                );
            }
            Ok(r) => {
                passed += 1;
                defmt::info!(
                    "  ok    {=str} (f32): {=u32} inputs, worst error {=f32} of tolerance",
                    f.name,
                    r.inputs,
                    r.worst
                );
            }
            Err(e) => {
                failed += 1;
                defmt::error!("  FAIL  {=str} ({=str}): {}", f.name, f.kind, e);
                heprintln!("FAIL {} ({})", f.name, f.kind);
            }
        }
    }
    if hostile_header_is_rejected() {
        passed += 1;
        defmt::info!("  ok    a header with a wrapping plan length is rejected");
    } else {
        failed += 1;
        defmt::error!("  FAIL  a header with a wrapping plan length is not rejected");
        heprintln!("FAIL hostile header");
    }
    let stack = stack_high_water();
    let stack_ok = stack <= STACK_RESERVE;
    defmt::info!(
        "{=u32} passed, {=u32} failed; benchmark {=str} ({=str}); {=u32} inferences marked; stack high water {=usize} of {=usize} bytes reserved",
        passed,
        failed,
        FIXTURES[BENCH].name,
        FIXTURES[BENCH].kind,
        MARKS.load(Ordering::Relaxed) / 2,
        stack,
        STACK_RESERVE
    );
    if !stack_ok {
        defmt::error!("the stack outgrew its reserve (_stack_reserve in memory.x)");
    }
    // Plain text as well, for scripts that do not decode defmt.
    heprintln!(
        "bench model: {} {}",
        FIXTURES[BENCH].name,
        FIXTURES[BENCH].kind
    );
    heprintln!("stack: {} of {} bytes", stack, STACK_RESERVE);
    heprintln!("{} passed, {} failed", passed, failed);
    debug::exit(if failed == 0 && stack_ok {
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
