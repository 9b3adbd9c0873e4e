/* Fuzz seed: plain C with data, bss, rodata, a jump table, calls into libc and libm. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

int counter = 7;
static int table[64];
char big_bss[1 << 16];
const char *names[] = {"zero", "one", "two", "three"};

int bump(int by) { counter += by; return counter; }

double norm(const double *v, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += v[i] * v[i];
  return sqrt(s);
}

int pick(int k) {
  switch (k) {
  case 0: return 11; case 1: return 23; case 2: return 37; case 3: return 41;
  case 4: return 53; case 5: return 67; default: return -1;
  }
}

size_t name_len(int i) { return strlen(names[i & 3]); }

void *grow(void *p, size_t n) { table[n & 63]++; big_bss[n & 0xffff] = 1; return realloc(p, n); }
