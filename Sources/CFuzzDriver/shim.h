// libFuzzer's driver, for an executable whose main SwiftPM already names (sinkd-fuzz).
// Linked only in the fuzz build (-sanitize=fuzzer); nothing references it otherwise.
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
