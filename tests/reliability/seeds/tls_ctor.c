/* Fuzz seed: thread-locals, constructors/destructors, weak symbols, function pointers. */
static __thread int per_thread = 3;
int initialised;
__attribute__((weak)) int weak_value = 5;
__attribute__((constructor)) static void init(void) { initialised = 1; }
__attribute__((destructor)) static void fini(void) { initialised = 0; }
int tls_get(void) { return per_thread++; }
typedef int (*fn)(int);
static int twice(int x) { return 2 * x; }
static int thrice(int x) { return 3 * x; }
fn pick_fn(int which) { return which ? twice : thrice; }
int apply(int which, int x) { return pick_fn(which)(x) + weak_value; }
