//! Decoding and encoding of whole commands: the typed [`Request`] behind every byte
//! sequence a host can post.
//!
//! [`Request::parse`] is the only way the device reads a command: it checks the header, the
//! code and the exact length before looking at any field, and never panics, whatever the
//! bytes. [`Request::emit`] is what a host driver uses to build the same bytes.

use zerocopy::IntoBytes;

use crate::ids::{DevAddr, DmbToken, Gid};

use crate::error::ReturnCode;
use crate::wire::attach_dmb::DmbTokenRequest;
use crate::wire::query_rgid::QueryRgidRequest;
use crate::wire::reg_dmb::RegDmbRequest;
use crate::wire::reg_ieq::RegIeqRequest;
use crate::wire::reg_sba::RegSbaRequest;
use crate::wire::signal_ieq::SignalIeqRequest;
use crate::wire::unreg_dmb::UnregDmbRequest;
use crate::wire::vlan_id::VlanIdRequest;
use crate::wire::{view, Opcode, RequestHeader, HEADER_LEN};

/// A decoded command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// REG_SBA.
    RegSba {
        /// SBA address.
        sba: DevAddr,
    },
    /// REG_IEQ.
    RegIeq {
        /// IEQ address.
        ieq: DevAddr,
        /// IEQ length in bytes.
        len: u64,
    },
    /// READ_GID.
    ReadGid,
    /// ADD_VLAN_ID.
    AddVlanId {
        /// VLAN id.
        vlan_id: u64,
    },
    /// DEL_VLAN_ID.
    DelVlanId {
        /// VLAN id.
        vlan_id: u64,
    },
    /// SET_VLAN.
    SetVlan,
    /// RESET_VLAN.
    ResetVlan,
    /// QUERY_INFO.
    QueryInfo,
    /// QUERY_RGID.
    QueryRgid {
        /// Remote GID.
        rgid: Gid,
        /// VLAN both must share, if any (`vlan_valid != 0`).
        vlan: Option<u32>,
    },
    /// REG_DMB.
    RegDmb {
        /// Buffer address.
        dmb: DevAddr,
        /// Buffer length.
        len: u32,
        /// SBA index.
        sba_idx: u32,
        /// VLAN tag, if any (`vlan_valid != 0`).
        vlan: Option<u32>,
        /// Authorized writer.
        rgid: Gid,
    },
    /// UNREG_DMB.
    UnregDmb {
        /// Token.
        token: DmbToken,
    },
    /// SIGNAL_IEQ.
    SignalIeq {
        /// Target GID.
        rgid: Gid,
        /// Raise the target's interrupt.
        trigger_irq: bool,
        /// Event code.
        code: u32,
        /// Event info.
        info: u64,
    },
    /// UNREG_SBA.
    UnregSba,
    /// UNREG_IEQ.
    UnregIeq,
    /// ATTACH_DMB (extension).
    AttachDmb {
        /// Token.
        token: DmbToken,
    },
    /// DETACH_DMB (extension).
    DetachDmb {
        /// Token.
        token: DmbToken,
    },
}

fn vlan_opt(valid: u32, id: u32) -> Option<u32> {
    (valid != 0).then_some(id)
}

impl Request {
    /// The command code.
    pub const fn opcode(&self) -> Opcode {
        match self {
            Request::RegSba { .. } => Opcode::RegSba,
            Request::RegIeq { .. } => Opcode::RegIeq,
            Request::ReadGid => Opcode::ReadGid,
            Request::AddVlanId { .. } => Opcode::AddVlanId,
            Request::DelVlanId { .. } => Opcode::DelVlanId,
            Request::SetVlan => Opcode::SetVlan,
            Request::ResetVlan => Opcode::ResetVlan,
            Request::QueryInfo => Opcode::QueryInfo,
            Request::QueryRgid { .. } => Opcode::QueryRgid,
            Request::RegDmb { .. } => Opcode::RegDmb,
            Request::UnregDmb { .. } => Opcode::UnregDmb,
            Request::SignalIeq { .. } => Opcode::SignalIeq,
            Request::UnregSba => Opcode::UnregSba,
            Request::UnregIeq => Opcode::UnregIeq,
            Request::AttachDmb { .. } => Opcode::AttachDmb,
            Request::DetachDmb { .. } => Opcode::DetachDmb,
        }
    }

    /// Decodes a request.
    ///
    /// # Errors
    /// * [`ReturnCode::BadLength`]: fewer than 8 bytes, `hdr.len` not the command's length,
    ///   or fewer bytes than `hdr.len`;
    /// * [`ReturnCode::UnknownCommand`]: the code is not one the device knows.
    pub fn parse(bytes: &[u8]) -> Result<Request, ReturnCode> {
        let hdr = view::<RequestHeader>(bytes).ok_or(ReturnCode::BadLength)?;
        let op = Opcode::from_raw(hdr.cmd.get()).ok_or(ReturnCode::UnknownCommand)?;
        let len = hdr.len.get() as usize;
        if len != op.request_len() || bytes.len() < len {
            return Err(ReturnCode::BadLength);
        }
        let b = &bytes[..len];
        // Every `view` below is on `len == op.request_len()` bytes, the size of the view's
        // type, so none can fail; `ok_or` keeps that an error rather than a panic.
        const SHORT: ReturnCode = ReturnCode::BadLength;
        Ok(match op {
            Opcode::RegSba => Request::RegSba {
                sba: DevAddr(view::<RegSbaRequest>(b).ok_or(SHORT)?.sba.get()),
            },
            Opcode::RegIeq => {
                let r = view::<RegIeqRequest>(b).ok_or(SHORT)?;
                Request::RegIeq {
                    ieq: DevAddr(r.ieq.get()),
                    len: r.len.get(),
                }
            }
            Opcode::ReadGid => Request::ReadGid,
            Opcode::AddVlanId => Request::AddVlanId {
                vlan_id: view::<VlanIdRequest>(b).ok_or(SHORT)?.vlan_id.get(),
            },
            Opcode::DelVlanId => Request::DelVlanId {
                vlan_id: view::<VlanIdRequest>(b).ok_or(SHORT)?.vlan_id.get(),
            },
            Opcode::SetVlan => Request::SetVlan,
            Opcode::ResetVlan => Request::ResetVlan,
            Opcode::QueryInfo => Request::QueryInfo,
            Opcode::QueryRgid => {
                let r = view::<QueryRgidRequest>(b).ok_or(SHORT)?;
                Request::QueryRgid {
                    rgid: Gid(r.rgid.get()),
                    vlan: vlan_opt(r.vlan_valid.get(), r.vlan_id.get()),
                }
            }
            Opcode::RegDmb => {
                let r = view::<RegDmbRequest>(b).ok_or(SHORT)?;
                Request::RegDmb {
                    dmb: DevAddr(r.dmb.get()),
                    len: r.dmb_len.get(),
                    sba_idx: r.sba_idx.get(),
                    vlan: vlan_opt(r.vlan_valid.get(), r.vlan_id.get()),
                    rgid: Gid(r.rgid.get()),
                }
            }
            Opcode::UnregDmb => Request::UnregDmb {
                token: DmbToken(view::<UnregDmbRequest>(b).ok_or(SHORT)?.dmb_tok.get()),
            },
            Opcode::SignalIeq => {
                let r = view::<SignalIeqRequest>(b).ok_or(SHORT)?;
                Request::SignalIeq {
                    rgid: Gid(r.rgid.get()),
                    trigger_irq: r.trigger_irq.get() != 0,
                    code: r.event_code.get(),
                    info: r.info.get(),
                }
            }
            Opcode::UnregSba => Request::UnregSba,
            Opcode::UnregIeq => Request::UnregIeq,
            Opcode::AttachDmb => Request::AttachDmb {
                token: DmbToken(view::<DmbTokenRequest>(b).ok_or(SHORT)?.dmb_tok.get()),
            },
            Opcode::DetachDmb => Request::DetachDmb {
                token: DmbToken(view::<DmbTokenRequest>(b).ok_or(SHORT)?.dmb_tok.get()),
            },
        })
    }

    /// Encodes the request into `buf`; returns its length (the command's request length),
    /// or `None` if `buf` is too short.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let op = self.opcode();
        let len = op.request_len();
        let out = buf.get_mut(..len)?;
        let hdr = RequestHeader::new(op as u32, len as u16);
        fn vl(o: Option<u32>) -> (u32, u32) {
            o.map_or((0, 0), |id| (1, id))
        }
        match *self {
            Request::RegSba { sba } => out.copy_from_slice(
                RegSbaRequest {
                    hdr,
                    sba: sba.0.into(),
                }
                .as_bytes(),
            ),
            Request::RegIeq { ieq, len } => out.copy_from_slice(
                RegIeqRequest {
                    hdr,
                    ieq: ieq.0.into(),
                    len: len.into(),
                }
                .as_bytes(),
            ),
            Request::AddVlanId { vlan_id } | Request::DelVlanId { vlan_id } => out.copy_from_slice(
                VlanIdRequest {
                    hdr,
                    vlan_id: vlan_id.into(),
                }
                .as_bytes(),
            ),
            Request::QueryRgid { rgid, vlan } => {
                let (valid, id) = vl(vlan);
                out.copy_from_slice(
                    QueryRgidRequest {
                        hdr,
                        rgid: rgid.0.into(),
                        vlan_valid: valid.into(),
                        vlan_id: id.into(),
                    }
                    .as_bytes(),
                )
            }
            Request::RegDmb {
                dmb,
                len,
                sba_idx,
                vlan,
                rgid,
            } => {
                let (valid, id) = vl(vlan);
                out.copy_from_slice(
                    RegDmbRequest {
                        hdr,
                        dmb: dmb.0.into(),
                        dmb_len: len.into(),
                        sba_idx: sba_idx.into(),
                        vlan_valid: valid.into(),
                        vlan_id: id.into(),
                        rgid: rgid.0.into(),
                    }
                    .as_bytes(),
                )
            }
            Request::UnregDmb { token } => out.copy_from_slice(
                UnregDmbRequest {
                    hdr,
                    dmb_tok: token.0.into(),
                }
                .as_bytes(),
            ),
            Request::SignalIeq {
                rgid,
                trigger_irq,
                code,
                info,
            } => out.copy_from_slice(
                SignalIeqRequest {
                    hdr,
                    rgid: rgid.0.into(),
                    trigger_irq: u32::from(trigger_irq).into(),
                    event_code: code.into(),
                    info: info.into(),
                }
                .as_bytes(),
            ),
            Request::AttachDmb { token } | Request::DetachDmb { token } => out.copy_from_slice(
                DmbTokenRequest {
                    hdr,
                    dmb_tok: token.0.into(),
                }
                .as_bytes(),
            ),
            Request::ReadGid
            | Request::SetVlan
            | Request::ResetVlan
            | Request::QueryInfo
            | Request::UnregSba
            | Request::UnregIeq => out[..HEADER_LEN].copy_from_slice(hdr.as_bytes()),
        }
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_requests() -> [Request; 16] {
        [
            Request::RegSba {
                sba: DevAddr(0x1000),
            },
            Request::RegIeq {
                ieq: DevAddr(0x2000),
                len: 512,
            },
            Request::ReadGid,
            Request::AddVlanId { vlan_id: 0x1FFF },
            Request::DelVlanId { vlan_id: 3 },
            Request::SetVlan,
            Request::ResetVlan,
            Request::QueryInfo,
            Request::QueryRgid {
                rgid: Gid(9),
                vlan: Some(0x1FFF),
            },
            Request::RegDmb {
                dmb: DevAddr(0x4000),
                len: 16384,
                sba_idx: 32,
                vlan: None,
                rgid: Gid(2),
            },
            Request::UnregDmb {
                token: DmbToken(0x1_0000_0000),
            },
            Request::SignalIeq {
                rgid: Gid(2),
                trigger_irq: true,
                code: 0x80,
                info: 77,
            },
            Request::UnregSba,
            Request::UnregIeq,
            Request::AttachDmb {
                token: DmbToken(0x2_0000_0000),
            },
            Request::DetachDmb {
                token: DmbToken(0x2_0000_0000),
            },
        ]
    }

    #[test]
    fn emit_then_parse_is_identity() {
        for r in all_requests() {
            let mut buf = [0u8; 64];
            let n = r.emit(&mut buf).unwrap();
            assert_eq!(n, r.opcode().request_len());
            assert_eq!(Request::parse(&buf[..n]), Ok(r));
            assert!(r.emit(&mut buf[..n - 1]).is_none());
        }
    }

    #[test]
    fn golden_reg_dmb_bytes() {
        let mut buf = [0u8; 40];
        all_requests()[9].emit(&mut buf).unwrap();
        #[rustfmt::skip]
        let golden = [
            0, 0, 0, 0x0A, 0, 0, 0, 40,
            0, 0, 0, 0, 0, 0, 0x40, 0,
            0, 0, 0x40, 0, 0, 0, 0, 32,
            0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 2,
        ];
        assert_eq!(buf, golden);
    }

    #[test]
    fn malformed_requests_are_typed_errors() {
        assert_eq!(Request::parse(&[]), Err(ReturnCode::BadLength));
        assert_eq!(Request::parse(&[0; 7]), Err(ReturnCode::BadLength));
        assert_eq!(
            Request::parse(&[0, 0, 0, 0x0C, 0, 0, 0, 8]),
            Err(ReturnCode::UnknownCommand)
        );
        // REG_SBA with len 8, with len 24, and truncated below its len.
        assert_eq!(
            Request::parse(&[0, 0, 0, 1, 0, 0, 0, 8]),
            Err(ReturnCode::BadLength)
        );
        assert_eq!(
            Request::parse(&[0, 0, 0, 1, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(ReturnCode::BadLength)
        );
        assert_eq!(
            Request::parse(&[0, 0, 0, 1, 0, 0, 0, 16, 0, 0]),
            Err(ReturnCode::BadLength)
        );
    }
}
