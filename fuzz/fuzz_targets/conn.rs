//! Fuzz target `conn`: the real SMC-D `Conn` (reads, writes, CDCs, close and abort) against a
//! forged or honest peer (checks in `ism_fuzz::conn`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ism_fuzz::conn::check(data);
});
