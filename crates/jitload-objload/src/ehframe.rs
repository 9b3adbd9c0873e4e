//! `.eh_frame` checking and registration with the unwinder (libgcc's `__register_frame`).
//!
//! libgcc walks a registered `.eh_frame` without any bounds checks — at registration (GCC
//! 13 and later) or when any exception or panic in the process searches for a frame (GCC
//! 12 and earlier) — and aborts on encodings it does not know. So before registering we walk
//! the relocated section exactly as libgcc's `classify_object_over_fdes` does and refuse
//! anything it could misread: every record inside the section, every FDE pointing back to a
//! CIE, only pointer encodings libgcc handles without aborting and without dereferencing,
//! and every FDE's address range inside this object's code. The unwinder then only parses
//! the call-frame instructions when it unwinds through this code, i.e. when the code runs.

/// `DW_EH_PE_*` pointer encodings libgcc reads at registration: the format (low nibble)
/// and how it is applied (bits 4-6).
const ABSPTR: u8 = 0x00;
const UDATA2: u8 = 0x02;
const UDATA4: u8 = 0x03;
const UDATA8: u8 = 0x04;
const SDATA2: u8 = 0x0a;
const SDATA4: u8 = 0x0b;
const SDATA8: u8 = 0x0c;
const PCREL: u8 = 0x10;

extern "C" {
    // From libgcc_s (Rust's standard library links it on linux-gnu for unwinding).
    fn __register_frame(begin: *const u8);
    fn __deregister_frame(begin: *const u8);
}

/// Registers an `.eh_frame` section (followed in memory by a zero terminator word) that
/// [`validate`] accepted.
///
/// # Safety
/// `begin` must point to a validated, zero-terminated `.eh_frame` that stays mapped and
/// unchanged until [`deregister`] is called with the same pointer.
pub(crate) unsafe fn register(begin: *const u8) {
    // SAFETY: the caller's contract is exactly libgcc's.
    unsafe { __register_frame(begin) }
}

/// Undoes [`register`].
///
/// # Safety
/// `begin` must have been passed to [`register`] and not yet deregistered; the section must
/// still be mapped and unchanged.
pub(crate) unsafe fn deregister(begin: *const u8) {
    // SAFETY: as the caller guarantees.
    unsafe { __deregister_frame(begin) }
}

/// Size of a pointer in `encoding`'s format (libgcc's `size_of_encoded_value`), for the
/// formats we accept.
fn format_size(encoding: u8) -> Option<usize> {
    match encoding & 0x0f {
        ABSPTR | UDATA8 | SDATA8 => Some(8),
        UDATA4 | SDATA4 => Some(4),
        UDATA2 | SDATA2 => Some(2),
        _ => None,
    }
}

/// Reads a value of `encoding`'s format at `at`: (raw value as u64, bytes read).
fn read_format(data: &[u8], at: usize, encoding: u8) -> Option<(u64, usize)> {
    let size = format_size(encoding)?;
    let bytes = data.get(at..at.checked_add(size)?)?;
    let value = match (encoding & 0x0f, size) {
        (SDATA2, _) => i16::from_le_bytes([bytes[0], bytes[1]]) as i64 as u64,
        (SDATA4, _) => i32::from_le_bytes(bytes.try_into().ok()?) as i64 as u64,
        (_, 2) => u16::from_le_bytes([bytes[0], bytes[1]]) as u64,
        (_, 4) => u32::from_le_bytes(bytes.try_into().ok()?) as u64,
        _ => u64::from_le_bytes(bytes.try_into().ok()?),
    };
    Some((value, size))
}

fn uleb128(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut result = 0u64;
    let mut shift = 0u32;
    loop {
        let byte = *data.get(*at)?;
        *at += 1;
        if shift < 64 {
            result |= u64::from(byte & 0x7f) << shift;
        }
        shift = shift.saturating_add(7);
        if byte & 0x80 == 0 {
            return Some(result);
        }
    }
}

/// The FDE pointer encoding a CIE declares, computed as libgcc's `get_cie_encoding` does,
/// with every read kept inside the record. `cie` is the record body after the CIE id.
fn cie_encoding(cie: &[u8]) -> Result<u8, &'static str> {
    let version = *cie.first().ok_or("empty CIE")?;
    if version != 1 && version != 3 {
        return Err("CIE version other than 1 or 3");
    }
    let aug_start = 1;
    let aug_len = cie[aug_start..].iter().position(|&b| b == 0).ok_or("unterminated CIE augmentation")?;
    let aug = &cie[aug_start..aug_start + aug_len];
    let mut p = aug_start + aug_len + 1;
    if aug.first() != Some(&b'z') {
        return Ok(ABSPTR);
    }
    uleb128(cie, &mut p).ok_or("truncated CIE")?; // code alignment
    uleb128(cie, &mut p).ok_or("truncated CIE")?; // data alignment (sleb128: same length)
    if version == 1 {
        p += 1; // return address register
    } else {
        uleb128(cie, &mut p).ok_or("truncated CIE")?;
    }
    uleb128(cie, &mut p).ok_or("truncated CIE")?; // augmentation data length
    for &c in &aug[1..] {
        match c {
            b'R' => return cie.get(p).copied().ok_or("truncated CIE"),
            b'P' => {
                let encoding = *cie.get(p).ok_or("truncated CIE")? & 0x7f;
                if encoding & 0x70 != ABSPTR && encoding & 0x70 != PCREL {
                    return Err("unsupported personality pointer encoding");
                }
                let (_, n) = read_format(cie, p + 1, encoding).ok_or("bad personality pointer")?;
                p += 1 + n;
            }
            b'L' | b'B' => p += 1,
            _ => return Ok(ABSPTR),
        }
    }
    Ok(ABSPTR)
}

/// Checks a relocated `.eh_frame` section at `address` whose FDEs must all lie in `code`.
pub(crate) fn validate(frame: &[u8], address: u64, code: std::ops::Range<u64>) -> Result<(), String> {
    // (offset, FDE pointer encoding) of every CIE seen, in increasing offset order.
    let mut cies: Vec<(usize, u8)> = Vec::new();
    let mut off = 0usize;
    while off < frame.len() {
        let word = |at: usize| -> Option<u32> { Some(u32::from_le_bytes(frame.get(at..at.checked_add(4)?)?.try_into().ok()?)) };
        let length = word(off).ok_or_else(|| format!("truncated record at {off:#x}"))?;
        if length == 0 {
            break; // libgcc stops at a zero length
        }
        if length == u32::MAX {
            return Err(format!("64-bit DWARF record at {off:#x}"));
        }
        let end = off
            .checked_add(4)
            .and_then(|o| o.checked_add(length as usize))
            .filter(|&e| e <= frame.len())
            .ok_or_else(|| format!("record at {off:#x} runs past the section"))?;
        let id = word(off + 4).filter(|_| length >= 4).ok_or_else(|| format!("record at {off:#x} too short"))?;
        let body = &frame[off + 8..end];
        if id == 0 {
            let encoding = cie_encoding(body).map_err(|e| format!("{e} at {off:#x}"))?;
            cies.push((off, encoding));
        } else {
            let cie = (off + 4).checked_sub(id as usize).ok_or_else(|| format!("FDE at {off:#x} points before the section"))?;
            let encoding = cies.binary_search_by_key(&cie, |&(o, _)| o).map(|i| cies[i].1).map_err(|_| format!("FDE at {off:#x} does not point to a CIE"))?;
            if encoding & 0x70 != ABSPTR && encoding & 0x70 != PCREL {
                return Err(format!("unsupported FDE pointer encoding {encoding:#x} at {off:#x}"));
            }
            if format_size(encoding).is_none() || encoding & 0x80 != 0 {
                return Err(format!("unsupported FDE pointer encoding {encoding:#x} at {off:#x}"));
            }
            let (raw, n) = read_format(body, 0, encoding).ok_or_else(|| format!("truncated FDE at {off:#x}"))?;
            let (range, _) = read_format(body, n, encoding & 0x0f).ok_or_else(|| format!("truncated FDE at {off:#x}"))?;
            // libgcc applies pc-relative only to non-zero values, then ignores an FDE whose
            // start is zero in the bits its format can represent (a discarded function).
            let begin = if raw != 0 && encoding & 0x70 == PCREL { raw.wrapping_add(address + off as u64 + 8) } else { raw };
            let mask = if n < 8 { (1u64 << (n * 8)) - 1 } else { u64::MAX };
            if begin & mask != 0 {
                let inside = begin >= code.start && begin.checked_add(range).is_some_and(|e| e <= code.end);
                if !inside {
                    return Err(format!("FDE at {off:#x} covers {begin:#x}+{range:#x}, outside the object's code"));
                }
            }
        }
        off = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn cie_zr() -> Vec<u8> {
        // id 0, version 1, "zR", code align 1, data align -8, ra 16, aug len 1, encoding 0x1b
        record(&[0, 0, 0, 0, 1, b'z', b'R', 0, 1, 0x78, 16, 1, 0x1b, 0, 0, 0])
    }

    fn fde(offset_of_fde: usize, pc_rel: i32, range: u32) -> Vec<u8> {
        let mut body = ((offset_of_fde + 4) as u32).to_le_bytes().to_vec(); // back to offset 0
        body.extend_from_slice(&pc_rel.to_le_bytes());
        body.extend_from_slice(&range.to_le_bytes());
        body.extend_from_slice(&[0, 0, 0, 0]);
        record(&body)
    }

    #[test]
    fn accepts_fdes_inside_code() {
        let mut frame = cie_zr();
        let at = frame.len();
        // The FDE's pc_begin field is at address + at + 8; point it 0x100 back.
        frame.extend(fde(at, -0x100, 0x20));
        let address = 0x10000u64;
        let field = address + at as u64 + 8;
        assert_eq!(validate(&frame, address, field - 0x100..field - 0xe0), Ok(()));
        assert!(validate(&frame, address, field - 0x100..field - 0xe1).is_err());
        assert!(validate(&frame, address, field - 0xff..field).is_err());
    }

    #[test]
    fn refuses_broken_structure() {
        let mut frame = cie_zr();
        let at = frame.len();
        frame.extend(fde(at + 4, 0, 0)); // points 4 bytes before the CIE
        assert!(validate(&frame, 0, 0..u64::MAX).is_err());
        let mut long = cie_zr();
        long[0] = 0xff; // runs past the end
        assert!(validate(&long, 0, 0..u64::MAX).is_err());
        let mut bad_encoding = cie_zr();
        bad_encoding[16] = 0x4b; // funcrel: libgcc aborts
        let at = bad_encoding.len();
        bad_encoding.extend(fde(at, 1, 0));
        assert!(validate(&bad_encoding, 0, 0..u64::MAX).is_err());
    }
}
