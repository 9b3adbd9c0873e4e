//! Bytes to a verified module for this host: format detection, parsing with clear errors
//! (including which LLVM produced unreadable bitcode), verification and target checks.

use crate::error::EngineError;
use crate::llvm::context::Context;
use crate::llvm::module::{Module, ModuleSymbol};
use crate::llvm::target::HostTarget;
use jitload_runtime::compiled::{CTORS, DTORS};

const BITCODE_MAGIC: [u8; 4] = [b'B', b'C', 0xC0, 0xDE];
const WRAPPER_MAGIC: [u8; 4] = [0xDE, 0xC0, 0x17, 0x0B];

/// What an input file holds, judged by its first bytes (and `.ll` name for text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Bitcode,
    IrText,
}

/// Decides how to parse the file `path`, or explains why it is neither bitcode nor IR.
/// Text counts as IR only in a `.ll` file, so a stray source file is refused clearly.
pub fn classify(bytes: &[u8], path: &str) -> Result<InputKind, EngineError> {
    classify_as(bytes, path, path.ends_with(".ll"))
}

/// Like [`classify`], for code handed over in memory: any text is taken as IR.
pub fn classify_content(bytes: &[u8], path: &str) -> Result<InputKind, EngineError> {
    let text = std::str::from_utf8(bytes).is_ok() && !bytes.contains(&0);
    classify_as(bytes, path, text)
}

fn classify_as(bytes: &[u8], path: &str, text_is_ir: bool) -> Result<InputKind, EngineError> {
    if bytes.is_empty() {
        return Err(EngineError::Empty { path: path.to_string() });
    }
    if bytes.starts_with(&BITCODE_MAGIC) || bytes.starts_with(&WRAPPER_MAGIC) {
        return Ok(InputKind::Bitcode);
    }
    if text_is_ir {
        return Ok(InputKind::IrText);
    }
    let detail = if bytes.starts_with(b"\x7fELF") {
        "it is an ELF file (a native object or shared library), not bitcode".to_string()
    } else if std::str::from_utf8(&bytes[..bytes.len().min(4096)]).is_ok() && !bytes.contains(&0) {
        "it is text; textual IR must use the .ll suffix".to_string()
    } else {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("it starts with bytes {} instead of the bitcode magic 42 43 c0 de", head.join(" "))
    };
    Err(EngineError::NotBitcode { path: path.to_string(), detail })
}

/// Parses the bitcode or IR file `path` into `ctx`, then verifies it.
pub fn parse<'ctx>(ctx: &'ctx Context, bytes: &[u8], path: &str) -> Result<Module<'ctx>, EngineError> {
    parse_kind(ctx, bytes, path, classify(bytes, path)?)
}

/// Parses bitcode or IR text handed over in memory (`path` only names it), then verifies it.
pub fn parse_content<'ctx>(ctx: &'ctx Context, bytes: &[u8], path: &str) -> Result<Module<'ctx>, EngineError> {
    parse_kind(ctx, bytes, path, classify_content(bytes, path)?)
}

fn parse_kind<'ctx>(ctx: &'ctx Context, bytes: &[u8], path: &str, kind: InputKind) -> Result<Module<'ctx>, EngineError> {
    let module = match kind {
        InputKind::Bitcode => Module::parse_bitcode(ctx, bytes, path).map_err(|message| {
            let producer = producer_from_message(&message).or_else(|| crate::bitstream::producer(bytes));
            EngineError::Bitcode { path: path.to_string(), message, producer, reader: crate::llvm::llvm_version() }
        })?,
        InputKind::IrText => {
            Module::parse_ir(ctx, bytes, path).map_err(|message| EngineError::IrSyntax { path: path.to_string(), message: message.trim().to_string() })?
        }
    };
    module.verify().map_err(|message| EngineError::Verify { path: path.to_string(), message })?;
    Ok(module)
}

/// What every loader does to a parsed module before it is compiled: retarget it to the host,
/// define its `__dso_handle` and lower its constructors and destructors into one function each
/// (`CTORS`, `DTORS`). Returns whether it has constructors and destructors.
pub fn prepare_for_link(module: &mut Module<'_>, host: &HostTarget, path: &str) -> Result<(bool, bool), EngineError> {
    retarget(module, host, path)?;
    module.define_dso_handle();
    let has_ctors = module.lower_init_array("llvm.global_ctors", CTORS, false);
    let has_dtors = module.lower_init_array("llvm.global_dtors", DTORS, true);
    Ok((has_ctors, has_dtors))
}

/// The names a prepared module exports to other modules: its exported symbols but jitload's
/// own, a thread-local under its emulated-TLS control object's name (see `cxx`).
pub fn exports(module: &Module<'_>) -> Vec<String> {
    module
        .symbols()
        .into_iter()
        .filter(|s| s.exported && !s.name.starts_with("__jitload_") && !s.name.starts_with("__emutls_"))
        .map(|s| if s.thread_local { format!("__emutls_v.{}", s.name) } else { s.name })
        .collect()
}

/// Checks the module was built for this machine's architecture and OS, then stamps it with
/// the host triple (vendor and environment spellings differ harmlessly between tools) and
/// makes its functions compile for the host CPU and features (tuned as `host.tune` says, less
/// `host.withheld`).
pub fn retarget(module: &mut Module<'_>, host: &HostTarget, path: &str) -> Result<(), EngineError> {
    let triple = module.triple();
    if !triple.is_empty() {
        let arch_ok = HostTarget::arch_of(&triple) == HostTarget::arch_of(&host.triple);
        let os_ok = HostTarget::os_of(&triple).starts_with(HostTarget::os_of(&host.triple));
        if !arch_ok || !os_ok {
            return Err(EngineError::Target { path: path.to_string(), module_triple: triple, host_triple: host.triple.clone() });
        }
    }
    module.set_triple(&host.triple);
    module.retarget_functions(&host.cpu, &host.tune, &host.function_features(), host.prefer_vector_width);
    Ok(())
}

/// LLVM's bitcode reader appends "(Producer: 'LLVM23.0.0' Reader: 'LLVM 22.1.8')" to many errors.
fn producer_from_message(message: &str) -> Option<String> {
    let start = message.find("Producer: '")? + "Producer: '".len();
    let end = message[start..].find('\'')?;
    Some(message[start..start + end].to_string())
}

/// The names a module uses without defining them (weak references excluded: those may stay
/// unresolved), sorted, each once: what must resolve before it is linked.
pub fn undefined_symbols(symbols: &[ModuleSymbol]) -> Vec<String> {
    let mut undefined: Vec<String> = symbols.iter().filter(|s| !s.defined && s.used && !s.weak_reference).map(|s| s.name.clone()).collect();
    undefined.sort();
    undefined.dedup();
    undefined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_producer_is_detected() {
        assert!(crate::bitstream::producer_is_newer("LLVM23.0.0git", "22.1.8"));
        assert!(!crate::bitstream::producer_is_newer("LLVM22.1.8", "22.1.8"));
        assert!(!crate::bitstream::producer_is_newer("LLVM19.1.7", "22.1.8"));
    }

    #[test]
    fn producer_is_read_from_reader_messages() {
        let m = "Unknown attribute kind (102) (Producer: 'LLVM23.0.0' Reader: 'LLVM 22.1.8')";
        assert_eq!(producer_from_message(m).as_deref(), Some("LLVM23.0.0"));
    }

    #[test]
    fn classify_explains_non_bitcode() {
        assert!(matches!(classify(b"", "x.bc"), Err(EngineError::Empty { .. })));
        let e = classify(b"\x7fELF\x02\x01", "x.bc").unwrap_err().to_string();
        assert!(e.contains("ELF"), "{e}");
        assert_eq!(classify(b"BC\xc0\xde rest", "x.bc").unwrap(), InputKind::Bitcode);
        assert_eq!(classify(b"define void @f() { ret void }", "x.ll").unwrap(), InputKind::IrText);
    }
}
