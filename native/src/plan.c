/*
 * Launch plan parser for gantry-exec.
 *
 *   gantry-plan 1
 *   OP FIELD FIELD ...
 *
 * One op per line, fields separated by single spaces.  Every byte outside
 * [A-Za-z0-9._/:=+,@~^-] is percent-encoded (%XX, either case); an empty
 * field is written "" (two double quotes).  Lines that are empty, blank or
 * start with '#' are comments.  The parser is strict: a raw byte that should
 * have been encoded, %00, a malformed escape, an empty field (two spaces),
 * a wrong number of arguments or an unknown op are errors.
 */
#include "plan.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct opdef {
    const char *name;
    enum plan_opcode code;
    int min, max; /* argument counts; max < 0: unlimited */
};

static const struct opdef OPDEFS[] = {
    {"check", OP_CHECK, 1, 2},
    {"userns", OP_USERNS, 2, 2},
    {"mountns", OP_MOUNTNS, 0, 0},
    {"netns", OP_NETNS, 0, 0},
    {"pidns", OP_PIDNS, 0, 0},
    {"tmpfs", OP_TMPFS, 2, 2},
    {"mkdir", OP_MKDIR, 2, 2},
    {"overlay", OP_OVERLAY, 4, -1},
    {"rootfs", OP_ROOTFS, 1, 1},
    {"bind", OP_BIND, 3, 3},
    {"hook", OP_HOOK, 1, 1},
    {"proc", OP_PROC, 1, 1},
    {"sys", OP_SYS, 1, 1},
    {"dev", OP_DEV, 1, 1},
    {"tmpfs-in", OP_TMPFS_IN, 2, 2},
    {"symlink", OP_SYMLINK, 2, 2},
    {"ldconfig", OP_LDCONFIG, 1, -1},
    {"ldconfig-rw", OP_LDCONFIG_RW, 1, -1},
    {"pivot", OP_PIVOT, 0, 0},
    {"remount-ro", OP_REMOUNT_RO, 0, 0},
    {"env", OP_ENV, 2, 2},
    {"env-pass", OP_ENV_PASS, 1, 1},
    {"cwd", OP_CWD, 1, 1},
    {"nonewprivs", OP_NONEWPRIVS, 0, 0},
    {"fakeroot", OP_FAKEROOT, 0, 0},
    {"argv", OP_ARGV, 1, -1},
    {"exec", OP_EXEC, 0, 0},
};

#define MAGIC "gantry-plan 1"

static int perr(char *err, size_t errlen, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int perr(char *err, size_t errlen, int line, const char *fmt, ...)
{
    int n = snprintf(err, errlen, "line %d: ", line);
    if (n < 0 || (size_t)n >= errlen)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static int is_plain(unsigned char c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("._/:=+,@~^-", c) != NULL;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode the NUL-terminated field f in place. */
static int decode(char *f, int line, char *err, size_t errlen)
{
    if (f[0] == '"' && f[1] == '"' && f[2] == 0) {
        f[0] = 0;
        return 0;
    }
    char *o = f;
    for (const char *p = f; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '%') {
            int h = hexval((unsigned char)p[1]), l = h < 0 ? -1 : hexval((unsigned char)p[2]);
            if (h < 0 || l < 0)
                return perr(err, errlen, line, "malformed percent escape in field '%.40s'", f);
            if (h == 0 && l == 0)
                return perr(err, errlen, line, "%%00 (a NUL byte) is not allowed");
            *o++ = (char)(h * 16 + l);
            p += 2;
        } else if (is_plain(c)) {
            *o++ = (char)c;
        } else {
            return perr(err, errlen, line, "byte 0x%02x must be percent-encoded", c);
        }
    }
    *o = 0;
    return 0;
}

int plan_parse(char *buf, size_t len, struct plan *plan, char *err, size_t errlen)
{
    buf[len] = 0;
    if (memchr(buf, 0, len))
        return perr(err, errlen, 1, "the plan contains a NUL byte");
    size_t mlen = strlen(MAGIC);
    if (len < mlen || memcmp(buf, MAGIC, mlen) != 0 || (buf[mlen] != '\n' && buf[mlen] != 0))
        return perr(err, errlen, 1, "not a gantry plan (the first line must be exactly '" MAGIC "')");

    /* Upper bounds for one allocation: lines and fields. */
    size_t lines = 1, spaces = 0;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\n')
            lines++;
        else if (buf[i] == ' ')
            spaces++;
    }
    size_t nfields = 2 * lines + spaces + 1; /* each op's argv is NULL-terminated */
    plan->ops = calloc(lines, sizeof *plan->ops);
    char **fields = calloc(nfields, sizeof *fields);
    if (!plan->ops || !fields)
        return perr(err, errlen, 0, "out of memory");
    plan->nops = 0;

    char *p = buf + mlen + (buf[mlen] == '\n');
    int line = 1;
    while (*p) {
        line++;
        char *nl = strchr(p, '\n');
        char *next = nl ? nl + 1 : p + strlen(p);
        if (nl)
            *nl = 0;
        /* comments and blank lines */
        const char *q = p;
        while (*q == ' ' || *q == '\t')
            q++;
        if (*p == '#' || *q == 0) {
            p = next;
            continue;
        }
        /* split */
        char **f0 = fields;
        int n = 0;
        char *s = p;
        for (;;) {
            char *sp = strchr(s, ' ');
            if (sp)
                *sp = 0;
            if (*s == 0)
                return perr(err, errlen, line, "empty field (fields are separated by one space; write an empty string as \"\")");
            if (decode(s, line, err, errlen) < 0)
                return -1;
            fields[n++] = s;
            if (!sp)
                break;
            s = sp + 1;
        }
        fields[n] = NULL;
        fields += n + 1;
        const struct opdef *d = NULL;
        for (size_t i = 0; i < sizeof OPDEFS / sizeof OPDEFS[0]; i++)
            if (strcmp(OPDEFS[i].name, f0[0]) == 0)
                d = &OPDEFS[i];
        if (!d)
            return perr(err, errlen, line, "unknown op '%.40s' (a plan from a newer Gantry?)", f0[0]);
        int argc = n - 1;
        if (argc < d->min || (d->max >= 0 && argc > d->max)) {
            if (d->min == d->max)
                return perr(err, errlen, line, "%s takes %d argument%s, not %d", d->name, d->min,
                            d->min == 1 ? "" : "s", argc);
            return perr(err, errlen, line, "%s takes at least %d argument%s, not %d", d->name, d->min,
                        d->min == 1 ? "" : "s", argc);
        }
        struct plan_op *op = &plan->ops[plan->nops++];
        op->code = d->code;
        op->name = d->name;
        op->line = line;
        op->argc = argc;
        op->argv = f0 + 1;
        p = next;
    }
    return 0;
}
