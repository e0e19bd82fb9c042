//! A model on a board: serves the blob built in (`MODEL=path/to/model.dws` at
//! build time) over a UART with `dws_embedded::protocol` (`docs/serial.md`),
//! for `dws serial` on the host.
//!
//! Any blob `dws_core::Model` opens (f32, int8, ...) works as it is: the
//! build script validates it and sizes the arena from it. `board.rs` holds
//! what is specific to the board (clocks, USART, timing pin); the rest is the
//! same on QEMU (`--features qemu`) and on an STM32F405/F407.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

mod board;
mod timing;
mod uart;

use cortex_m_rt::entry;
use defmt_rtt as _;
use dws_embedded::dws_core::Model;
use dws_embedded::protocol::{Served, Server};
use dws_embedded::{Arena, Runner};
use panic_probe as _;

/// A blob in flash at a 16-byte aligned address (the core reads its f32
/// parameters in place and needs 4).
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

// INPUT_LEN, SCRATCH_LEN, OUTPUT_LEN, MODEL_NAME, MODEL: from build.rs.
include!(concat!(env!("OUT_DIR"), "/model.rs"));

/// Exactly large enough for the model.
type ModelArena = Arena<INPUT_LEN, SCRATCH_LEN, OUTPUT_LEN>;

/// Opens the blob (the whole validation, as build.rs did). Not inlined:
/// validation needs a deep frame, which is gone before the inferences run.
#[inline(never)]
fn open(arena: &mut ModelArena) -> Runner<'_, Model<'static>> {
    match arena.open(&MODEL.0) {
        Ok(runner) => runner,
        Err(e) => defmt::panic!("{=str} does not open: {}", MODEL_NAME, e),
    }
}

#[entry]
fn main() -> ! {
    static mut ARENA: ModelArena = ModelArena::new();

    let board::Board {
        mut rx,
        mut tx,
        pin,
    } = board::Board::init();
    let mut server = Server::new(open(ARENA).with_pin(pin));
    let id = server.identity();
    defmt::info!(
        "dws-board: serving {=str} ({=u32} bytes, CRC {=u32:#010x}, {=u32} -> {=u32} values, arena {=usize} bytes) at {=u32} baud",
        MODEL_NAME,
        id.blob_len,
        id.crc,
        id.input_len,
        id.output_len,
        ModelArena::SIZES.ram_bytes(),
        board::BAUD
    );
    loop {
        match server.serve(&mut rx, &mut tx) {
            Ok(Served::Output { seq, outcome }) => defmt::info!(
                "#{=u16}: class {=u32} ({=f32}), inference {=u32}",
                seq,
                outcome.argmax,
                outcome.max,
                timing::inferences()
            ),
            Ok(served) => defmt::info!("{}", served),
            Err(e) => defmt::warn!("{}", e),
        }
    }
}
