#ifndef SINKD_CRC32C_HW_H
#define SINKD_CRC32C_HW_H
#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU has a CRC-32C instruction sinkd can use (x86-64 SSE4.2), else 0.
int sinkd_crc32c_hw_available(void);

/// Continues a CRC-32C over `length` bytes from the raw (pre-inverted) `state`, with the CPU's
/// instruction. Only call when sinkd_crc32c_hw_available() returned 1.
uint32_t sinkd_crc32c_hw_update(uint32_t state, const void *bytes, size_t length);

#endif
