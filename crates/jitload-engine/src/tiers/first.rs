//! The first tier: read the module lazily, compile its data and constructors now, and put
//! every function behind a stub that compiles it on its first call.

use std::sync::Arc;

use super::{TieredModule, PROMOTED};
use crate::error::EngineError;
use crate::ir;
use crate::kept::KeptModule;
use crate::llvm::context::Context;
use crate::llvm::module::Module;
use crate::llvm::target::{HostTarget, OptLevel};
use crate::native;
use crate::session::{LoadOptions, Session};
use crate::variants;
use jitload_runtime::compiled::{Compiled, CTORS, DTORS};

/// What both tiers do to the module before they differ, so that both see the same names:
/// what every loader does (`ir::prepare_for_link`), then local symbols made external. Returns
/// whether there are constructors and destructors, and the new names of the local symbols.
pub(super) struct Common {
    pub(super) has_ctors: bool,
    pub(super) has_dtors: bool,
    pub(super) promoted: Vec<String>,
}

pub(super) fn prepare_common(module: &mut Module<'_>, host: &HostTarget, path: &str) -> Result<Common, EngineError> {
    let (has_ctors, has_dtors) = ir::prepare_for_link(module, host, path)?;
    module.drop_used_lists();
    let promoted = module.promote_locals(PROMOTED).into_iter().map(|(_, new)| new).collect();
    Ok(Common { has_ctors, has_dtors, promoted })
}

/// Reads `bytes` lazily and, for a module carrying x86-64 level variants, the chosen level's
/// code (lazily too when it is one piece).
fn read_lazily<'c>(ctx: &'c Context, bytes: &[u8], path: &str, host: &HostTarget) -> Result<Module<'c>, EngineError> {
    let module = match ir::classify(bytes, path)? {
        ir::InputKind::Bitcode => Module::parse_bitcode_lazy(ctx, bytes, path).map_err(|message| EngineError::Bitcode {
            path: path.to_string(),
            producer: crate::bitstream::producer(bytes),
            message,
            reader: crate::llvm::llvm_version(),
        })?,
        ir::InputKind::IrText => return variants::select(ctx, ir::parse(ctx, bytes, path)?, host, path),
    };
    let Some((name, pieces)) = variants::chosen(&module, host, path)? else {
        let mut module = module;
        module.erase_named_metadata(variants::NAMED_METADATA);
        return Ok(module);
    };
    if pieces.len() != 1 {
        return variants::select(ctx, module, host, path);
    }
    let mut chosen = Module::parse_bitcode_lazy(ctx, &pieces[0], &format!("{path} ({name})")).map_err(|m| variants::variant_error(path, &name, m))?;
    variants::keep_file_metadata(&mut chosen, &module);
    Ok(chosen)
}

/// What preparing a first tier gives besides the module: what to link, the functions, and
/// what the lowered constructors and destructors call.
type Prepared = (Compiled, Vec<crate::llvm::tiering::TierFunction>, Vec<String>);

/// Prepares the first tier of the module in `bytes`: `None` when the module cannot be
/// compiled in tiers (the caller compiles it eagerly), else what to link (data, constructors,
/// native objects; functions resolve to stubs) and the module's tiers.
pub(crate) fn prepare_first_tier(
    session: &Arc<Session>,
    bytes: &[u8],
    path: &str,
    options: &LoadOptions,
    cache_key: Option<jitload_cache::CacheKey>,
) -> Result<Option<(Compiled, Arc<TieredModule>)>, EngineError> {
    let host = session.host();
    let work = |ctx: &'static Context| -> Result<(Module<'static>, Option<Prepared>), EngineError> {
        let mut module = read_lazily(ctx, bytes, path, host)?;
        if let Some(reason) = module.tier_blocker() {
            log::debug!("jitload: {path} is compiled eagerly: {reason}");
            return Ok((module, None));
        }
        let common = prepare_common(&mut module, host, path)?;
        let functions = module.tier_functions();
        if let Some(required) = &options.required_symbol {
            if !functions.iter().any(|f| &f.name == required) {
                return Ok((module, None)); // the eager path reports it, with the init functions it found
            }
        }
        let symbols = module.symbols();
        let natives = native::carried_objects(&module, path)?;
        // Bodies are unread, so which declarations they use is unknown: all count. If one
        // does not resolve, the eager path decides (it knows what is used).
        let declared: Vec<String> = symbols.iter().filter(|s| !s.defined && !s.weak_reference).map(|s| s.name.clone()).collect();
        let undefined = native::undefined_with(declared, &symbols, &natives);
        // What the lowered constructors and destructors call (compiled with the data, so no
        // first-tier piece notes it): destructors run at exit (see `prepare_for_exit`).
        let mut lowered_calls = Vec::new();
        for lowered in [CTORS, DTORS] {
            if let Some(part) = module.extract_function(lowered, "__jitload_scan") {
                lowered_calls.extend(part.declared_functions());
            }
        }
        let mut globals = module.clone_part(None);
        // The first tier carries no debug information (the final tier does): emitting the
        // DWARF of every global costs more than compiling the data.
        globals.strip_debug_info();
        globals.verify().map_err(|message| EngineError::Verify { path: path.to_string(), message })?;
        let mut objects = vec![session.compile(&mut globals, OptLevel::O0, path)?];
        drop(globals);
        objects.extend(natives.into_iter().map(|n| n.bytes));
        let compiled = Compiled {
            objects,
            exports: ir::exports(&module),
            undefined,
            dependent_libraries: module.dependent_libraries(),
            has_ctors: common.has_ctors,
            has_dtors: common.has_dtors,
        };
        Ok((module, Some((compiled, functions, lowered_calls))))
    };
    let (source, prepared) = KeptModule::build(path, work)?;
    let Some((compiled, functions, lowered_calls)) = prepared else { return Ok(None) };
    let referenced = lowered_calls.into_iter().filter(|n| functions.iter().any(|f| &f.name == n)).collect();
    let runs_at_exit = jitload_runtime::outlive::registers_exit_handler(&compiled.undefined);
    let tiers = TieredModule::new(session.clone(), referenced, path, options.opt_level, functions, source, Arc::from(bytes), cache_key, runs_at_exit)?;
    super::register(&tiers);
    Ok(Some((compiled, tiers)))
}
