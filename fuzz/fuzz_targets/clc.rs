//! Fuzz target `clc`: arbitrary bytes into `ClcMessage::parse` and `read_message_len`;
//! what parses is re-emitted and parsed again (checks in `ism_fuzz::clc`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ism_fuzz::clc::check(data));
