//! The conformance suite over the process interface (`docs/host-interface.md`):
//! * every check against an LPAR and a loopback process board run by a thread of this test
//!   (same socket, memory objects and register objects as `ism-sim board`);
//! * `external_board_passes_run_all`: the whole suite against a board started separately,
//!   named by `ISM_CONFORMANCE_BOARD` (socket directory from `ISM_SIM_DIR`), as
//!   `scripts/test.sh` does for both kinds of `ism-sim board` process (ignored unless run
//!   with `--ignored`).

use ism_sim::BoardKind;
use ism_tests::conformance::{self, DeviceUnderTest};
use ism_tests::process_dut::{ProcessDut, BOARD_ENV};

ism_tests::conformance_tests!(lpar, ProcessDut::on_local_board(BoardKind::Lpar, 2));
ism_tests::conformance_tests!(loopback, ProcessDut::on_local_board(BoardKind::Loopback, 2));

fn run_all_clean(dut: &ProcessDut) {
    let free: Vec<u64> = (0..dut.functions())
        .map(|f| dut.host_memory(f).free_bytes())
        .collect();
    let failed: Vec<String> = conformance::run_all(dut)
        .into_iter()
        .filter_map(|(n, r)| r.err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let after: Vec<u64> = (0..dut.functions())
        .map(|f| dut.host_memory(f).free_bytes())
        .collect();
    assert_eq!(free, after, "checks leaked DMA memory");
}

#[test]
fn run_all_passes_on_both_local_process_boards() {
    for kind in [BoardKind::Lpar, BoardKind::Loopback] {
        run_all_clean(&ProcessDut::on_local_board(kind, 2));
    }
}

#[test]
#[ignore = "needs a running board named by ISM_CONFORMANCE_BOARD (scripts/process-conformance.sh)"]
fn external_board_passes_run_all() {
    let name = std::env::var(BOARD_ENV)
        .unwrap_or_else(|_| panic!("{BOARD_ENV} names no board: start one and set it"));
    let n = std::env::var("ISM_CONFORMANCE_FUNCTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let dut = ProcessDut::attach(&ism_sim::process::board_dir(), &name, n)
        .unwrap_or_else(|e| panic!("attach to board {name}: {e}"));
    run_all_clean(&dut);
    eprintln!(
        "board {name}: all {} checks passed",
        conformance::checks::<ProcessDut>().len()
    );
}
