/* Small FIPS 180-4 SHA-256 (portable C, with an SHA-NI path chosen at run time). */
#ifndef GANTRY_SHA256_H
#define GANTRY_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t state[8];
    uint64_t length;      /* bytes hashed so far */
    uint8_t block[64];    /* partial block */
    size_t fill;          /* bytes in block */
} sha256_ctx;

void sha256_init(sha256_ctx *ctx);
void sha256_update(sha256_ctx *ctx, const void *data, size_t len);
void sha256_final(sha256_ctx *ctx, uint8_t digest[32]);
/* Writes 64 lowercase hex digits and a NUL. */
void sha256_hex(const uint8_t digest[32], char out[65]);
/* 1 when the SHA-NI code path is in use. */
int sha256_accelerated(void);

#endif
