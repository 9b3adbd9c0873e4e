//! Links several bitcode/IR files into one module for the build tools, recording the
//! libraries the result needs as `!llvm.dependent-libraries` and linking the inputs' x86-64
//! level variants into one per level (`variants`).

use std::path::Path;

use crate::error::EngineError;
use crate::ir;
use crate::llvm::context::Context;
use crate::llvm::module::Module;
use crate::variants;

/// Links `inputs` into one verified bitcode module written atomically to `output`, with
/// `python_abi` (the record of the Python ABI it was built for, see `jitload/abi.py`) as
/// named metadata `jitload.python`.
pub fn link_files(inputs: &[&Path], output: &Path, dependent_libraries: &[String], python_abi: Option<&str>) -> Result<(), EngineError> {
    let ctx = Context::new();
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut linked = Module::new_empty(&ctx, &name);
    let mut levels = variants::LevelPieces::default();
    for input in inputs {
        let shown = input.display().to_string();
        let bytes = std::fs::read(input).map_err(|source| EngineError::Read { path: shown.clone(), source })?;
        let mut module = ir::parse(&ctx, &bytes, &shown)?;
        levels.take_from(&mut module, &bytes, &shown)?;
        if linked.triple().is_empty() {
            linked.set_triple(&module.triple());
        }
        linked.link_in(module).map_err(|message| EngineError::Compile { path: shown.clone(), stage: "bitcode linking".into(), message })?;
    }
    for lib in dependent_libraries {
        linked.add_dependent_library(lib);
    }
    if let Some(record) = python_abi {
        linked.add_named_string("jitload.python", record);
    }
    let out = output.display().to_string();
    linked.verify().map_err(|message| EngineError::Verify { path: out.clone(), message })?;
    levels.store_in(&ctx, &mut linked, &out)?;
    let tmp = output.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, linked.to_bitcode()).and_then(|_| std::fs::rename(&tmp, output)).map_err(|source| EngineError::Write { path: out, source })
}

/// The dependent libraries recorded in a bitcode/IR file.
pub fn dependent_libraries(path: &Path) -> Result<Vec<String>, EngineError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| EngineError::Read { path: shown.clone(), source })?;
    let ctx = Context::new();
    let module = ir::parse(&ctx, &bytes, &shown)?;
    Ok(module.dependent_libraries())
}
