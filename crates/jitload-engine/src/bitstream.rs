//! Reads the producer string ("LLVM22.1.8") from bitcode's identification block, so an
//! unreadable file can be blamed on the compiler that made it. A tiny, bounds-checked
//! bitstream reader: it never trusts a length and gives up (None) on anything unexpected.

const IDENTIFICATION_BLOCK_ID: u64 = 13;
const IDENTIFICATION_CODE_STRING: u64 = 1;

struct Bits<'a> {
    data: &'a [u8],
    pos: usize, // in bits
}

impl Bits<'_> {
    fn read(&mut self, width: u32) -> Option<u64> {
        if width > 64 || self.pos + width as usize > self.data.len() * 8 {
            return None;
        }
        let mut value = 0u64;
        for i in 0..width as usize {
            let bit = self.pos + i;
            if self.data[bit / 8] >> (bit % 8) & 1 == 1 {
                value |= 1 << i;
            }
        }
        self.pos += width as usize;
        Some(value)
    }

    fn vbr(&mut self, width: u32) -> Option<u64> {
        if !(2..=32).contains(&width) {
            return None;
        }
        let (mut value, mut shift) = (0u64, 0u32);
        loop {
            let chunk = self.read(width)?;
            let hi = 1u64 << (width - 1);
            value |= (chunk & (hi - 1)).checked_shl(shift)?;
            if chunk & hi == 0 {
                return Some(value);
            }
            shift += width - 1;
            if shift > 63 {
                return None;
            }
        }
    }

    fn align32(&mut self) {
        self.pos = self.pos.div_ceil(32) * 32;
    }
}

#[derive(Clone, Copy)]
enum Op {
    Literal(u64),
    Fixed(u32),
    Vbr(u32),
    Array,
    Char6,
    Blob,
}

fn read_abbrev(bits: &mut Bits<'_>) -> Option<Vec<Op>> {
    let n = bits.vbr(5)?;
    if n > 64 {
        return None;
    }
    let mut ops = Vec::new();
    for _ in 0..n {
        if bits.read(1)? == 1 {
            ops.push(Op::Literal(bits.vbr(8)?));
            continue;
        }
        ops.push(match bits.read(3)? {
            1 => Op::Fixed(bits.vbr(5)? as u32),
            2 => Op::Vbr(bits.vbr(5)? as u32),
            3 => Op::Array,
            4 => Op::Char6,
            5 => Op::Blob,
            _ => return None,
        });
    }
    Some(ops)
}

fn scalar(bits: &mut Bits<'_>, op: Op) -> Option<u64> {
    match op {
        Op::Literal(v) => Some(v),
        Op::Fixed(w) => bits.read(w),
        Op::Vbr(w) => bits.vbr(w),
        Op::Char6 => {
            let v = bits.read(6)? as u8;
            Some(match v {
                0..=25 => b'a' + v,
                26..=51 => b'A' + v - 26,
                52..=61 => b'0' + v - 52,
                62 => b'.',
                _ => b'_',
            } as u64)
        }
        Op::Array | Op::Blob => None,
    }
}

fn read_abbreviated(bits: &mut Bits<'_>, ops: &[Op]) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ops.len() {
        match ops[i] {
            Op::Array => {
                let elem = *ops.get(i + 1)?;
                let n = bits.vbr(6)?;
                if n > 4096 {
                    return None;
                }
                for _ in 0..n {
                    out.push(scalar(bits, elem)?);
                }
                i += 2;
            }
            Op::Blob => return None,
            op => {
                out.push(scalar(bits, op)?);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The producer recorded in the bitcode's identification block, if one can be read.
pub fn producer(bytes: &[u8]) -> Option<String> {
    let mut data = bytes;
    if data.starts_with(&[0xDE, 0xC0, 0x17, 0x0B]) && data.len() >= 20 {
        let offset = u32::from_le_bytes(data[8..12].try_into().ok()?) as usize;
        let size = u32::from_le_bytes(data[12..16].try_into().ok()?) as usize;
        data = data.get(offset..offset.checked_add(size)?)?;
    }
    if !data.starts_with(b"BC\xC0\xDE") {
        return None;
    }
    let mut bits = Bits { data, pos: 32 };
    // Top level: abbrev width 2; the identification block comes first.
    if bits.read(2)? != 1 || bits.vbr(8)? != IDENTIFICATION_BLOCK_ID {
        return None;
    }
    let width = bits.vbr(4)? as u32;
    bits.align32();
    bits.read(32)?; // block length in words
    let mut abbrevs: Vec<Vec<Op>> = Vec::new();
    for _ in 0..64 {
        let id = bits.read(width)?;
        let record = match id {
            0 => return None, // END_BLOCK before the string
            1 => return None, // nested blocks do not occur here
            2 => {
                abbrevs.push(read_abbrev(&mut bits)?);
                continue;
            }
            3 => {
                let code = bits.vbr(6)?;
                let n = bits.vbr(6)?;
                if n > 4096 {
                    return None;
                }
                let mut rec = vec![code];
                for _ in 0..n {
                    rec.push(bits.vbr(6)?);
                }
                rec
            }
            n => read_abbreviated(&mut bits, abbrevs.get((n - 4) as usize)?)?,
        };
        if record.first() == Some(&IDENTIFICATION_CODE_STRING) {
            let s: String = record[1..].iter().map(|&c| (c as u8) as char).collect();
            return Some(s);
        }
    }
    None
}

/// Whether a producer string such as "LLVM23.0.0" or "clang 23.1" names a newer major
/// version than `reader` ("22.1.8").
pub fn producer_is_newer(producer: &str, reader: &str) -> bool {
    let major = |s: &str| -> Option<u32> {
        let digits: String = s.chars().skip_while(|c| !c.is_ascii_digit()).take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    };
    matches!((major(producer), major(reader)), (Some(p), Some(r)) if p > r)
}
