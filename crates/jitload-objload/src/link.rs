//! Linking a set of parsed objects into one image: parse and plan each object → bind
//! symbols across the set → number GOT slots and stubs → lay out → map → assign addresses
//! → write contents, GOT, stubs and relocations → collect constructors → check unwind
//! information → protect → register unwind information → exports.

use object::elf;
use object::read::elf::Sym;
use object::{LittleEndian as LE, SymbolIndex};

use crate::bind::{self, Bound};
use crate::load::{align_up, malformed, reserve, ArrayKind, Class, Def, Object, MAX_IMAGE, STUB_SIZE};
use jitload_codemem::Image;
use crate::relocate::Context;
use crate::{ehframe, Exports, LoadError, LoadStats, LoadedObject, SymbolInfo, SymbolKind};

/// Where everything goes, as offsets from the start of the image.
struct Layout {
    code_size: u64,
    ro_start: u64,
    ro_size: u64,
    size: u64,
    align: u64,
    stubs: u64,
    got: u64,
    /// The end of the data that has contents (written, hence prefaulted).
    written: u64,
    dso_handle: Option<u64>,
}

/// In a set of several objects, says which object an error is about.
fn in_object(error: LoadError, object: usize, count: usize) -> LoadError {
    if count < 2 {
        return error;
    }
    match error {
        LoadError::Malformed(what) => LoadError::Malformed(format!("object {object}: {what}")),
        LoadError::Unsupported(what) => LoadError::Unsupported(format!("object {object}: {what}")),
        LoadError::UnsupportedRelocation { kind, section, symbol } => {
            LoadError::UnsupportedRelocation { kind, section: format!("{section} (object {object})"), symbol }
        }
        LoadError::RelocationOverflow { kind, section, offset, symbol, value } => {
            LoadError::RelocationOverflow { kind, section: format!("{section} (object {object})"), offset, symbol, value }
        }
        other => other,
    }
}

pub(crate) fn load_all(objects: &[&[u8]], resolve: &dyn Fn(&str) -> Option<u64>) -> Result<LoadedObject, LoadError> {
    let count = objects.len();
    let mut set = Vec::with_capacity(count);
    for (i, data) in objects.iter().enumerate() {
        set.push(Object::parse(data).map_err(|e| in_object(e, i, count))?);
    }
    let bound = bind::bind(&mut set, resolve)?;
    let (mut got_count, mut stub_count) = (0u32, 0u32);
    for object in &mut set {
        object.allocate(&mut got_count, &mut stub_count);
    }
    let layout = layout(&mut set, got_count, stub_count, bound.dso_handle)?;
    let mut mapping = match layout.size {
        0 => None,
        size => Some(Image::new(size as usize, layout.align as usize).map_err(|e| LoadError::Memory(e.to_string()))?),
    };
    if let Some(mapping) = mapping.as_mut() {
        mapping.prefault(layout.written as usize);
    }
    let base = mapping.as_ref().map_or(0, Image::address);
    assign_addresses(&mut set, &layout, base);
    let mut stats = LoadStats { image_size: layout.size as usize, got_entries: got_count as usize, stubs: stub_count as usize, ..LoadStats::default() };
    if let Some(mapping) = mapping.as_mut() {
        write_image(&set, &layout, base, mapping.bytes_mut(), &mut stats)?;
    }
    let memory = mapping.as_ref().map_or(&[][..], Image::bytes);
    let (init, fini) = constructors(&set, memory);
    let code = base..base + layout.code_size;
    let frames = check_frames(&set, memory, base, &code)?;
    if let Some(mapping) = mapping.as_mut() {
        protect(mapping, &layout)?;
    }
    for &frame in &frames {
        // SAFETY: validated by `check_frames`; the section is followed by four zero bytes
        // (reserved by the layout, never written), lies in the read-only part of the mapping
        // and stays there until `LoadedObject::drop` deregisters it before unmapping.
        unsafe { ehframe::register(frame as *const u8) };
    }
    stats.frames_registered = frames.len();
    let symbols = exports(&set, bound);
    log::debug!(
        "jitload-objload: loaded {count} object(s), {} bytes at {base:#x}: {} symbols, {} GOT slots, {} stubs, {} relaxed",
        layout.size,
        symbols.len(),
        stats.got_entries,
        stats.stubs,
        stats.relaxed
    );
    let dso_handle = layout.dso_handle.map(|offset| base + offset);
    Ok(LoadedObject { symbols, init, fini, code, stats, frames, dso_handle, mapping })
}

/// Lays the image out: each class (code, read-only, data) holds the sections of every
/// object in order, sections with contents before NOBITS ones; then the stubs (code), the
/// GOT (read-only), our `__dso_handle` and COMMON symbols (data). Everything up to the end
/// of the data class's contents is written (and prefaulted); zero-initialised memory after
/// it is left untouched. Sets each section's offset in the image and each COMMON symbol's.
fn layout(set: &mut [Object<'_>], got_count: u32, stub_count: u32, dso_handle: bool) -> Result<Layout, LoadError> {
    let mut cursors = [0u64; 3];
    let page = jitload_codemem::page_size() as u64;
    let mut max_align = page;
    let mut place = |set: &mut [Object<'_>], cursors: &mut [u64; 3], nobits: bool| -> Result<(), LoadError> {
        let count = set.len();
        for (i, object) in set.iter_mut().enumerate() {
            for p in object.placed.iter_mut().flatten().filter(|p| p.contents.is_none() == nobits) {
                max_align = max_align.max(p.align);
                // An .eh_frame gets the zero terminator the unwinder looks for after it.
                let size = match p.eh_frame {
                    true => p.size.checked_add(4).ok_or_else(|| in_object(malformed("huge .eh_frame"), i, count))?,
                    false => p.size,
                };
                p.offset = reserve(&mut cursors[p.class as usize], size, p.align)?;
            }
        }
        Ok(())
    };
    place(set, &mut cursors, false)?;
    let stubs = reserve(&mut cursors[Class::Code as usize], u64::from(stub_count) * STUB_SIZE, 16)?;
    let got = reserve(&mut cursors[Class::ReadOnly as usize], u64::from(got_count) * 8, 8)?;
    let written = cursors[Class::Data as usize];
    place(set, &mut cursors, true)?;
    for object in set.iter_mut() {
        for &(index, size, align) in &object.commons {
            max_align = max_align.max(align);
            let offset = reserve(&mut cursors[Class::Data as usize], size, align)?;
            object.defs[index] = Def::Common { offset };
        }
    }
    let dso_offset = if dso_handle { Some(reserve(&mut cursors[Class::Data as usize], 8, 8)?) } else { None };
    let too_big = || LoadError::Unsupported("image larger than 2 GiB".into());
    let code_size = cursors[Class::Code as usize];
    let ro_start = align_up(code_size, max_align).ok_or_else(too_big)?;
    let data_start = align_up(ro_start + cursors[1], max_align).ok_or_else(too_big)?;
    let size = align_up(data_start + cursors[2], page).filter(|&s| s <= MAX_IMAGE).ok_or_else(too_big)?;
    let class_start = [0, ro_start, data_start];
    for p in set.iter_mut().flat_map(|o| o.placed.iter_mut().flatten()) {
        p.offset += class_start[p.class as usize];
    }
    for object in set.iter_mut() {
        for def in object.defs.iter_mut() {
            if let Def::Common { offset } = def {
                *offset += data_start;
            }
        }
    }
    Ok(Layout {
        code_size,
        ro_start,
        ro_size: cursors[1],
        size,
        align: max_align,
        stubs,
        got: ro_start + got,
        written: data_start + written,
        dso_handle: dso_offset.map(|o| data_start + o),
    })
}

/// Every symbol's final address: definitions first, then the symbols bound to them.
fn assign_addresses(set: &mut [Object<'_>], layout: &Layout, base: u64) {
    for object in set.iter_mut() {
        let placed = &object.placed;
        object.addresses = object
            .defs
            .iter()
            .map(|def| match *def {
                Def::Section { section, value } => base + placed[section].as_ref().map_or(0, |p| p.offset) + value,
                Def::Absolute(value) | Def::Resolved(value) => value,
                Def::Common { offset } => base + offset,
                Def::GotBase => base + layout.got,
                Def::DsoHandle => base + layout.dso_handle.unwrap_or(0),
                Def::Null | Def::Undefined { .. } | Def::NotLoaded | Def::Elsewhere { .. } => 0,
            })
            .collect();
    }
    for i in 0..set.len() {
        let bound: Vec<(usize, u64)> = set[i]
            .defs
            .iter()
            .enumerate()
            .filter_map(|(index, def)| match *def {
                Def::Elsewhere { object, symbol } => Some((index, set.get(object)?.addresses.get(symbol).copied()?)),
                _ => None,
            })
            .collect();
        for (index, address) in bound {
            set[i].addresses[index] = address;
        }
    }
}

/// Copies the sections' contents, fills the GOT and the stubs and applies the relocations.
fn write_image(set: &[Object<'_>], layout: &Layout, base: u64, memory: &mut [u8], stats: &mut LoadStats) -> Result<(), LoadError> {
    let got_base = base + layout.got;
    for object in set {
        for p in object.placed.iter().flatten() {
            if let Some(contents) = p.contents {
                memory[p.offset as usize..p.offset as usize + contents.len()].copy_from_slice(contents);
            }
        }
        // The GOT holds every symbol's final address; each stub jumps through its slot.
        for (index, n) in object.needs.iter().enumerate() {
            let Some(slot) = n.got else { continue };
            let value = object.addresses.get(index).copied().unwrap_or(0);
            let at = (layout.got + 8 * u64::from(slot)) as usize;
            memory[at..at + 8].copy_from_slice(&value.to_le_bytes());
            if let Some(stub) = n.stub {
                let at = layout.stubs + STUB_SIZE * u64::from(stub);
                let slot_address = got_base + 8 * u64::from(slot);
                let disp = slot_address as i64 - (base + at + 6) as i64;
                let disp = i32::try_from(disp).map_err(|_| malformed("stub out of reach of its GOT slot"))?;
                let at = at as usize;
                memory[at..at + 2].copy_from_slice(&[0xff, 0x25]); // jmp qword [rip+disp32]
                memory[at + 2..at + 6].copy_from_slice(&disp.to_le_bytes());
                memory[at + 6..at + 8].copy_from_slice(&[0xcc, 0xcc]);
            }
        }
    }
    for (i, object) in set.iter().enumerate() {
        let ctx = Context { set, object, base, got_base, stubs_base: base + layout.stubs };
        for &(target, relas) in &object.rel_sections {
            let Some(section) = object.placed[target].as_ref() else { continue };
            for rela in relas {
                ctx.apply(memory, section, target, rela, stats).map_err(|e| in_object(e, i, set.len()))?;
            }
        }
    }
    Ok(())
}

/// Constructors and destructors in the order a static link of the objects (in order) would
/// run them: `.preinit_array` then `.init_array` entries sorted by priority across the set,
/// equal priorities (and unprioritised sections, last) in object then section order;
/// destructors in the reverse of the `.fini_array` order.
fn constructors(set: &[Object<'_>], memory: &[u8]) -> (Vec<u64>, Vec<u64>) {
    let mut arrays: Vec<(ArrayKind, u32, usize, usize)> = Vec::new();
    for (object, o) in set.iter().enumerate() {
        for (section, p) in o.placed.iter().enumerate() {
            if let Some((kind, priority)) = p.as_ref().and_then(|p| p.array) {
                arrays.push((kind, priority, object, section));
            }
        }
    }
    arrays.sort_by_key(|&(kind, priority, object, section)| (kind as u8, priority, object, section));
    let (mut init, mut fini) = (Vec::new(), Vec::new());
    for &(kind, _, object, section) in &arrays {
        let Some(p) = set[object].placed[section].as_ref() else { continue };
        let Some(entries) = memory.get(p.offset as usize..(p.offset + p.size) as usize) else { continue };
        for word in entries.chunks_exact(8) {
            let address = u64::from_le_bytes(word.try_into().unwrap_or_default());
            if address == 0 || address == u64::MAX {
                continue;
            }
            match kind {
                ArrayKind::Preinit | ArrayKind::Init => init.push(address),
                ArrayKind::Fini => fini.push(address),
            }
        }
    }
    fini.reverse();
    (init, fini)
}

/// Checks every object's unwind information as the unwinder will read it; returns the
/// addresses of the `.eh_frame` sections to register.
fn check_frames(set: &[Object<'_>], memory: &[u8], base: u64, code: &std::ops::Range<u64>) -> Result<Vec<u64>, LoadError> {
    let mut frames = Vec::new();
    for (i, object) in set.iter().enumerate() {
        for (index, p) in object.placed.iter().enumerate() {
            let Some(p) = p.as_ref().filter(|p| p.eh_frame && p.size >= 4) else { continue };
            let Some(frame) = memory.get(p.offset as usize..(p.offset + p.size) as usize) else { continue };
            if frame[..4] == [0, 0, 0, 0] {
                continue;
            }
            ehframe::validate(frame, base + p.offset, code.clone())
                .map_err(|e| in_object(malformed(format!("{}: {e}", object.linker.section_name(index))), i, set.len()))?;
            frames.push(base + p.offset);
        }
    }
    Ok(frames)
}

/// Code becomes read+execute, read-only data (with the GOT and `.eh_frame`) read-only.
fn protect(image: &mut Image, layout: &Layout) -> Result<(), LoadError> {
    let memory = |e: std::io::Error| LoadError::Memory(e.to_string());
    image.make_executable(0, layout.code_size as usize).map_err(memory)?;
    image.make_readonly(layout.ro_start as usize, layout.ro_size as usize).map_err(memory)
}

/// The set's defined global names, each with the definition that won.
fn exports(set: &[Object<'_>], bound: Bound<'_>) -> Exports {
    let mut exported = Vec::with_capacity(bound.exports.len());
    for (name, object, symbol, common_size) in bound.exports {
        let o = &set[object];
        let Ok(sym) = o.linker.symtab.symbol(SymbolIndex(symbol)) else { continue };
        let common = matches!(o.defs.get(symbol), Some(Def::Common { .. }));
        let kind = match sym.st_type() {
            elf::STT_FUNC => SymbolKind::Function,
            elf::STT_OBJECT | elf::STT_COMMON => SymbolKind::Data,
            _ if common => SymbolKind::Data,
            _ => SymbolKind::Other,
        };
        let size = common_size.unwrap_or_else(|| sym.st_size(LE));
        exported.push((name, SymbolInfo { address: o.addresses.get(symbol).copied().unwrap_or(0), size, kind, weak: sym.st_bind() != elf::STB_GLOBAL }));
    }
    Exports::new(exported)
}
