// Runs a callback under LLVM's CrashRecoveryContext: a fatal error (which jitload's handler
// turns into abort()) or a crash (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) inside LLVM while
// parsing, verifying, optimising or compiling an untrusted module returns control here
// instead of ending the interpreter. This is the mechanism libclang uses for the same reason;
// the C API does not expose it, hence this shim.
#include <llvm/Support/CrashRecoveryContext.h>

#include <mutex>

extern "C" int jitload_run_guarded(void (*callback)(void *), void *data) {
  static std::once_flag enabled;
  std::call_once(enabled, [] { llvm::CrashRecoveryContext::Enable(); });
  llvm::CrashRecoveryContext context;
  // The process keeps running: no stack dump, and no cleanup of the half-built LLVM objects
  // (the caller leaks them rather than touch state a crash left inconsistent).
  context.DumpStackAndCleanupOnFailure = false;
  return context.RunSafely([&] { callback(data); }) ? 1 : 0;
}
