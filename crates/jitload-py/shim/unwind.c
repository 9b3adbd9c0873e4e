// libjitload_unwind.so: `__register_frame`/`__deregister_frame` for a libLLVM built against
// LLVM's libunwind (karellen-llvm-core's, in the manylinux wheel), so that JIT'd code's
// unwind information reaches libgcc_s, the unwinder libstdc++ throws through.
//
// Such a libLLVM calls `__register_frame` once per FDE, libunwind's convention, while libgcc's
// takes the start of a whole .eh_frame section and reads records up to its zero terminator.
// Given FDE after FDE, libgcc registers overlapping "sections" and then looks a PC up in the
// wrong one (it searches only the first whose start is below the PC): exceptions thrown into
// some JIT'd functions end in std::terminate. This library, loaded RTLD_GLOBAL before libLLVM
// (jitload/_llvm.py), takes those calls: an FDE stands for the section that starts at its CIE
// (JITLink lays a section out from its first CIE and ends it with a terminator), registered
// with libgcc once; later FDEs inside a registered section are no-ops. A pointer to a CIE is a
// section in libgcc's convention and goes to libgcc unchanged, so other callers are unaffected.
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*frame_fn)(const void *);

struct section {
  const char *begin, *end;  // from the first CIE to just past the zero terminator
  struct section *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct section *sections;  // guarded by lock

// A section no larger than this is walked; the JIT's are far smaller.
#define MAX_SECTION ((size_t)1 << 30)

static uint32_t word(const char *p) {
  uint32_t w;
  memcpy(&w, p, sizeof w);
  return w;
}

// libgcc's own entry points (this library shadows their names in the global scope).
static frame_fn libgcc_register, libgcc_deregister;  // set once, under lock

static int find_libgcc(void) {
  if (!libgcc_register) {
    void *handle = dlopen("libgcc_s.so.1", RTLD_NOW);
    if (!handle) return 0;
    libgcc_register = (frame_fn)dlsym(handle, "__register_frame");
    libgcc_deregister = (frame_fn)dlsym(handle, "__deregister_frame");
  }
  return libgcc_register && libgcc_deregister;
}

// An FDE with a 32-bit length (the only kind LLVM emits): a non-zero CIE pointer.
static int is_fde(const char *p) {
  uint32_t length = word(p);
  return length != 0 && length != 0xffffffffu && word(p + 4) != 0;
}

static struct section **find(const char *p) {
  struct section **s = &sections;
  while (*s && !(p >= (*s)->begin && p < (*s)->end)) s = &(*s)->next;
  return s;
}

// The section an FDE belongs to: from its CIE through the zero terminator; if the FDE is not
// found walking forward from there, the FDE alone (what libgcc would have been given anyway).
static void section_of(const char *fde, const char **begin, const char **end) {
  const char *cie = fde + 4 - word(fde + 4), *p = cie;
  uint32_t length;
  while ((length = word(p)) != 0 && length != 0xffffffffu && (size_t)(p - cie) < MAX_SECTION) p += 4 + (size_t)length;
  if (length == 0 && fde >= cie && fde < p) {
    *begin = cie;
    *end = p + 4;
  } else {
    *begin = fde;
    *end = fde + 4 + word(fde);
  }
}

void __register_frame(const void *begin) {
  const char *p = begin;
  pthread_mutex_lock(&lock);
  struct section *s;
  if (!find_libgcc()) {
    // no libgcc_s: nothing in this process unwinds with it
  } else if (!is_fde(p)) {
    libgcc_register(p);
  } else if (!*find(p) && (s = malloc(sizeof *s))) {
    section_of(p, &s->begin, &s->end);
    s->next = sections;
    sections = s;
    libgcc_register(s->begin);
  }
  pthread_mutex_unlock(&lock);
}

void __deregister_frame(const void *begin) {
  const char *p = begin;
  pthread_mutex_lock(&lock);
  struct section **at, *s;
  if (!find_libgcc()) {
  } else if (!is_fde(p)) {
    libgcc_deregister(p);
  } else if ((s = *(at = find(p)))) {
    // The section's first FDE: the whole section goes; its other FDEs then find nothing.
    *at = s->next;
    libgcc_deregister(s->begin);
    free(s);
  }
  pthread_mutex_unlock(&lock);
}
