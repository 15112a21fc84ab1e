//! `cdc_receive`: the receive-side arithmetic of a connection fed with a peer's CDC.
//!
//! Input layout (short inputs are zero-padded): ring size `u32` BE, our consumed total
//! `u64` BE, our produced total `u64` BE, our confirmed total `u64` BE, a value `u32` BE,
//! two raw cursors (8 bytes each, host order as in memory), then the peer's CDC message
//! (32 bytes; the type byte is forced to 0xFE half of the time so parsing gets through).
//!
//! The cursor arithmetic is the real code (`Cursor` in host-driver/src/smcd/cdc.rs). What
//! a connection derives from a peer's cursors (how much it reads or may send, with the
//! private `checked_diff`) is fuzzed in the real `Conn` by the `conn` target
//! (`fuzz/src/conn.rs`); this target used to check a hand-copied replica of it. The checks:
//! * `diff`, `diff_large` and `|comp|` are in `0..=size` for any cursors and size;
//! * `add` gives a sane cursor (`count < size`) and equals the cursor of the advanced total;
//! * for cursors of real totals `a <= b`, `diff` is `b - a` when `b - a <= size` and
//!   `diff_large` is `min(b - a, size)` when fewer than 65536 wraps apart;
//! * `CdcMessage::parse` round-trips through `emit` and agrees with `from_words`.

use ism_host_driver::smcd::cdc::{CdcCursor, CdcMessage, Cursor, CDC_MSG_LEN, CDC_MSG_TYPE};

/// `cursor()` of conn.rs: the cursor of a running byte total in a ring of `ring` bytes.
pub fn cursor(total: u64, ring: u32) -> Cursor {
    Cursor::new((total / ring as u64) as u16, (total % ring as u64) as u32)
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        let n = N.min(self.0.len());
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        b
    }
}

/// Runs every check on one input.
pub fn check(data: &[u8]) {
    let mut inp = Input(data);
    let size = u32::from_be_bytes(inp.take());
    let cons = u64::from_be_bytes(inp.take());
    // Kept in the input format (the seed corpus has them); the connection arithmetic they
    // fed is fuzzed in the real `Conn` by the `conn` target now.
    let _prod = u64::from_be_bytes(inp.take());
    let _confirmed = u64::from_be_bytes(inp.take());
    let value = u32::from_be_bytes(inp.take());
    let c1 = Cursor::from_bytes(inp.take());
    let c2 = Cursor::from_bytes(inp.take());
    let mut msg: [u8; CDC_MSG_LEN] = inp.take();
    if msg[1] & 1 == 0 {
        msg[0] = CDC_MSG_TYPE;
    }

    // Pure arithmetic on arbitrary cursors and sizes.
    for (a, b) in [(c1, c2), (c2, c1)] {
        let d = Cursor::diff(size, a, b);
        assert!(d <= size, "diff({size}, {a}, {b}) = {d}");
        let dl = Cursor::diff_large(size, a, b);
        assert!(dl <= size, "diff_large({size}, {a}, {b}) = {dl}");
        let c = Cursor::comp(size, a, b);
        assert!(c.unsigned_abs() <= u64::from(size), "comp = {c}");
        let n = a.add(size, value);
        if size > 0 {
            assert!(n.count < size, "add({a}, {size}, {value}) = {n}");
        } else {
            assert_eq!(n, a, "add with no ring");
        }
    }
    if size > 0 {
        let (a, v) = (cons, u64::from(value));
        let a = a.min(u64::MAX - v);
        let b = a + v;
        assert_eq!(
            cursor(a, size).add(size, value),
            cursor(b, size),
            "add of a real total"
        );
        let d = b - a;
        let (ca, cb) = (cursor(a, size), cursor(b, size));
        if d <= u64::from(size) {
            assert_eq!(u64::from(Cursor::diff(size, ca, cb)), d, "{ca} -> {cb}");
        }
        if b / u64::from(size) - a / u64::from(size) < 0x10000 {
            assert_eq!(
                u64::from(Cursor::diff_large(size, ca, cb)),
                d.min(u64::from(size)),
                "large {ca} -> {cb}"
            );
        }
    }

    // The peer's CDC.
    let Ok(peer) = CdcMessage::parse(&msg) else {
        return;
    };
    assert_eq!(CdcMessage::parse(&peer.emit()), Ok(peer), "emit/parse");
    let word = |at: usize| u64::from_ne_bytes(msg[at..at + 8].try_into().expect("8"));
    let from_words = CdcMessage::from_words(word(8), word(16));
    assert_eq!(from_words, peer, "from_words agrees with parse");
    assert_eq!(
        CdcCursor::from_u64(peer.cons_cursor().to_u64()),
        peer.cons_cursor()
    );
}
