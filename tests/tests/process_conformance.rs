//! The conformance suite over the process interface (`docs/host-interface.md`):
//! * every check against an LPAR and a loopback process board run by a thread of this test
//!   (same socket, memory objects and register objects as `ism-sim board`);
//! * `external_board_passes_run_all`: the whole suite against a board started separately,
//!   named by `ISM_CONFORMANCE_BOARD` (socket directory from `ISM_SIM_DIR`), as
//!   `scripts/test.sh` does for both kinds of `ism-sim board` process (ignored unless run
//!   with `--ignored`).

use ism_sim::process::LocalBoard;
use ism_sim::BoardKind;
use ism_tests::conformance::{self, DeviceUnderTest};
use ism_tests::process_dut::{local_board, ProcessDut, BOARD_ENV};

fn dut(kind: BoardKind) -> (ProcessDut, LocalBoard) {
    let board = local_board(kind, 2);
    let dut = ProcessDut::attach(board.dir(), board.name(), 2).expect("attach");
    (dut, board)
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {
        mod lpar {
            use super::*;
            $(
                #[test]
                fn $check() {
                    let (dut, _board) = dut(BoardKind::Lpar);
                    if let Err(e) = conformance::$check(&dut) {
                        panic!("{} failed on the LPAR process board: {e}", stringify!($check));
                    }
                }
            )*
        }
        mod loopback {
            use super::*;
            $(
                #[test]
                fn $check() {
                    let (dut, _board) = dut(BoardKind::Loopback);
                    if let Err(e) = conformance::$check(&dut) {
                        panic!("{} failed on the loopback process board: {e}", stringify!($check));
                    }
                }
            )*
        }
        const NAMED: &[&str] = &[$(stringify!($check)),*];
    };
}

conformance_tests!(
    check_probe_sequence,
    check_command_lengths_and_echo,
    check_unknown_commands_refused,
    check_bad_lengths_refused,
    check_dmb_token_semantics,
    check_dmb_registration_limits,
    check_move_data_and_bounds,
    check_move_signal_sba_bits,
    check_ieq_index_rule_and_wrap,
    check_signal_ieq,
    check_query_rgid,
    check_linux_driver_round_trip,
);

#[test]
fn every_check_has_a_named_test() {
    let mut listed: Vec<String> = conformance::checks::<ProcessDut>()
        .iter()
        .map(|(n, _)| format!("check_{n}"))
        .collect();
    let mut named: Vec<String> = NAMED.iter().map(|s| s.to_string()).collect();
    listed.sort();
    named.sort();
    assert_eq!(listed, named, "checks() and this file's test list differ");
}

fn run_all_clean(dut: &ProcessDut) {
    let free: Vec<u64> = (0..dut.functions())
        .map(|f| dut.hal(f).free_bytes())
        .collect();
    let failed: Vec<String> = conformance::run_all(dut)
        .into_iter()
        .filter_map(|(n, r)| r.err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let after: Vec<u64> = (0..dut.functions())
        .map(|f| dut.hal(f).free_bytes())
        .collect();
    assert_eq!(free, after, "checks leaked DMA memory");
}

#[test]
fn run_all_passes_on_both_local_process_boards() {
    for kind in [BoardKind::Lpar, BoardKind::Loopback] {
        let (dut, _board) = dut(kind);
        run_all_clean(&dut);
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
