//! The board's name service (spec section 3.5) over a real control socket: registrations
//! are seen by other connections, and go when their connection hangs up.

use std::net::SocketAddr;

use ism_sim::board::BoardKind;
use ism_sim::process::{LocalBoard, NameClient};

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn registrations_are_seen_by_others_and_go_with_their_connection() {
    let board = LocalBoard::start(BoardKind::Lpar, 2, 4 << 20, Box::new(std::io::sink())).unwrap();
    let server = NameClient::connect_in(board.dir(), board.name()).unwrap();
    let client = NameClient::connect_in(board.dir(), board.name()).unwrap();
    let dest = a("127.0.0.1:7000");
    assert!(!client.lookup_listener(dest).unwrap());
    server.register_listener(a("0.0.0.0:7000")).unwrap();
    assert!(client.lookup_listener(dest).unwrap());
    assert!(!client.lookup_listener(a("127.0.0.1:7001")).unwrap());

    let me = a("127.0.0.1:40000");
    client.register_client(me, dest).unwrap();
    assert!(server.take_client(me, dest).unwrap());
    assert!(!server.take_client(me, dest).unwrap(), "taken once");

    let status = ism_sim::process::board_status_in(board.dir(), board.name()).unwrap();
    assert_eq!(status["names"]["listeners"], 1, "{status}");
    assert_eq!(status["names"]["clients_taken"], 1, "{status}");

    drop(server); // hangs up: its listener goes
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while client.lookup_listener(dest).unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "registration outlived its connection"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_missing_board_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("ism-names-none-{}", std::process::id()));
    let e = NameClient::connect_in(&dir, "nosuchboard").unwrap_err();
    assert!(e.to_string().contains("no board named nosuchboard"), "{e}");
}
