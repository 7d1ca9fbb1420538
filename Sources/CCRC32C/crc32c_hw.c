// CRC-32C with the SSE4.2 `crc32` instruction: the WAL checksums every frame twice (when it is
// written and when a sink reads it back), and the table-driven Swift version costs several percent
// of the end-to-end CPU. Swift has no portable intrinsic for it, hence these few lines of C. On
// other CPUs `available` answers 0 and SinkdWAL keeps its software implementation.
#include "crc32c_hw.h"
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>

int sinkd_crc32c_hw_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

__attribute__((target("sse4.2")))
uint32_t sinkd_crc32c_hw_update(uint32_t state, const void *bytes, size_t length) {
    const unsigned char *p = bytes;
    uint64_t crc = state;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        crc = _mm_crc32_u64(crc, word);
        p += 8;
        length -= 8;
    }
    uint32_t c = (uint32_t)crc;
    while (length > 0) {
        c = _mm_crc32_u8(c, *p);
        p += 1;
        length -= 1;
    }
    return c;
}

#else

int sinkd_crc32c_hw_available(void) { return 0; }

uint32_t sinkd_crc32c_hw_update(uint32_t state, const void *bytes, size_t length) {
    (void)bytes;
    (void)length;
    return state;
}

#endif
