//! Fuzz target `commands`: sequences of raw and structured requests from three functions
//! into `Device::execute`, interleaved with store-blocks and partitions going down and up,
//! on a `FakeBoard`; every operation is checked by `ism_fuzz::device::Harness`.
#![no_main]

use arbitrary::Unstructured;
use ism_fuzz::device::Harness;
use ism_fuzz::ops::decode_command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut h = Harness::new(mode & 1 == 1);
    let mut u = Unstructured::new(rest);
    for _ in 0..256 {
        let Some(op) = decode_command(&mut u, &h.seen) else {
            break;
        };
        h.run(&op);
    }
});
