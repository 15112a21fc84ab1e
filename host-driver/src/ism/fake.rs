//! An in-process fake of an ISM function for the driver's tests: the firmware device on the
//! HAL's fake board, called directly, so the test thread plays both host and device.

use alloc::sync::Arc;

use ism_abi::regs::COMMAND_AREA_SIZE;
use ism_firmware::{Device, FunctionConfig};
use ism_hal::fakes::{FakeBoard, FakeMemory};
use ism_hal::{DevAddr, DmaMemory, DomainId, FunctionId, Gid};

use super::hal::{Bus, BusError, HostMemory};

/// The fake device type: 4 functions, 64 DMBs.
pub type FakeIsmDevice = Device<FakeBoard, 4, 64>;

/// One function of a fake device, usable as both [`HostMemory`] and [`Bus`].
#[derive(Clone)]
pub struct FakeFunction {
    device: Arc<FakeIsmDevice>,
    function: FunctionId,
    next_free: Arc<spin::Mutex<u64>>,
}

/// A fake device with `n` functions, function `i` in domain `i` (1 MiB each, GID `0x100 + i`),
/// or all in domain 0 with no-copy offered when `shared` is true.
pub fn fake_device(n: usize, shared: bool) -> Arc<FakeIsmDevice> {
    let domains = if shared { 1 } else { n };
    let mut board = FakeBoard::new(domains, 4 << 20, n);
    board.shared_memory = shared;
    let cfgs: alloc::vec::Vec<FunctionConfig> = (0..n)
        .map(|i| FunctionConfig {
            gid: Gid(0x100 + i as u64),
            domain: DomainId(if shared { 0 } else { i as u16 }),
        })
        .collect();
    Arc::new(Device::new(board, 0x0123, &cfgs, 0x5EED_1234).expect("fake device config"))
}

impl FakeFunction {
    /// Function `f` of `device`. Functions sharing a domain must not both allocate, unless
    /// they come from [`FakeFunction::sibling`].
    pub fn new(device: Arc<FakeIsmDevice>, f: u16) -> Self {
        let base = device.board().memories[Self::domain_of(&device, f)]
            .base()
            .0;
        Self {
            device,
            function: FunctionId(f),
            next_free: Arc::new(spin::Mutex::new(base)),
        }
    }

    /// Another function of the same device allocating from the same memory as `self`.
    pub fn sibling(&self, f: u16) -> Self {
        Self {
            device: self.device.clone(),
            function: FunctionId(f),
            next_free: self.next_free.clone(),
        }
    }

    fn domain_of(device: &FakeIsmDevice, f: u16) -> usize {
        if device.board().memories.len() == 1 {
            0
        } else {
            f as usize
        }
    }

    /// The device.
    pub fn device(&self) -> &Arc<FakeIsmDevice> {
        &self.device
    }
}

impl HostMemory for FakeFunction {
    type Memory = FakeMemory;

    fn memory(&self) -> &FakeMemory {
        &self.device.board().memories[Self::domain_of(&self.device, self.function.0)]
    }

    fn dma_alloc(&self, size: usize, align: usize) -> Option<DevAddr> {
        let mut next = self.next_free.lock();
        let at = next.checked_next_multiple_of(align as u64)?;
        let end = at.checked_add(size as u64)?;
        if !self.memory().contains(DevAddr(at), size as u64) {
            return None;
        }
        *next = end;
        self.memory().zero(DevAddr(at), size as u64).ok()?;
        Some(DevAddr(at))
    }

    fn dma_free(&self, _addr: DevAddr, _size: usize) {}
}

impl Bus for FakeFunction {
    fn command(
        &self,
        request: &[u8],
        response: &mut [u8; COMMAND_AREA_SIZE],
    ) -> Result<(), BusError> {
        self.device.execute(self.function, request, response);
        Ok(())
    }

    fn store_block(&self, request: u64, data: &[u8]) -> Result<(), BusError> {
        self.device
            .store_block(self.function, request, data)
            .map_err(|e| BusError::StoreRefused(e as u8))
    }

    /// The fake device executes every store-block at once.
    fn store_block_now(&self, request: u64, data: &[u8]) -> Option<Result<(), BusError>> {
        Some(self.store_block(request, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ism::{ErrorKind, IsmDriver, IsmError, RecordingClient};
    use ism_abi::wire::ieq::EventType;
    use std::vec::Vec;

    type Drv = IsmDriver<FakeFunction, FakeFunction>;

    fn pair() -> (Drv, Drv) {
        let dev = fake_device(2, false);
        let a = FakeFunction::new(dev.clone(), 0);
        let b = FakeFunction::new(dev, 1);
        (
            IsmDriver::probe(a.clone(), a, 0x0123).unwrap(),
            IsmDriver::probe(b.clone(), b, 0x0123).unwrap(),
        )
    }

    #[test]
    fn probe_reads_identity_and_v2() {
        let (a, b) = pair();
        assert_eq!(a.gid(), Gid(0x100));
        assert_eq!(b.gid(), Gid(0x101));
        assert!(a.supports_v2());
        assert!(!a.supports_attach());
        let info = a.query_info().unwrap();
        assert_eq!(info.vlans, [0x1FFF]);
        assert_eq!(info.sba, a.sba_addr());
        assert_eq!(info.ieq_len, 512);
        assert!(a.query_remote_gid(b.gid(), Some(0x1FFF)).is_ok());
        let e = a.query_remote_gid(Gid(0x999), None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unreachable);
        a.remove();
        a.remove();
        assert_eq!(
            b.query_remote_gid(Gid(0x100), Some(0x1FFF))
                .unwrap_err()
                .kind(),
            ErrorKind::Unreachable
        );
    }

    #[test]
    fn dropping_the_driver_releases_the_function() {
        let dev = fake_device(2, false);
        let f0 = FakeFunction::new(dev.clone(), 0);
        let f1 = FakeFunction::new(dev, 1);
        let owner = IsmDriver::probe(f0.clone(), f0.clone(), 0x0123).unwrap();
        let writer = IsmDriver::probe(f1.clone(), f1, 0x0123).unwrap();
        let c = owner
            .add_client(Arc::new(RecordingClient::default()))
            .unwrap();
        let dmb = owner.register_dmb(4096, writer.gid(), None, c).unwrap();
        drop(owner);
        // The DMB is gone, and the function can be probed again (REG_SBA and REG_IEQ would be
        // refused as already registered otherwise).
        let e = writer.move_data(dmb.token, 0, false, 0, &[1]).unwrap_err();
        assert_eq!(e, IsmError::Move(ism_abi::MoveError::InvalidToken));
        let again = IsmDriver::probe(f0.clone(), f0, 0x0123).unwrap();
        assert_eq!(again.gid(), Gid(0x100));
    }

    #[test]
    fn dmb_move_signal_reaches_the_owner_client() {
        let (a, b) = pair();
        let rec = Arc::new(RecordingClient::default());
        let client = a.add_client(rec.clone()).unwrap();
        let dmb = a.register_dmb(16384, b.gid(), None, client).unwrap();
        assert_eq!(dmb.sba_idx, 32);
        let data: Vec<u8> = (0..10000u32).map(|i| (i * 7) as u8).collect();
        b.move_data(dmb.token, 0, true, 100, &data).unwrap();
        let mut back = std::vec![0u8; data.len()];
        a.memory()
            .read(DevAddr(dmb.addr.0 + 100), &mut back)
            .unwrap();
        assert_eq!(back, data);
        assert!(a.irq_pending());
        let r = a.handle_irq();
        assert_eq!(r.signals, 1, "chunks are signalled once, on the last");
        assert_eq!(rec.signals(), [(32, 0x1000)]);
        assert!(!a.irq_pending());
        // Writing it from the owner itself is refused: only rgid may write.
        let e = a.move_data(dmb.token, 0, false, 0, &[1]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MoveRefused);
        a.unregister_dmb(&dmb).unwrap();
        let again = a.register_dmb(100, b.gid(), None, client).unwrap();
        assert_eq!(again.sba_idx, 32, "index reused after unregister");
        let e = b.move_data(dmb.token, 0, true, 0, &[1]).unwrap_err();
        assert_eq!(e, IsmError::Move(ism_abi::MoveError::InvalidToken));
    }

    #[test]
    fn a_move_now_lands_at_once_without_a_signal_or_declines() {
        let (a, b) = pair();
        let rec = Arc::new(RecordingClient::default());
        let client = a.add_client(rec.clone()).unwrap();
        let dmb = a.register_dmb(16384, b.gid(), None, client).unwrap();
        assert_eq!(b.move_data_now(dmb.token, 0, 4000, &[7; 96]), Ok(true));
        let mut back = [0u8; 96];
        a.memory()
            .read(DevAddr(dmb.addr.0 + 4000), &mut back)
            .unwrap();
        assert_eq!(back, [7; 96]);
        assert!(!a.irq_pending(), "no signal");
        // More than one store-block, or nothing: declined, nothing written.
        assert_eq!(b.move_data_now(dmb.token, 0, 4000, &[9; 97]), Ok(false));
        assert_eq!(b.move_data_now(dmb.token, 0, 0, &[]), Ok(false));
        a.memory()
            .read(DevAddr(dmb.addr.0 + 4000), &mut back)
            .unwrap();
        assert_eq!(back, [7; 96]);
        // The device's verdict as for any move.
        let e = a.move_data_now(dmb.token, 0, 0, &[1]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MoveRefused);
        a.unregister_dmb(&dmb).unwrap();
        let e = b.move_data_now(dmb.token, 0, 0, &[1]).unwrap_err();
        assert_eq!(e, IsmError::Move(ism_abi::MoveError::InvalidToken));
    }

    #[test]
    fn while_a_poller_holds_the_sba_other_pollers_leave_it_alone() {
        let (a, b) = pair();
        let rec = Arc::new(RecordingClient::default());
        let client = a.add_client(rec.clone()).unwrap();
        let dmb = a.register_dmb(4096, b.gid(), None, client).unwrap();
        b.move_data(dmb.token, 0, true, 0, &[1]).unwrap();
        a.claim_polling(1, true);
        a.claim_polling(2, true); // held by 1: no change
        assert!(!a.poll_sba(2), "poller 2 leaves the SBA to poller 1");
        assert!(a.irq_pending() && rec.signals().is_empty());
        assert!(a.poll_sba(1), "the holder runs the handler");
        assert_eq!(rec.signals(), [(dmb.sba_idx, 0x1000)]);
        a.claim_polling(2, false); // not the holder: no change
        b.move_data(dmb.token, 0, true, 0, &[2]).unwrap();
        assert!(!a.poll_sba(2));
        a.claim_polling(1, false);
        assert!(a.poll_sba(2), "nobody holds it: anyone polls");
        assert_eq!(rec.signals().len(), 2);
        assert!(!a.poll_sba(2), "nothing pending");
        // A poller's last poll, after it stopped, runs whoever holds the claim.
        a.claim_polling(1, true);
        b.move_data(dmb.token, 0, true, 0, &[3]).unwrap();
        assert!(!a.poll_sba(2));
        assert!(a.poll_sba_last(), "the last poll takes the work");
        assert_eq!(rec.signals().len(), 3);
        assert!(!a.poll_sba_last(), "nothing pending");
    }

    #[test]
    fn events_are_drained_in_order_across_the_wrap() {
        let (a, b) = pair();
        let rec = Arc::new(RecordingClient::default());
        a.add_client(rec.clone()).unwrap();
        for round in 0..3u64 {
            for i in 0..10u64 {
                b.signal_event(a.gid(), true, 0x83, round * 100 + i)
                    .unwrap();
            }
            a.handle_irq();
        }
        let ev = rec.events();
        assert_eq!(ev.len(), 30);
        for (n, e) in ev.iter().enumerate() {
            assert_eq!(e.event_type(), Some(EventType::Software));
            assert_eq!(e.tok, 0x101);
            assert_eq!(e.info, (n as u64 / 10) * 100 + n as u64 % 10);
        }
    }

    #[test]
    fn bad_arguments_are_refused_locally() {
        let (a, b) = pair();
        let c = a.add_client(Arc::new(RecordingClient::default())).unwrap();
        let e = a.register_dmb(0, b.gid(), None, c).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = a.register_dmb((1 << 20) + 1, b.gid(), None, c).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = a.register_dmb(4096, b.gid(), None, 7).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            a.attach_dmb(ism_hal::DmbToken(0)).unwrap_err().kind(),
            ErrorKind::NotSupported
        );
    }

    #[test]
    fn attach_on_shared_memory_and_deferred_release() {
        let dev = fake_device(1, true);
        let f = FakeFunction::new(dev, 0);
        let a: Drv = IsmDriver::probe(f.clone(), f, 0xFFFF).unwrap();
        assert!(a.supports_attach());
        let c = a.add_client(Arc::new(RecordingClient::default())).unwrap();
        let dmb = a.register_dmb(16384, a.gid(), None, c).unwrap();
        let att = a.attach_dmb(dmb.token).unwrap();
        assert_eq!((att.addr, att.len, att.attached), (dmb.addr, dmb.len, true));
        a.unregister_dmb(&dmb).unwrap();
        assert_eq!(a.deferred_releases(), 1);
        a.detach_dmb(dmb.token).unwrap();
        a.handle_irq();
        assert_eq!(
            a.deferred_releases(),
            0,
            "released on the device's buffer event"
        );
    }
}
