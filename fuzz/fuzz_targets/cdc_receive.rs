//! Fuzz target `cdc_receive`: a peer's CDC message and arbitrary cursors and ring sizes into
//! the receive-side cursor arithmetic (checks in `ism_fuzz::cdc`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ism_fuzz::cdc::check(data));
