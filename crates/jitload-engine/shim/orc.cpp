// ORC and IR operations that LLVM's C API does not offer. Each function is a thin, exception-
// free wrapper; errors come back as LLVMErrorRef like the rest of the C API.
//
// The C API's opaque handles are plain reinterpret_casts of the C++ objects (see
// OrcV2CBindings.cpp), which is what makes these casts valid.
#include <llvm-c/Error.h>
#include <llvm-c/Orc.h>
#include <llvm/ExecutionEngine/Orc/Core.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Constants.h>
#include <llvm/IR/InstIterator.h>
#include <llvm/IR/Instructions.h>
#include <llvm/Bitcode/BitcodeWriter.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Transforms/Utils/Cloning.h>
#include <llvm/Transforms/Utils/SplitModule.h>
#include <llvm/Transforms/Utils/ValueMapper.h>
#include <llvm-c/TargetMachine.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/Analysis/TargetTransformInfo.h>

#include <vector>

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

// The global values `root` refers to (through instruction operands, constant expressions,
// aggregates and the personality function), in first-use order.
static std::vector<GlobalValue *> referenced_globals(Function &root) {
  std::vector<GlobalValue *> found;
  SmallPtrSet<const Value *, 32> seen;
  std::vector<const Constant *> work;
  auto visit = [&](const Value *v) {
    if (!v || !seen.insert(v).second)
      return;
    if (auto *gv = dyn_cast<GlobalValue>(v)) {
      found.push_back(const_cast<GlobalValue *>(gv));
    } else if (auto *c = dyn_cast<Constant>(v)) {
      work.push_back(c);
    }
  };
  if (root.hasPersonalityFn())
    visit(root.getPersonalityFn());
  for (Instruction &inst : instructions(root))
    for (const Use &op : inst.operands())
      visit(op.get());
  while (!work.empty()) {
    const Constant *c = work.back();
    work.pop_back();
    for (const Use &op : c->operands())
      visit(op.get());
  }
  return found;
}

// A new module (same context, layout and triple as `m`) holding the definition of the
// function `function_name`, renamed `body_name`, and external declarations of just the
// globals it uses. Costs time in the size of that function, not of the module (CloneModule
// with a predicate would declare every global of `m` in each piece). Null if the function
// is missing or is only a declaration.
extern "C" LLVMModuleRef jitload_extract_function(LLVMModuleRef m, const char *function_name, const char *body_name) {
  Module *source = unwrap(m);
  Function *original = source->getFunction(function_name);
  if (original == nullptr || original->isDeclaration())
    return nullptr;
  auto part = std::make_unique<Module>(original->getName(), source->getContext());
  part->setDataLayout(source->getDataLayout());
  part->setTargetTriple(source->getTargetTriple());
  part->setModuleInlineAsm(source->getModuleInlineAsm());

  ValueToValueMapTy map;
  for (GlobalValue *gv : referenced_globals(*original)) {
    if (gv == original)
      continue;
    GlobalValue *decl = nullptr;
    if (auto *f = dyn_cast<Function>(gv)) {
      Function *nf = Function::Create(f->getFunctionType(), GlobalValue::ExternalLinkage, f->getAddressSpace(),
                                      f->getName(), part.get());
      nf->copyAttributesFrom(f);
      // A declaration keeps its calling convention and attributes but no body-only state.
      nf->setPersonalityFn(nullptr);
      nf->setComdat(nullptr);
      nf->setLinkage(GlobalValue::ExternalLinkage);
      decl = nf;
    } else if (auto *v = dyn_cast<GlobalVariable>(gv)) {
      auto *nv = new GlobalVariable(*part, v->getValueType(), v->isConstant(), GlobalValue::ExternalLinkage,
                                    nullptr, v->getName(), nullptr, v->getThreadLocalMode(),
                                    v->getType()->getAddressSpace());
      nv->copyAttributesFrom(v);
      nv->setComdat(nullptr);
      nv->setLinkage(GlobalValue::ExternalLinkage);
      decl = nv;
    } else {
      // An alias or ifunc: declare what it looks like from the outside.
      auto *ty = gv->getValueType();
      if (auto *fty = dyn_cast<FunctionType>(ty)) {
        decl = Function::Create(fty, GlobalValue::ExternalLinkage, gv->getAddressSpace(), gv->getName(), part.get());
      } else {
        decl = new GlobalVariable(*part, ty, false, GlobalValue::ExternalLinkage, nullptr, gv->getName(), nullptr,
                                  GlobalValue::NotThreadLocal, gv->getAddressSpace());
      }
    }
    decl->setVisibility(gv->getVisibility());
    decl->setDLLStorageClass(gv->getDLLStorageClass());
    map[gv] = decl;
  }

  Function *body = Function::Create(original->getFunctionType(), GlobalValue::ExternalLinkage,
                                    original->getAddressSpace(), body_name, part.get());
  body->copyAttributesFrom(original);
  body->setComdat(nullptr);
  body->setLinkage(GlobalValue::ExternalLinkage);
  body->setVisibility(GlobalValue::DefaultVisibility);
  map[original] = body;
  auto arg = body->arg_begin();
  for (const Argument &a : original->args()) {
    arg->setName(a.getName());
    map[&a] = &*arg++;
  }
  SmallVector<ReturnInst *, 8> returns;
  CloneFunctionInto(body, original, map, CloneFunctionChangeType::DifferentModule, returns);
  return wrap(part.release());
}

// Splits the (optimised) module `m` into up to `parts` pieces for parallel code generation,
// as LTO's parallel codegen does, and hands each piece to `emit` as bitcode, so each can be
// compiled in its own LLVMContext on its own thread. The caller has given every local symbol
// a module-unique name. Returns the number of pieces.
extern "C" unsigned jitload_split_module(LLVMModuleRef m, unsigned parts,
                                         void (*emit)(void *ctx, const char *data, size_t len), void *ctx) {
  unsigned count = 0;
  SplitModule(*unwrap(m), parts, [&](std::unique_ptr<Module> part) {
    SmallVector<char, 0> buffer;
    raw_svector_ostream os(buffer);
    WriteBitcodeToFile(*part, os);
    emit(ctx, buffer.data(), buffer.size());
    ++count;
  }, /*PreserveLocals=*/false, /*RoundRobin=*/true);
  return count;
}

// Makes `tm` lower thread-local variables to emulated TLS (`__emutls_v.<name>` control
// objects and `__emutls_get_address` calls), which needs no TLS relocations: JITLink without
// ORC's platform runtime would otherwise link them to the wrong memory (see session.rs).
extern "C" void jitload_target_machine_use_emulated_tls(LLVMTargetMachineRef tm) {
  reinterpret_cast<TargetMachine *>(tm)->Options.EmulatedTLS = true;
}

// The vector register width (bits) `tm`'s cost model offers the vectorisers for function `fn`,
// i.e. the width its CPU, features and tuning prefer (256 on Intel AVX-512 CPUs, 512 on Zen 4).
extern "C" unsigned jitload_preferred_vector_bits(LLVMTargetMachineRef tm, LLVMValueRef fn) {
  Function *f = unwrap<Function>(fn);
  TargetTransformInfo tti = reinterpret_cast<TargetMachine *>(tm)->getTargetTransformInfo(*f);
  return static_cast<unsigned>(tti.getRegisterBitWidth(TargetTransformInfo::RGK_FixedWidthVector).getFixedValue());
}

// Removes named metadata `name` from `m` (the C API can add to named metadata, not remove it).
extern "C" void jitload_erase_named_metadata(LLVMModuleRef m, const char *name) {
  if (NamedMDNode *node = unwrap(m)->getNamedMetadata(name))
    unwrap(m)->eraseNamedMetadata(node);
}
