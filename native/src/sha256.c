/* FIPS 180-4 SHA-256. Portable C plus an x86 SHA-NI block function that is
 * selected at run time with CPUID. */
#define _GNU_SOURCE
#include "sha256.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_X86 1
#endif

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define CH(x, y, z) (((x) & (y)) ^ (~(x) & (z)))
#define MAJ(x, y, z) (((x) & (y)) ^ ((x) & (z)) ^ ((y) & (z)))
#define BSIG0(x) (ROTR(x, 2) ^ ROTR(x, 13) ^ ROTR(x, 22))
#define BSIG1(x) (ROTR(x, 6) ^ ROTR(x, 11) ^ ROTR(x, 25))
#define SSIG0(x) (ROTR(x, 7) ^ ROTR(x, 18) ^ ((x) >> 3))
#define SSIG1(x) (ROTR(x, 17) ^ ROTR(x, 19) ^ ((x) >> 10))

static inline uint32_t load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void blocks_generic(uint32_t st[8], const uint8_t *p, size_t nblocks)
{
    uint32_t w[64];
    while (nblocks--) {
        for (int t = 0; t < 16; t++)
            w[t] = load_be32(p + 4 * t);
        for (int t = 16; t < 64; t++)
            w[t] = SSIG1(w[t - 2]) + w[t - 7] + SSIG0(w[t - 15]) + w[t - 16];
        uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
        uint32_t e = st[4], f = st[5], g = st[6], h = st[7];
        for (int t = 0; t < 64; t++) {
            uint32_t t1 = h + BSIG1(e) + CH(e, f, g) + K[t] + w[t];
            uint32_t t2 = BSIG0(a) + MAJ(a, b, c);
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        st[0] += a; st[1] += b; st[2] += c; st[3] += d;
        st[4] += e; st[5] += f; st[6] += g; st[7] += h;
        p += 64;
    }
}

#ifdef HAVE_X86
/* SHA-NI: four rounds per step, message schedule with sha256msg1/msg2. */
__attribute__((target("sha,sse4.1")))
static void blocks_shani(uint32_t st[8], const uint8_t *p, size_t nblocks)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&st[0]);    /* DCBA */
    __m128i s1 = _mm_loadu_si128((const __m128i *)&st[4]);     /* HGFE */
    tmp = _mm_shuffle_epi32(tmp, 0xB1);                        /* CDAB */
    s1 = _mm_shuffle_epi32(s1, 0x1B);                          /* EFGH */
    __m128i s0 = _mm_alignr_epi8(tmp, s1, 8);                  /* ABEF */
    s1 = _mm_blend_epi16(s1, tmp, 0xF0);                       /* CDGH */

    while (nblocks--) {
        const __m128i save0 = s0, save1 = s1;
        __m128i w[4];
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) {
            __m128i m;
            if (j < 4) {
                m = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * j)), bswap);
            } else {
                /* W[4j..4j+3] from the previous four quads */
                m = _mm_sha256msg1_epu32(w[j & 3], w[(j + 1) & 3]);
                m = _mm_add_epi32(m, _mm_alignr_epi8(w[(j + 3) & 3], w[(j + 2) & 3], 4));
                m = _mm_sha256msg2_epu32(m, w[(j + 3) & 3]);
            }
            w[j & 3] = m;
            __m128i k = _mm_add_epi32(m, _mm_loadu_si128((const __m128i *)&K[4 * j]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, k);
            k = _mm_shuffle_epi32(k, 0x0E);
            s0 = _mm_sha256rnds2_epu32(s0, s1, k);
        }
        s0 = _mm_add_epi32(s0, save0);
        s1 = _mm_add_epi32(s1, save1);
        p += 64;
    }

    tmp = _mm_shuffle_epi32(s0, 0x1B);                         /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);                          /* DCHG */
    s0 = _mm_blend_epi16(tmp, s1, 0xF0);                       /* DCBA */
    s1 = _mm_alignr_epi8(s1, tmp, 8);                          /* ABEF */
    _mm_storeu_si128((__m128i *)&st[0], s0);
    _mm_storeu_si128((__m128i *)&st[4], s1);
}

static int cpu_has_shani(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (!(c & (1u << 9)) || !(c & (1u << 19)))      /* SSSE3, SSE4.1 */
        return 0;
    if (__get_cpuid_max(0, 0) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b & (1u << 29)) != 0;                  /* SHA */
}
#endif

typedef void (*blocks_fn)(uint32_t st[8], const uint8_t *p, size_t nblocks);
static blocks_fn blocks;

static void pick_impl(void)
{
    blocks = blocks_generic;
#ifdef HAVE_X86
    const char *force = getenv("GANTRY_SHA256_GENERIC");
    if ((!force || !*force) && cpu_has_shani())
        blocks = blocks_shani;
#endif
}

int sha256_accelerated(void)
{
    if (!blocks)
        pick_impl();
#ifdef HAVE_X86
    return blocks == blocks_shani;
#else
    return 0;
#endif
}

void sha256_init(sha256_ctx *ctx)
{
    static const uint32_t iv[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    };
    if (!blocks)
        pick_impl();
    memcpy(ctx->state, iv, sizeof iv);
    ctx->length = 0;
    ctx->fill = 0;
}

void sha256_update(sha256_ctx *ctx, const void *data, size_t len)
{
    const uint8_t *p = data;
    ctx->length += len;
    if (ctx->fill) {
        size_t n = 64 - ctx->fill;
        if (n > len)
            n = len;
        memcpy(ctx->block + ctx->fill, p, n);
        ctx->fill += n;
        p += n;
        len -= n;
        if (ctx->fill < 64)
            return;
        blocks(ctx->state, ctx->block, 1);
        ctx->fill = 0;
    }
    if (len >= 64) {
        size_t nb = len / 64;
        blocks(ctx->state, p, nb);
        p += nb * 64;
        len -= nb * 64;
    }
    if (len) {
        memcpy(ctx->block, p, len);
        ctx->fill = len;
    }
}

void sha256_final(sha256_ctx *ctx, uint8_t digest[32])
{
    uint64_t bits = ctx->length * 8;
    uint8_t pad[72];
    size_t padlen = (ctx->fill < 56) ? 56 - ctx->fill : 120 - ctx->fill;
    memset(pad, 0, sizeof pad);
    pad[0] = 0x80;
    for (int i = 0; i < 8; i++)
        pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
    uint64_t keep = ctx->length;
    sha256_update(ctx, pad, padlen + 8);
    ctx->length = keep;
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(ctx->state[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(ctx->state[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(ctx->state[i] >> 8);
        digest[4 * i + 3] = (uint8_t)ctx->state[i];
    }
}

void sha256_hex(const uint8_t digest[32], char out[65])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[64] = 0;
}
