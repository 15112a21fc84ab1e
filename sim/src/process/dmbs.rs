//! The board's record of the DMBs its functions registered, for `ism-sim board status`:
//! kept from the commands the board executes and the functions that go down (the device
//! keeps its own table; this one only describes it).

use std::collections::BTreeMap;
use std::sync::Mutex;

use ism_firmware::wire::opcode::Opcode;

/// One registered DMB as the board saw it registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmbRecord {
    /// The token.
    pub token: u64,
    /// The owning function.
    pub owner: u16,
    /// The authorized writer's GID.
    pub writer: u64,
    /// Length in bytes.
    pub len: u32,
    /// SBA index at the owner.
    pub sba_idx: u32,
    /// Device address at the owner.
    pub addr: u64,
    /// The VLAN, if tagged.
    pub vlan: Option<u32>,
    /// Functions that have it attached (bit `i` = function `i`).
    pub attached: u64,
    /// Unregistered by its owner but still attached (released at the last detach).
    pub unregistered: bool,
}

/// The board's DMB records.
#[derive(Default)]
pub struct DmbShadow(Mutex<BTreeMap<u64, DmbRecord>>);

/// The big-endian `u64` at `at` of command or response bytes `b` (0 if `b` is too short).
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The big-endian `u32` at `at` of command or response bytes `b` (0 if `b` is too short).
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

impl DmbShadow {
    /// Records the effect of command `req` of function `f` that the device answered with
    /// `resp` (only successful REG_DMB, UNREG_DMB, ATTACH_DMB and DETACH_DMB change it).
    pub fn observe(&self, f: u16, req: &[u8], resp: &[u8]) {
        let ret = resp
            .get(4..6)
            .map_or(0xFFFF, |b| u16::from_be_bytes([b[0], b[1]]));
        if ret != 0 {
            return;
        }
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match Opcode::from_raw(be32(req, 0)) {
            Some(Opcode::RegDmb) => {
                let token = be64(resp, 8);
                t.insert(
                    token,
                    DmbRecord {
                        token,
                        owner: f,
                        writer: be64(req, 32),
                        len: be32(req, 16),
                        sba_idx: be32(req, 20),
                        addr: be64(req, 8),
                        vlan: (be32(req, 24) != 0).then(|| be32(req, 28)),
                        attached: 0,
                        unregistered: false,
                    },
                );
            }
            Some(Opcode::UnregDmb) => {
                let token = be64(req, 8);
                if let Some(r) = t.get_mut(&token) {
                    if r.attached == 0 {
                        t.remove(&token);
                    } else {
                        r.unregistered = true;
                    }
                }
            }
            Some(Opcode::AttachDmb) => {
                if let Some(r) = t.get_mut(&be64(req, 8)) {
                    r.attached |= 1 << f;
                }
            }
            Some(Opcode::DetachDmb) => {
                let token = be64(req, 8);
                if let Some(r) = t.get_mut(&token) {
                    r.attached &= !(1 << f);
                    if r.unregistered && r.attached == 0 {
                        t.remove(&token);
                    }
                }
            }
            _ => {}
        }
    }

    /// Function `f` went down: its DMBs are gone, its attachments released.
    pub fn function_down(&self, f: u16) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.retain(|_, r| {
            r.attached &= !(1 << f);
            r.owner != f && !(r.unregistered && r.attached == 0)
        });
    }

    /// The record of `token`, if registered (or unregistered but still attached).
    pub fn get(&self, token: u64) -> Option<DmbRecord> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&token)
            .cloned()
    }

    /// The records, by token.
    pub fn records(&self) -> Vec<DmbRecord> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &[u8]) -> Vec<u8> {
        let mut r = vec![0, 0, 0, 0, 0, 0, 0, 16];
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn register_attach_unregister_detach_and_down() {
        let s = DmbShadow::default();
        let mut reg = vec![0, 0, 0, 0x0A, 0, 0, 0, 40];
        reg.extend_from_slice(&0x1000u64.to_be_bytes());
        reg.extend_from_slice(&8192u32.to_be_bytes());
        reg.extend_from_slice(&40u32.to_be_bytes());
        reg.extend_from_slice(&[0; 8]);
        reg.extend_from_slice(&0x77u64.to_be_bytes());
        let tok = 0xABCD_0000_0000u64;
        s.observe(1, &reg, &ok(&tok.to_be_bytes()));
        let r = &s.records()[0];
        assert_eq!(
            (r.owner, r.writer, r.len, r.sba_idx, r.addr),
            (1, 0x77, 8192, 40, 0x1000)
        );
        let mut att = vec![0, 0, 0, 0x20, 0, 0, 0, 16];
        att.extend_from_slice(&tok.to_be_bytes());
        s.observe(2, &att, &ok(&[]));
        assert_eq!(s.records()[0].attached, 1 << 2);
        let mut unreg = vec![0, 0, 0, 0x0B, 0, 0, 0, 16];
        unreg.extend_from_slice(&tok.to_be_bytes());
        s.observe(1, &unreg, &ok(&[0; 8]));
        assert!(s.records()[0].unregistered);
        // A refused command changes nothing.
        let mut refused = ok(&[]);
        refused[5] = 1;
        s.observe(2, &att, &refused);
        s.function_down(2);
        assert!(s.records().is_empty());
        s.observe(1, &reg, &ok(&tok.to_be_bytes()));
        s.function_down(1);
        assert!(s.records().is_empty());
    }
}
