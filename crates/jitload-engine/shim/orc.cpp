// ORC and IR operations that LLVM's C API does not offer. Each function is a thin, exception-
// free wrapper; errors come back as LLVMErrorRef like the rest of the C API.
//
// The C API's opaque handles are plain reinterpret_casts of the C++ objects (see
// OrcV2CBindings.cpp), which is what makes these casts valid.
#include <llvm-c/Error.h>
#include <llvm-c/Orc.h>
#include <llvm/ExecutionEngine/Orc/Core.h>
#include <llvm/IR/Module.h>
#include <llvm/Transforms/Utils/Cloning.h>

using namespace llvm;

static orc::JITDylib *dylib(LLVMOrcJITDylibRef jd) { return reinterpret_cast<orc::JITDylib *>(jd); }

// Appends `other` to `jd`'s link order: symbols `jd` cannot find in itself are searched in
// `other` (exported symbols only), in the order libraries were linked.
extern "C" void jitload_dylib_add_to_link_order(LLVMOrcJITDylibRef jd, LLVMOrcJITDylibRef other) {
  dylib(jd)->addToLinkOrder(*dylib(other), orc::JITDylibLookupFlags::MatchExportedSymbolsOnly);
}

// Removes `jd` from its session: everything defined in it is freed and the name released.
extern "C" LLVMErrorRef jitload_remove_dylib(LLVMOrcExecutionSessionRef es, LLVMOrcJITDylibRef jd) {
  auto *session = reinterpret_cast<orc::ExecutionSession *>(es);
  return wrap(session->removeJITDylib(*dylib(jd)));
}

// A copy of `m` (same context) keeping the definitions of either every global variable and
// jitload's constructor/destructor functions (`function_name == nullptr`) or just the function
// `function_name`; everything else becomes
// an external declaration. Used to split a module into lazily compiled pieces, as ORC's
// CompileOnDemandLayer does; the caller has made every local symbol external first.
extern "C" LLVMModuleRef jitload_clone_module_part(LLVMModuleRef m, const char *function_name) {
  Module *source = unwrap(m);
  ValueToValueMapTy map;
  std::unique_ptr<Module> part = CloneModule(*source, map, [&](const GlobalValue *value) {
    if (function_name == nullptr)
      return isa<GlobalVariable>(value) || (isa<Function>(value) && value->getName().starts_with("__jitload_"));
    return isa<Function>(value) && value->getName() == function_name;
  });
  return wrap(part.release());
}
