//! The quiet page: a reader that spins tells its peer's library to skip the doorbell record.
//!
//! With doorbells exchanged (`crate::smc::Bells`) the sender writes one record into the
//! receiver's doorbell after every data CDC, and the receiver's next read takes it: two
//! system calls per message (a UNIX-socket `send` with its buffer allocation, a `recv`),
//! about half of a sockperf ping-pong's round trip on the machines this runs on. A reader
//! that is spinning in a blocking read needs neither: it looks at the ring itself. So each
//! end of a connection shares one page (a sealed `memfd`) with its peer's library:
//!
//! * **`QUIET`** (written by both): the high byte counts the receiver's threads that spin
//!   in a blocking read now ([`Page::spinning`]); the low 56 bits are the most the sender
//!   delivered *quietly*, with no record (its total of bytes sent, taken modulo 2⁵⁶).
//!   The sender skips a record only by a compare-and-swap that finds the count non-zero
//!   ([`Page::try_quiet`]), and the receiver's spin ends by taking its count out of the
//!   same word: a sender that saw the count wrote its total before that, and every later
//!   one writes a record, so a reader that stops spinning and sleeps in the kernel on its
//!   doorbell always has a record coming for data that no look of its saw.
//! * **`RECORDS`** (written by the sender): how many records it wrote in all, each counted
//!   before its `send` (and taken back if the kernel refused it), so that a record in the
//!   doorbell is always counted. A receiver that has taken that many from its doorbell
//!   (and its own put-back ones) knows it holds none, and skips the `recv` that would find
//!   it empty ([`Page::records`]).
//! * **`TAKEN`** (written by the sender, once): set when the peer's library took the page
//!   before it rang anything; until then the receiver counts on nothing above (a peer
//!   library of an older version never takes it, and writes every record).
//! * **`CPU`** and **`STAMP`** (written by the receiver's spinners): the CPU the last spin
//!   began on (its peer yields before its own spin only if it runs there:
//!   [`Page::spinner_may_be_here`]) and when, in milliseconds of the coarse monotonic clock (the
//!   sender trusts no count older than `STALE_MS`). A thread that leaves a read by
//!   `siglongjmp` from a signal handler would keep the peer quiet: the library's signal
//!   trampoline takes the thread's count out before the handler runs
//!   ([`withdraw_for_handler`], the guard's own `fetch_sub` done early, so the loom model
//!   holds for it), and the stamp bounds what a handler it does not run can leave.
//!
//! Each end makes its page with its doorbell and offers it (one byte with the descriptor in
//! `SCM_RIGHTS`, [`Page::offer`]) on its own A, toward its B, which the peer holds:
//! * the client before its B goes to the board with its registration; the server, handed
//!   that B at its take, takes the page from it at once ([`Page::take`]), before its
//!   handshake (the client drains its B only when its handshake is done);
//! * the server right after, only if it found the client's (the pages go in pairs, as the
//!   doorbells); the client takes it from the server's B when it takes that doorbell,
//!   after its handshake. The server's set-up ends by draining its B (A polls writable
//!   then): the offer, if the client has not taken it yet, is taken out first and offered
//!   again after ([`Page::take_offer`]).
//!
//! Offers never go into a peer's A: an offer there would make the program's descriptor
//! poll readable during the set-up (wrk read `EAGAIN` there and counted thousands of
//! errors).
//!
//! Nothing in this crosses the board: the page is this library's business with its peer,
//! as the records are (host-interface.md 3.5). A page that did not come (a peer without
//! pages, a descriptor that is not a sealed page) costs nothing but the records.
//!
//! The protocol has a loom model (`firmware/tests/loom.rs`, "the quiet page": no lost
//! wake-up, a record in the doorbell always counted, and the two mistakes it catches); a
//! change to [`Page::try_quiet`], [`Page::spinning`] or [`Page::count_record`] must be
//! mirrored there.
//!
//! This module owns the page's layout and its words' protocol; it never decides what
//! a read may take (`crate::smc` folds the quiet total into what the records announced).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use ism_sim::memory::SharedMapping;
use libc::c_int;

/// The page's size.
const SIZE: usize = 4096;
/// Word indices (8-byte words) of the page, all on its first cache line.
const QUIET: usize = 0;
const RECORDS: usize = 1;
const TAKEN: usize = 2;
const CPU: usize = 3;
const STAMP: usize = 4;
/// A count older than this is a leaked one (a thread that left a read by `longjmp` from a
/// signal handler): the sender writes records again. A read counts itself only while it
/// does not sleep (a spin of 30 µs and its reads), so a live count is far younger; a
/// spinner preempted for longer only costs records, which are always correct.
const STALE_MS: u64 = 20;
/// One spinning reader in `QUIET`'s count (its high byte).
const ONE_SPINNER: u64 = 1 << 56;
/// `QUIET`'s quiet total (its low 56 bits).
const TOTAL_MASK: u64 = ONE_SPINNER - 1;
/// What `TAKEN` says once the peer took the page.
const TAKEN_MARK: u64 = u64::from_le_bytes(*b"quiet\0\0\0");
/// The one byte that carries the page's descriptor.
const OFFER_BYTE: u8 = b'Q';

/// One end's quiet page, mapped (see the module's doc).
pub struct Page {
    map: SharedMapping,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("quiet", &self.word(QUIET).load(Ordering::Relaxed))
            .field("records", &self.records())
            .field("taken", &self.taken())
            .finish()
    }
}

impl Page {
    fn word(&self, i: usize) -> &AtomicU64 {
        self.map.word(i).expect("the page holds its words")
    }

    /// A new page (all zero) and its descriptor, sealed so that no process can shrink it
    /// under another's mapping.
    ///
    /// # Errors
    /// The `errno` of `memfd_create`, `ftruncate`, the seals or `mmap`.
    pub fn create() -> Result<(Self, OwnedFd), c_int> {
        use rustix::fs::{MemfdFlags, SealFlags};
        let err = |e: rustix::io::Errno| e.raw_os_error();
        let fd = rustix::fs::memfd_create(
            "ism-run-quiet",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(err)?;
        rustix::fs::ftruncate(&fd, SIZE as u64).map_err(err)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(err)?;
        let map = SharedMapping::map_shared(&fd, SIZE)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOMEM))?;
        Ok((Self { map }, fd))
    }

    /// A page of this process only (tests: both ends in one process).
    #[cfg(test)]
    fn private() -> Self {
        Self {
            map: SharedMapping::heap(SIZE),
        }
    }

    /// Puts the page's descriptor `fd` into the doorbell socket `a` (one byte, the
    /// descriptor in `SCM_RIGHTS`): it waits at the head of A→B for the peer handed B.
    /// Without waiting; whether it went.
    pub fn offer(a: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> bool {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = [fd];
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return false;
        }
        let iov = [std::io::IoSlice::new(&[OFFER_BYTE])];
        matches!(
            rustix::net::sendmsg(
                a,
                &iov,
                &mut control,
                SendFlags::DONTWAIT | SendFlags::NOSIGNAL
            ),
            Ok(1)
        )
    }

    /// Takes the page the peer offered on the doorbell socket `s` (see
    /// [`Page::take_offer`]), maps it and marks it taken. `None` if no offer is there or
    /// what came is not a sealed page of the right size.
    pub fn take(s: BorrowedFd<'_>) -> Option<Self> {
        let page = Self::of_fd(Self::take_offer(s)?.as_fd())?;
        page.word(TAKEN).store(TAKEN_MARK, Ordering::Release);
        Some(page)
    }

    /// Takes an offer from the doorbell socket `s`, without waiting: the next message in
    /// `s` is looked at first (`MSG_PEEK`), and taken only if it is an offer (its byte
    /// with a descriptor), so that a record or a fill byte is left where it is. The
    /// offered descriptor, or `None`.
    pub fn take_offer(s: BorrowedFd<'_>) -> Option<OwnedFd> {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        let mut byte = [0u8; 1];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [std::io::IoSliceMut::new(&mut byte)];
        // A peek passes the descriptors too (Linux's `unix_stream_read_generic` in
        // `net/unix/af_unix.c` duplicates them for `MSG_PEEK`).
        let got = rustix::net::recvmsg(
            s,
            &mut iov,
            &mut control,
            RecvFlags::DONTWAIT | RecvFlags::PEEK | RecvFlags::CMSG_CLOEXEC,
        )
        .ok()?;
        let mut fd: Option<OwnedFd> = None;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(it) = msg {
                for f in it {
                    fd.get_or_insert(f); // any more are closed as they drop
                }
            }
        }
        let fd = fd.filter(|_| got.bytes == 1 && byte[0] == OFFER_BYTE)?;
        // The offer itself (its descriptor's copy in the socket goes with it).
        let _ = rustix::net::recv(s, &mut byte, RecvFlags::DONTWAIT);
        Some(fd)
    }

    /// Maps `fd` if it is a page: a memfd sealed against shrinking, of the page's size.
    fn of_fd(fd: BorrowedFd<'_>) -> Option<Self> {
        let seals = rustix::fs::fcntl_get_seals(fd).ok()?;
        if !seals.contains(rustix::fs::SealFlags::SHRINK) {
            return None;
        }
        let map = SharedMapping::map_shared(fd, SIZE).ok()?;
        Some(Self { map })
    }

    // -- the receiver's side --------------------------------------------------------------

    /// Whether the peer's library took this page (so that it counts its records and may
    /// deliver quietly).
    pub fn taken(&self) -> bool {
        self.word(TAKEN).load(Ordering::Acquire) == TAKEN_MARK
    }

    /// Counts one thread spinning in a blocking read until the guard drops: meanwhile the
    /// peer may deliver without a record. Dropping it takes the count out; after that,
    /// [`Page::quiet_total`] tells every quiet delivery there was, and the peer writes a
    /// record for each later one.
    ///
    /// The thread's first such count is also left where a signal handler about to run
    /// takes it out first ([`withdraw_for_handler`]): a handler may leave the read by
    /// `siglongjmp`, past the guard's drop, and a count left behind would keep the peer
    /// quiet while this end sleeps (its later spins keep the stamp fresh).
    pub fn spinning(&self) -> Spinning<'_> {
        self.word(STAMP).store(now_ms(), Ordering::Relaxed);
        let w = self.word(QUIET);
        w.fetch_add(ONE_SPINNER, Ordering::SeqCst);
        let p = (w as *const AtomicU64).cast_mut();
        let withdrawable = COUNTED
            .try_with(|c| {
                c.compare_exchange(std::ptr::null_mut(), p, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            })
            .unwrap_or(false);
        let cpu = current_cpu().map_or(0, |c| u64::from(c) + 1);
        self.word(CPU).store(cpu, Ordering::Relaxed);
        Spinning {
            page: self,
            withdrawable,
        }
    }

    /// Whether the receiver's last spinning thread may be on this thread's CPU: its spin
    /// began there, or where is unknown (its peer yields before its own spin only then,
    /// see `crate::smc`).
    pub fn spinner_may_be_here(&self) -> bool {
        match (self.word(CPU).load(Ordering::Relaxed), current_cpu()) {
            (0, _) | (_, None) => true,
            (c, Some(here)) => c - 1 == u64::from(here),
        }
    }

    /// The most the peer delivered quietly (its total of bytes sent, in all), given
    /// `received`, our total received (the page keeps only 56 bits: the quiet total is
    /// the one nearest to `received`, which it never trails or leads by 2⁵⁵).
    pub fn quiet_total(&self, received: u64) -> u64 {
        let low = self.word(QUIET).load(Ordering::Acquire) & TOTAL_MASK;
        if low == 0 {
            return 0;
        }
        let behind = received.wrapping_sub(low) & TOTAL_MASK;
        if behind < 1 << 55 {
            received.wrapping_sub(behind)
        } else {
            received.wrapping_add(ONE_SPINNER - behind)
        }
    }

    /// How many records the peer has written into our doorbell in all (each counted once
    /// the kernel took it).
    pub fn records(&self) -> u64 {
        self.word(RECORDS).load(Ordering::Acquire)
    }

    // -- the sender's side ----------------------------------------------------------------

    /// Delivers `total` (bytes sent in all, its CDC in place) quietly if a reader of the
    /// peer spins now: then no record is to be written. `false`: write one.
    pub fn try_quiet(&self, total: u64) -> bool {
        let w = self.word(QUIET);
        let mut q = w.load(Ordering::Acquire);
        if q < ONE_SPINNER
            || now_ms().saturating_sub(self.word(STAMP).load(Ordering::Relaxed)) > STALE_MS
        {
            return false;
        }
        loop {
            if q < ONE_SPINNER {
                return false;
            }
            let new = (q & !TOTAL_MASK) | (total & TOTAL_MASK);
            match w.compare_exchange_weak(q, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => q = now,
            }
        }
    }

    /// Counts a record about to be written, before its `send`: a reader that finds it in
    /// its doorbell (`epoll` said readable) must never think it holds none. A reader that
    /// looks between the two finds nothing yet and looks again next time.
    pub fn count_record(&self) {
        self.word(RECORDS).fetch_add(1, Ordering::AcqRel);
    }

    /// Takes back [`Page::count_record`] for a record the kernel refused.
    pub fn uncount_record(&self) {
        self.word(RECORDS).fetch_sub(1, Ordering::AcqRel);
    }
}

/// The CPU this thread runs on now, if the kernel says (under Miri, which cannot ask it:
/// never).
#[cfg(miri)]
fn current_cpu() -> Option<u32> {
    None
}

/// The CPU this thread runs on now, if the kernel says.
#[cfg(not(miri))]
fn current_cpu() -> Option<u32> {
    // SAFETY: `sched_getcpu` takes no arguments and only reads (glibc: from the thread's
    // `rseq` area or the vDSO).
    u32::try_from(unsafe { libc::sched_getcpu() }).ok()
}

/// Milliseconds of the coarse monotonic clock (one clock for all processes; a vDSO read).
fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the time into a local `timespec`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1000) + ts.tv_nsec as u64 / 1_000_000
}

thread_local! {
    /// The `QUIET` word this thread counts itself in while it spins, if a signal handler
    /// may take the count out ([`withdraw_for_handler`]); null otherwise. Set and cleared
    /// by [`Spinning`] only, while its page is mapped.
    static COUNTED: AtomicPtr<AtomicU64> = const { AtomicPtr::new(std::ptr::null_mut()) };
}

/// Called by the library's signal trampoline (`crate::signals`) before the program's
/// handler runs: takes this thread's spinning count out of its page, as the guard's drop
/// would (async-signal-safe: two atomic operations). From then on the peer writes a
/// record for every delivery; the spin, if the handler returns, sees the data so, and
/// ends as it always does (its last look follows this). A `siglongjmp` out of the handler
/// leaves no count behind.
pub fn withdraw_for_handler() {
    let p = COUNTED
        .try_with(|c| c.swap(std::ptr::null_mut(), Ordering::SeqCst))
        .unwrap_or(std::ptr::null_mut());
    // SAFETY: a non-null `COUNTED` points to the `QUIET` word of the page of a live
    // `Spinning` guard of this thread (the guard clears it before its page can go, and
    // this swap took it, so nothing else takes the same count out).
    if let Some(w) = unsafe { p.as_ref() } {
        w.fetch_sub(ONE_SPINNER, Ordering::SeqCst);
    }
}

/// One thread counted as spinning in a blocking read (see [`Page::spinning`]).
#[must_use = "the count is taken out when the guard drops"]
pub struct Spinning<'a> {
    page: &'a Page,
    /// The count is in `COUNTED` (a signal handler may have taken it out already).
    withdrawable: bool,
}

impl Drop for Spinning<'_> {
    fn drop(&mut self) {
        if self.withdrawable {
            let p = COUNTED
                .try_with(|c| c.swap(std::ptr::null_mut(), Ordering::SeqCst))
                .unwrap_or(std::ptr::null_mut());
            if p.is_null() {
                return; // taken out by `withdraw_for_handler`
            }
        }
        self.page
            .word(QUIET)
            .fetch_sub(ONE_SPINNER, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_is_quiet_only_while_a_reader_spins() {
        let p = Page::private();
        assert!(!p.try_quiet(100), "nobody spins: a record");
        assert_eq!(p.quiet_total(100), 0);
        {
            let _s = p.spinning();
            assert!(p.try_quiet(100));
            assert!(p.try_quiet(250));
            assert_eq!(p.quiet_total(250), 250);
        }
        assert!(!p.try_quiet(300), "the spin ended: a record");
        assert_eq!(p.quiet_total(300), 250, "the last quiet total stays");
    }

    #[test]
    fn a_leaked_count_goes_stale() {
        let p = Page::private();
        let s = p.spinning();
        assert!(p.try_quiet(1));
        p.word(STAMP)
            .store(now_ms().saturating_sub(STALE_MS + 1), Ordering::Relaxed);
        std::mem::forget(s); // as a `longjmp` out of the read would
        assert!(!p.try_quiet(2), "a count that old is not trusted");
    }

    #[test]
    fn a_handler_takes_the_count_out_once_and_a_lost_guard_leaves_none() {
        let p = Page::private();
        let spinners = |p: &Page| p.word(QUIET).load(Ordering::SeqCst) >> 56;
        // A handler ran (the trampoline's call), then the read ended normally.
        let s = p.spinning();
        assert_eq!(spinners(&p), 1);
        withdraw_for_handler();
        assert_eq!(spinners(&p), 0);
        assert!(!p.try_quiet(10), "no spinner left: a record");
        withdraw_for_handler();
        drop(s);
        assert_eq!(spinners(&p), 0, "taken out once only");
        // A handler ran and left the read by longjmp: the guard is never dropped.
        let s = p.spinning();
        withdraw_for_handler();
        std::mem::forget(s);
        assert_eq!(spinners(&p), 0);
        // A read inside the handler (its own count), then the outer read's end.
        let outer = p.spinning();
        withdraw_for_handler();
        let inner = p.spinning();
        assert_eq!(spinners(&p), 1);
        drop(inner);
        drop(outer);
        assert_eq!(spinners(&p), 0);
        // No handler: the guard takes its own count out.
        let s = p.spinning();
        drop(s);
        assert_eq!(spinners(&p), 0);
        withdraw_for_handler();
        assert_eq!(spinners(&p), 0, "nothing to take out");
    }

    #[test]
    fn two_spinners_keep_it_quiet_until_both_are_gone() {
        let p = Page::private();
        let a = p.spinning();
        let b = p.spinning();
        drop(a);
        assert!(p.try_quiet(8));
        drop(b);
        assert!(!p.try_quiet(16));
    }

    #[test]
    fn the_quiet_total_is_rebuilt_past_56_bits() {
        let p = Page::private();
        let _s = p.spinning();
        let big = (1u64 << 56) + 1000;
        assert!(p.try_quiet(big));
        assert_eq!(p.quiet_total(big), big);
        assert_eq!(p.quiet_total(big + 10), big, "received ran ahead");
        assert_eq!(p.quiet_total(big - 10), big, "its CDC not seen yet");
    }

    #[test]
    fn records_are_counted() {
        let p = Page::private();
        assert!(!p.taken());
        p.count_record();
        p.count_record();
        assert_eq!(p.records(), 2);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no socket pairs and shared mappings")]
    fn an_offered_page_is_taken_through_the_socket_pair_and_shared() {
        let (a, b) = pair();
        let (own, fd) = Page::create().expect("a page");
        assert!(Page::offer(a.as_fd(), fd.as_fd()));
        let peer = Page::take(b.as_fd()).expect("taken");
        assert!(own.taken(), "the taker marks it");
        let _s = own.spinning();
        assert!(peer.try_quiet(42), "the two mappings are one page");
        assert_eq!(own.quiet_total(42), 42);
        peer.count_record();
        assert_eq!(own.records(), 1);
        assert!(Page::take(b.as_fd()).is_none(), "only one page was offered");
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no socket messages")]
    fn junk_or_a_foreign_descriptor_is_no_page() {
        let (a, b) = pair();
        assert!(Page::take(b.as_fd()).is_none(), "nothing there");
        rustix::io::write(&a, b"junk").unwrap();
        assert!(Page::take(b.as_fd()).is_none(), "a fill byte");
        let mut four = [0u8; 4];
        assert_eq!(
            rustix::io::read(&b, &mut four).unwrap(),
            4,
            "left where it was"
        );
        // A descriptor that is not a sealed memfd (a socket).
        let (a, b) = pair();
        assert!(Page::offer(a.as_fd(), a.as_fd()));
        assert!(Page::take(b.as_fd()).is_none(), "not a page");
        // An unsealed memfd of the right size.
        let (a, b) = pair();
        let fd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, SIZE as u64).unwrap();
        assert!(Page::offer(a.as_fd(), fd.as_fd()));
        assert!(Page::take(b.as_fd()).is_none(), "not sealed");
    }
}
