//! The register block of one ISM function as its host sees it.
//!
//! On the real device the host reaches the function through PCI address spaces: space 2 holds
//! the *command area* (request written at offset 0.., response read back at offset 0..), and
//! space 0 is the store-block target whose 64-bit offset operand is the encoded DMB request
//! (see [`crate::wire::move_request`]). Only the command area is memory-like, so it is
//! the register block modelled here.
//!
//! Protocol (Linux's `ism_cmd`): the host writes the request body (bytes 8..len), then the
//! 8-byte header, which is the doorbell; the device executes the command synchronously and
//! leaves the response (header, then body) in the same area; the host reads the response
//! header, and the body only when `ret == 0`. All lengths are multiples of 8 bytes.
//!
//! Each 64-bit register holds eight bytes in memory order, so the byte layout of the area is
//! exactly the (big-endian) wire layout of the command, whatever the board's endianness.
use vcell::VolatileCell;

/// Size of the command area in bytes: room for the largest response (QUERY_INFO, 200 bytes),
/// rounded up to a power of two.
pub const COMMAND_AREA_SIZE: usize = 256;

/// Number of 64-bit registers in the command area.
pub const COMMAND_AREA_WORDS: usize = COMMAND_AREA_SIZE / 8;

/// PCI address space of the command area (`ZPCI_CREATE_REQ(fh, 2, len)`).
pub const COMMAND_ADDRESS_SPACE: u8 = 2;

/// PCI address space of store-block moves into DMBs (`ZPCI_CREATE_REQ(fh, 0, len)`).
pub const DATA_ADDRESS_SPACE: u8 = 0;

/// The host-visible register block of one ISM function (PCI address space 2).
#[repr(C)]
pub struct FunctionRegisters {
    /// Command area: request in, response out (offset 0x000).
    pub command: [VolatileCell<u64>; COMMAND_AREA_WORDS],
}

const _: () = assert!(core::mem::size_of::<FunctionRegisters>() == COMMAND_AREA_SIZE);
const _: () = assert!(core::mem::offset_of!(FunctionRegisters, command) == 0);
const _: () = assert!(core::mem::align_of::<FunctionRegisters>() == 8);

impl Default for FunctionRegisters {
    fn default() -> Self {
        Self::new()
    }
}

impl FunctionRegisters {
    /// A register block with every register zero: what a board places in (simulated) PCI
    /// space when it creates a function.
    pub const fn new() -> Self {
        Self {
            command: [const { VolatileCell::new(0) }; COMMAND_AREA_WORDS],
        }
    }

    /// Reads `buf.len()` bytes (rounded up to whole registers) of the command area from
    /// offset 0. Bytes beyond the area are left untouched; returns how many were filled.
    pub fn read_bytes(&self, buf: &mut [u8]) -> usize {
        let mut filled = 0;
        for (reg, chunk) in self.command.iter().zip(buf.chunks_mut(8)) {
            let word = reg.get().to_ne_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
            filled += chunk.len();
        }
        filled
    }

    /// Writes `data` into the command area at register `first_word`, eight bytes per
    /// register (a short last chunk is zero-padded). Data past the area is dropped; returns
    /// how many bytes were stored.
    pub fn write_bytes(&self, first_word: usize, data: &[u8]) -> usize {
        let mut stored = 0;
        let regs = self.command.iter().skip(first_word);
        for (reg, chunk) in regs.zip(data.chunks(8)) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            reg.set(u64::from_ne_bytes(word));
            stored += chunk.len();
        }
        stored
    }

    /// Host side of a command: body (bytes 8..) first, then the 8-byte header (the doorbell).
    /// Returns the number of bytes stored.
    pub fn post_request(&self, request: &[u8]) -> usize {
        let split = request.len().min(8);
        let body = self.write_bytes(1, &request[split..]);
        body + self.write_bytes(0, &request[..split])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> FunctionRegisters {
        FunctionRegisters::new()
    }

    #[test]
    fn request_bytes_round_trip_in_memory_order() {
        let regs = block();
        let req: [u8; 16] = [0, 0, 0, 1, 0, 0, 0, 16, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(regs.post_request(&req), 16);
        let mut back = [0u8; 16];
        assert_eq!(regs.read_bytes(&mut back), 16);
        assert_eq!(back, req);
    }

    #[test]
    fn writes_past_the_area_are_dropped() {
        let regs = block();
        let big = [0xAAu8; COMMAND_AREA_SIZE + 40];
        assert_eq!(regs.write_bytes(0, &big), COMMAND_AREA_SIZE);
        assert_eq!(regs.write_bytes(COMMAND_AREA_WORDS, &big), 0);
        let mut back = [0u8; COMMAND_AREA_SIZE + 8];
        assert_eq!(regs.read_bytes(&mut back), COMMAND_AREA_SIZE);
        assert!(back[..COMMAND_AREA_SIZE].iter().all(|&b| b == 0xAA));
        assert_eq!(&back[COMMAND_AREA_SIZE..], &[0; 8]);
    }

    #[test]
    fn short_chunk_is_zero_padded() {
        let regs = block();
        regs.write_bytes(0, &[0xFF; 8]);
        regs.write_bytes(0, &[1, 2, 3]);
        let mut back = [0u8; 8];
        regs.read_bytes(&mut back);
        assert_eq!(back, [1, 2, 3, 0, 0, 0, 0, 0]);
    }
}
