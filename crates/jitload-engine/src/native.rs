//! Native objects carried inside a bitcode module: assembly sources and prebuilt objects a
//! build could not turn into bitcode. The build tools' link stores each as a node of
//! `!jitload.native_objects` — `!{!"<where it came from>", !"<object bytes>"}` (written by
//! `python/jitload/_native_objects.py`, which says why the format is this one). They are
//! linked beside the objects compiled from the bitcode, and travel with them in the cache
//! entry, so the warm path links them too; the cache key hashes the whole file, so it
//! covers them.

use crate::error::EngineError;
use crate::llvm::module::{Module, ModuleSymbol};
use crate::objfile;

/// The named metadata the objects are stored in.
pub const NAMED_METADATA: &str = "jitload.native_objects";

/// One carried object, checked to be a relocatable object for this machine.
pub struct NativeObject {
    pub bytes: Vec<u8>,
    pub symbols: objfile::ObjectSymbols,
}

/// The native objects `module` carries (none for most modules), each checked.
pub fn carried_objects(module: &Module<'_>, path: &str) -> Result<Vec<NativeObject>, EngineError> {
    let error = |message: String| EngineError::Compile { path: path.to_string(), stage: "reading its native objects".into(), message };
    let mut objects = Vec::new();
    for (i, node) in module.named_metadata(NAMED_METADATA).into_iter().enumerate() {
        let [Some(name), Some(bytes)] = <[Option<Vec<u8>>; 2]>::try_from(node).unwrap_or([None, None]) else {
            return Err(error(format!("!{NAMED_METADATA} entry {i} is not a pair of strings (name, object)")));
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        let symbols = objfile::symbols(&bytes).map_err(|why| error(format!("native object {name}: {why}")))?;
        objects.push(NativeObject { bytes, symbols });
    }
    Ok(objects)
}

/// What must resolve outside the module once its native objects are linked beside it: the
/// bitcode's undefined names and the objects', less what either defines. Sorted, each once.
pub fn undefined_with(bitcode_undefined: Vec<String>, symbols: &[ModuleSymbol], objects: &[NativeObject]) -> Vec<String> {
    if objects.is_empty() {
        return bitcode_undefined;
    }
    let defined: std::collections::HashSet<&str> = symbols
        .iter()
        .filter(|s| s.defined)
        .map(|s| s.name.as_str())
        .chain(objects.iter().flat_map(|o| o.symbols.defined.iter().map(String::as_str)))
        .collect();
    let mut undefined: Vec<String> = bitcode_undefined
        .into_iter()
        .chain(objects.iter().flat_map(|o| o.symbols.undefined.iter().cloned()))
        .filter(|name| !defined.contains(name.as_str()))
        .collect();
    undefined.sort();
    undefined.dedup();
    undefined
}
