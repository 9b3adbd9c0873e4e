/* Fuzz seed: loops the vectoriser likes, 128-bit integers, varargs, alloca, setjmp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
void saxpy(float *restrict y, const float *restrict x, float a, int n) {
  for (int i = 0; i < n; i++) y[i] += a * x[i];
}
unsigned __int128 mul128(uint64_t a, uint64_t b) { return (unsigned __int128)a * b; }
int sum(int n, ...) {
  va_list ap; va_start(ap, n); int s = 0;
  for (int i = 0; i < n; i++) s += va_arg(ap, int);
  va_end(ap); return s;
}
static jmp_buf env;
int jumpy(int n) {
  volatile char *buf = __builtin_alloca(n + 1); buf[0] = 1;
  if (setjmp(env)) return 42;
  if (n > 3) longjmp(env, 1);
  return buf[0];
}
