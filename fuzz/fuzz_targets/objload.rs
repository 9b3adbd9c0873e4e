//! Cached objects through jitload's own linker, the warm import path
//! (`jitload_objload::LoadedObject::load_all`): a set of one or two objects (the first byte
//! picks where the rest is split), every undefined symbol resolved to a readable dummy
//! except names starting with "missing", and the image dropped without running any of it.
#![no_main]
use libfuzzer_sys::fuzz_target;

static TARGET: [u64; 64] = [0; 64];

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let at = split as usize * rest.len() / 255;
    let (a, b) = rest.split_at(at);
    let set: Vec<&[u8]> = if a.is_empty() || b.is_empty() { vec![rest] } else { vec![a, b] };
    let resolve = |name: &str| (!name.starts_with("missing")).then_some(TARGET.as_ptr() as u64);
    let _ = jitload_objload::LoadedObject::load_all(&set, &resolve);
});
