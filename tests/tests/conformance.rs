//! The conformance suite (`ism_tests::conformance`) against the simulator boards: every
//! check on a 2-partition LPAR board (`lpar::<check>`) and on the loopback board
//! (`loopback::<check>`), one `#[test]` each from one line each, plus `run_all` on a
//! three-partition board and a device that must fail.

use ism_tests::conformance::{self, DeviceUnderTest};
use ism_tests::sim_dut::SimDut;

ism_tests::conformance_tests!(lpar, SimDut::lpar(2));
ism_tests::conformance_tests!(loopback, SimDut::loopback());

#[test]
fn run_all_passes_on_a_three_partition_board_and_leaves_it_clean() {
    let dut = SimDut::lpar(3);
    let free: Vec<u64> = (0..3).map(|f| dut.host_memory(f).free_bytes()).collect();
    let results = conformance::run_all(&dut);
    assert_eq!(results.len(), conformance::checks::<SimDut>().len());
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|(n, r)| r.err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    // Checks undo what they register and free what they allocate.
    assert_eq!(dut.board().device().dmbs_in_use(), 0);
    let after: Vec<u64> = (0..3).map(|f| dut.host_memory(f).free_bytes()).collect();
    assert_eq!(free, after, "checks leaked DMA memory");
}

/// The suite must be able to fail: a device whose bus swallows signal flags is caught.
#[test]
fn a_broken_device_fails_the_signal_check() {
    use ism_host_driver::ism::{Bus, BusError};
    use ism_sim::board::{SimHostMemory, SimPort};
    use std::time::Duration;

    struct NoSignal(SimDut, Vec<Dropper>);
    struct Dropper(SimPort);
    impl Bus for Dropper {
        fn command(
            &self,
            request: &[u8],
            response: &mut [u8; ism_abi::regs::COMMAND_AREA_SIZE],
        ) -> Result<(), BusError> {
            self.0.command(request, response)
        }
        fn store_block(&self, request: u64, data: &[u8]) -> Result<(), BusError> {
            self.0.store_block(request & !(1 << 23), data)
        }
    }
    impl DeviceUnderTest for NoSignal {
        type HostMemory = SimHostMemory;
        type Bus = Dropper;
        fn functions(&self) -> usize {
            self.0.functions()
        }
        fn bus(&self, f: usize) -> &Dropper {
            &self.1[f]
        }
        fn host_memory(&self, f: usize) -> &SimHostMemory {
            self.0.host_memory(f)
        }
        fn wait_irq(&self, f: usize, _timeout: Duration) -> bool {
            self.0.wait_irq(f, Duration::ZERO)
        }
        fn chid(&self) -> u16 {
            self.0.chid()
        }
        fn shares_memory(&self) -> bool {
            false
        }
    }
    let inner = SimDut::lpar(2);
    let ports = (0..2).map(|f| Dropper(inner.bus(f).clone())).collect();
    let dut = NoSignal(inner, ports);
    let err = conformance::check_move_signal_sba_bits(&dut).unwrap_err();
    assert!(err.contains("no interrupt"), "{err}");
    assert!(conformance::check_linux_driver_round_trip(&dut).is_err());
    assert!(conformance::check_probe_sequence(&dut).is_ok());
}
