// IR operations for tiered compilation (crates/jitload-engine/src/tiers): reading bitcode
// lazily, materialising one function at a time, and turning a module into its final tier
// (code only, beside a first tier that already defines the data) plus the glue that makes
// the final tier a complete module for the object cache. Exception-free; errors come back as
// messages the caller frees with LLVMDisposeMessage.
#include <llvm-c/Core.h>
#include <llvm/Bitcode/BitcodeReader.h>
#include <llvm/IR/Constants.h>
#include <llvm/IR/DebugInfo.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Instructions.h>
#include <llvm/IR/Module.h>
#include <llvm/Support/MemoryBuffer.h>

#include <string>
#include <unordered_set>
#include <vector>

using namespace llvm;

static char *message(const std::string &text) {
  char *out = static_cast<char *>(malloc(text.size() + 1));
  memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

static bool failed(Error error, char **out) {
  if (!error)
    return false;
  *out = message(toString(std::move(error)));
  return true;
}

// Reads `data` as a module whose function bodies are read on demand (module-level records
// now). The module owns a copy of the bytes. Null with `*error` set on failure.
extern "C" LLVMModuleRef jitload_parse_bitcode_lazy(LLVMContextRef ctx, const char *data, size_t len, const char *name,
                                                    char **error) {
  auto buffer = MemoryBuffer::getMemBufferCopy(StringRef(data, len), name);
  Expected<std::unique_ptr<Module>> module = getOwningLazyBitcodeModule(std::move(buffer), *unwrap(ctx));
  if (!module) {
    *error = message(toString(module.takeError()));
    return nullptr;
  }
  return wrap(module->release());
}

// Reads the body of `fn` if it has not been read yet. False with `*error` set on failure.
extern "C" bool jitload_materialize(LLVMValueRef fn, char **error) {
  return !failed(unwrap<GlobalValue>(fn)->materialize(), error);
}

// Reads every body not read yet.
extern "C" bool jitload_materialize_all(LLVMModuleRef m, char **error) { return !failed(unwrap(m)->materializeAll(), error); }

// Whether `c` refers to a block address.
static bool has_block_address(const Constant *c, std::unordered_set<const Constant *> &seen) {
  if (!seen.insert(c).second)
    return false;
  if (isa<BlockAddress>(c))
    return true;
  if (isa<GlobalValue>(c))
    return false;
  for (const Use &op : c->operands())
    if (auto *inner = dyn_cast<Constant>(op.get()); inner && has_block_address(inner, seen))
      return true;
  return false;
}

// Why `m` cannot be compiled in tiers (a static string), or null. Function aliases and ifuncs
// would need a stub of their own; a block address in data needs its function's body at once;
// thread-locals: see below.
extern "C" const char *jitload_tier_blocker(LLVMModuleRef m) {
  Module *module = unwrap(m);
  for (GlobalAlias &alias : module->aliases())
    if (isa<Function>(alias.getAliaseeObject()))
      return "it defines function aliases";
  if (!module->ifunc_empty())
    return "it defines ifuncs";
  std::unordered_set<const Constant *> seen;
  for (GlobalVariable &gv : module->globals()) {
    if (gv.hasInitializer() && has_block_address(gv.getInitializer(), seen))
      return "its data holds block addresses";
    // A module defining a thread_local was seen crashing in a first-tier piece (a pybind11
    // module with a thread_local counter, inside std::call_once's callable); until that is
    // understood, such modules load eagerly. Thread-locals of shared libraries (libstdc++'s
    // call_once state) are fine.
    if (gv.isThreadLocal() && !gv.isDeclaration())
      return "it defines thread-local variables";
  }
  return nullptr;
}

// The functions a tier stubs: definitions (read or not) that the module emits.
extern "C" void jitload_tier_functions(LLVMModuleRef m, void (*each)(void *ctx, const char *name, size_t len, int returns),
                                       void *ctx) {
  for (Function &f : *unwrap(m)) {
    if (f.isDeclaration() || f.isIntrinsic() || f.hasAvailableExternallyLinkage() || f.getName().starts_with("__jitload_"))
      continue;
    Type *ret = f.getReturnType();
    int returns = ret->isVoidTy() ? 0 : ret->isIntegerTy() ? 1 : ret->isPointerTy() ? 2 : 3;
    each(ctx, f.getName().data(), f.getName().size(), returns);
  }
}

// The names of the functions `m` declares (the stubs a first-tier piece calls or takes the
// address of).
extern "C" void jitload_declared_functions(LLVMModuleRef m, void (*each)(void *ctx, const char *name, size_t len),
                                           void *ctx) {
  for (Function &f : *unwrap(m))
    if (f.isDeclaration() && !f.isIntrinsic())
      each(ctx, f.getName().data(), f.getName().size());
}

// Turns the (fully read, prepared) module `m` into its final tier:
// - every global variable becomes `available_externally`: the first tier defines it, the
//   optimiser still sees constant initialisers;
// - jitload's lowered constructor functions are dropped (the first tier has them);
// - each function definition F is renamed `F<suffix>` (its body); uses of F other than as a
//   callee (address taken, in data or code) go to a new declaration named F: the stub, so a
//   function's address is the same in every tier. A body stays internal (free for the
//   optimiser) when F was local (`local` lists those names), nothing takes its address and
//   `keep` does not list it; every other body is external and reported through `pair`
//   (stub name, body name) so the stub can be pointed at it.
extern "C" void jitload_make_final_tier(LLVMModuleRef m, const char *suffix, const char *const *local, size_t n_local,
                                        const char *const *keep, size_t n_keep,
                                        void (*pair)(void *ctx, const char *stub, const char *body), void *ctx) {
  Module *module = unwrap(m);
  std::unordered_set<std::string> was_local(local, local + n_local);
  std::unordered_set<std::string> kept(keep, keep + n_keep);
  for (GlobalVariable &gv : module->globals()) {
    if (gv.isDeclaration() || gv.getName().starts_with("llvm."))
      continue;
    gv.setComdat(nullptr);
    gv.setLinkage(GlobalValue::AvailableExternallyLinkage);
  }
  std::vector<Function *> definitions;
  for (Function &f : *module)
    if (!f.isDeclaration() && !f.isIntrinsic() && !f.hasAvailableExternallyLinkage())
      definitions.push_back(&f);
  for (Function *f : definitions) {
    std::string name = f->getName().str();
    if (name.rfind("__jitload_", 0) == 0) {
      f->deleteBody();
      f->setComdat(nullptr);
      f->setLinkage(GlobalValue::ExternalLinkage);
      continue;
    }
    f->setName(name + suffix);
    Function *stub = Function::Create(f->getFunctionType(), GlobalValue::ExternalLinkage, f->getAddressSpace(), name, module);
    stub->copyAttributesFrom(f);
    stub->setPersonalityFn(nullptr);
    stub->setComdat(nullptr);
    stub->setLinkage(GlobalValue::ExternalLinkage);
    stub->setVisibility(GlobalValue::DefaultVisibility);
    stub->setDSOLocal(false);
    f->replaceUsesWithIf(stub, [](Use &use) {
      if (isa<BlockAddress>(use.getUser()))
        return false;
      auto *call = dyn_cast<CallBase>(use.getUser());
      return !(call && call->isCallee(&use));
    });
    f->setComdat(nullptr);
    if (was_local.count(name) && stub->use_empty() && !kept.count(name)) {
      f->setLinkage(GlobalValue::InternalLinkage);
      f->setVisibility(GlobalValue::DefaultVisibility);
      stub->eraseFromParent();
      continue;
    }
    f->setLinkage(GlobalValue::ExternalLinkage);
    f->setVisibility(GlobalValue::DefaultVisibility);
    f->setDSOLocal(false);
    std::string body = f->getName().str();
    if (stub->use_empty())
      stub->eraseFromParent();
    pair(ctx, name.c_str(), body.c_str());
  }
}

// Makes each declared function `names[i]` of `m` a definition that tail-calls `bodies[i]`
// (declared here with the same type): the glue that lets a final tier's bodies serve every
// caller of the original names when the module is loaded whole from the cache. Unused
// function declarations are dropped.
extern "C" void jitload_add_forwarders(LLVMModuleRef m, const char *const *names, const char *const *bodies, size_t n) {
  Module *module = unwrap(m);
  for (size_t i = 0; i < n; i++) {
    Function *f = module->getFunction(names[i]);
    if (f == nullptr || !f->isDeclaration())
      continue;
    FunctionCallee target = module->getOrInsertFunction(bodies[i], f->getFunctionType(), f->getAttributes());
    auto *callee = cast<Function>(target.getCallee());
    callee->setCallingConv(f->getCallingConv());
    BasicBlock *entry = BasicBlock::Create(module->getContext(), "entry", f);
    IRBuilder<> b(entry);
    std::vector<Value *> args;
    for (Argument &a : f->args())
      args.push_back(&a);
    CallInst *call = b.CreateCall(target, args);
    call->setCallingConv(f->getCallingConv());
    call->setAttributes(f->getAttributes());
    call->setTailCallKind(CallInst::TCK_MustTail);
    if (f->isVarArg())
      f->addFnAttr("thunk");
    if (f->getReturnType()->isVoidTy())
      b.CreateRetVoid();
    else
      b.CreateRet(call);
    f->setLinkage(GlobalValue::ExternalLinkage);
  }
  // The glue was cloned with a declaration of every function; one it does not use would still
  // be an undefined symbol of its object when hidden (a promoted local), which jitload-objload
  // must bind: drop them.
  for (Function &f : make_early_inc_range(*module))
    if (f.isDeclaration() && f.use_empty() && !f.isIntrinsic())
      f.eraseFromParent();
}

// Drops debug information (a first-tier piece does not need it; emitting it costs more than
// the code).
extern "C" void jitload_strip_debug_info(LLVMModuleRef m) { StripDebugInfo(*unwrap(m)); }

// Drops the debug information of one function (its instructions' locations and its
// subprogram), leaving the rest of the module's alone.
extern "C" void jitload_strip_function_debug_info(LLVMModuleRef m, const char *name) {
  if (Function *f = unwrap(m)->getFunction(name))
    stripDebugInfo(*f);
}
