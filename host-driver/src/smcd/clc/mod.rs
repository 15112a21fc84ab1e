//! CLC handshake messages (in progress).
