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

// In a compiler child (see isolate.rs): an allocation that fails under the child's memory
// limit ends the child with `status` instead of throwing std::bad_alloc, which would unwind
// into Rust frames (Rust aborts with "cannot catch foreign exceptions") or print LLVM's
// "out of memory" report. The parent reads the status and names the memory limit.
#include <llvm/Support/ErrorHandling.h>
#include <new>
#include <unistd.h>

static int out_of_memory_status = 71;

static void exit_out_of_memory() { _exit(out_of_memory_status); }

static void exit_bad_alloc(void *, const char *, bool) { _exit(out_of_memory_status); }

extern "C" void jitload_exit_on_out_of_memory(int status) {
  out_of_memory_status = status;
  std::set_new_handler(exit_out_of_memory);
  llvm::remove_bad_alloc_error_handler();
  llvm::install_bad_alloc_error_handler(exit_bad_alloc, nullptr);
}
