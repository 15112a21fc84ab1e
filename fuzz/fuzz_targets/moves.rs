//! Fuzz target `moves`: arbitrary request words and data into `Device::store_block` after a
//! fixed setup of registered DMBs (`Harness::with_moves_setup`); every move must be accepted
//! exactly when the rules allow it and write only its DMB and the owner's SBA.
#![no_main]

use arbitrary::Unstructured;
use ism_fuzz::device::Harness;
use ism_fuzz::ops::decode_move_record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::with_moves_setup();
    let mut u = Unstructured::new(data);
    for _ in 0..256 {
        let Some(op) = decode_move_record(&mut u) else {
            break;
        };
        h.run(&op);
    }
});
