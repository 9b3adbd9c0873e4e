// Calls into JIT'd C++ code that may throw. A C++ exception must never unwind into Rust
// frames (that aborts the process), so the calls that run a module's own code at load time
// (static constructors, PyInit_*, Py_mod_exec through PyModule_ExecDef) go through these
// wrappers, which catch everything and report the exception's type and what().
//
// Built with exceptions and RTTI on, without LLVM's headers or flags (LLVM builds with
// -fno-exceptions), and linked against the process's libstdc++ — the runtime JIT'd C++ code
// throws through, so the type_info of what it throws is the one caught here.
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <cxxabi.h>
#include <exception>
#include <typeinfo>

namespace {

// Copies `text` into `out` (size `size`, always NUL-terminated).
void copy_text(char *out, size_t size, const char *text) {
  if (out == nullptr || size == 0)
    return;
  std::strncpy(out, text ? text : "", size - 1);
  out[size - 1] = '\0';
}

// The demangled name of the exception being handled ("" for a foreign exception).
void current_type_name(char *out, size_t size) {
  const std::type_info *type = abi::__cxa_current_exception_type();
  if (type == nullptr) {
    copy_text(out, size, "a foreign (non-C++) exception");
    return;
  }
  int status = 0;
  char *demangled = abi::__cxa_demangle(type->name(), nullptr, nullptr, &status);
  copy_text(out, size, status == 0 && demangled ? demangled : type->name());
  std::free(demangled);
}

template <typename Call> int guarded(Call call, char *type_out, size_t type_size, char *what_out, size_t what_size) {
  try {
    call();
    return 0;
  } catch (const std::exception &e) {
    current_type_name(type_out, type_size);
    copy_text(what_out, what_size, e.what());
  } catch (...) {
    current_type_name(type_out, type_size);
    copy_text(what_out, what_size, "");
  }
  return 1;
}

} // namespace

// Calls `fn()`; returns 0, or 1 with the exception described if it threw.
extern "C" int jitload_cxx_call_void(void (*fn)(), char *type_out, size_t type_size, char *what_out, size_t what_size) {
  return guarded([&] { fn(); }, type_out, type_size, what_out, what_size);
}

// Calls `*result = fn()`; returns 0, or 1 (result untouched) if it threw.
extern "C" int jitload_cxx_call_ptr(void *(*fn)(), void **result, char *type_out, size_t type_size, char *what_out,
                                    size_t what_size) {
  return guarded([&] { *result = fn(); }, type_out, type_size, what_out, what_size);
}

// Calls `*result = fn(a, b)`; returns 0, or 1 (result untouched) if it threw.
extern "C" int jitload_cxx_call_int2(int (*fn)(void *, void *), void *a, void *b, int *result, char *type_out,
                                     size_t type_size, char *what_out, size_t what_size) {
  return guarded([&] { *result = fn(a, b); }, type_out, type_size, what_out, what_size);
}
