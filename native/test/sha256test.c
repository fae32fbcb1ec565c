/* dev aid: sha256 of stdin, read in chunks of random sizes */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "../src/sha256.h"
int main(int argc, char **argv) {
    static unsigned char buf[1 << 20];
    sha256_ctx c; sha256_init(&c);
    unsigned seed = argc > 1 ? (unsigned)atoi(argv[1]) : 1;
    srand(seed);
    ssize_t n;
    for (;;) {
        size_t want = 1 + (size_t)rand() % sizeof buf;
        n = read(0, buf, want);
        if (n <= 0) break;
        size_t off = 0;
        while (off < (size_t)n) { size_t k = 1 + (size_t)rand() % 200; if (k > (size_t)n - off) k = (size_t)n - off; sha256_update(&c, buf + off, k); off += k; }
    }
    unsigned char d[32]; char h[65]; sha256_final(&c, d); sha256_hex(d, h);
    fprintf(stderr, "accel=%d\n", sha256_accelerated());
    printf("%s\n", h);
    return 0;
}
