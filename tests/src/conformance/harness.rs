//! The harness: commands and store-blocks through [`DeviceUnderTest`], sessions that undo
//! what they register, the list of checks as data ([`checks`], [`run_all`]) and as tests
//! ([`conformance_tests!`](crate::conformance_tests)).

use std::time::Duration;

use ism_abi::regs::COMMAND_AREA_SIZE;
use ism_abi::{DevAddr, DmbToken, Gid, Request};
use ism_hal::DmaMemory;
use ism_host_driver::ism::{Bus, BusError, HostMemory};

use super::checks::{IEQ_ENTRY_LEN, IEQ_LEN, PAGE, SBA_SIZE};
use super::dut::{Check, CheckResult, DeviceUnderTest};

/// Every check, by name (the name is the check function's without `check_`).
pub fn checks<D: DeviceUnderTest>() -> Vec<(&'static str, Check<D>)> {
    crate::__ism_conformance_with_checks!(__ism_conformance_list! { D })
}

/// Runs every check in order; returns each check's name and result.
pub fn run_all<D: DeviceUnderTest>(dut: &D) -> Vec<(&'static str, CheckResult)> {
    checks::<D>()
        .into_iter()
        .map(|(name, check)| (name, check(dut)))
        .collect()
}

/// One `#[test]` per conformance check, in a module of its own, for the device that
/// `$dut` (an expression, evaluated afresh for every test) builds. Test names are
/// `$module::<check>`, so `cargo test $module::` runs them all and
/// `cargo test $module::signal_ieq` one of them. A failing test panics with the check's
/// reason.
///
/// ```ignore
/// ism_tests::conformance_tests!(lpar, SimDut::lpar(2));
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, $dut:expr $(,)?) => {
        $crate::__ism_conformance_with_checks!(__ism_conformance_test_fns! { $module, $dut });
    };
}

/// Expands to the `Vec` of [`checks`]; called back with the check list.
#[doc(hidden)]
#[macro_export]
macro_rules! __ism_conformance_list {
    ($d:ident; $(($name:ident, $check:ident)),* $(,)?) => {
        vec![$((
            stringify!($name),
            $crate::conformance::$check::<$d> as $crate::conformance::Check<$d>,
        )),*]
    };
}

/// Expands to the test module of [`conformance_tests!`](crate::conformance_tests); called
/// back with the check list.
#[doc(hidden)]
#[macro_export]
macro_rules! __ism_conformance_test_fns {
    ($module:ident, $dut:expr; $(($name:ident, $check:ident)),* $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    let dut = $dut;
                    if let Err(e) = $crate::conformance::$check(&dut) {
                        panic!("{} failed on {}: {e}", stringify!($name), stringify!($module));
                    }
                }
            )*
        }
    };
}

// ---------------------------------------------------------------------------- commands

/// A command response as read from the command area.
#[derive(Clone, Debug)]
pub struct Response {
    /// `cmd` (the device should echo the request's code).
    pub cmd: u32,
    /// `ret`: 0 on success.
    pub ret: u16,
    /// `len`: total response length.
    pub len: u16,
    /// The whole area as read back (body valid only when `ret == 0`).
    pub raw: [u8; COMMAND_AREA_SIZE],
}

impl Response {
    /// The big-endian u64 at byte `off`.
    pub fn u64_at(&self, off: usize) -> u64 {
        u64::from_be_bytes(self.raw[off..off + 8].try_into().expect("8 bytes"))
    }

    /// The big-endian u32 at byte `off`.
    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_be_bytes(self.raw[off..off + 4].try_into().expect("4 bytes"))
    }
}

/// Posts raw request bytes to function `f` (with `ret` preset to `0xFFFF`, as Linux does).
///
/// # Errors
/// A readable message if the bus fails.
pub fn raw_command<D: DeviceUnderTest>(
    dut: &D,
    f: usize,
    request: &[u8],
) -> Result<Response, String> {
    let mut raw = [0u8; COMMAND_AREA_SIZE];
    raw[4..6].copy_from_slice(&0xFFFFu16.to_be_bytes());
    dut.bus(f)
        .command(request, &mut raw)
        .map_err(|e| format!("function {f}: bus error {e:?} on a command"))?;
    Ok(Response {
        cmd: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
        ret: u16::from_be_bytes([raw[4], raw[5]]),
        len: u16::from_be_bytes([raw[6], raw[7]]),
        raw,
    })
}

/// Encodes `req` and posts it to function `f`.
///
/// # Errors
/// A readable message if the bus fails.
pub fn command<D: DeviceUnderTest>(dut: &D, f: usize, req: Request) -> Result<Response, String> {
    let mut buf = [0u8; 64];
    let n = req.emit(&mut buf).ok_or("request does not fit 64 bytes")?;
    raw_command(dut, f, &buf[..n])
}

pub(super) fn expect_ok<D: DeviceUnderTest>(
    dut: &D,
    f: usize,
    req: Request,
) -> Result<Response, String> {
    let r = command(dut, f, req)?;
    if r.ret != 0 {
        return Err(format!(
            "{} on function {f} failed with ret {:#06x}: {req:?}",
            req.opcode().name(),
            r.ret
        ));
    }
    Ok(r)
}

pub(super) fn expect_refused<D: DeviceUnderTest>(
    dut: &D,
    f: usize,
    req: Request,
    why: &str,
) -> Result<Response, String> {
    let r = command(dut, f, req)?;
    if r.ret == 0 {
        return Err(format!(
            "{} on function {f} succeeded but must be refused ({why}): {req:?}",
            req.opcode().name()
        ));
    }
    Ok(r)
}

/// Issues one store-block from function `f`: the request word is built as Linux's
/// `ISM_CREATE_REQ`: `token | idx << 24 | sf << 23 | offset`.
///
/// # Errors
/// The bus error (a refused store).
pub fn store<D: DeviceUnderTest>(
    dut: &D,
    f: usize,
    token: DmbToken,
    dmbe_idx: u8,
    signal: bool,
    offset: u32,
    data: &[u8],
) -> Result<(), BusError> {
    let word =
        token.0 | (u64::from(dmbe_idx) << 24) | (u64::from(signal) << 23) | u64::from(offset);
    dut.bus(f).store_block(word, data)
}

pub(super) fn take_all_irqs<D: DeviceUnderTest>(dut: &D) {
    for f in 0..dut.functions() {
        for _ in 0..64 {
            if !dut.wait_irq(f, Duration::ZERO) {
                break;
            }
        }
    }
}

pub(super) fn must<T, E: core::fmt::Debug>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e:?}"))
}

// ---------------------------------------------------------------------------- sessions

/// One function as a minimal host uses it: what it registered is undone on drop.
pub(super) struct Session<'a, D: DeviceUnderTest> {
    pub(super) dut: &'a D,
    pub(super) f: usize,
    pub(super) gid: Gid,
    pub(super) sba: Option<DevAddr>,
    pub(super) ieq: Option<DevAddr>,
    pub(super) vlans: Vec<u64>,
    pub(super) dmbs: Vec<DmbToken>,
    pub(super) allocs: Vec<(DevAddr, usize)>,
}

impl<'a, D: DeviceUnderTest> Session<'a, D> {
    /// Nothing registered yet; reads the GID.
    pub(super) fn bare(dut: &'a D, f: usize) -> Result<Self, String> {
        let r = expect_ok(dut, f, Request::ReadGid)?;
        Ok(Self {
            dut,
            f,
            gid: Gid(r.u64_at(8)),
            sba: None,
            ieq: None,
            vlans: Vec::new(),
            dmbs: Vec::new(),
            allocs: Vec::new(),
        })
    }

    /// REG_SBA and REG_IEQ (512 bytes), as Linux's probe.
    pub(super) fn open(dut: &'a D, f: usize) -> Result<Self, String> {
        let mut s = Self::bare(dut, f)?;
        let sba = s.alloc(SBA_SIZE, PAGE)?;
        expect_ok(dut, f, Request::RegSba { sba })?;
        s.sba = Some(sba);
        let ieq = s.alloc(PAGE, PAGE)?;
        expect_ok(dut, f, Request::RegIeq { ieq, len: IEQ_LEN })?;
        s.ieq = Some(ieq);
        Ok(s)
    }

    pub(super) fn mem(&self) -> &<D::HostMemory as HostMemory>::Memory {
        self.dut.host_memory(self.f).memory()
    }

    pub(super) fn alloc(&mut self, size: usize, align: usize) -> Result<DevAddr, String> {
        let a = self
            .dut
            .host_memory(self.f)
            .dma_alloc(size, align)
            .ok_or_else(|| {
                format!(
                    "function {}: cannot allocate {size} bytes of DMA memory",
                    self.f
                )
            })?;
        self.allocs.push((a, size));
        Ok(a)
    }

    /// Allocates a buffer and registers it as a DMB; returns (token, address).
    pub(super) fn reg_dmb(
        &mut self,
        len: usize,
        sba_idx: u32,
        rgid: Gid,
    ) -> Result<(DmbToken, DevAddr), String> {
        let addr = self.alloc(len.div_ceil(PAGE) * PAGE, PAGE)?;
        let tok = self.reg_dmb_at(addr, len as u32, sba_idx, rgid)?;
        Ok((tok, addr))
    }

    pub(super) fn reg_dmb_at(
        &mut self,
        dmb: DevAddr,
        len: u32,
        sba_idx: u32,
        rgid: Gid,
    ) -> Result<DmbToken, String> {
        let req = Request::RegDmb {
            dmb,
            len,
            sba_idx,
            vlan: None,
            rgid,
        };
        let r = expect_ok(self.dut, self.f, req)?;
        if r.len < 16 {
            return Err(format!("REG_DMB response len {} (< 16, no token)", r.len));
        }
        let tok = DmbToken(r.u64_at(8));
        self.dmbs.push(tok);
        Ok(tok)
    }

    pub(super) fn unreg_dmb(&mut self, tok: DmbToken) -> Result<(), String> {
        expect_ok(self.dut, self.f, Request::UnregDmb { token: tok })?;
        self.dmbs.retain(|t| *t != tok);
        Ok(())
    }

    pub(super) fn add_vlan(&mut self, id: u64) -> Result<(), String> {
        expect_ok(self.dut, self.f, Request::AddVlanId { vlan_id: id })?;
        self.vlans.push(id);
        Ok(())
    }

    pub(super) fn del_vlan(&mut self, id: u64) -> Result<(), String> {
        expect_ok(self.dut, self.f, Request::DelVlanId { vlan_id: id })?;
        self.vlans.retain(|v| *v != id);
        Ok(())
    }

    pub(super) fn sba(&self) -> Result<DevAddr, String> {
        self.sba.ok_or_else(|| "no SBA registered".into())
    }

    pub(super) fn sba_bytes(&self) -> Result<Vec<u8>, String> {
        let mut b = vec![0u8; SBA_SIZE];
        must(self.mem().read(self.sba()?, &mut b), "read SBA")?;
        Ok(b)
    }

    pub(super) fn clear_sba(&self) -> Result<(), String> {
        must(self.mem().zero(self.sba()?, SBA_SIZE as u64), "clear SBA")
    }

    pub(super) fn ieq_u64(&self, off: u64) -> Result<u64, String> {
        let ieq = self.ieq.ok_or("no IEQ registered")?;
        let b = must(self.mem().load_u64(DevAddr(ieq.0 + off)), "read IEQ")?;
        Ok(u64::from_be_bytes(b))
    }

    /// Entry `k`: (type, code, tok, info).
    pub(super) fn ieq_entry(&self, k: u64) -> Result<(u32, u32, u64, u64), String> {
        let at = IEQ_ENTRY_LEN * (k + 1);
        let w0 = self.ieq_u64(at)?;
        Ok((
            (w0 >> 32) as u32,
            w0 as u32,
            self.ieq_u64(at + 8)?,
            self.ieq_u64(at + 24)?,
        ))
    }
}

impl<D: DeviceUnderTest> Drop for Session<'_, D> {
    fn drop(&mut self) {
        for tok in self.dmbs.drain(..) {
            let _ = command(self.dut, self.f, Request::UnregDmb { token: tok });
        }
        for id in self.vlans.drain(..) {
            let _ = command(self.dut, self.f, Request::DelVlanId { vlan_id: id });
        }
        if self.ieq.take().is_some() {
            let _ = command(self.dut, self.f, Request::UnregIeq);
        }
        if self.sba.take().is_some() {
            let _ = command(self.dut, self.f, Request::UnregSba);
        }
        for (a, n) in self.allocs.drain(..) {
            self.dut.host_memory(self.f).dma_free(a, n);
        }
    }
}

/// Opens the owner (function 0) and the writer (function 1, or 0 on a one-function
/// device); returns the sessions and the writer's index in the vector.
pub(super) fn open_pair<D: DeviceUnderTest>(
    dut: &D,
) -> Result<(Vec<Session<'_, D>>, usize), String> {
    if dut.functions() == 0 {
        return Err("the device has no functions".into());
    }
    let n = dut.functions().min(2);
    let ss = (0..n)
        .map(|f| Session::open(dut, f))
        .collect::<Result<Vec<_>, _>>()?;
    take_all_irqs(dut);
    Ok((ss, n - 1))
}

/// A GID that none of the device's first functions has.
pub(super) fn unknown_gid<D: DeviceUnderTest>(ss: &[Session<'_, D>]) -> Gid {
    let mut g = 0x0BAD_0000_0000_0001u64;
    while ss.iter().any(|s| s.gid.0 == g) {
        g = g.wrapping_add(0x1_0001);
    }
    Gid(g)
}
