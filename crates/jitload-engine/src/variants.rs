//! x86-64 level variants: one bitcode module carrying its code compiled for several x86-64
//! levels, so that code the preprocessor specialises (`#if defined(__AVX2__)`, as xxhash,
//! zstd and simdjson-style parsers do) gets its fast path on hosts that have it.
//!
//! Format. The file is the baseline module (compiled for plain `x86-64`), valid bitcode every
//! LLVM tool reads; each higher level's code is a complete bitcode module stored as a node of
//! named metadata:
//!
//! ```text
//! !jitload.variants = !{!0, ...}
//! !0 = !{!"x86-64-v3", !"<bitcode of the module compiled with -march=x86-64-v3>"}
//! ```
//!
//! The build tools' compile stand-in embeds one node per level in each translation unit's
//! object ([`embed`]); LLVM's linker would concatenate them, so the build tools' link takes
//! them out and links each level's pieces into one module per level ([`LevelPieces`]); a
//! translation unit compiled without a level (a prebuilt bitcode archive) takes part in that
//! level with its baseline code. A variant holds code only: what describes the file (native
//! objects, dependent libraries, the Python ABI record) is the baseline module's, and the
//! loader keeps it. Several nodes of one level are linked together, so an object that was
//! never through jitload's link (a plain `-c` output) loads too.
//!
//! Why inside the module, as named metadata: for the reasons the native objects are
//! (`native.rs`): one file for build tools to copy and wheels to list, the object cache's key
//! (a hash of the file) covers every variant, and metadata is never compiled, so the baseline
//! module costs nothing extra to load on a host that uses it.
//!
//! Loading ([`select`], the one hook in the load path): the highest level the module carries
//! that the host supports (from the CPU features LLVM detected, which are the features code is
//! generated for) and `JITLOAD_X86_LEVEL` allows; none: the baseline. A variant that does not
//! parse or verify is an error naming the file and the level, not a silent fallback: a corrupt
//! file should be rebuilt, and `JITLOAD_X86_LEVEL=baseline` loads the baseline meanwhile.

use std::path::{Path, PathBuf};

use crate::error::EngineError;
use crate::llvm::context::Context;
use crate::llvm::module::Module;
use crate::llvm::target::HostTarget;

/// The named metadata holding the variants.
pub const NAMED_METADATA: &str = "jitload.variants";

/// Named metadata describing the file rather than its code: the baseline module's, kept when a
/// variant's code replaces it.
const FILE_METADATA: &[&str] = &[crate::native::NAMED_METADATA, "llvm.dependent-libraries", "jitload.python"];

/// The CPU features each x86-64 level adds to the one below (psABI's level definitions, in
/// LLVM's feature names).
const LEVEL_FEATURES: [&[&str]; 3] = [
    &["cx16", "popcnt", "sahf", "sse3", "sse4.1", "sse4.2", "ssse3"],
    &["avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"],
    &["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"],
];

/// The highest x86-64 level (1 = baseline .. 4) that a CPU with LLVM's feature string
/// `features` (`+avx2,-avx512f,...`) supports.
pub fn host_level(features: &str) -> u8 {
    let has: std::collections::HashSet<&str> = features.split(',').filter_map(|f| f.strip_prefix('+')).collect();
    let mut level = 1;
    for added in LEVEL_FEATURES {
        if !added.iter().all(|f| has.contains(f)) {
            break;
        }
        level += 1;
    }
    level
}

/// A variant: (level name, bitcode).
type Variant = (String, Vec<u8>);

/// The variants `module` carries, in file order.
fn carried(module: &Module<'_>, path: &str) -> Result<Vec<Variant>, EngineError> {
    let mut out = Vec::new();
    for (i, node) in module.named_metadata(NAMED_METADATA).into_iter().enumerate() {
        let [Some(level), Some(bitcode)] = <[Option<Vec<u8>>; 2]>::try_from(node).unwrap_or([None, None]) else {
            return Err(EngineError::Compile {
                path: path.to_string(),
                stage: "reading its x86-64 level variants".into(),
                message: format!("!{NAMED_METADATA} entry {i} is not a pair of strings (level, bitcode)"),
            });
        };
        out.push((String::from_utf8_lossy(&level).into_owned(), bitcode));
    }
    Ok(out)
}

/// A level's name and the bitcode of its pieces.
pub type ChosenLevel = (String, Vec<Vec<u8>>);

/// The level to load on this host and its pieces' bitcode: the highest level `module`
/// carries that the host and `JITLOAD_X86_LEVEL` allow; `None`: the baseline (`module`
/// itself).
pub fn chosen(module: &Module<'_>, host: &HostTarget, path: &str) -> Result<Option<ChosenLevel>, EngineError> {
    let variants = carried(module, path)?;
    if variants.is_empty() {
        return Ok(None);
    }
    let cap = host_level(&host.features).min(jitload_options::get().x86_level.unwrap_or(u8::MAX));
    // Level names this loader does not know (a later jitload's) are skipped.
    let best = variants.iter().filter_map(|(name, _)| jitload_options::x86_level_number(name)).filter(|l| *l <= cap).max();
    let Some(level) = best else {
        log::debug!("{path}: loading the baseline code (host level {cap})");
        return Ok(None);
    };
    let name = variants.iter().map(|(n, _)| n).find(|n| jitload_options::x86_level_number(n) == Some(level)).cloned().unwrap_or_default();
    log::debug!("{path}: loading its {name} variant");
    let pieces = variants.into_iter().filter(|(n, _)| *n == name).map(|(_, b)| b).collect();
    Ok(Some((name, pieces)))
}

/// The error for a variant `name` of `path` that does not read.
pub fn variant_error(path: &str, name: &str, message: String) -> EngineError {
    EngineError::Compile {
        path: path.to_string(),
        stage: format!("reading its {name} variant"),
        message: format!("{message}; rebuild the module, or set JITLOAD_X86_LEVEL=baseline to load its baseline code"),
    }
}

/// Gives `chosen` (a variant's code) the file metadata of `module` (the baseline).
pub fn keep_file_metadata<'c>(chosen: &mut Module<'c>, module: &Module<'c>) {
    for key in FILE_METADATA {
        chosen.copy_named_metadata_from(module, key);
    }
}

/// The module to compile for this host: `module` itself, or the code of the highest level it
/// carries that the host and `JITLOAD_X86_LEVEL` allow, with `module`'s file metadata.
pub fn select<'c>(ctx: &'c Context, mut module: Module<'c>, host: &HostTarget, path: &str) -> Result<Module<'c>, EngineError> {
    let Some((name, pieces)) = chosen(&module, host, path)? else {
        module.erase_named_metadata(NAMED_METADATA);
        return Ok(module);
    };
    let error = |message: String| variant_error(path, &name, message);
    let mut chosen = Module::new_empty(ctx, &name);
    chosen.set_triple(&module.triple());
    for bitcode in &pieces {
        let piece = Module::parse_bitcode(ctx, bitcode, &format!("{path} ({name})")).map_err(&error)?;
        piece.verify().map_err(&error)?;
        chosen.link_in(piece).map_err(&error)?;
    }
    keep_file_metadata(&mut chosen, &module);
    Ok(chosen)
}

/// Stores each `(level, bitcode file)` of `variants` in the bitcode module at `base` (rewritten
/// in place): what the build tools' compile stand-in does with one translation unit.
pub fn embed(base: &Path, variants: &[(String, PathBuf)]) -> Result<(), EngineError> {
    let shown = base.display().to_string();
    let bytes = std::fs::read(base).map_err(|source| EngineError::Read { path: shown.clone(), source })?;
    let ctx = Context::new();
    let mut module = crate::ir::parse(&ctx, &bytes, &shown)?;
    for (level, file) in variants {
        let variant_shown = file.display().to_string();
        let variant = std::fs::read(file).map_err(|source| EngineError::Read { path: variant_shown.clone(), source })?;
        crate::ir::classify(&variant, &variant_shown)?;
        module.add_named_strings(NAMED_METADATA, &[level.as_bytes(), &variant]);
    }
    module.write_bitcode_file(base).map_err(|source| EngineError::Write { path: shown, source })
}

/// What the build tools' link gathers to give the linked module one variant per level: each
/// input's variants (taken out of it before it is linked into the baseline) and, for inputs
/// that lack a level, their baseline code.
#[derive(Default)]
pub struct LevelPieces {
    /// Per input with code: its variants, and its baseline bitcode.
    inputs: Vec<(Vec<Variant>, Vec<u8>)>,
}

impl LevelPieces {
    /// Takes `module`'s variants out of it (before it is linked), keeping them and its code.
    pub fn take_from(&mut self, module: &mut Module<'_>, bytes: &[u8], path: &str) -> Result<(), EngineError> {
        let variants = carried(module, path)?;
        module.erase_named_metadata(NAMED_METADATA);
        if module.has_definitions() {
            self.inputs.push((variants, bytes.to_vec()));
        }
        Ok(())
    }

    /// Links each level's pieces into one module and stores it in `linked` (a level is built
    /// only if some input was compiled for it).
    pub fn store_in(&self, ctx: &Context, linked: &mut Module<'_>, path: &str) -> Result<(), EngineError> {
        let mut levels: Vec<&str> = self.inputs.iter().flat_map(|(v, _)| v.iter().map(|(n, _)| n.as_str())).collect();
        levels.sort();
        levels.dedup();
        for level in levels {
            let error = |message: String| EngineError::Compile { path: path.to_string(), stage: format!("linking its {level} variant"), message };
            let mut variant = Module::new_empty(ctx, level);
            variant.set_triple(&linked.triple());
            for (variants, baseline) in &self.inputs {
                let own: Vec<&[u8]> = variants.iter().filter(|(n, _)| n == level).map(|(_, b)| b.as_slice()).collect();
                let pieces = if own.is_empty() { vec![baseline.as_slice()] } else { own };
                for bitcode in pieces {
                    let mut piece = crate::ir::parse_content(ctx, bitcode, &format!("{path} ({level})"))?;
                    for key in FILE_METADATA.iter().chain([&NAMED_METADATA]) {
                        piece.erase_named_metadata(key);
                    }
                    variant.link_in(piece).map_err(&error)?;
                }
            }
            variant.verify().map_err(&error)?;
            linked.add_named_strings(NAMED_METADATA, &[level.as_bytes(), &variant.to_bitcode()]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_levels_follow_the_features() {
        let v1 = "+sse2,+cx8,-avx2";
        assert_eq!(host_level(v1), 1);
        let v2 = "+cx16,+popcnt,+sahf,+sse3,+sse4.1,+sse4.2,+ssse3";
        assert_eq!(host_level(v2), 2);
        let v3 = format!("{v2},+avx,+avx2,+bmi,+bmi2,+f16c,+fma,+lzcnt,+movbe,+xsave,-avx512f");
        assert_eq!(host_level(&v3), 3);
        // One missing feature keeps the level below.
        assert_eq!(host_level(&v3.replace("+movbe", "-movbe")), 2);
        let v4 = format!("{v3},+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl");
        assert_eq!(host_level(&v4), 4);
    }
}
