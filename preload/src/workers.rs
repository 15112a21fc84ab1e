//! The library's threads that set connections up (a `connect`'s, or an accepted
//! connection's handshake: `crate::connecting`), kept between jobs so that a new
//! connection does not pay for a thread's creation.
//!
//! A job goes to a waiting thread, or to a new one when every thread is busy (jobs never
//! wait for each other: handshakes of concurrent connections overlap). A thread that has
//! waited [`KEEP_IDLE`] for work ends, so an idle program keeps none. Threads start with
//! every signal blocked (the program's handlers run in its own threads, as without the
//! library). A forked child has none of its parent's threads: its pool starts empty
//! ([`prepare_fork`], [`in_child`]); jobs queued at the fork stay the parent's.
//!
//! Never runs a job in the caller's thread; [`run`] gives the job back if no thread can
//! be had.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Work for a pool thread.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long a thread waits for work before it ends.
pub const KEEP_IDLE: Duration = Duration::from_secs(2);

/// The pool's state.
pub struct Pool {
    /// Jobs no thread took yet.
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
    /// Threads alive.
    threads: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    jobs: VecDeque::new(),
    idle: 0,
    threads: 0,
});
static WORK: Condvar = Condvar::new();

fn lock() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `job` on a pool thread (`name` names a new one). `Err(job)`: no thread could be
/// started, and no waiting one is free; the caller runs it or gives up.
pub fn run(name: &str, job: Job) -> Result<(), Job> {
    let mut p = lock();
    p.jobs.push_back(job);
    if p.jobs.len() <= p.idle {
        drop(p);
        WORK.notify_one();
        return Ok(());
    }
    p.threads += 1;
    drop(p);
    let spawned = crate::runtime::with_signals_blocked(|| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(serve)
            .is_ok()
    });
    if spawned {
        return Ok(());
    }
    let mut p = lock();
    p.threads -= 1;
    // The job is still queued unless a waiting thread took it meanwhile.
    match p.jobs.pop_back() {
        Some(j) => Err(j),
        None => Ok(()),
    }
}

/// A pool thread: takes jobs until none came for [`KEEP_IDLE`].
fn serve() {
    let mut p = lock();
    loop {
        if let Some(job) = p.jobs.pop_front() {
            drop(p);
            job();
            p = lock();
            continue;
        }
        p.idle += 1;
        let (g, waited) = WORK
            .wait_timeout(p, KEEP_IDLE)
            .unwrap_or_else(|e| e.into_inner());
        p = g;
        p.idle -= 1;
        if waited.timed_out() && p.jobs.is_empty() {
            p.threads -= 1;
            return;
        }
    }
}

/// Threads alive and waiting.
#[cfg(test)]
fn counts() -> (usize, usize) {
    let p = lock();
    (p.threads, p.idle)
}

/// Before `fork` (`crate::fork`'s prepare handler): holds the pool so that no thread of
/// the parent holds it at the fork.
pub fn prepare_fork() -> MutexGuard<'static, Pool> {
    lock()
}

/// In the child after `fork`, with the guard [`prepare_fork`] took: the parent's threads
/// are not here, and its queued jobs are its own (forgotten, never run or dropped: they
/// hold the parent's connections). Only stores, no allocation.
pub fn in_child(mut p: MutexGuard<'static, Pool>) {
    std::mem::forget(std::mem::take(&mut p.jobs));
    p.idle = 0;
    p.threads = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no signal sets")]
    fn jobs_run_at_once_in_parallel_and_threads_are_reused() {
        // Two jobs that wait for each other: they must run on two threads at once.
        let (tx1, rx1) = mpsc::channel::<()>();
        let (tx2, rx2) = mpsc::channel::<()>();
        let (done, finished) = mpsc::channel::<u8>();
        let d1 = done.clone();
        run(
            "t",
            Box::new(move || {
                tx1.send(()).unwrap();
                rx2.recv().unwrap();
                d1.send(1).unwrap();
            }),
        )
        .map_err(|_| ())
        .unwrap();
        let d2 = done.clone();
        run(
            "t",
            Box::new(move || {
                rx1.recv().unwrap();
                tx2.send(()).unwrap();
                d2.send(2).unwrap();
            }),
        )
        .map_err(|_| ())
        .unwrap();
        let mut got = [
            finished.recv_timeout(Duration::from_secs(5)).unwrap(),
            finished.recv_timeout(Duration::from_secs(5)).unwrap(),
        ];
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        // Both threads now wait for work; the next job takes one of them.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while counts().1 < 2 {
            assert!(std::time::Instant::now() < deadline, "{:?}", counts());
            std::thread::sleep(Duration::from_millis(1));
        }
        let before = counts().0;
        let d3 = done.clone();
        run("t", Box::new(move || d3.send(3).unwrap()))
            .map_err(|_| ())
            .unwrap();
        assert_eq!(finished.recv_timeout(Duration::from_secs(5)).unwrap(), 3);
        assert_eq!(counts().0, before, "a waiting thread took the job");
    }
}
