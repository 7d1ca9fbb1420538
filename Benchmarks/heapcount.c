// An LD_PRELOAD library that counts heap calls (malloc, calloc, realloc, memalign,
// aligned_alloc, posix_memalign, valloc) and the bytes they request, for sinkd-bench's paced
// scenario and HeapCallTests: counts are deterministic where times are not.
//
// With SINKD_HEAP_COUNTS=PATH in the environment, the two counters live in PATH (mapped shared,
// two little-endian uint64: calls, bytes), so another process reads them while this one runs;
// without it they are kept in memory only. Calls made before the library's constructor ran (the
// dynamic loader's own) are not in the file. Built by whoever needs it:
//     cc -O2 -shared -fPIC -o libheapcount.so Benchmarks/heapcount.c
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

struct heap_counts {
    uint64_t calls;
    uint64_t bytes;
};

static struct heap_counts in_memory;
static struct heap_counts *volatile counts = &in_memory;

static inline void count(size_t bytes) {
    struct heap_counts *c = counts;
    __atomic_fetch_add(&c->calls, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->bytes, bytes, __ATOMIC_RELAXED);
}

__attribute__((constructor)) static void map_counts(void) {
    const char *path = getenv("SINKD_HEAP_COUNTS");
    if (path == NULL || *path == 0) return;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return;
    if (ftruncate(fd, sizeof(struct heap_counts)) != 0) {
        close(fd);
        return;
    }
    void *mapped = mmap(NULL, sizeof(struct heap_counts), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (mapped != MAP_FAILED) counts = mapped;
}

void *malloc(size_t n) {
    count(n);
    return __libc_malloc(n);
}

void *calloc(size_t items, size_t size) {
    count(items * size);
    return __libc_calloc(items, size);
}

void *realloc(void *p, size_t n) {
    count(n);
    return __libc_realloc(p, n);
}

void *memalign(size_t alignment, size_t n) {
    count(n);
    return __libc_memalign(alignment, n);
}

void *aligned_alloc(size_t alignment, size_t n) {
    count(n);
    return __libc_memalign(alignment, n);
}

void *valloc(size_t n) {
    count(n);
    return __libc_memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

int posix_memalign(void **out, size_t alignment, size_t n) {
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) return EINVAL;
    count(n);
    void *p = __libc_memalign(alignment, n);
    if (p == NULL) return ENOMEM;
    *out = p;
    return 0;
}
