//! The stream API: `Listener` and `Stream`, a reliable byte stream that runs over SMC-D when
//! both ends agree and over the same TCP connection otherwise (transparently: the
//! application sees `Read + Write` either way, and [`Stream::fallback_reason`] says why).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::clc::DeclineReason;
use super::conn::{Conn, ConnStats};
use super::handshake::{self, Outcome};
use super::stack::SmcStack;

enum Transport {
    Smc {
        conn: Arc<Conn>,
        device: usize,
        version: u8,
        first_contact: bool,
    },
    Tcp {
        reason: DeclineReason,
    },
}

struct Shared {
    stack: Arc<SmcStack>,
    tcp: TcpStream,
    transport: Transport,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Transport::Smc { conn, device, .. } = &self.transport {
            conn.close();
            self.stack.release_conn(*device, conn);
        }
    }
}

/// Per-connection statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamStats {
    /// Whether data flows over SMC-D.
    pub smc: bool,
    /// Whether the sender writes into the peer's DMB without copying.
    pub nocopy: bool,
    /// Why the connection fell back to TCP, if it did.
    pub fallback: Option<DeclineReason>,
    /// SMC-D data-path counters (zero for TCP).
    pub conn: ConnStats,
}

/// A connected stream. Clones (see [`Stream::try_clone`]) share the connection, which is
/// closed when the last one is dropped.
pub struct Stream {
    shared: Arc<Shared>,
}

impl Stream {
    fn from_outcome(stack: &Arc<SmcStack>, tcp: TcpStream, outcome: Outcome) -> Self {
        let transport = match outcome {
            Outcome::Smc(e) => Transport::Smc {
                conn: e.conn,
                device: e.device,
                version: e.version,
                first_contact: e.first_contact,
            },
            Outcome::Fallback(reason) => {
                log::debug!("smc: fallback to TCP: {reason}");
                Transport::Tcp { reason }
            }
        };
        let _ = tcp.set_nodelay(true);
        Self {
            shared: Arc::new(Shared {
                stack: stack.clone(),
                tcp,
                transport,
            }),
        }
    }

    /// Connects to `addr` and runs the CLC handshake; falls back to TCP when SMC-D is not
    /// possible.
    ///
    /// # Errors
    /// TCP connect errors, CLC timeouts and malformed CLC answers.
    pub fn connect(stack: &Arc<SmcStack>, addr: impl ToSocketAddrs) -> io::Result<Stream> {
        let mut tcp = TcpStream::connect(addr)?;
        let outcome = handshake::client(stack, &mut tcp)?;
        Ok(Self::from_outcome(stack, tcp, outcome))
    }

    /// Whether data flows over SMC-D.
    pub fn is_smc(&self) -> bool {
        matches!(self.shared.transport, Transport::Smc { .. })
    }

    /// Why the connection runs over TCP, if it does.
    pub fn fallback_reason(&self) -> Option<DeclineReason> {
        match self.shared.transport {
            Transport::Tcp { reason } => Some(reason),
            Transport::Smc { .. } => None,
        }
    }

    /// SMC-D version in use (1 or 2), if SMC-D.
    pub fn smc_version(&self) -> Option<u8> {
        match self.shared.transport {
            Transport::Smc { version, .. } => Some(version),
            Transport::Tcp { .. } => None,
        }
    }

    /// Whether this connection opened a new link group, if SMC-D.
    pub fn first_contact(&self) -> Option<bool> {
        match self.shared.transport {
            Transport::Smc { first_contact, .. } => Some(first_contact),
            Transport::Tcp { .. } => None,
        }
    }

    /// The SMC-D connection, if any (for inspection and tests).
    pub fn conn(&self) -> Option<&Arc<Conn>> {
        match &self.shared.transport {
            Transport::Smc { conn, .. } => Some(conn),
            Transport::Tcp { .. } => None,
        }
    }

    /// Statistics.
    pub fn stats(&self) -> StreamStats {
        match &self.shared.transport {
            Transport::Smc { conn, .. } => StreamStats {
                smc: true,
                nocopy: conn.is_nocopy(),
                fallback: None,
                conn: conn.stats(),
            },
            Transport::Tcp { reason } => StreamStats {
                smc: false,
                nocopy: false,
                fallback: Some(*reason),
                conn: ConnStats::default(),
            },
        }
    }

    /// Busy-poll the device while waiting instead of sleeping (SMC-D only).
    pub fn set_busy_poll(&self, on: bool) {
        if let Some(c) = self.conn() {
            c.set_busy_poll(on);
        }
    }

    /// Limit for one blocking read or write; `None` waits forever.
    ///
    /// # Errors
    /// As `TcpStream::set_read_timeout`.
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self.conn() {
            Some(c) => {
                c.set_timeout_ms(t.map_or(0, |d| d.as_millis().max(1) as u64));
                Ok(())
            }
            None => {
                self.shared.tcp.set_read_timeout(t)?;
                self.shared.tcp.set_write_timeout(t)
            }
        }
    }

    /// Shuts down reading, writing or both.
    ///
    /// # Errors
    /// As `TcpStream::shutdown` for TCP; `BrokenPipe` if the SMC-D peer cannot be told.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self.conn() {
            Some(c) => {
                if matches!(how, Shutdown::Read | Shutdown::Both) {
                    c.shutdown_read();
                }
                if matches!(how, Shutdown::Write | Shutdown::Both) {
                    c.shutdown_write()?;
                }
                Ok(())
            }
            None => self.shared.tcp.shutdown(how),
        }
    }

    /// Aborts the connection: the peer's reads and writes fail with `ConnectionReset`.
    pub fn abort(&self) {
        match self.conn() {
            Some(c) => c.abort(),
            None => {
                let _ = self.shared.tcp.shutdown(Shutdown::Both);
            }
        }
    }

    /// A second handle to the same connection (for a reader and a writer thread).
    ///
    /// # Errors
    /// None today; fallible like `TcpStream::try_clone`.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(Self {
            shared: self.shared.clone(),
        })
    }

    /// The peer's address.
    ///
    /// # Errors
    /// As `TcpStream::peer_addr`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.shared.tcp.peer_addr()
    }

    /// The local address.
    ///
    /// # Errors
    /// As `TcpStream::local_addr`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.tcp.local_addr()
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.conn() {
            Some(c) => c.read(buf),
            None => (&self.shared.tcp).read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.conn() {
            Some(c) => c.write(buf),
            None => (&self.shared.tcp).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.conn() {
            Some(_) => Ok(()),
            None => (&self.shared.tcp).flush(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

impl core::fmt::Debug for Stream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Stream")
            .field("smc", &self.is_smc())
            .field("fallback", &self.fallback_reason())
            .finish_non_exhaustive()
    }
}

/// A listening socket whose accepted connections run the server side of the handshake.
pub struct Listener {
    tcp: TcpListener,
    stack: Arc<SmcStack>,
}

impl Listener {
    /// Binds to `addr`.
    ///
    /// # Errors
    /// As `TcpListener::bind`.
    pub fn bind(stack: &Arc<SmcStack>, addr: impl ToSocketAddrs) -> io::Result<Listener> {
        Ok(Self {
            tcp: TcpListener::bind(addr)?,
            stack: stack.clone(),
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// As `TcpListener::local_addr`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts one connection and runs the handshake (SMC-D or fallback).
    ///
    /// # Errors
    /// Accept errors, CLC timeouts and I/O errors during the handshake.
    pub fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let (mut tcp, addr) = self.tcp.accept()?;
        let outcome = handshake::server(&self.stack, &mut tcp)?;
        Ok((Stream::from_outcome(&self.stack, tcp, outcome), addr))
    }
}
