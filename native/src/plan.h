/*
 * Launch plan parser for gantry-exec (see native/README.md, "The plan file").
 */
#ifndef GANTRY_PLAN_H
#define GANTRY_PLAN_H

#include <stddef.h>

enum plan_opcode {
    OP_CHECK,
    OP_USERNS,
    OP_MOUNTNS,
    OP_NETNS,
    OP_PIDNS,
    OP_TMPFS,
    OP_MKDIR,
    OP_OVERLAY,
    OP_ROOTFS,
    OP_BIND,
    OP_HOOK,
    OP_PROC,
    OP_SYS,
    OP_DEV,
    OP_TMPFS_IN,
    OP_SYMLINK,
    OP_LDCONFIG,
    OP_LDCONFIG_RW,
    OP_PIVOT,
    OP_REMOUNT_RO,
    OP_ENV,
    OP_ENV_PASS,
    OP_CWD,
    OP_NONEWPRIVS,
    OP_FAKEROOT,
    OP_ARGV,
    OP_EXEC,
};

struct plan_op {
    enum plan_opcode code;
    const char *name; /* the op's name as written in the plan */
    int line;         /* 1-based line number in the plan file */
    int argc;         /* number of arguments (the op name excluded) */
    char **argv;      /* decoded arguments (NULL-terminated array) */
};

struct plan {
    struct plan_op *ops;
    int nops;
};

/*
 * Parse a plan held in buf[0..len) (buf[len] must be writable; fields are
 * decoded in place).  Returns 0, or -1 with a one-line message in err.
 */
int plan_parse(char *buf, size_t len, struct plan *plan, char *err, size_t errlen);

#endif
