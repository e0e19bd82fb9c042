//! CRC-32 (IEEE 802.3, the zlib polynomial) for blob integrity.

const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 of `bytes` (same value as zlib's `crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(bytes);
    c.finish()
}

/// A CRC-32 computed piece by piece (for data that arrives a few bytes at a
/// time, such as a frame on a serial line): the same value as [`crc32`] over
/// the concatenation of every `update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crc32(u32);

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    /// The CRC of no bytes yet.
    pub const fn new() -> Self {
        Crc32(!0)
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &b in bytes {
            c = TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    /// The CRC-32 of every byte added so far.
    pub const fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_zlib() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn pieces_give_the_same_crc() {
        let mut c = super::Crc32::new();
        for piece in [&b"1"[..], b"", b"2345", b"6789"] {
            c.update(piece);
        }
        assert_eq!(c.finish(), 0xCBF4_3926);
        assert_eq!(super::Crc32::default().finish(), super::crc32(b""));
    }
}
