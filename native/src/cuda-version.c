/*
 * gantry-cuda-version: print the CUDA version the driver supports.
 *
 *   gantry-cuda-version LIBCUDA_PATH
 *
 * dlopen()s LIBCUDA_PATH (the driver's libcuda.so.1; RTLD_NOW | RTLD_LOCAL),
 * calls cuDriverGetVersion() and prints the integer it returns (e.g. 12040
 * for CUDA 12.4) and a newline.  No cuInit(), no CUDA context: it only asks
 * the library which version it implements.  Failures print one line
 * "gantry-cuda-version: message" on stderr and exit 1.  See native/README.md.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noreturn, format(printf, 1, 2)))
static void fail(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++) /* one line */
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fprintf(stderr, "gantry-cuda-version: %s\n", msg);
    exit(1);
}

/* A symbol of the library as a function pointer (without the object-to-function pointer cast). */
static void *sym(void *lib, const char *name)
{
    dlerror();
    return dlsym(lib, name);
}

int main(int argc, char **argv)
{
    if (argc != 2 || !argv[1][0])
        fail("usage: gantry-cuda-version LIBCUDA_PATH");
    const char *path = argv[1];
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        fail("cannot load the library: %s", e ? e : path);
    }
    int (*get_version)(int *);
    void *p = sym(lib, "cuDriverGetVersion");
    if (!p)
        fail("%s has no symbol cuDriverGetVersion (is it libcuda?)", path);
    memcpy(&get_version, &p, sizeof get_version);
    int version = 0;
    int r = get_version(&version);
    if (r != 0) {
        /* CUresult cuGetErrorName(CUresult, const char **): the name when the library has it */
        int (*error_name)(int, const char **);
        const char *name = NULL;
        void *q = sym(lib, "cuGetErrorName");
        if (q) {
            memcpy(&error_name, &q, sizeof error_name);
            if (error_name(r, &name) != 0)
                name = NULL;
        }
        fail("cuDriverGetVersion returned the error code %d%s%s%s", r, name ? " (" : "", name ? name : "",
             name ? ")" : "");
    }
    if (printf("%d\n", version) < 0 || fflush(stdout) != 0)
        fail("cannot write to stdout");
    return 0;
}
