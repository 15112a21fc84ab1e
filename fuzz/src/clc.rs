//! `clc`: arbitrary bytes into `ClcMessage::parse` and `read_message_len`.
//!
//! Checks: nothing panics; a header `read_message_len` accepts announces 28..=1024 bytes;
//! for a message that parses, `read_message_len` of its header is its length, and its
//! re-emitted bytes parse to the same message, announce their own length, and emit again
//! to the same bytes.

use ism_host_driver::smcd::clc::{read_message_len, ClcMessage, HEADER_LEN, MAX_MESSAGE_LEN};

/// Runs every check on one input.
pub fn check(data: &[u8]) {
    if let Some(h) = data.first_chunk::<HEADER_LEN>() {
        if let Ok(n) = read_message_len(h) {
            assert!((28..=MAX_MESSAGE_LEN).contains(&n), "announced length {n}");
        }
    }
    let Ok(m) = ClcMessage::parse(data) else {
        return;
    };
    let h = data
        .first_chunk::<HEADER_LEN>()
        .expect("a message has a header");
    assert_eq!(
        read_message_len(h),
        Ok(data.len()),
        "header length of {m:?}"
    );
    let bytes = m.emit();
    let h2 = bytes.first_chunk::<HEADER_LEN>().expect("emitted header");
    assert_eq!(
        read_message_len(h2),
        Ok(bytes.len()),
        "emitted length of {m:?}"
    );
    let again = ClcMessage::parse(&bytes);
    assert_eq!(again.as_ref(), Ok(&m), "re-emitted message parses the same");
    assert_eq!(again.map(|a| a.emit()), Ok(bytes), "emit is stable");
}
