//! `conn`: the real `Conn` (host-driver/src/smcd/conn.rs) of one SMC-D connection, driven
//! by a forged or honest peer, with every memory access and move it makes checked.
//!
//! The connection runs over [`FuzzOps`], an in-memory `SmcdOps`: our RMB (the CDC area the
//! peer writes, then our ring, filled with a known pattern) and the peer's RMB (which we
//! write through moves, or directly in no-copy mode) lie in one `FakeMemory`, behind a
//! wrapper that fails the run on any access outside what the connection may touch. The
//! connection is non-blocking (`Conn::set_nonblocking`, the test-utils entry point): a wait
//! is `WouldBlock`, so one thread drives it.
//!
//! Input: a header (our ring length, the peer's ring length, send-buffer length, no-copy
//! flag), then operations, each an opcode byte and its arguments (short inputs are
//! zero-padded):
//! * a CDC from the peer: forged (raw cursors and flags) or honest (producer cursor a few
//!   bytes ahead of what we consumed, consumer cursor at some point of what we sent);
//! * `read` of up to 65535 bytes; `write` of up to 65535 bytes;
//! * make the device refuse the next moves (or accept them again);
//! * `shutdown_write`, `shutdown_read`, `close`, `abort`.
//!
//! Checks after every operation:
//! * memory: reads only inside our RMB; writes (no-copy) only inside the peer's ring; moves
//!   only to the peer's token, either a 32-byte CDC at offset 0 with the signal or data
//!   inside the peer's ring without it;
//! * `read`: `Ok(n)` has `n <= len` and `n <= ring`, and the bytes are our ring's at our
//!   consumer position (wrapping at the ring's end); an error is `WouldBlock` or
//!   `ConnectionReset`;
//! * `write`: `Ok(n)` has `n <= len`; an `Err` sent nothing (no data byte reached the peer's
//!   ring: `std::io::Write`'s contract); while no move was refused, the bytes that reached
//!   the peer's ring are exactly the bytes reported sent, and the last CDC's producer cursor
//!   is that total;
//! * every CDC we send parses, with cursors inside the rings;
//! * `available() <= ring`.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ism_firmware::MoveError;
use ism_hal::fakes::FakeMemory;
use ism_hal::{DevAddr, DmaMemory, DmbToken, Gid, MemError};
use ism_host_driver::ism::{Dmb, IsmClient, IsmError};
use ism_host_driver::smcd::cdc::{CdcMessage, ConnStateFlags, Cursor, ProdFlags, CDC_MSG_LEN};
use ism_host_driver::smcd::conn::{Conn, PeerInfo, RING_OFFSET};
use ism_host_driver::smcd::device::{SmcdGid, SmcdOps};
use ism_host_driver::smcd::wait::WaitMode;

/// Where our RMB starts.
const OUR_RMB: u64 = 0x1_0000;
/// Where the peer's RMB starts (after ours, whose ring is at most 128 KiB).
const PEER_RMB: u64 = OUR_RMB + 0x2_1000;
/// Size of the fake memory (both RMBs fit, rings up to 128 KiB).
const MEM_SIZE: usize = 0x4_2000;
/// The peer's RMB token.
const PEER_TOKEN: u64 = 0x5EE2;

/// The byte at offset `i` of our ring.
fn ring_byte(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 7)) as u8
}

/// The byte at stream offset `i` of what we send.
fn send_byte(i: u64) -> u8 {
    (i.wrapping_mul(13) ^ 0x5A) as u8
}

/// The memory, with every access checked against what the connection may touch.
pub struct CheckedMemory {
    inner: FakeMemory,
    our_rmb: (u64, u64),
    peer_ring: (u64, u64),
    /// Bytes written into the peer's ring directly (no-copy).
    direct_writes: AtomicU64,
}

fn inside(addr: DevAddr, len: usize, (lo, hi): (u64, u64)) -> bool {
    addr.0 >= lo && addr.0.checked_add(len as u64).is_some_and(|end| end <= hi)
}

impl DmaMemory for CheckedMemory {
    fn base(&self) -> DevAddr {
        self.inner.base()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read(&self, addr: DevAddr, buf: &mut [u8]) -> Result<(), MemError> {
        assert!(
            inside(addr, buf.len(), self.our_rmb),
            "read of {} bytes at {addr:?} outside our RMB {:x?}",
            buf.len(),
            self.our_rmb
        );
        self.inner.read(addr, buf)
    }
    fn write(&self, addr: DevAddr, data: &[u8]) -> Result<(), MemError> {
        assert!(
            inside(addr, data.len(), self.peer_ring),
            "write of {} bytes at {addr:?} outside the peer's ring {:x?}",
            data.len(),
            self.peer_ring
        );
        self.direct_writes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.inner.write(addr, data)
    }
    fn zero(&self, addr: DevAddr, len: u64) -> Result<(), MemError> {
        panic!("the connection zeroed {len} bytes at {addr:?}");
    }
    fn load_u64(&self, addr: DevAddr) -> Result<[u8; 8], MemError> {
        // The connection loads the peer's CDC as two atomic words (its cursors).
        assert!(
            inside(addr, 8, (self.our_rmb.0, self.our_rmb.0 + 32)),
            "atomic load at {addr:?} outside our RMB's CDC area"
        );
        self.inner.load_u64(addr)
    }
    fn store_u64(&self, addr: DevAddr, _: [u8; 8]) -> Result<(), MemError> {
        panic!("the connection used an atomic store at {addr:?}");
    }
    fn fetch_or_u8(&self, addr: DevAddr, _: u8) -> Result<u8, MemError> {
        panic!("the connection used fetch_or at {addr:?}");
    }
    fn fetch_and_u8(&self, addr: DevAddr, _: u8) -> Result<u8, MemError> {
        panic!("the connection used fetch_and at {addr:?}");
    }
    fn swap_u8(&self, addr: DevAddr, _: u8) -> Result<u8, MemError> {
        panic!("the connection used swap at {addr:?}");
    }
}

/// An in-memory `SmcdOps` whose moves land in the peer's RMB of [`CheckedMemory`].
pub struct FuzzOps {
    mem: CheckedMemory,
    peer_ring: u32,
    our_ring: u32,
    refuse: AtomicBool,
    refused: AtomicBool,
    /// Data bytes moved into the peer's ring.
    data_moved: AtomicU64,
    /// The last CDC we sent.
    last_cdc: Mutex<Option<CdcMessage>>,
}

impl SmcdOps for FuzzOps {
    fn query_remote_gid(&self, _: SmcdGid, _: bool, _: u16) -> Result<(), IsmError> {
        Ok(())
    }
    fn register_dmb(&self, _: usize, _: SmcdGid, _: u16, _: u8) -> Result<Dmb, IsmError> {
        panic!("a connection registers no DMB");
    }
    fn unregister_dmb(&self, _: &Dmb) -> Result<(), IsmError> {
        Ok(())
    }
    fn move_data(
        &self,
        token: DmbToken,
        idx: u8,
        sf: bool,
        offset: u32,
        data: &[u8],
    ) -> Result<(), IsmError> {
        assert_eq!(
            token,
            DmbToken(PEER_TOKEN),
            "move to a token not the peer's"
        );
        assert_eq!(idx, 0, "DMBE index");
        let end = u64::from(offset) + data.len() as u64;
        let rmb_len = u64::from(RING_OFFSET) + u64::from(self.peer_ring);
        if offset == 0 {
            assert!(
                sf && data.len() == CDC_MSG_LEN,
                "a CDC is 32 bytes with the signal"
            );
        } else {
            assert!(!sf, "data moves carry no signal");
            assert!(
                offset >= RING_OFFSET && end <= rmb_len,
                "data move outside the ring: {offset}+{}",
                data.len()
            );
            assert!(!data.is_empty(), "an empty data move");
        }
        if self.refuse.load(Ordering::Relaxed) {
            self.refused.store(true, Ordering::Relaxed);
            return Err(IsmError::Move(MoveError::InvalidToken));
        }
        if offset == 0 {
            let raw: [u8; CDC_MSG_LEN] = data.try_into().unwrap();
            let m = CdcMessage::parse(&raw).expect("our CDC parses");
            assert!(
                m.prod.count < self.peer_ring,
                "producer cursor past the peer's ring: {}",
                m.prod
            );
            assert!(
                m.cons.count < self.our_ring,
                "consumer cursor past our ring: {}",
                m.cons
            );
            *self.last_cdc.lock().unwrap() = Some(m);
        } else {
            self.data_moved
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        self.mem
            .inner
            .write(DevAddr(PEER_RMB + u64::from(offset)), data)
            .map_err(|_| IsmError::Move(MoveError::OutOfRange))
    }
    fn get_chid(&self) -> u16 {
        0xFFFF
    }
    fn get_local_gid(&self) -> SmcdGid {
        SmcdGid { gid: 1, gid_ext: 0 }
    }
    fn supports_v2(&self) -> bool {
        true
    }
    fn support_dmb_nocopy(&self) -> bool {
        true
    }
    fn attach_dmb(&self, _: DmbToken) -> Result<Dmb, IsmError> {
        panic!("a connection attaches nothing");
    }
    fn detach_dmb(&self, _: DmbToken) -> Result<(), IsmError> {
        Ok(())
    }
    fn add_client(&self, _: Arc<dyn IsmClient>) -> Result<u8, IsmError> {
        Ok(0)
    }
    fn memory(&self) -> &dyn DmaMemory {
        &self.mem
    }
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
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
}

fn cursor(total: u64, ring: u32) -> Cursor {
    Cursor::new(
        (total / u64::from(ring)) as u16,
        (total % u64::from(ring)) as u32,
    )
}

/// A ring length from two bytes: mostly small (wraps often), sometimes a real size.
fn ring_len(v: u16) -> u32 {
    match v >> 14 {
        0..=2 => u32::from(v & 0x0FFF) + 1,
        _ => (16 << 10) << (v & 3) as u32,
    }
}

/// What one input did (for the harness's own tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Bytes our writes reported sent.
    pub sent: u64,
    /// Bytes our reads returned.
    pub consumed: u64,
}

/// Runs one input.
pub fn check(data: &[u8]) -> Summary {
    let mut inp = Input(data);
    let our_ring = ring_len(inp.u16());
    let peer_ring = ring_len(inp.u16());
    // Two bytes that once sized a copy-mode send buffer (there is none now), still taken
    // so that the stored seeds keep their meaning.
    let _ = inp.u16();
    let nocopy = inp.u8() & 1 == 1;

    let mem = FakeMemory::new(OUR_RMB, MEM_SIZE);
    let pattern: Vec<u8> = (0..u64::from(our_ring)).map(ring_byte).collect();
    mem.write(DevAddr(OUR_RMB + u64::from(RING_OFFSET)), &pattern)
        .unwrap();
    let peer_ring_lo = PEER_RMB + u64::from(RING_OFFSET);
    let ops = Arc::new(FuzzOps {
        mem: CheckedMemory {
            inner: mem,
            our_rmb: (
                OUR_RMB,
                OUR_RMB + u64::from(RING_OFFSET) + u64::from(our_ring),
            ),
            peer_ring: (peer_ring_lo, peer_ring_lo + u64::from(peer_ring)),
            direct_writes: AtomicU64::new(0),
        },
        peer_ring,
        our_ring,
        refuse: AtomicBool::new(false),
        refused: AtomicBool::new(false),
        data_moved: AtomicU64::new(0),
        last_cdc: Mutex::new(None),
    });
    let rmb = Dmb {
        token: DmbToken(0x0E),
        sba_idx: 32,
        len: RING_OFFSET + our_ring,
        addr: DevAddr(OUR_RMB),
        rgid: Gid(2),
        attached: false,
    };
    let peer = PeerInfo {
        gid: SmcdGid { gid: 2, gid_ext: 0 },
        token: DmbToken(PEER_TOKEN),
        dmbe_idx: 0,
        ring_len: peer_ring,
    };
    let attached = nocopy.then_some(Dmb {
        token: DmbToken(PEER_TOKEN),
        sba_idx: 33,
        len: RING_OFFSET + peer_ring,
        addr: DevAddr(PEER_RMB),
        rgid: Gid(1),
        attached: true,
    });
    let conn = Conn::new(ops.clone(), rmb, peer, attached, WaitMode::BusyPoll);
    conn.set_nonblocking(true);
    assert_eq!(conn.ring_len(), our_ring);

    let moved = || {
        if nocopy {
            ops.mem.direct_writes.load(Ordering::Relaxed)
        } else {
            ops.data_moved.load(Ordering::Relaxed)
        }
    };
    let mut consumed = 0u64; // what our reads returned
    let mut sent = 0u64; // what our writes reported sent
    let mut buf = Vec::new();
    for _ in 0..64 {
        if inp.0.is_empty() {
            break;
        }
        match inp.u8() % 8 {
            // A CDC from the peer.
            0 | 1 => {
                let forged = inp.u8() & 1 == 1;
                let msg = if forged {
                    let prod = Cursor::new(inp.u16(), inp.u32());
                    let cons = Cursor::new(inp.u16(), inp.u32());
                    CdcMessage {
                        prod,
                        cons,
                        prod_flags: ProdFlags::from_bits_truncate(inp.u8()),
                        conn_state: ConnStateFlags::from_bits_truncate(inp.u8()),
                    }
                } else {
                    // Honest: data ahead of our consumer within one ring, and the peer has
                    // consumed some of what we sent.
                    let ahead = u64::from(inp.u32()) % (u64::from(our_ring) + 1);
                    let back = u64::from(inp.u32()) % (u64::from(peer_ring) + 1);
                    let flags = inp.u8();
                    let state = if flags & 1 == 1 { flags >> 1 } else { 0 };
                    CdcMessage {
                        prod: cursor(consumed + ahead, our_ring),
                        cons: cursor(sent.saturating_sub(back), peer_ring),
                        prod_flags: ProdFlags::from_bits_truncate(flags),
                        conn_state: ConnStateFlags::from_bits_truncate(state),
                    }
                };
                ops.mem.inner.write(DevAddr(OUR_RMB), &msg.emit()).unwrap();
                conn.on_signal();
            }
            2 | 3 => {
                let len = usize::from(inp.u16());
                buf.resize(len, 0);
                match conn.read(&mut buf) {
                    Ok(n) => {
                        assert!(
                            n <= len && n as u64 <= u64::from(our_ring),
                            "read {n} of {len}"
                        );
                        for (k, &b) in buf[..n].iter().enumerate() {
                            let at = (consumed + k as u64) % u64::from(our_ring);
                            assert_eq!(b, ring_byte(at), "byte {k} of a read at ring offset {at}");
                        }
                        consumed += n as u64;
                    }
                    Err(e) => assert!(
                        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::ConnectionReset),
                        "read: {e}"
                    ),
                }
            }
            4 | 5 => {
                let len = usize::from(inp.u16());
                let data: Vec<u8> = (0..len as u64).map(|i| send_byte(sent + i)).collect();
                let before = moved();
                // Before any CDC the peer knows of no byte: producer cursor 0.
                let told = || {
                    ops.last_cdc
                        .lock()
                        .unwrap()
                        .map_or(cursor(0, peer_ring), |m| m.prod)
                };
                let announced = told();
                let was_refusing = ops.refused.load(Ordering::Relaxed);
                match conn.write(&data) {
                    Ok(n) => {
                        assert!(n <= len, "wrote {n} of {len}");
                        sent += n as u64;
                    }
                    Err(e) => {
                        assert!(
                            matches!(
                                e.kind(),
                                ErrorKind::WouldBlock
                                    | ErrorKind::BrokenPipe
                                    | ErrorKind::ConnectionReset
                            ),
                            "write: {e}"
                        );
                        // An error means nothing was sent: the peer was told of no new byte,
                        // and unless the device refused the CDC, none reached its ring.
                        assert_eq!(told(), announced, "write failed after announcing data: {e}");
                        if !ops.refused.load(Ordering::Relaxed) {
                            assert_eq!(moved(), before, "write failed after sending: {e}");
                        }
                    }
                }
                if !was_refusing && !ops.refused.load(Ordering::Relaxed) {
                    assert_eq!(
                        moved(),
                        sent,
                        "bytes in the peer's ring vs bytes reported sent"
                    );
                    if sent > 0 {
                        let last = ops.last_cdc.lock().unwrap().expect("a CDC after data");
                        assert_eq!(last.prod, cursor(sent, peer_ring), "producer cursor");
                    }
                }
            }
            6 => {
                let on = inp.u8() & 1 == 1;
                ops.refuse.store(on, Ordering::Relaxed);
            }
            _ => match inp.u8() % 4 {
                0 => {
                    let _ = conn.shutdown_write();
                }
                1 => conn.shutdown_read(),
                2 => conn.close(),
                _ => conn.abort(),
            },
        }
        assert!(
            conn.available() <= our_ring as usize,
            "available past the ring"
        );
    }
    conn.close();
    conn.release();
    Summary { sent, consumed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(nocopy: bool) -> Vec<u8> {
        let mut b = vec![0, 99, 0, 59, 0, 40, u8::from(nocopy)];
        for _ in 0..6 {
            b.extend([4, 0, 50]); // write 50
            b.extend([0, 0, 0, 0, 0, 70, 0, 0, 0, 10, 0]); // honest CDC
            b.extend([2, 0, 33, 2, 0, 80]); // reads
        }
        b
    }

    #[test]
    fn an_honest_peer_moves_data_both_ways_through_wrapping_rings() {
        for nocopy in [false, true] {
            let s = check(&steady(nocopy));
            // Rings of 100 and 60 bytes: several wraps each way.
            assert!(s.sent > 120 && s.consumed > 200, "{nocopy}: {s:?}");
        }
    }

    #[test]
    fn forged_cursors_and_refused_moves_are_survived() {
        let mut b = vec![0xC0, 0, 0xC0, 1, 0x0F, 0xA0, 0];
        b.extend([
            1, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xF0, 0, 7, 0, 0, 0, 3, 0xFF, 0xFF,
        ]);
        b.extend([2, 0x03, 0xE8, 4, 0x9C, 0x40, 6, 1, 4, 0, 10, 7, 3]);
        check(&b);
        check(&[]);
        check(&[0xFF; 300]);
    }
}
