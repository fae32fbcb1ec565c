/*
 * gantry-exec: execute a Gantry launch plan and exec the command.
 *
 *   gantry-exec [--env KEY=VALUE]... [--cwd DIR] [--bind-parent PATH]... PLAN_FILE [--] [COMMAND [ARG...]]
 *   gantry-exec [--env KEY=VALUE]... [--cwd DIR] [--fakeroot] --join PID [--] COMMAND [ARG...]
 *
 * Mechanism only: every namespace, mount, uid mapping and environment
 * variable comes from the plan (written by the TypeScript side).  The ops run
 * strictly in order, like bubblewrap's setup operations.  Without a `pidns`
 * op nothing forks: the launcher becomes the command.
 *
 * Failures print one line "gantry-exec: STEP: what went wrong: strerror
 * (hint)" and exit 125; a command that cannot be found exits 127, one that
 * cannot be executed 126.  See native/README.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <spawn.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <net/if.h>

#include "plan.h"

/* ------------------------------------------------------------------ */
/* the new mount API, without depending on the libc's headers          */
/* ------------------------------------------------------------------ */

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x04
#endif
#ifndef MOVE_MOUNT_T_EMPTY_PATH
#define MOVE_MOUNT_T_EMPTY_PATH 0x40
#endif
#ifndef FSOPEN_CLOEXEC
#define FSOPEN_CLOEXEC 1
#endif
#ifndef FSMOUNT_CLOEXEC
#define FSMOUNT_CLOEXEC 1
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x01
#define MOUNT_ATTR_NOSUID 0x02
#define MOUNT_ATTR_NODEV 0x04
#define MOUNT_ATTR_NOEXEC 0x08
#endif
#define GX_FSCONFIG_SET_FLAG 0
#define GX_FSCONFIG_SET_STRING 1
#define GX_FSCONFIG_CMD_CREATE 6

struct gx_mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

static int sys_open_tree(int dfd, const char *path, unsigned flags)
{
    return (int)syscall(SYS_open_tree, dfd, path, flags);
}
static int sys_move_mount(int fdf, const char *pf, int fdt, const char *pt, unsigned flags)
{
    return (int)syscall(SYS_move_mount, fdf, pf, fdt, pt, flags);
}
static int sys_fsopen(const char *fs, unsigned flags)
{
    return (int)syscall(SYS_fsopen, fs, flags);
}
static int sys_fsconfig(int fd, unsigned cmd, const char *key, const void *val, int aux)
{
    return (int)syscall(SYS_fsconfig, fd, cmd, key, val, aux);
}
static int sys_fsmount(int fd, unsigned flags, unsigned attrs)
{
    return (int)syscall(SYS_fsmount, fd, flags, attrs);
}
static int sys_mount_setattr(int dfd, const char *path, unsigned flags, uint64_t set)
{
    struct gx_mount_attr a = {.attr_set = set};
    return (int)syscall(SYS_mount_setattr, dfd, path, flags, &a, sizeof a);
}
static int sys_mount_setattr_clr(int dfd, const char *path, unsigned flags, uint64_t clr)
{
    struct gx_mount_attr a = {.attr_clr = clr};
    return (int)syscall(SYS_mount_setattr, dfd, path, flags, &a, sizeof a);
}

/* ------------------------------------------------------------------ */
/* state                                                               */
/* ------------------------------------------------------------------ */

#define EXIT_LAUNCHER 125
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND 127
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static bool g_mountns;      /* a private mount namespace exists: mounts are allowed */
static bool g_pidns;        /* we are pid 1 of a pid namespace we created */
static bool g_pivoted;
static int g_root_fd = -1;  /* the rootfs (O_PATH), "/" after pivot */
static const char *g_rootfs_path;
static const char *g_dev_dir; /* the DST of the last dev op after the last rootfs op (ldconfig) */
static int g_tty_fd = -1;   /* a terminal whose foreground group we are in (pidns, join) */
static int g_status_fd = -1; /* pid 1 -> waiter: the command's wait status */
static mode_t g_umask;
static sigset_t g_oldmask;

static char **g_env;        /* the command's environment, "KEY=VALUE" */
static int g_nenv, g_envcap;
static char **g_argv;
static const char *g_cwd;
static char *g_start_cwd;   /* the launcher's working directory at start (${cwd}), or NULL */
static int g_start_cwd_err;
static pid_t g_host_pid;    /* with pidns: our pid as the waiter knows it */

/* ------------------------------------------------------------------ */
/* errors                                                              */
/* ------------------------------------------------------------------ */

/*
 * Print "gantry-exec: MESSAGE[: strerror(err)][ (hint)]" as one line
 * (control characters escaped) and exit with code.
 */
__attribute__((noreturn, format(printf, 4, 5)))
static void die(int code, int err, const char *hint, const char *fmt, ...)
{
    char msg[6144], out[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        msg[0] = 0;
    size_t o = 0;
    const char *prefix = "gantry-exec: ";
    memcpy(out, prefix, strlen(prefix));
    o = strlen(prefix);
    for (const unsigned char *p = (const unsigned char *)msg; *p && o < sizeof out - 600; p++) {
        if (*p < 0x20 || *p == 0x7f)
            o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", *p);
        else
            out[o++] = (char)*p;
    }
    if (err)
        o += (size_t)snprintf(out + o, sizeof out - o, ": %s", strerror(err));
    if (hint)
        o += (size_t)snprintf(out + o, sizeof out - o, " (%.400s)", hint);
    if (o > sizeof out - 2)
        o = sizeof out - 2;
    out[o++] = '\n';
    ssize_t w = write(2, out, o);
    (void)w;
    _exit(code);
}

#define DIE(err, hint, ...) die(EXIT_LAUNCHER, err, hint, __VA_ARGS__)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        DIE(ENOMEM, NULL, "out of memory");
    return p;
}

/* "/proc/self/fd/N[/name]" in one of two static buffers. */
static const char *fdpath(int fd, const char *name)
{
    static char bufs[2][PATH_MAX + 32];
    static int which;
    char *b = bufs[which ^= 1];
    if (name)
        snprintf(b, sizeof bufs[0], "/proc/self/fd/%d/%s", fd, name);
    else
        snprintf(b, sizeof bufs[0], "/proc/self/fd/%d", fd);
    return b;
}

static bool same_file(int a, int b)
{
    struct stat sa, sb;
    if (a < 0 || b < 0 || fstat(a, &sa) || fstat(b, &sb))
        return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int write_file(const char *path, const char *data)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t n = strlen(data);
    ssize_t w = write(fd, data, n);
    int e = errno;
    close(fd);
    if (w != (ssize_t)n) {
        errno = w < 0 ? e : EIO;
        return -1;
    }
    return 0;
}

/* Read a whole (small) file and close fd; NUL-terminated; *len without the NUL. */
static char *read_fd(int fd, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *b = xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            char *nb = realloc(b, cap);
            if (!nb)
                DIE(ENOMEM, NULL, "out of memory");
            b = nb;
        }
        ssize_t r = read(fd, b + n, cap - n - 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            free(b);
            errno = e;
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    b[n] = 0;
    if (len)
        *len = n;
    return b;
}

static char *read_all(int dirfd, const char *path, size_t *len)
{
    int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    return fd < 0 ? NULL : read_fd(fd, len);
}

static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *r = xmalloc(la + lb + 1);
    memcpy(r, a, la);
    memcpy(r + la, b, lb + 1);
    return r;
}

/* ------------------------------------------------------------------ */
/* paths inside the rootfs                                             */
/* ------------------------------------------------------------------ */

#define MAX_DEPTH 256
#define MAX_LINKS 40

/*
 * RESOLVE_IN_ROOT without openat2: walk one component at a time with
 * O_NOFOLLOW, expand symlinks ourselves (absolute targets restart at the
 * root), and never let ".." climb above the root.  Returns an O_PATH fd or
 * -errno.
 */
static int walk_in_root(const char *path)
{
    static char bufa[2 * PATH_MAX], bufb[2 * PATH_MAX];
    char *buf = bufa, *spare = bufb;
    int stack[MAX_DEPTH];
    int depth = 0, links = 0, err = 0;
    if (strlen(path) >= sizeof bufa)
        return -ENAMETOOLONG;
    strcpy(buf, path);
    char *p = buf;
    for (;;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        char *e = strchr(p, '/');
        size_t nlen = e ? (size_t)(e - p) : strlen(p);
        char name[NAME_MAX + 1];
        if (nlen > NAME_MAX) {
            err = ENAMETOOLONG;
            goto out;
        }
        memcpy(name, p, nlen);
        name[nlen] = 0;
        p += nlen;
        if (strcmp(name, ".") == 0)
            continue;
        if (strcmp(name, "..") == 0) {
            if (depth > 0)
                close(stack[--depth]);
            continue;
        }
        int cur = depth ? stack[depth - 1] : g_root_fd;
        int fd = openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            err = errno;
            goto out;
        }
        struct stat st;
        if (fstat(fd, &st) < 0) {
            err = errno;
            close(fd);
            goto out;
        }
        if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t tl = readlinkat(fd, "", target, sizeof target - 1);
            err = errno;
            close(fd);
            if (tl < 0)
                goto out;
            err = 0;
            target[tl] = 0;
            if (++links > MAX_LINKS) {
                err = ELOOP;
                goto out;
            }
            if ((size_t)tl + 1 + strlen(p) >= sizeof bufa) {
                err = ENAMETOOLONG;
                goto out;
            }
            memcpy(spare, target, (size_t)tl);
            spare[tl] = '/';
            memcpy(spare + tl + 1, p, strlen(p) + 1);
            char *t = buf;
            buf = spare;
            spare = t;
            p = buf;
            if (target[0] == '/')
                while (depth > 0)
                    close(stack[--depth]);
            continue;
        }
        if (depth == MAX_DEPTH) {
            close(fd);
            err = ENAMETOOLONG;
            goto out;
        }
        stack[depth++] = fd;
        /* more components follow: this one must be a directory */
        const char *r = p;
        while (*r == '/')
            r++;
        if (*r && !S_ISDIR(st.st_mode)) {
            err = ENOTDIR;
            goto out;
        }
    }
    if (depth > 0) {
        int fd = stack[--depth];
        while (depth > 0)
            close(stack[--depth]);
        return fd;
    }
    {
        int fd = openat(g_root_fd, ".", O_PATH | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
    }
out:
    while (depth > 0)
        close(stack[--depth]);
    return -err;
}

static bool g_no_openat2; /* RESOLVE_IN_ROOT emulated by walk_in_root() */

/* Resolve an absolute path inside the rootfs: an O_PATH fd or -errno. */
static int resolve_in_root(const char *path)
{
    if (!g_no_openat2) {
        struct open_how how = {
            .flags = O_PATH | O_CLOEXEC,
            .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        for (int i = 0; i < 32; i++) {
            int fd = (int)syscall(SYS_openat2, g_root_fd, path, &how, sizeof how);
            if (fd >= 0)
                return fd;
            if (errno == EAGAIN || errno == EINTR)
                continue; /* a concurrent rename or mount: retry */
            if (errno == ENOSYS) {
                g_no_openat2 = true;
                break;
            }
            return -errno;
        }
        if (!g_no_openat2)
            return -EAGAIN;
    }
    return walk_in_root(path);
}

static int create_in(int dirfd, const char *name, bool file)
{
    int r;
    if (file) {
        r = openat(dirfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (r >= 0)
            close(r);
    } else {
        r = mkdirat(dirfd, name, 0755);
    }
    return r < 0 && errno != EEXIST ? -errno : 0;
}

static int create_writable(int pfd, const char *pdir, const char *name, bool file, int err);

/*
 * Resolve an inside path; when it is missing and create is 'd' or 'f',
 * create it (a directory or an empty file), missing parents as 0755
 * directories, every step resolved inside the rootfs.  A dangling symlink
 * on the way is followed (inside the rootfs) and its target created.  With
 * helper (mount points), a directory of the image that we may not write is
 * made writable by a helper overlay (create_writable()).
 */
static int resolve_or_create_at(const char *path, int create, int *links, bool helper)
{
    int fd = resolve_in_root(path);
    if (fd != -ENOENT || !create)
        return fd;
    char tmp[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof tmp)
        return -ENAMETOOLONG;
    memcpy(tmp, path, n + 1);
    int parent = -1;
    size_t i = 0;
    for (;;) {
        while (i < n && tmp[i] == '/')
            i++;
        if (i >= n)
            break;
        size_t s = i;
        while (i < n && tmp[i] != '/')
            i++;
        char save = tmp[i];
        tmp[i] = 0;
        fd = resolve_in_root(tmp);
        if (fd == -ENOENT) {
            int pfd = parent >= 0 ? parent : g_root_fd;
            char target[PATH_MAX];
            ssize_t tl = readlinkat(pfd, tmp + s, target, sizeof target - 1);
            if (tl >= 0) { /* a dangling symlink: create its target, inside the rootfs */
                if (parent >= 0)
                    close(parent);
                if (++*links > MAX_LINKS)
                    return -ELOOP;
                target[tl] = 0;
                char next[PATH_MAX];
                int m = target[0] == '/' ? snprintf(next, sizeof next, "%s%s", target, path + i)
                                         : snprintf(next, sizeof next, "%.*s%s%s", (int)s, path, target, path + i);
                if (m < 0 || (size_t)m >= sizeof next)
                    return -ENAMETOOLONG;
                return resolve_or_create_at(next, create, links, helper);
            }
            size_t j = i;
            while (j < n && path[j] == '/')
                j++;
            bool file = j >= n && create == 'f';
            int r = create_in(pfd, tmp + s, file);
            if (r < 0 && helper) {
                char pdir[PATH_MAX];
                snprintf(pdir, sizeof pdir, "%.*s", (int)s, path);
                r = create_writable(pfd, pdir, tmp + s, file, -r);
            }
            if (r < 0) {
                if (parent >= 0)
                    close(parent);
                return r;
            }
            fd = resolve_in_root(tmp);
        }
        if (parent >= 0)
            close(parent);
        if (fd < 0)
            return fd;
        parent = fd;
        tmp[i] = save;
    }
    return parent >= 0 ? parent : resolve_in_root("/");
}

static int resolve_or_create(const char *path, int create, bool helper)
{
    int links = 0;
    return resolve_or_create_at(path, create, &links, helper);
}

/* ------------------------------------------------------------------ */
/* mounting                                                            */
/* ------------------------------------------------------------------ */

static bool g_no_newmount; /* fsopen/open_tree/move_mount/mount_setattr unusable */

/* A mount point: an O_PATH fd, and how to find it again after a mount. */
struct target {
    int fd;
    const char *inside; /* an inside path (re-resolved in the rootfs) */
    const char *host;   /* or a host path */
    int dirfd;          /* or a name in a directory we made (dirfd >= 0) */
    const char *name;
};

static int target_open(struct target *t)
{
    if (t->inside)
        t->fd = resolve_in_root(t->inside);
    else if (t->host)
        t->fd = open(t->host, O_PATH | O_CLOEXEC);
    else
        t->fd = openat(t->dirfd, t->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (t->fd < 0 && !t->inside)
        t->fd = -errno;
    return t->fd;
}

/* After mounting on t: reopen it (to get the new mount), and the rootfs if t was it. */
static void target_reopen(const char *step, struct target *t, bool was_root)
{
    if (t->fd >= 0)
        close(t->fd);
    if (target_open(t) < 0)
        DIE(-t->fd, NULL, "%s: cannot open the new mount", step);
    if (was_root) {
        int fd = g_pivoted ? open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)
                           : open(g_rootfs_path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            DIE(errno, NULL, "%s: cannot reopen the rootfs", step);
        close(g_root_fd);
        g_root_fd = fd;
    }
}

static unsigned long ms_from_attrs(uint64_t a)
{
    return (a & MOUNT_ATTR_RDONLY ? MS_RDONLY : 0) | (a & MOUNT_ATTR_NOSUID ? MS_NOSUID : 0) |
           (a & MOUNT_ATTR_NODEV ? MS_NODEV : 0) | (a & MOUNT_ATTR_NOEXEC ? MS_NOEXEC : 0);
}

/* The last error the kernel logged on an fs context (new mount API), or "". */
static const char *fs_log(int fsfd, char *buf, size_t len)
{
    char line[512];
    buf[0] = 0;
    for (int i = 0; i < 32; i++) {
        ssize_t r = read(fsfd, line, sizeof line - 1);
        if (r <= 0)
            break;
        line[r] = 0;
        if (r > 2 && line[1] == ' ' && (line[0] == 'e' || buf[0] == 0)) {
            while (r > 2 && line[r - 1] == '\n')
                line[--r] = 0;
            snprintf(buf, len, " [%s]", line + 2);
        }
    }
    return buf;
}

/*
 * Bind-remount with extra flags on the legacy API, keeping the flags that
 * are locked in a user namespace (nosuid, nodev, noexec, ro, atime).
 */
static int legacy_remount_drop(const char *path, int fd, unsigned long add, unsigned long drop)
{
    struct statfs sf;
    if (fstatfs(fd, &sf) < 0)
        return -1;
    unsigned long fl = MS_REMOUNT | MS_BIND | add;
    if ((sf.f_flags & ST_RDONLY) && !(drop & MS_RDONLY))
        fl |= MS_RDONLY;
    if (sf.f_flags & ST_NOSUID)
        fl |= MS_NOSUID;
    if (sf.f_flags & ST_NODEV)
        fl |= MS_NODEV;
    if (sf.f_flags & ST_NOEXEC)
        fl |= MS_NOEXEC;
    if (sf.f_flags & ST_NOATIME)
        fl |= MS_NOATIME;
    if (sf.f_flags & ST_NODIRATIME)
        fl |= MS_NODIRATIME;
    if (sf.f_flags & ST_RELATIME)
        fl |= MS_RELATIME;
    return mount(NULL, path ? path : fdpath(fd, NULL), NULL, fl, NULL);
}

static int legacy_remount(const char *path, int fd, unsigned long add)
{
    return legacy_remount_drop(path, fd, add, 0);
}

/* Undo mountinfo's octal escapes (\040 etc.) in place. */
static void unescape_octal(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' &&
            p[3] <= '7') {
            *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
}

/* Legacy recursive read-only: remount every mount below fd (already done: fd itself). */
static void legacy_remount_submounts(const char *step, int fd, unsigned long add)
{
    char top[PATH_MAX];
    ssize_t n = readlink(fdpath(fd, NULL), top, sizeof top - 1);
    if (n < 0)
        DIE(errno, NULL, "%s: cannot read the mount point's path", step);
    top[n] = 0;
    size_t tl = strcmp(top, "/") == 0 ? 0 : (size_t)n;
    char *mi = read_all(AT_FDCWD, "/proc/self/mountinfo", NULL);
    if (!mi)
        DIE(errno, NULL, "%s: cannot read /proc/self/mountinfo", step);
    for (char *line = mi, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        /* id parent major:minor root mountpoint ... */
        char *f = line;
        for (int i = 0; i < 4 && f; i++) {
            f = strchr(f, ' ');
            if (f)
                f++;
        }
        if (!f)
            continue;
        char *end = strchr(f, ' ');
        if (end)
            *end = 0;
        unescape_octal(f);
        if (strncmp(f, top, tl) != 0 || f[tl] != '/' || f[tl + 1] == 0)
            continue;
        int sfd = open(f, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (sfd < 0)
            continue; /* hidden by a later mount, or unreachable */
        if (legacy_remount(NULL, sfd, add) < 0 && errno != EACCES) {
            int e = errno;
            DIE(e, NULL, "%s: cannot remount %s read-only", step, f);
        }
        close(sfd);
    }
    free(mi);
}

/*
 * Bind srcfd (an O_PATH fd) onto target t with extra mount attributes;
 * recursive when rec.
 */
static void bind_fd(const char *step, int srcfd, struct target *t, bool rec, uint64_t attrs)
{
    bool was_root = g_root_fd >= 0 && same_file(t->fd, g_root_fd);
    if (!g_no_newmount) {
        int tree = sys_open_tree(srcfd, "", OPEN_TREE_CLONE | O_CLOEXEC | AT_EMPTY_PATH | (rec ? AT_RECURSIVE : 0));
        if (tree < 0 && errno != ENOSYS)
            DIE(errno, errno == EINVAL && !rec ? "the source has mounts beneath it: use rbind" : NULL,
                "%s: cannot clone the source", step);
        if (tree >= 0 && attrs &&
            sys_mount_setattr(tree, "", AT_EMPTY_PATH | (rec ? AT_RECURSIVE : 0), attrs) < 0) {
            if (errno != ENOSYS)
                DIE(errno, NULL, "%s: cannot set the mount flags", step);
            close(tree);
            tree = -1;
        }
        if (tree >= 0) {
            if (sys_move_mount(tree, "", t->fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
                DIE(errno, NULL, "%s: cannot mount", step);
            close(tree);
            if (was_root)
                target_reopen(step, t, true);
            return;
        }
        g_no_newmount = true;
    }
    if (mount(fdpath(srcfd, NULL), fdpath(t->fd, NULL), NULL, MS_BIND | (rec ? MS_REC : 0), NULL) < 0)
        DIE(errno, errno == EINVAL && !rec ? "the source has mounts beneath it: use rbind" : NULL,
            "%s: cannot bind mount", step);
    if (attrs || was_root)
        target_reopen(step, t, was_root);
    if (attrs) {
        if (legacy_remount(NULL, t->fd, ms_from_attrs(attrs)) < 0)
            DIE(errno, NULL, "%s: cannot remount with the requested flags", step);
        if (rec)
            legacy_remount_submounts(step, t->fd, ms_from_attrs(attrs));
    }
}

/* Mount a new filesystem instance (tmpfs, proc, devpts) with comma-separated options. */
static void mount_fs(const char *step, const char *fstype, const char *options, uint64_t attrs,
                     struct target *t)
{
    bool was_root = g_root_fd >= 0 && same_file(t->fd, g_root_fd);
    char log[600];
    if (!g_no_newmount) {
        int fsfd = sys_fsopen(fstype, FSOPEN_CLOEXEC);
        if (fsfd < 0 && errno != ENOSYS)
            DIE(errno, NULL, "%s: the kernel refused a new %s", step, fstype);
        if (fsfd >= 0) {
            char opt[1024];
            sys_fsconfig(fsfd, GX_FSCONFIG_SET_STRING, "source", fstype, 0); /* the name in mountinfo */
            const char *p = options;
            while (*p) {
                const char *c = strchr(p, ',');
                size_t l = c ? (size_t)(c - p) : strlen(p);
                if (l >= sizeof opt)
                    DIE(0, NULL, "%s: option too long", step);
                memcpy(opt, p, l);
                opt[l] = 0;
                p += l + (c != NULL);
                if (!l)
                    continue;
                char *eq = strchr(opt, '=');
                int r;
                if (eq) {
                    *eq = 0;
                    r = sys_fsconfig(fsfd, GX_FSCONFIG_SET_STRING, opt, eq + 1, 0);
                } else {
                    r = sys_fsconfig(fsfd, GX_FSCONFIG_SET_FLAG, opt, NULL, 0);
                }
                if (r < 0) {
                    int e = errno;
                    if (eq)
                        *eq = '=';
                    DIE(e, NULL, "%s: %s refused the option '%s'%s", step, fstype, opt, fs_log(fsfd, log, sizeof log));
                }
            }
            if (sys_fsconfig(fsfd, GX_FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
                int e = errno;
                DIE(e, NULL, "%s: the kernel refused to create the %s%s", step, fstype, fs_log(fsfd, log, sizeof log));
            }
            int mfd = sys_fsmount(fsfd, FSMOUNT_CLOEXEC, (unsigned)attrs);
            if (mfd < 0)
                DIE(errno, NULL, "%s: cannot mount the %s", step, fstype);
            if (sys_move_mount(mfd, "", t->fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
                DIE(errno, NULL, "%s: cannot attach the %s", step, fstype);
            close(mfd);
            close(fsfd);
            if (was_root)
                target_reopen(step, t, true);
            return;
        }
        g_no_newmount = true;
    }
    if (mount(fstype, fdpath(t->fd, NULL), fstype, ms_from_attrs(attrs), options[0] ? options : NULL) < 0)
        DIE(errno, NULL, "%s: cannot mount %s%s%s", step, fstype, options[0] ? " with " : "", options);
    if (was_root)
        target_reopen(step, t, true);
}

/* ------------------------------------------------------------------ */
/* helper overlays: mount points in image directories we cannot write  */
/* ------------------------------------------------------------------ */

/*
 * A shared store written by root, used by another user: inside the user
 * namespace the image's directories belong to an unmapped uid, and no
 * capability lets us create a mount point in them (EACCES).  A small overlay
 * stacked on such a directory P (lower layer: P itself; upper and work: a
 * fresh tmpfs, mounted for a moment in the sandbox's /dev) makes P writable;
 * the mount point is created in it, then the overlay is made read-only, so
 * that later writes there fail (EROFS) instead of vanishing with the tmpfs.
 * The mounts already made below P move onto the overlay.  A later mount
 * point in one of these overlays (EROFS) makes it writable for the creation
 * only; one in a directory of its lower layer gets an overlay of its own
 * (never a second one on the same directory).
 */
#define MAX_HELPERS 64
struct helper {
    dev_t dev;  /* st_dev of its directories */
    int mnt;    /* O_PATH fd of its root (the mount) */
    int lower;  /* O_PATH fd of the directory it covers: its lower layer */
};
static struct helper g_helpers[MAX_HELPERS];
static int g_nhelpers, g_helper_seq;
static int g_image_mnt = -1;  /* the mount id of the image's root, before any helper */
static char g_rw_fail[1024];   /* why making a directory writable failed: open_inside's hint */

/* The mount id of fd (from /proc/self/fdinfo), or -1. */
static int mnt_id_of(int fd)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fdinfo/%d", fd);
    char *b = read_all(AT_FDCWD, p, NULL);
    if (!b)
        return -1;
    char *m = strstr(b, "mnt_id:");
    int id = m ? atoi(m + 7) : -1;
    free(b);
    return id;
}

static struct helper *helper_of(int fd)
{
    struct stat st;
    if (!g_nhelpers || fstat(fd, &st) < 0)
        return NULL;
    for (int i = 0; i < g_nhelpers; i++)
        if (g_helpers[i].dev == st.st_dev)
            return &g_helpers[i];
    return NULL;
}

static int helper_set_ro(const struct helper *h, bool ro)
{
    if (!g_no_newmount) {
        int r = ro ? sys_mount_setattr(h->mnt, "", AT_EMPTY_PATH, MOUNT_ATTR_RDONLY)
                   : sys_mount_setattr_clr(h->mnt, "", AT_EMPTY_PATH, MOUNT_ATTR_RDONLY);
        if (r == 0 || errno != ENOSYS)
            return r;
        g_no_newmount = true;
    }
    return legacy_remount_drop(NULL, h->mnt, ro ? MS_RDONLY : 0, ro ? 0 : MS_RDONLY);
}

/* REL (relative; no "..") beneath dirfd, never following a symlink: an O_PATH fd, or -1. */
static int open_beneath(int dirfd, const char *rel)
{
    int cur = openat(dirfd, ".", O_PATH | O_CLOEXEC);
    for (const char *p = rel; cur >= 0;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchrnul(p, '/');
        char name[NAME_MAX + 1];
        if (e - p > NAME_MAX || (e - p == 2 && p[0] == '.' && p[1] == '.')) {
            close(cur);
            errno = EINVAL;
            return -1;
        }
        memcpy(name, p, (size_t)(e - p));
        name[e - p] = 0;
        int fd = openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        int err = errno;
        close(cur);
        errno = err;
        cur = fd;
        p = e;
    }
    return cur;
}

static int move_mount_fd(int from, int to)
{
    if (!g_no_newmount) {
        if (sys_move_mount(from, "", to, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) == 0)
            return 0;
        if (errno != ENOSYS)
            return -1;
        g_no_newmount = true;
    }
    return mount(fdpath(from, NULL), fdpath(to, NULL), NULL, MS_MOVE, NULL);
}

struct child {
    char *rel; /* its mount point, relative to the directory */
    int fd;    /* the topmost mount there */
};

/*
 * What a mount on the directory pfd (in the mount pm) would hide: the
 * topmost mount at each mount point of pm below the directory, except those
 * under another one (already hidden).  Their number, or -1 and errno.
 */
static int children_of(int pfd, int pm, struct child **out)
{
    char top[PATH_MAX];
    ssize_t n = readlink(fdpath(pfd, NULL), top, sizeof top - 1);
    if (n < 0)
        return -1;
    top[n] = 0;
    size_t tl = strcmp(top, "/") == 0 ? 0 : (size_t)n;
    char *mi = read_all(AT_FDCWD, "/proc/self/mountinfo", NULL);
    if (!mi)
        return -1;
    size_t cap = 1;
    for (const char *c = mi; *c; c++)
        cap += *c == '\n';
    struct child *k = xmalloc(cap * sizeof *k);
    int nk = 0;
    for (char *line = mi, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        /* id parent major:minor root mountpoint ... */
        int parent;
        char *f = strchr(line, ' ');
        if (!f || sscanf(f + 1, "%d", &parent) != 1 || parent != pm)
            continue;
        for (int i = 0; i < 3 && f; i++) {
            f = strchr(f + 1, ' ');
        }
        if (!f)
            continue;
        f++;
        char *end = strchr(f, ' ');
        if (end)
            *end = 0;
        unescape_octal(f);
        if (strncmp(f, top, tl) != 0 || f[tl] != '/' || f[tl + 1] == 0)
            continue;
        k[nk].rel = f + tl + 1;
        k[nk++].fd = -1;
    }
    /* hidden: below another one, or the same mount point again (fd -2) */
    for (int i = 0; i < nk; i++)
        for (int j = 0; j < nk && k[i].fd == -1; j++) {
            size_t l = strlen(k[j].rel);
            if (j != i && strncmp(k[i].rel, k[j].rel, l) == 0 && (k[i].rel[l] == '/' || (k[i].rel[l] == 0 && j < i)))
                k[i].fd = -2;
        }
    int kept = 0;
    for (int i = 0; i < nk; i++) {
        if (k[i].fd == -2)
            continue;
        int fd = open_beneath(pfd, k[i].rel);
        if (fd < 0 && errno == ENOENT)
            continue; /* a mount point since removed (it shows as deleted): nothing to see */
        if (fd < 0) {
            int e = errno;
            for (int j = 0; j < kept; j++) {
                close(k[j].fd);
                free(k[j].rel);
            }
            free(k);
            free(mi);
            errno = e;
            return -1;
        }
        k[kept].rel = concat(k[i].rel, "");
        k[kept++].fd = fd;
    }
    free(mi);
    *out = k;
    return kept;
}

static int helper_tmpfs(int dirfd)
{
    if (!g_no_newmount) {
        int fsfd = sys_fsopen("tmpfs", FSOPEN_CLOEXEC);
        if (fsfd >= 0) {
            int r = -1, mfd = -1;
            sys_fsconfig(fsfd, GX_FSCONFIG_SET_STRING, "source", "tmpfs", 0);
            if (sys_fsconfig(fsfd, GX_FSCONFIG_SET_STRING, "mode", "0755", 0) == 0 &&
                sys_fsconfig(fsfd, GX_FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0 &&
                (mfd = sys_fsmount(fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)) >= 0)
                r = sys_move_mount(mfd, "", dirfd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
            int e = errno;
            if (mfd >= 0)
                close(mfd);
            close(fsfd);
            errno = e;
            return r;
        }
        if (errno != ENOSYS)
            return -1;
        g_no_newmount = true;
    }
    return mount("tmpfs", fdpath(dirfd, NULL), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
}

/* The overlay lowerfd + tmpfs tfd's upper and work on pfd, with the root overlay's options. */
static int helper_overlay(int pfd, int lowerfd, int tfd, uint64_t attrs, char *log, size_t loglen)
{
    char lower[64], upper[64], work[64];
    snprintf(lower, sizeof lower, "/proc/self/fd/%d", lowerfd);
    snprintf(upper, sizeof upper, "/proc/self/fd/%d/upper", tfd);
    snprintf(work, sizeof work, "/proc/self/fd/%d/work", tfd);
    log[0] = 0;
    if (!g_no_newmount) {
        int fsfd = sys_fsopen("overlay", FSOPEN_CLOEXEC);
        if (fsfd >= 0) {
            int r = -1, mfd = -1;
            sys_fsconfig(fsfd, GX_FSCONFIG_SET_STRING, "source", "overlay", 0);
            if (sys_fsconfig(fsfd, GX_FSCONFIG_SET_STRING, "lowerdir", lower, 0) == 0 &&
                sys_fsconfig(fsfd, GX_FSCONFIG_SET_STRING, "upperdir", upper, 0) == 0 &&
                sys_fsconfig(fsfd, GX_FSCONFIG_SET_STRING, "workdir", work, 0) == 0 &&
                sys_fsconfig(fsfd, GX_FSCONFIG_SET_FLAG, "userxattr", NULL, 0) == 0 &&
                sys_fsconfig(fsfd, GX_FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0 &&
                (mfd = sys_fsmount(fsfd, FSMOUNT_CLOEXEC, (unsigned)attrs)) >= 0)
                r = sys_move_mount(mfd, "", pfd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
            int e = errno;
            if (r < 0 && mfd < 0)
                fs_log(fsfd, log, loglen);
            if (mfd >= 0)
                close(mfd);
            close(fsfd);
            errno = e;
            return r;
        }
        if (errno != ENOSYS)
            return -1;
        g_no_newmount = true;
    }
    char data[256];
    snprintf(data, sizeof data, "lowerdir=%s,upperdir=%s,workdir=%s,userxattr", lower, upper, work);
    return mount("overlay", fdpath(pfd, NULL), "overlay", ms_from_attrs(attrs), data);
}

/*
 * Stack a helper overlay, lower layer lowerfd, on the directory pfd (inside
 * path pdir), and move the mounts below it onto it.  The new helper
 * (writable), or NULL with errno (0: none) and *what.
 */
static struct helper *helper_stack(int pfd, const char *pdir, int lowerfd, const char **what)
{
    static char whatbuf[700];
    struct helper *res = NULL;
    struct child *kids = NULL;
    int nk = 0, dev = -1, wdir = -1, tfd = -1, np = -1, e = 0;
    char name[32] = "";
    struct stat st, nst;
    struct statfs sf;
    *what = NULL;
    whatbuf[0] = 0;
    if (g_nhelpers == MAX_HELPERS) {
        *what = "too many helper overlays";
        errno = 0;
        return NULL;
    }
    if (!g_dev_dir) {
        *what = "no dev op before it (the overlay's writable layer is a tmpfs in the sandbox's /dev)";
        errno = 0;
        return NULL;
    }
    bool is_root = same_file(pfd, g_root_fd);
    if (is_root && g_pivoted) {
        *what = "it is the root, after pivot (create mount points before pivot)";
        errno = 0;
        return NULL;
    }
    int pm = mnt_id_of(pfd);
    if (fstat(lowerfd, &st) < 0 || fstatfs(pfd, &sf) < 0 || pm < 0) {
        *what = "cannot inspect it";
        return NULL;
    }
    uint64_t attrs = (sf.f_flags & ST_NOSUID ? MOUNT_ATTR_NOSUID : 0) | (sf.f_flags & ST_NODEV ? MOUNT_ATTR_NODEV : 0) |
                     (sf.f_flags & ST_NOEXEC ? MOUNT_ATTR_NOEXEC : 0);
    nk = children_of(pfd, pm, &kids);
    if (nk < 0) {
        *what = "cannot list the mounts below it";
        return NULL;
    }
    dev = resolve_in_root(g_dev_dir);
    if (dev < 0) {
        e = -dev;
        snprintf(whatbuf, sizeof whatbuf, "cannot open %s", g_dev_dir);
        goto fail;
    }
    for (;;) {
        snprintf(name, sizeof name, ".gantry-w-%d", ++g_helper_seq);
        if (mkdirat(dev, name, 0700) == 0)
            break;
        if (errno != EEXIST) {
            e = errno;
            snprintf(whatbuf, sizeof whatbuf, "cannot create %s/%s", g_dev_dir, name);
            name[0] = 0;
            goto fail;
        }
    }
    wdir = openat(dev, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (wdir < 0 || helper_tmpfs(wdir) < 0) {
        e = errno;
        snprintf(whatbuf, sizeof whatbuf, "cannot mount a tmpfs on %s/%s", g_dev_dir, name);
        goto fail;
    }
    tfd = openat(dev, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC); /* the tmpfs */
    if (tfd < 0 || mkdirat(tfd, "upper", 0700) < 0 || fchmodat(tfd, "upper", st.st_mode & 07777, 0) < 0 ||
        mkdirat(tfd, "work", 0700) < 0) {
        e = errno;
        snprintf(whatbuf, sizeof whatbuf, "cannot prepare the tmpfs on %s/%s", g_dev_dir, name);
        goto fail;
    }
    char log[600];
    if (helper_overlay(pfd, lowerfd, tfd, attrs, log, sizeof log) < 0) {
        e = errno;
        struct statfs lf;
        if (e == EINVAL && !log[0] && fstatfs(lowerfd, &lf) == 0 && lf.f_type == 0x794c7630 /* overlayfs */) {
            /* the kernel says why only in its log: "maximum fs stacking depth exceeded" */
            snprintf(whatbuf, sizeof whatbuf, "the kernel refused the overlay mount: %s; overlayfs stacks at most "
                     "2 levels deep: is the image store itself on an overlayfs?", strerror(e));
            e = 0;
        } else {
            snprintf(whatbuf, sizeof whatbuf, "the kernel refused the overlay mount%s", log);
        }
        goto fail;
    }
    /* overlayfs holds private clones of its layers' mounts: the tmpfs can leave /dev */
    close(tfd);
    tfd = -1;
    if (umount2(fdpath(dev, name), MNT_DETACH) < 0 || unlinkat(dev, name, AT_REMOVEDIR) < 0) {
        e = errno;
        snprintf(whatbuf, sizeof whatbuf, "cannot remove %s/%s", g_dev_dir, name);
        goto fail;
    }
    name[0] = 0;
    if (is_root) {
        int fd = open(g_rootfs_path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            e = errno;
            *what = "cannot reopen the rootfs";
            goto fail;
        }
        close(g_root_fd);
        g_root_fd = fd;
    }
    np = resolve_in_root(pdir);
    if (np < 0 || fstat(np, &nst) < 0 || mnt_id_of(np) == pm) {
        e = np < 0 ? -np : errno;
        *what = "the new overlay is not where it was mounted";
        goto fail;
    }
    for (int i = 0; i < nk; i++) {
        int to = open_beneath(np, kids[i].rel);
        if (to < 0 || move_mount_fd(kids[i].fd, to) < 0) {
            e = errno;
            snprintf(whatbuf, sizeof whatbuf, "cannot move the mount on %s/%s onto it", strcmp(pdir, "/") ? pdir : "",
                     kids[i].rel);
            goto fail;
        }
        close(to);
    }
    res = &g_helpers[g_nhelpers++];
    res->dev = nst.st_dev;
    res->mnt = np;
    res->lower = fcntl(lowerfd, F_DUPFD_CLOEXEC, 3);
    np = -1;
fail:
    if (tfd >= 0)
        close(tfd);
    if (wdir >= 0)
        close(wdir);
    if (name[0]) { /* the launcher dies next: only /dev's leftovers matter (none here) */
        umount2(fdpath(dev, name), MNT_DETACH);
        unlinkat(dev, name, AT_REMOVEDIR);
    }
    if (dev >= 0)
        close(dev);
    if (np >= 0)
        close(np);
    for (int i = 0; i < nk; i++) {
        close(kids[i].fd);
        free(kids[i].rel);
    }
    free(kids);
    if (!res && !*what)
        *what = whatbuf;
    errno = e;
    return res;
}

/* The directory pfd of helper h, in h's lower layer: an O_PATH fd, or -1. */
static int helper_lower_dir(const struct helper *h, int pfd)
{
    char top[PATH_MAX], p[PATH_MAX];
    ssize_t a = readlink(fdpath(h->mnt, NULL), top, sizeof top - 1);
    ssize_t b = readlink(fdpath(pfd, NULL), p, sizeof p - 1);
    if (a < 0 || b < 0)
        return -1;
    top[a] = 0;
    p[b] = 0;
    size_t tl = strcmp(top, "/") == 0 ? 0 : (size_t)a;
    if (strncmp(p, top, tl) != 0 || (p[tl] != '/' && p[tl] != 0)) {
        errno = EXDEV;
        return -1;
    }
    int fd = open_beneath(h->lower, p + tl);
    struct stat sl, sd;
    if (fd >= 0 && (fstat(h->lower, &sl) < 0 || fstat(fd, &sd) < 0 || sl.st_dev != sd.st_dev || !S_ISDIR(sd.st_mode))) {
        close(fd);
        errno = EXDEV; /* another mount there */
        return -1;
    }
    return fd;
}

/*
 * Creating name (a directory, or a file) in the directory pfd (inside path
 * pdir0) failed with err.  When the directory is the image's and we may not
 * write it (EACCES, EPERM), or is one of our helper overlays (EROFS), make
 * it writable, create again, and make it read-only.  0 or -errno (then
 * g_rw_fail says why the fallback failed, when it was tried).
 */
static int create_writable(int pfd, const char *pdir0, const char *name, bool file, int err)
{
    char pdir[PATH_MAX];
    snprintf(pdir, sizeof pdir, "%s", pdir0);
    for (size_t l = strlen(pdir); l > 1 && pdir[l - 1] == '/'; l--)
        pdir[l - 1] = 0;
    const char *what = NULL;
    int e = 0, lower = -1, r;
    if (err != EACCES && err != EPERM && err != EROFS)
        return -err;
    struct helper *h = helper_of(pfd);
    if (!h) {
        if (err == EROFS)
            return -err; /* a read-only image or mount: not ours to change */
        if (g_image_mnt < 0)
            g_image_mnt = mnt_id_of(g_root_fd);
        if (g_image_mnt < 0 || mnt_id_of(pfd) != g_image_mnt)
            return -err; /* a host directory bound in: its permissions are the host's */
    } else {
        if (helper_set_ro(h, false) < 0) {
            e = errno;
            what = "cannot make its overlay writable";
            goto fail;
        }
        r = create_in(pfd, name, file);
        if (helper_set_ro(h, true) < 0) {
            e = errno;
            what = "cannot make its overlay read-only again";
            goto fail;
        }
        if (r != -EACCES && r != -EPERM)
            return r;
        /* a directory of the helper's lower layer: an overlay of its own, on that layer's directory */
        err = -r;
        lower = helper_lower_dir(h, pfd);
        if (lower < 0) {
            e = errno;
            what = "cannot find it in the layer below its overlay";
            goto fail;
        }
    }
    struct helper *n = helper_stack(pfd, pdir, lower >= 0 ? lower : pfd, &what);
    if (!n) {
        e = errno;
        goto fail;
    }
    r = create_in(n->mnt, name, file);
    if (helper_set_ro(n, true) < 0) {
        e = errno;
        what = "cannot make its overlay read-only";
        goto fail;
    }
    if (r < 0) {
        e = -r;
        what = "the creation in its overlay failed too";
        goto fail;
    }
    if (lower >= 0)
        close(lower);
    return 0;
fail:
    if (lower >= 0)
        close(lower);
    snprintf(g_rw_fail, sizeof g_rw_fail, "and making %.300s writable failed: %.300s%s%s", pdir, what, e ? ": " : "",
             e ? strerror(e) : "");
    return -err;
}

static void need_mountns(const char *step)
{
    if (!g_mountns)
        DIE(0, "put a mountns op before it", "%s: refusing to mount outside a private mount namespace", step);
}

static void need_rootfs(const char *step)
{
    need_mountns(step);
    if (g_root_fd < 0)
        DIE(0, "add a rootfs op before it", "%s: no rootfs declared", step);
}

/* Open an inside mount point (creating it as create says) or die. */
static void open_inside(const char *step, struct target *t, const char *path, int create)
{
    memset(t, 0, sizeof *t);
    t->inside = path;
    t->dirfd = -1;
    g_rw_fail[0] = 0;
    t->fd = resolve_or_create(path, create, true);
    if (t->fd == -ENOENT)
        DIE(0, create ? NULL : "add create=dir|file|auto to the bind",
            "%s: the mount point %s does not exist in the sandbox", step, path);
    if (t->fd < 0)
        DIE(-t->fd, g_rw_fail[0] ? g_rw_fail : NULL, "%s: cannot %s the mount point %s", step,
            create ? "create" : "open", path);
}

static void open_host(const char *step, struct target *t, const char *path)
{
    memset(t, 0, sizeof *t);
    t->host = path;
    t->dirfd = -1;
    if (target_open(t) < 0)
        DIE(-t->fd, NULL, "%s: cannot open %s", step, path);
}

static void close_target(struct target *t)
{
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
}

/* ------------------------------------------------------------------ */
/* namespaces                                                          */
/* ------------------------------------------------------------------ */

static unsigned long parse_num(const char *step, const char *s, int base, unsigned long max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, base);
    if (!*s || *end || errno || v > max || s[0] == '-' || s[0] == '+')
        DIE(0, NULL, "%s: invalid number '%s'", step, s);
    return v;
}

static void op_userns(const char *suid, const char *sgid)
{
    /* "self": the caller's own id inside (one plan shared by every user, e.g. a system kernel). */
    uid_t ou = geteuid();
    gid_t og = getegid();
    uid_t uid = strcmp(suid, "self") == 0 ? ou : (uid_t)parse_num("userns", suid, 10, 0xfffffffeUL);
    gid_t gid = strcmp(sgid, "self") == 0 ? og : (gid_t)parse_num("userns", sgid, 10, 0xfffffffeUL);
    if (unshare(CLONE_NEWUSER) < 0)
        DIE(errno, "check the sysctls user.max_user_namespaces and kernel.unprivileged_userns_clone",
            "userns: cannot create a user namespace");
    char map[64];
    if (write_file("/proc/self/setgroups", "deny") < 0 && errno != ENOENT)
        DIE(errno, NULL, "userns: cannot write /proc/self/setgroups");
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)uid, (unsigned)ou);
    if (write_file("/proc/self/uid_map", map) < 0)
        DIE(errno, NULL, "userns: cannot map uid %u to %u", (unsigned)uid, (unsigned)ou);
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)gid, (unsigned)og);
    if (write_file("/proc/self/gid_map", map) < 0)
        DIE(errno, NULL, "userns: cannot map gid %u to %u", (unsigned)gid, (unsigned)og);
    if (setresgid(gid, gid, gid) < 0)
        DIE(errno, NULL, "userns: setresgid(%u)", (unsigned)gid);
    if (setresuid(uid, uid, uid) < 0)
        DIE(errno, NULL, "userns: setresuid(%u)", (unsigned)uid);
}

static void op_mountns(void)
{
    if (unshare(CLONE_NEWNS) < 0)
        DIE(errno, errno == EPERM ? "put a userns op before it" : NULL, "mountns: cannot create a mount namespace");
    if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        DIE(errno, NULL, "mountns: cannot make / private");
    g_mountns = true;
}

static void op_netns(void)
{
    if (unshare(CLONE_NEWNET) < 0)
        DIE(errno, errno == EPERM ? "put a userns op before it" : NULL, "netns: cannot create a network namespace");
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        DIE(errno, NULL, "netns: socket");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        DIE(errno, NULL, "netns: cannot read the flags of lo");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        DIE(errno, NULL, "netns: cannot bring lo up");
    close(s);
}

/* Signals the waiter and pid 1 forward. */
static const int FWD_SIGNALS[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

static void fwd_set(sigset_t *set)
{
    sigemptyset(set);
    for (size_t i = 0; i < sizeof FWD_SIGNALS / sizeof FWD_SIGNALS[0]; i++)
        sigaddset(set, FWD_SIGNALS[i]);
    sigaddset(set, SIGCHLD);
    sigaddset(set, SIGTTOU); /* tcsetpgrp from a background group */
}

/* Exit the way the command did: its code, or the same signal. */
__attribute__((noreturn)) static void exit_like(int st)
{
    if (WIFSIGNALED(st)) {
        int sig = WTERMSIG(st);
        struct rlimit rl = {0, 0};
        setrlimit(RLIMIT_CORE, &rl);
        signal(sig, SIG_DFL);
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, sig);
        sigprocmask(SIG_UNBLOCK, &s, NULL);
        kill(getpid(), sig);
        _exit(128 + sig);
    }
    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : EXIT_LAUNCHER);
}

/*
 * The process outside: forward signals to child (our pid 1, or with --join
 * the command), exit like the command.  The child is in a process group of
 * its own, so a killpg() of the caller's group reaches it once, through us.
 */
__attribute__((noreturn)) static void waiter(pid_t child)
{
    sigset_t set;
    fwd_set(&set);
    for (;;) {
        siginfo_t si;
        int s = sigwaitinfo(&set, &si);
        if (s < 0)
            continue;
        if (s == SIGCHLD) {
            int st;
            pid_t r = waitpid(child, &st, WNOHANG);
            if (r != child)
                continue;
            int cst;
            if (g_status_fd >= 0 && read(g_status_fd, &cst, sizeof cst) == (ssize_t)sizeof cst)
                st = cst;
            if (g_tty_fd >= 0)
                tcsetpgrp(g_tty_fd, getpgrp());
            exit_like(st);
        }
        if (s != SIGTTOU)
            kill(child, s);
    }
}

/* The terminal (0, 1 or 2) whose foreground process group we are in, or -1. */
static int foreground_tty(void)
{
    for (int fd = 0; fd <= 2; fd++)
        if (isatty(fd) && tcgetpgrp(fd) == getpgrp())
            return fd;
    return -1;
}

static void op_pidns(void)
{
    if (g_pidns)
        DIE(0, NULL, "pidns: the plan has two pidns ops");
    g_tty_fd = foreground_tty();
    if (unshare(CLONE_NEWPID) < 0)
        DIE(errno, errno == EPERM ? "put a userns op before it" : NULL, "pidns: cannot create a pid namespace");
    int p[2], q[2]; /* p: pid 1 -> waiter (the command's status); q: waiter -> pid 1 (its pid outside) */
    if (pipe2(p, O_CLOEXEC) < 0 || pipe2(q, O_CLOEXEC) < 0)
        DIE(errno, NULL, "pidns: pipe");
    sigset_t set;
    fwd_set(&set);
    sigprocmask(SIG_BLOCK, &set, &g_oldmask);
    pid_t pid = fork();
    if (pid < 0)
        DIE(errno, NULL, "pidns: fork");
    if (pid > 0) {
        close(p[1]);
        close(q[0]);
        ssize_t w = write(q[1], &pid, sizeof pid);
        (void)w;
        close(q[1]);
        g_status_fd = p[0];
        setpgid(pid, pid);
        waiter(pid);
    }
    close(p[0]);
    close(q[1]);
    g_status_fd = p[1];
    setpgid(0, 0); /* out of the caller's group: a killpg() reaches the command once, via the waiter */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        DIE(errno, NULL, "pidns: PR_SET_PDEATHSIG");
    struct pollfd pf = {.fd = p[1], .events = 0};
    if (poll(&pf, 1, 0) > 0 && (pf.revents & (POLLERR | POLLHUP)))
        _exit(EXIT_LAUNCHER); /* the waiter died before PDEATHSIG was set */
    if (read(q[0], &g_host_pid, sizeof g_host_pid) != (ssize_t)sizeof g_host_pid)
        _exit(EXIT_LAUNCHER);
    close(q[0]);
    g_pidns = true;
}

/* pid 1: reap everything, forward signals to the command, exit with it. */
__attribute__((noreturn)) static void init_loop(pid_t cmd)
{
    sigset_t set;
    fwd_set(&set);
    for (;;) {
        siginfo_t si;
        int s = sigwaitinfo(&set, &si);
        if (s < 0)
            continue;
        if (s == SIGCHLD) {
            int st;
            pid_t r;
            while ((r = waitpid(-1, &st, WNOHANG)) > 0) {
                if (r == cmd) {
                    ssize_t w = write(g_status_fd, &st, sizeof st);
                    (void)w;
                    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
                }
            }
            continue;
        }
        if (s != SIGTTOU)
            kill(cmd, s);
    }
}

/* ------------------------------------------------------------------ */
/* host-side ops                                                       */
/* ------------------------------------------------------------------ */

static void op_check(const char *path, const char *hint)
{
    if (access(path, F_OK) == 0)
        return;
    if (errno == ENOENT || errno == ENOTDIR)
        DIE(0, hint ? hint : "recreate the sandbox, or import its image again",
            "check %s: the sandbox's plan is stale: %s is missing", path, path);
    DIE(errno, NULL, "check %s: cannot access it", path);
}

static void op_mkdir(const char *path, const char *smode)
{
    char step[PATH_MAX + 16];
    snprintf(step, sizeof step, "mkdir %s", path);
    mode_t mode = (mode_t)parse_num(step, smode, 8, 07777);
    char tmp[PATH_MAX];
    size_t n = strlen(path);
    if (path[0] != '/' || n >= sizeof tmp)
        DIE(0, NULL, "%s: the path must be absolute", step);
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != 0)
            continue;
        char save = tmp[i];
        tmp[i] = 0;
        bool last = save == 0 || tmp[i + 1] == 0;
        if (mkdir(tmp, last ? mode : 0755) < 0) {
            struct stat st;
            if (errno != EEXIST || stat(tmp, &st) < 0 || !S_ISDIR(st.st_mode))
                DIE(errno == EEXIST ? ENOTDIR : errno, NULL, "%s: cannot create %s", step, tmp);
        }
        tmp[i] = save;
        if (last)
            break;
    }
}

static void op_tmpfs(const char *path, const char *options)
{
    char step[PATH_MAX + 16];
    snprintf(step, sizeof step, "tmpfs %s", path);
    need_mountns(step);
    struct target t;
    open_host(step, &t, path);
    mount_fs(step, "tmpfs", options, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, &t);
    close_target(&t);
}

static void op_rootfs(const char *path)
{
    if (g_pivoted)
        DIE(0, NULL, "rootfs %s: after pivot", path);
    int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        DIE(errno, NULL, "rootfs %s: cannot open it", path);
    if (g_root_fd >= 0)
        close(g_root_fd);
    g_root_fd = fd;
    g_rootfs_path = path;
    g_dev_dir = NULL;
    g_image_mnt = -1;
}

/* Escape , : \ for the legacy overlay option string. */
static size_t ovl_escape(char *o, const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        if (*s == ',' || *s == ':' || *s == '\\') {
            if (o)
                o[n] = '\\';
            n++;
        }
        if (o)
            o[n] = *s;
        n++;
    }
    return n;
}

#define MOUNT_DATA_MAX 4095 /* one page, with its NUL */

/* The overlay with mount(2) and a lowerdir=a:b:c string (relative to a chdir when too long). */
static void overlay_legacy(const char *step, struct target *t, const char *upper, const char *work, int nl,
                           char **lowers)
{
    /* common parent directory of the lowers */
    size_t common = strlen(lowers[0]);
    for (int i = 1; i < nl; i++) {
        size_t j = 0;
        while (j < common && lowers[i][j] == lowers[0][j])
            j++;
        common = j;
    }
    while (common > 0 && lowers[0][common - 1] != '/')
        common--;
    for (int pass = 0; pass < 2; pass++) {
        size_t skip = pass ? common : 0;
        if (pass && (common <= 1 || nl < 2))
            break;
        size_t len = strlen("lowerdir=") + strlen(",userxattr") + 1;
        for (int i = 0; i < nl; i++)
            len += ovl_escape(NULL, lowers[i] + skip) + 1;
        if (upper[0])
            len += strlen(",upperdir=,workdir=") + ovl_escape(NULL, upper) + ovl_escape(NULL, work);
        if (len > MOUNT_DATA_MAX)
            continue;
        char *data = xmalloc(len + 1), *o = data;
        o += sprintf(o, "lowerdir=");
        for (int i = 0; i < nl; i++) {
            if (i)
                *o++ = ':';
            o += ovl_escape(o, lowers[i] + skip);
        }
        if (upper[0]) {
            o += sprintf(o, ",upperdir=");
            o += ovl_escape(o, upper);
            o += sprintf(o, ",workdir=");
            o += ovl_escape(o, work);
        }
        strcpy(o, ",userxattr");
        int cwd = -1;
        if (pass) {
            char dir[PATH_MAX];
            snprintf(dir, sizeof dir, "%.*s", (int)common, lowers[0]);
            cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (cwd < 0 || chdir(dir) < 0)
                DIE(errno, NULL, "%s: cannot change to the layers' directory %s", step, dir);
        }
        int r = mount("overlay", fdpath(t->fd, NULL), "overlay", 0, data);
        int e = errno;
        if (cwd >= 0) {
            if (fchdir(cwd) < 0)
                DIE(errno, NULL, "%s: cannot change back to the working directory", step);
            close(cwd);
        }
        free(data);
        if (r < 0) {
            for (int i = 0; i < nl && (e == ENOENT || e == ENOTDIR); i++)
                if (access(lowers[i], F_OK) < 0)
                    DIE(errno, "is the layer still in the store?", "%s: lower layer %s", step, lowers[i]);
            DIE(e, "overlayfs in a user namespace needs Linux >= 5.11",
                "%s: the kernel refused the overlay mount", step);
        }
        return;
    }
    DIE(0, "use a kernel with the new mount API (Linux >= 6.8), or flatten the image",
        "%s: %d layers do not fit in the kernel's mount data limit of one page", step, nl);
}

/* fsconfig() takes strings of at most 255 bytes: pass longer paths as /proc/self/fd/N. */
static int ovl_set_path(int fsfd, const char *key, const char *path)
{
    if (strlen(path) < 256)
        return sys_fsconfig(fsfd, GX_FSCONFIG_SET_STRING, key, path, 0);
    int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = sys_fsconfig(fsfd, GX_FSCONFIG_SET_STRING, key, fdpath(fd, NULL), 0);
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

static void op_overlay(int argc, char **a)
{
    const char *target = a[0], *upper = a[1], *work = a[2];
    int nl = argc - 3;
    char **lowers = a + 3;
    char step[PATH_MAX + 16], log[600];
    snprintf(step, sizeof step, "overlay %s", target);
    need_mountns(step);
    if (!upper[0] != !work[0])
        DIE(0, NULL, "%s: give both UPPER and WORK, or neither", step);
    for (int i = 0; i < nl; i++)
        if (!lowers[i][0])
            DIE(0, NULL, "%s: empty lower layer path", step);
    struct target t;
    open_host(step, &t, target);
    bool was_root = g_root_fd >= 0 && same_file(t.fd, g_root_fd);

    if (!upper[0] && nl == 1) { /* one read-only layer: a read-only bind */
        int src = open(lowers[0], O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (src < 0)
            DIE(errno, NULL, "%s: layer %s", step, lowers[0]);
        bind_fd(step, src, &t, false, MOUNT_ATTR_RDONLY);
        close(src);
        close_target(&t);
        return;
    }
    if (!g_no_newmount) {
        int fsfd = sys_fsopen("overlay", FSOPEN_CLOEXEC);
        if (fsfd < 0 && errno != ENOSYS)
            DIE(errno, "overlayfs in a user namespace needs Linux >= 5.11", "%s: the kernel refused the overlay mount",
                step);
        if (fsfd >= 0) {
            bool plus = true;
            sys_fsconfig(fsfd, GX_FSCONFIG_SET_STRING, "source", "overlay", 0);
            for (int i = 0; i < nl && plus; i++) {
                if (ovl_set_path(fsfd, "lowerdir+", lowers[i]) == 0)
                    continue;
                int e = errno;
                fs_log(fsfd, log, sizeof log);
                if (i == 0 && e == EINVAL) {
                    plus = false; /* Linux < 6.8: no lowerdir+ */
                    break;
                }
                DIE(e, e == ENOENT ? "is the layer still in the store?" : NULL, "%s: lower layer %s%s", step,
                    lowers[i], log);
            }
            if (plus) {
                if (upper[0] && ovl_set_path(fsfd, "upperdir", upper) < 0) {
                    int e = errno;
                    DIE(e, NULL, "%s: upper directory %s%s", step, upper, fs_log(fsfd, log, sizeof log));
                }
                if (work[0] && ovl_set_path(fsfd, "workdir", work) < 0) {
                    int e = errno;
                    DIE(e, NULL, "%s: work directory %s%s", step, work, fs_log(fsfd, log, sizeof log));
                }
                if (sys_fsconfig(fsfd, GX_FSCONFIG_SET_FLAG, "userxattr", NULL, 0) < 0 ||
                    sys_fsconfig(fsfd, GX_FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
                    int e = errno;
                    DIE(e, "overlayfs in a user namespace needs Linux >= 5.11",
                        "%s: the kernel refused the overlay mount%s", step, fs_log(fsfd, log, sizeof log));
                }
                int mfd = sys_fsmount(fsfd, FSMOUNT_CLOEXEC, 0);
                if (mfd < 0)
                    DIE(errno, NULL, "%s: cannot mount the overlay", step);
                if (sys_move_mount(mfd, "", t.fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
                    DIE(errno, NULL, "%s: cannot attach the overlay", step);
                close(mfd);
                close(fsfd);
                if (was_root)
                    target_reopen(step, &t, true);
                close_target(&t);
                return;
            }
            close(fsfd);
        }
    }
    overlay_legacy(step, &t, upper, work, nl, lowers);
    if (was_root)
        target_reopen(step, &t, true);
    close_target(&t);
}

/* ------------------------------------------------------------------ */
/* inside ops                                                          */
/* ------------------------------------------------------------------ */

static void op_bind(const char *src, const char *dst, const char *flags)
{
    /* The host's root onto the sandbox's root is never meant: it comes from `${cwd}` of a
     * launcher started in / (a Jupyter server whose root_dir is /). The image stays the root. */
    if (strcmp(src, "/") == 0 && strcmp(dst, "/") == 0)
        return;
    char step[2 * PATH_MAX + 16];
    snprintf(step, sizeof step, "bind %s -> %s", src, dst);
    bool rbind = false, nofail = false;
    int create = 0;
    uint64_t attrs = 0;
    for (const char *p = flags; *p;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
#define FLAG(s) (l == strlen(s) && strncmp(p, s, l) == 0)
        if (FLAG("ro"))
            attrs |= MOUNT_ATTR_RDONLY;
        else if (FLAG("nosuid"))
            attrs |= MOUNT_ATTR_NOSUID;
        else if (FLAG("nodev"))
            attrs |= MOUNT_ATTR_NODEV;
        else if (FLAG("noexec"))
            attrs |= MOUNT_ATTR_NOEXEC;
        else if (FLAG("rbind"))
            rbind = true;
        else if (FLAG("nofail"))
            nofail = true;
        else if (FLAG("create=dir"))
            create = 'd';
        else if (FLAG("create=file"))
            create = 'f';
        else if (FLAG("create=auto"))
            create = 'a';
        else if (l)
            DIE(0, "flags are ro, rbind, nofail, create=dir|file|auto, nosuid, nodev, noexec",
                "%s: unknown flag '%.*s'", step, (int)l, p);
#undef FLAG
        p += l + (c != NULL);
    }
    need_rootfs(step);
    int srcfd = open(src, O_PATH | O_CLOEXEC);
    if (srcfd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            if (nofail)
                return;
            DIE(0, "add nofail to ignore", "bind %s: the source does not exist", src);
        }
        DIE(errno, NULL, "%s: cannot open the source", step);
    }
    if (create == 'a') {
        struct stat st;
        if (fstat(srcfd, &st) < 0)
            DIE(errno, NULL, "%s: cannot stat the source", step);
        create = S_ISDIR(st.st_mode) ? 'd' : 'f';
    }
    struct target t;
    open_inside(step, &t, dst, create);
    bind_fd(step, srcfd, &t, rbind, attrs);
    close(srcfd);
    close_target(&t);
}

static void op_proc(const char *dst)
{
    char step[PATH_MAX + 16];
    snprintf(step, sizeof step, "proc %s", dst);
    need_rootfs(step);
    struct target t;
    open_inside(step, &t, dst, 'd');
    if (g_pidns) {
        mount_fs(step, "proc", "", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, &t);
    } else {
        int src = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (src < 0)
            DIE(errno, NULL, "%s: cannot open the host's /proc", step);
        bind_fd(step, src, &t, true, 0);
        close(src);
    }
    close_target(&t);
}

static void op_sys(const char *dst)
{
    char step[PATH_MAX + 16];
    snprintf(step, sizeof step, "sys %s", dst);
    need_rootfs(step);
    struct target t;
    open_inside(step, &t, dst, 'd');
    int src = open("/sys", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (src < 0)
        DIE(errno, NULL, "%s: cannot open the host's /sys", step);
    bind_fd(step, src, &t, true, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    close(src);
    close_target(&t);
}

static void op_dev(const char *dst)
{
    static const char *const NODES[] = {"null", "zero", "full", "random", "urandom", "tty"};
    static const char *const LINKS[][2] = {
        {"ptmx", "pts/ptmx"},           {"fd", "/proc/self/fd"},        {"stdin", "/proc/self/fd/0"},
        {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"},
    };
    char step[PATH_MAX + 16];
    snprintf(step, sizeof step, "dev %s", dst);
    need_rootfs(step);
    struct target t;
    open_inside(step, &t, dst, 'd');
    mount_fs(step, "tmpfs", "mode=0755", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, &t);
    target_reopen(step, &t, false);
    int dev = t.fd;
    for (size_t i = 0; i < sizeof NODES / sizeof NODES[0]; i++) {
        char host[32];
        snprintf(host, sizeof host, "/dev/%s", NODES[i]);
        int src = open(host, O_PATH | O_CLOEXEC);
        if (src < 0)
            DIE(errno, NULL, "%s: cannot open the host's %s", step, host);
        int f = openat(dev, NODES[i], O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (f < 0)
            DIE(errno, NULL, "%s: cannot create %s", step, NODES[i]);
        close(f);
        struct target n = {.fd = -1, .dirfd = dev, .name = NODES[i]};
        if (target_open(&n) < 0)
            DIE(-n.fd, NULL, "%s: cannot open %s", step, NODES[i]);
        bind_fd(step, src, &n, false, 0);
        close(src);
        close_target(&n);
    }
    static const struct {
        const char *name, *fstype, *opts;
        mode_t mode;
        uint64_t attrs;
    } SUBS[] = {
        {"pts", "devpts", "newinstance,ptmxmode=0666,mode=0620", 0755, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC},
        {"shm", "tmpfs", "mode=1777", 01777, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV},
    };
    for (size_t i = 0; i < 2; i++) {
        if (mkdirat(dev, SUBS[i].name, SUBS[i].mode) < 0)
            DIE(errno, NULL, "%s: cannot create %s", step, SUBS[i].name);
        struct target n = {.fd = -1, .dirfd = dev, .name = SUBS[i].name};
        if (target_open(&n) < 0)
            DIE(-n.fd, NULL, "%s: cannot open %s", step, SUBS[i].name);
        mount_fs(step, SUBS[i].fstype, SUBS[i].opts, SUBS[i].attrs, &n);
        close_target(&n);
    }
    for (size_t i = 0; i < sizeof LINKS / sizeof LINKS[0]; i++)
        if (symlinkat(LINKS[i][1], dev, LINKS[i][0]) < 0)
            DIE(errno, NULL, "%s: cannot create the symlink %s", step, LINKS[i][0]);
    close_target(&t);
    g_dev_dir = dst;
}

static void op_tmpfs_in(const char *dst, const char *options)
{
    char step[PATH_MAX + 16];
    snprintf(step, sizeof step, "tmpfs-in %s", dst);
    need_rootfs(step);
    struct target t;
    open_inside(step, &t, dst, 'd');
    mount_fs(step, "tmpfs", options, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, &t);
    close_target(&t);
}

/*
 * symlink TARGET PATH: the symbolic link PATH -> TARGET inside the rootfs.
 * PATH's parent is resolved inside the rootfs (missing directories created
 * 0755, like create=dir); a symlink already pointing at TARGET is left
 * alone, anything else but a directory is replaced.
 */
static void op_symlink(const char *target, const char *path)
{
    char step[2 * PATH_MAX + 32];
    snprintf(step, sizeof step, "symlink %s -> %s", target, path);
    if (g_root_fd < 0)
        DIE(0, "add a rootfs op before it", "%s: no rootfs declared", step);
    if (path[0] != '/')
        DIE(0, NULL, "%s: the path must be absolute", step);
    if (!target[0])
        DIE(0, NULL, "%s: the target is empty", step);
    char parent[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof parent)
        DIE(ENAMETOOLONG, NULL, "%s", step);
    memcpy(parent, path, n + 1);
    while (n > 1 && parent[n - 1] == '/')
        parent[--n] = 0;
    char *slash = strrchr(parent, '/');
    const char *name = slash + 1;
    if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        DIE(0, NULL, "%s: %s is a directory in the image", step, path);
    *slash = 0;
    const char *pdir = parent[0] ? parent : "/";
    int dir = resolve_in_root(pdir);
    if (dir == -ENOENT) {
        dir = resolve_or_create(pdir, 'd', false);
        if (dir < 0)
            DIE(-dir, NULL, "%s: cannot create the directory %s", step, pdir);
    } else if (dir < 0) {
        DIE(-dir, NULL, "%s: cannot open the directory %s", step, pdir);
    }
    struct stat st;
    if (fstat(dir, &st) < 0)
        DIE(errno, NULL, "%s: cannot stat the directory %s", step, pdir);
    if (!S_ISDIR(st.st_mode))
        DIE(0, NULL, "%s: %s is not a directory in the image", step, pdir);
    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISDIR(st.st_mode))
            DIE(0, NULL, "%s: %s is a directory in the image", step, path);
        if (S_ISLNK(st.st_mode)) {
            char cur[PATH_MAX];
            ssize_t l = readlinkat(dir, name, cur, sizeof cur);
            if (l >= 0 && (size_t)l == strlen(target) && memcmp(cur, target, (size_t)l) == 0) {
                close(dir); /* already there (the caller may have prepared it) */
                return;
            }
        }
        if (unlinkat(dir, name, 0) < 0 && errno != ENOENT)
            DIE(errno, NULL, "%s: cannot remove the existing %s", step, path);
    } else if (errno != ENOENT) {
        DIE(errno, NULL, "%s: cannot inspect %s", step, path);
    }
    if (symlinkat(target, dir, name) < 0)
        DIE(errno, NULL, "%s: cannot create %s", step, path);
    close(dir);
}

#define LD_CACHE_NAME ".gantry-ld.so.cache"
#define LDCONFIG_HINT "start without GPUs (NVIDIA_VISIBLE_DEVICES=void), or check the image's /etc/ld.so.conf"

/* fd, moved above 2 (so that dup2 onto 0, 1, 2 in a child never is a no-op that keeps O_CLOEXEC). */
static int fd_above_stdio(int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    return n;
}

/*
 * The last lines (at most 8, empty ones skipped) of what a child wrote to
 * the file fd, joined by " | ": ": LINE | LINE", or "" when it wrote nothing.
 */
static void output_tail(int fd, char *out, size_t outlen, int max)
{
    char buf[1024], *lines[8];
    struct stat st;
    out[0] = 0;
    if (max > 8)
        max = 8;
    if (fstat(fd, &st) < 0 || st.st_size <= 0)
        return;
    off_t off = st.st_size > (off_t)sizeof buf - 1 ? st.st_size - (off_t)sizeof buf + 1 : 0;
    ssize_t r = pread(fd, buf, sizeof buf - 1, off);
    if (r <= 0)
        return;
    buf[r] = 0;
    int total = 0;
    for (char *p = buf, *next; p; p = next) {
        next = strchr(p, '\n');
        if (next)
            *next++ = 0;
        size_t l = strlen(p);
        while (l && (p[l - 1] == '\r' || p[l - 1] == ' ' || p[l - 1] == '\t'))
            p[--l] = 0;
        if (l)
            lines[total++ % max] = p;
    }
    int first = total > max ? total - max : 0;
    size_t o = 0;
    for (int i = first; i < total && o < outlen; i++)
        o += (size_t)snprintf(out + o, outlen - o, "%s%s%s", i > first ? " | " : ": ",
                              i == first && (first || off) ? "... " : "", lines[i % max]);
}

/*
 * ldconfig LDCONFIG [DIR...]: run the host's (static) ldconfig chrooted in
 * the rootfs, writing its cache into the dev op's tmpfs, then bind that
 * cache read-only onto /etc/ld.so.cache and remove it from /dev.
 */
/*
 * ldconfig-rw: the same, then the new cache is written into the root's own
 * /etc/ld.so.cache (a writable root: the image's ldconfig and dpkg's
 * triggers then keep working, which a bind mount there would make fail with
 * EBUSY); where /etc is not writable, the cache is bound as for ldconfig.
 */
static bool write_in_place(int dev)
{
    int etc = resolve_in_root("/etc");
    if (etc < 0)
        return false;
    int dir = openat(etc, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    close(etc);
    if (dir < 0)
        return false;
    int in = openat(dev, LD_CACHE_NAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int fd = openat(dir, "ld.so.cache", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    close(dir);
    bool ok = in >= 0 && fd >= 0;
    char buf[65536];
    ssize_t n;
    while (ok && (n = read(in, buf, sizeof buf)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        for (ssize_t off = 0; ok && n > 0 && off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w < 0 && errno != EINTR)
                ok = false;
            else if (w > 0)
                off += w;
        }
        if (n < 0)
            ok = false;
    }
    if (in >= 0)
        close(in);
    if (fd >= 0)
        close(fd);
    return ok;
}

static void op_ldconfig(int argc, char **a, bool in_place)
{
    const char *ldconfig = a[0];
    char step[PATH_MAX + 16];
    snprintf(step, sizeof step, "%s %s", in_place ? "ldconfig-rw" : "ldconfig", ldconfig);
    need_rootfs(step);
    if (g_pivoted)
        DIE(0, "ldconfig runs between dev and pivot", "%s: after pivot", step);
    if (!g_dev_dir)
        DIE(0, "add a dev op before it: ldconfig writes its cache into the sandbox's /dev",
            "%s: no dev op before it", step);
    if (ldconfig[0] != '/')
        DIE(0, NULL, "%s: the path must be absolute", step);
    for (int i = 1; i < argc; i++)
        if (a[i][0] != '/') /* an absolute path, never an option */
            DIE(0, NULL, "%s: the directory '%s' must be an absolute path", step, a[i]);
    int exe = fd_above_stdio(open(ldconfig, O_PATH | O_CLOEXEC));
    if (exe < 0)
        DIE(errno, errno == ENOENT ? "install glibc's ldconfig on the host, or start without GPUs (NVIDIA_VISIBLE_DEVICES=void)" : NULL,
            "%s: cannot open it", step);
    struct stat st;
    if (fstat(exe, &st) < 0)
        DIE(errno, NULL, "%s: cannot stat it", step);
    if (!S_ISREG(st.st_mode))
        DIE(0, NULL, "%s: not a regular file", step);
    char cache[PATH_MAX];
    size_t dl = strlen(g_dev_dir);
    while (dl > 1 && g_dev_dir[dl - 1] == '/')
        dl--;
    if (snprintf(cache, sizeof cache, "%.*s/" LD_CACHE_NAME, (int)dl, g_dev_dir) >= (int)sizeof cache)
        DIE(ENAMETOOLONG, NULL, "%s: %s", step, g_dev_dir);
    char **argv = xmalloc(((size_t)argc + 4) * sizeof *argv);
    argv[0] = "ldconfig";
    argv[1] = "-X";                   /* no links in the image */
    argv[2] = "-C";
    argv[3] = cache;                  /* the dev op's tmpfs: always writable */
    for (int i = 1; i < argc; i++)
        argv[3 + i] = a[i];
    argv[argc + 3] = NULL;
    char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    int null = fd_above_stdio(open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (null < 0)
        DIE(errno, NULL, "%s: cannot open /dev/null", step);
    int out = fd_above_stdio(memfd_create("gantry-ldconfig", MFD_CLOEXEC));
    if (out < 0)
        DIE(errno, NULL, "%s: cannot create a file for its output", step);
    int ep[2]; /* child -> us: {what failed, errno} before the exec */
    if (pipe2(ep, O_CLOEXEC) < 0 || (ep[0] = fd_above_stdio(ep[0])) < 0 || (ep[1] = fd_above_stdio(ep[1])) < 0)
        DIE(errno, NULL, "%s: pipe", step);
    /* a SIGCHLD ignored by the caller would reap the child before our waitpid: default while it runs */
    struct sigaction dfl = {.sa_handler = SIG_DFL}, old_chld;
    sigaction(SIGCHLD, &dfl, &old_chld);
    pid_t pid = fork();
    if (pid < 0)
        DIE(errno, NULL, "%s: fork", step);
    if (pid == 0) {
        int msg[2] = {0, 0};
        sigaction(SIGCHLD, &old_chld, NULL);
        if (g_pidns) /* pid 1 blocks the signals it forwards */
            sigprocmask(SIG_SETMASK, &g_oldmask, NULL);
        /* we still hold our capabilities (no exec yet): chroot works in the user namespace */
        if (fchdir(g_root_fd) < 0 || chroot(".") < 0 || chdir("/") < 0)
            msg[0] = 1;
        else if (dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
            msg[0] = 2;
        if (msg[0]) {
            msg[1] = errno;
        } else {
            umask(022);
            syscall(SYS_execveat, exe, "", argv, envp, AT_EMPTY_PATH);
            msg[0] = 3;
            msg[1] = errno;
        }
        ssize_t w = write(ep[1], msg, sizeof msg);
        (void)w;
        _exit(127);
    }
    close(ep[1]);
    close(null);
    close(exe);
    free(argv);
    int msg[2];
    ssize_t got;
    while ((got = read(ep[0], msg, sizeof msg)) < 0 && errno == EINTR)
        ;
    close(ep[0]);
    int wst = 0;
    while (waitpid(pid, &wst, 0) < 0) /* this child only: pid 1's other children are init_loop's */
        if (errno != EINTR)
            DIE(errno, NULL, "%s: waitpid", step);
    sigaction(SIGCHLD, &old_chld, NULL);
    if (got == (ssize_t)sizeof msg) {
        if (msg[0] == 1)
            DIE(msg[1], NULL, "%s: cannot enter the rootfs", step);
        if (msg[0] == 2)
            DIE(msg[1], NULL, "%s: cannot redirect its output", step);
        DIE(msg[1], msg[1] == ENOENT || msg[1] == ENOEXEC
                        ? "it runs inside the image: use a statically linked ldconfig, like glibc's /sbin/ldconfig"
                        : LDCONFIG_HINT,
            "%s: cannot execute it in the rootfs", step);
    }
    char tail[1200];
    output_tail(out, tail, sizeof tail, 4);
    close(out);
    if (WIFSIGNALED(wst))
        DIE(0, LDCONFIG_HINT, "%s: killed by signal %d%s", step, WTERMSIG(wst), tail);
    if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0)
        DIE(0, LDCONFIG_HINT, "%s: exited with status %d%s", step, WEXITSTATUS(wst), tail);

    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s", (int)dl, g_dev_dir);
    int dev = resolve_in_root(dir);
    if (dev < 0)
        DIE(-dev, NULL, "%s: cannot open %s", step, dir);
    int src = openat(dev, LD_CACHE_NAME, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (src < 0 || fstat(src, &st) < 0)
        DIE(errno, NULL, "%s: cannot open the cache ldconfig wrote, %s", step, cache);
    if (!S_ISREG(st.st_mode))
        DIE(0, NULL, "%s: the new cache %s is not a regular file", step, cache);
    if (!in_place || !write_in_place(dev)) {
        struct target t;
        open_inside(step, &t, "/etc/ld.so.cache", 'f');
        bind_fd(step, src, &t, false, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
        close_target(&t);
    }
    close(src);
    /* the bind keeps the file: /dev stays clean */
    if (unlinkat(dev, LD_CACHE_NAME, 0) < 0)
        DIE(errno, NULL, "%s: cannot remove %s", step, cache);
    if (unlinkat(dev, LD_CACHE_NAME "~", 0) < 0 && errno != ENOENT)
        DIE(errno, NULL, "%s: cannot remove %s~", step, cache);
    close(dev);
}

static void op_pivot(void)
{
    need_rootfs("pivot");
    if (g_pivoted)
        DIE(0, NULL, "pivot: the plan has two pivot ops");
    int fd = open(g_rootfs_path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fchdir(fd) < 0)
        DIE(errno, NULL, "pivot: cannot enter the rootfs %s", g_rootfs_path);
    close(fd);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        DIE(errno, errno == EINVAL ? "the rootfs must be a mount point: mount an overlay, a tmpfs or a bind there" : NULL,
            "pivot: cannot pivot_root into %s", g_rootfs_path);
    if (umount2(".", MNT_DETACH) < 0)
        DIE(errno, NULL, "pivot: cannot detach the old root");
    if (chdir("/") < 0)
        DIE(errno, NULL, "pivot: chdir /");
    fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        DIE(errno, NULL, "pivot: cannot open the new root");
    close(g_root_fd);
    g_root_fd = fd;
    g_pivoted = true;
}

static void op_remount_ro(void)
{
    need_rootfs("remount-ro");
    if (!g_no_newmount) {
        if (sys_mount_setattr(g_root_fd, "", AT_EMPTY_PATH, MOUNT_ATTR_RDONLY) == 0)
            return;
        if (errno != ENOSYS)
            DIE(errno, NULL, "remount-ro: cannot make the root read-only");
        g_no_newmount = true;
    }
    if (legacy_remount(g_pivoted ? "/" : NULL, g_root_fd, MS_RDONLY) < 0)
        DIE(errno, NULL, "remount-ro: cannot make the root read-only");
}

static void op_nonewprivs(void)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        DIE(errno, NULL, "nonewprivs: prctl");
}

/* ------------------------------------------------------------------ */
/* fakeroot: chown and set*id succeed without doing anything           */
/* ------------------------------------------------------------------ */

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#define X32_BIT 0x40000000u
static const uint32_t NATIVE_NRS[] = {
    SYS_chown,    SYS_fchown,    SYS_lchown,    SYS_fchownat,  SYS_setuid,   SYS_setgid,   SYS_setreuid,
    SYS_setregid, SYS_setresuid, SYS_setresgid, SYS_setgroups, SYS_setfsuid, SYS_setfsgid,
};
#define COMPAT_ARCH AUDIT_ARCH_I386
static const uint32_t COMPAT_NRS[] = {
    182 /* chown */,      16 /* lchown */,       95 /* fchown */,       298 /* fchownat */,   23 /* setuid */,
    46 /* setgid */,      70 /* setreuid */,     71 /* setregid */,     164 /* setresuid */,  170 /* setresgid */,
    81 /* setgroups */,   138 /* setfsuid */,    139 /* setfsgid */,    212 /* chown32 */,    198 /* lchown32 */,
    207 /* fchown32 */,   213 /* setuid32 */,    214 /* setgid32 */,    203 /* setreuid32 */, 204 /* setregid32 */,
    208 /* setresuid32 */, 210 /* setresgid32 */, 206 /* setgroups32 */, 215 /* setfsuid32 */, 216 /* setfsgid32 */,
};
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
static const uint32_t NATIVE_NRS[] = {
    SYS_fchown,   SYS_fchownat,  SYS_setuid,    SYS_setgid,    SYS_setreuid, SYS_setregid,
    SYS_setresuid, SYS_setresgid, SYS_setgroups, SYS_setfsuid, SYS_setfsgid,
};
#endif

#ifdef NATIVE_ARCH
static size_t bpf_block(struct sock_filter *f, uint32_t arch, const uint32_t *nrs, size_t n, bool x32)
{
    size_t k = 0;
    uint8_t skip = (uint8_t)(1 + (x32 ? 1 : 0) + n + 2);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 0, skip);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#ifdef X32_BIT
    if (x32)
        f[k++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_AND | BPF_K, ~X32_BIT);
#endif
    for (size_t i = 0; i < n; i++)
        f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nrs[i], (uint8_t)(n - i), 0);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 0);
    return k;
}
#endif

static void op_fakeroot(void)
{
#ifdef NATIVE_ARCH
    struct sock_filter f[128];
    size_t k = bpf_block(f, NATIVE_ARCH, NATIVE_NRS, sizeof NATIVE_NRS / sizeof NATIVE_NRS[0], NATIVE_ARCH == AUDIT_ARCH_X86_64);
#ifdef COMPAT_ARCH
    k += bpf_block(f + k, COMPAT_ARCH, COMPAT_NRS, sizeof COMPAT_NRS / sizeof COMPAT_NRS[0], false);
#endif
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {.len = (unsigned short)k, .filter = f};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
        DIE(errno, errno == EACCES ? "put nonewprivs before fakeroot" : NULL, "fakeroot: cannot install the seccomp filter");
#else
    DIE(0, NULL, "fakeroot: not supported on this architecture");
#endif
}

/* ------------------------------------------------------------------ */
/* environment and exec                                                */
/* ------------------------------------------------------------------ */

/* Set "KEY=VALUE" (kv is kept) in the command's environment, replacing KEY. */
static void env_put(char *kv)
{
    size_t kl = (size_t)(strchr(kv, '=') - kv) + 1;
    for (int i = 0; i < g_nenv; i++)
        if (strncmp(g_env[i], kv, kl) == 0) {
            g_env[i] = kv;
            return;
        }
    if (g_nenv + 1 >= g_envcap) {
        g_envcap = g_envcap ? 2 * g_envcap : 64;
        char **n = realloc(g_env, (size_t)g_envcap * sizeof *n);
        if (!n)
            DIE(ENOMEM, NULL, "out of memory");
        g_env = n;
    }
    g_env[g_nenv++] = kv;
    g_env[g_nenv] = NULL;
}

static void check_key(const char *step, const char *key, size_t len)
{
    if (len == 0 || memchr(key, '=', len))
        DIE(0, NULL, "%s: invalid variable name '%.*s'", step, (int)len, key);
}

/*
 * A plan field with ${host:NAME} replaced by the launcher's own variable NAME
 * (empty when unset) and, when cwd, ${cwd} by the launcher's working
 * directory at start.  Nothing else is expanded.  Returns s when it has no "${".
 */
static const char *expand(const char *step, const char *s, bool cwd)
{
    if (!strstr(s, "${"))
        return s;
    size_t need = 1;
    char *out = NULL, *o = NULL;
    for (int pass = 0; pass < 2; pass++) {
        for (const char *p = s; *p;) {
            const char *v = NULL, *end = NULL;
            if (strncmp(p, "${host:", 7) == 0 && (end = strchr(p + 7, '}')) != NULL) {
                char name[256];
                size_t nl = (size_t)(end - (p + 7));
                v = "";
                if (nl < sizeof name) {
                    memcpy(name, p + 7, nl);
                    name[nl] = 0;
                    v = getenv(name);
                    if (!v)
                        v = "";
                }
            } else if (cwd && strncmp(p, "${cwd}", 6) == 0) {
                if (!g_start_cwd)
                    DIE(g_start_cwd_err, NULL, "%s %s: cannot expand ${cwd}: the launcher's working directory is unknown",
                        step, s);
                v = g_start_cwd;
                end = p + 5;
            }
            if (v) {
                size_t vl = strlen(v);
                if (pass)
                    memcpy(o, v, vl), o += vl;
                else
                    need += vl;
                p = end + 1;
            } else {
                if (pass)
                    *o++ = *p;
                else
                    need++;
                p++;
            }
        }
        if (!pass)
            out = o = xmalloc(need);
    }
    *o = 0;
    return out;
}

/* env KEY VALUE, with ${host:NAME} replaced by the launcher's own NAME. */
static void op_env(const char *key, const char *val)
{
    check_key("env", key, strlen(key));
    char *k = concat(key, "=");
    env_put(concat(k, expand("env", val, false)));
    free(k);
}

/* env-pass KEY: the launcher's own KEY, when it has one (an unset variable stays unset). */
static void op_env_pass(const char *key)
{
    check_key("env-pass", key, strlen(key));
    const char *v = getenv(key);
    if (v) {
        char *k = concat(key, "=");
        env_put(concat(k, v));
        free(k);
    }
}

static const char *env_get(const char *key)
{
    size_t kl = strlen(key);
    for (int i = 0; i < g_nenv; i++)
        if (strncmp(g_env[i], key, kl) == 0 && g_env[i][kl] == '=')
            return g_env[i] + kl + 1;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* hook SCRIPT                                                         */
/* ------------------------------------------------------------------ */

/* An empty private file DIR/gantry-hook-KIND-XXXXXX for the hook to append to. */
static char *hook_tempfile(const char *step, const char *dir, const char *kind, const char *other)
{
    char *path = xmalloc(strlen(dir) + 64);
    sprintf(path, "%s/gantry-hook-%s-XXXXXX", dir, kind);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (other)
            unlink(other);
        DIE(e, "set TMPDIR to a writable directory", "%s: cannot create a temporary file in %s", step, dir);
    }
    close(fd);
    return path;
}

/* Open (then remove) a file the hook wrote: an fd, or -1 when the hook removed it. */
static int hook_take(const char *path, int *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    *err = fd < 0 && errno != ENOENT ? errno : 0;
    unlink(path);
    return fd;
}

static char *hook_read(const char *step, const char *var, int fd, int err)
{
    if (err)
        DIE(err, NULL, "%s: cannot open the %s file", step, var);
    size_t len = 0;
    char *b = fd < 0 ? concat("", "") : read_fd(fd, &len);
    if (!b)
        DIE(errno, NULL, "%s: cannot read the %s file", step, var);
    if (memchr(b, 0, len))
        DIE(0, NULL, "%s: the %s file contains a NUL byte", step, var);
    return b;
}

/* GANTRY_ENVIRON: KEY=VALUE lines (no expansion); empty lines are skipped. */
static void hook_environ(const char *step, char *buf)
{
    int ln = 0;
    for (char *line = buf, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        ln++;
        if (!*line)
            continue;
        char *eq = strchr(line, '=');
        if (!eq || eq == line)
            DIE(0, "write KEY=VALUE lines", "%s: GANTRY_ENVIRON line %d: not KEY=VALUE: '%.200s'", step, ln, line);
        env_put(line);
    }
}

struct hook_mount {
    char *src, *dst;
    char flags[64]; /* for op_bind */
};

/*
 * GANTRY_MOUNTS: fstab lines "SRC DST [TYPE [OPTIONS]]" (blanks between
 * fields, \ooo octal escapes in SRC and DST, blank lines and # comments
 * skipped), all checked first, then applied in order as bind ops.
 */
static void hook_mounts(const char *step, char *buf)
{
    static const char *const FLAGS[] = {"ro", "rbind", "nofail", "nosuid", "nodev", "noexec"};
    const unsigned RO = 1, RBIND = 2;
    size_t cap = 1;
    for (const char *c = buf; *c; c++)
        cap += *c == '\n';
    struct hook_mount *m = xmalloc(cap * sizeof *m);
    int nm = 0, ln = 0;
    for (char *line = buf, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        ln++;
        char *f[4], *p = line;
        int nf = 0;
        for (;;) {
            while (*p == ' ' || *p == '\t')
                p++;
            if (!*p || (nf == 0 && *p == '#'))
                break;
            if (nf == 4)
                DIE(0, "SRC DST [TYPE [OPTIONS]]", "%s: GANTRY_MOUNTS line %d: too many fields", step, ln);
            f[nf++] = p;
            while (*p && *p != ' ' && *p != '\t')
                p++;
            if (*p)
                *p++ = 0;
        }
        if (nf == 0)
            continue;
        if (nf < 2)
            DIE(0, "SRC DST [TYPE [OPTIONS]]", "%s: GANTRY_MOUNTS line %d: no DST", step, ln);
        for (int i = 0; i < 2; i++) {
            if (strstr(f[i], "\\000"))
                DIE(0, NULL, "%s: GANTRY_MOUNTS line %d: \\000 (a NUL byte) is not allowed", step, ln);
            unescape_octal(f[i]);
        }
        unsigned fl = 0;
        const char *create = NULL;
        if (nf > 2 && strcmp(f[2], "none") != 0 && strcmp(f[2], "bind") != 0) {
            if (strcmp(f[2], "rbind") != 0)
                DIE(0, "TYPE is none, bind or rbind", "%s: GANTRY_MOUNTS line %d: unknown type '%.100s'", step, ln,
                    f[2]);
            fl |= RBIND;
        }
        char *save = NULL;
        for (char *o = nf > 3 ? strtok_r(f[3], ",", &save) : NULL; o; o = strtok_r(NULL, ",", &save)) {
            size_t k = 0;
            while (k < sizeof FLAGS / sizeof FLAGS[0] && strcmp(o, FLAGS[k]) != 0)
                k++;
            if (k < sizeof FLAGS / sizeof FLAGS[0])
                fl |= 1u << k;
            else if (strcmp(o, "rw") == 0)
                fl &= ~RO;
            else if (strcmp(o, "x-create=dir") == 0 || strcmp(o, "x-create=file") == 0 ||
                     strcmp(o, "x-create=auto") == 0)
                create = o + 2;
            else if (strcmp(o, "bind") != 0)
                DIE(0, "OPTIONS: ro, rw, bind, rbind, nofail, nosuid, nodev, noexec, x-create=dir|file|auto",
                    "%s: GANTRY_MOUNTS line %d: unknown option '%.100s'", step, ln, o);
        }
        struct hook_mount *h = &m[nm++];
        h->src = f[0];
        h->dst = f[1];
        char *o = h->flags;
        *o = 0;
        for (size_t k = 0; k < sizeof FLAGS / sizeof FLAGS[0]; k++)
            if (fl & (1u << k))
                o += sprintf(o, "%s%s", o == h->flags ? "" : ",", FLAGS[k]);
        if (create)
            sprintf(o, "%s%s", o == h->flags ? "" : ",", create);
    }
    for (int i = 0; i < nm; i++)
        op_bind(m[i].src, m[i].dst, m[i].flags);
    free(m);
}

static bool is_hook_var(const char *kv)
{
    static const char *const VARS[] = {"GANTRY_PID=", "GANTRY_ROOTFS=", "GANTRY_ENVIRON=", "GANTRY_MOUNTS="};
    for (size_t i = 0; i < sizeof VARS / sizeof VARS[0]; i++)
        if (strncmp(kv, VARS[i], strlen(VARS[i])) == 0)
            return true;
    return false;
}

/*
 * Run /bin/sh SCRIPT here (host paths, our namespaces), stdin /dev/null, our
 * environment plus GANTRY_{PID,ROOTFS,ENVIRON,MOUNTS}; then apply what it
 * appended to the ENVIRON and MOUNTS files.
 */
static void op_hook(const char *script)
{
    char step[PATH_MAX + 16];
    snprintf(step, sizeof step, "hook %s", script);
    need_rootfs(step);
    if (g_pivoted)
        DIE(0, "hooks run between rootfs and pivot", "%s: after pivot", step);
    if (script[0] != '/')
        DIE(0, NULL, "%s: the path must be absolute", step);
    if (access(script, R_OK) < 0)
        DIE(errno, NULL, "%s: cannot read the script", step);
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !tmp[0])
        tmp = "/tmp";
    char *envf = hook_tempfile(step, tmp, "environ", NULL);
    char *mntf = hook_tempfile(step, tmp, "mounts", envf);

    extern char **environ;
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = xmalloc((n + 5) * sizeof *envp), pid[32];
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!is_hook_var(environ[i]))
            envp[k++] = environ[i];
    snprintf(pid, sizeof pid, "GANTRY_PID=%ld", (long)(g_host_pid ? g_host_pid : getpid()));
    envp[k++] = pid;
    envp[k++] = concat("GANTRY_ROOTFS=", g_rootfs_path);
    envp[k++] = concat("GANTRY_ENVIRON=", envf);
    envp[k++] = concat("GANTRY_MOUNTS=", mntf);
    envp[k] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawnattr_init(&at);
    if (g_pidns) { /* pid 1 blocks the signals it forwards */
        posix_spawnattr_setsigmask(&at, &g_oldmask);
        posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
    }
    char *argv[] = {"/bin/sh", (char *)script, NULL};
    pid_t child;
    umask(g_umask);
    int r = posix_spawn(&child, "/bin/sh", &fa, &at, argv, envp);
    umask(0);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    int st = 0;
    if (r == 0)
        while (waitpid(child, &st, 0) < 0)
            if (errno != EINTR) {
                r = errno;
                break;
            }
    int eerr, merr, efd = hook_take(envf, &eerr), mfd = hook_take(mntf, &merr);
    if (r)
        DIE(r, NULL, "%s: cannot run /bin/sh", step);
    if (WIFSIGNALED(st))
        DIE(0, NULL, "%s: killed by signal %d", step, WTERMSIG(st));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        DIE(0, NULL, "%s: exited with status %d", step, WEXITSTATUS(st));
    char *eb = hook_read(step, "GANTRY_ENVIRON", efd, eerr), *mb = hook_read(step, "GANTRY_MOUNTS", mfd, merr);
    hook_environ(step, eb); /* eb stays: the environment points into it */
    hook_mounts(step, mb);
    free(mb);
    free(envp[k - 3]);
    free(envp[k - 2]);
    free(envp[k - 1]);
    free(envp);
    free(envf);
    free(mntf);
}

/* execve, and run scripts without #! with /bin/sh like execvp does. */
static void try_exec(const char *path)
{
    static char *empty[] = {NULL};
    char **envp = g_env ? g_env : empty;
    execve(path, g_argv, envp);
    if (errno == ENOEXEC) {
        int n = 0;
        while (g_argv[n])
            n++;
        char **sh = xmalloc(((size_t)n + 2) * sizeof *sh);
        sh[0] = "/bin/sh";
        sh[1] = (char *)path;
        for (int i = 1; i <= n; i++)
            sh[i + 1] = g_argv[i];
        execve("/bin/sh", sh, envp);
        errno = ENOEXEC;
    }
}

__attribute__((noreturn)) static void do_exec(void)
{
    if (!g_argv || !g_argv[0] || !g_argv[0][0])
        DIE(0, "give a COMMAND, or add an argv op", "exec: no command");
    umask(g_umask);
    if (g_cwd && chdir(g_cwd) < 0)
        DIE(errno, NULL, "cwd %s: cannot change to the working directory", g_cwd);
    const char *cmd = g_argv[0];
    if (strchr(cmd, '/')) {
        try_exec(cmd);
        int e = errno;
        if (e == ENOENT && access(cmd, F_OK) == 0)
            die(EXIT_NOT_FOUND, 0, "a missing ELF interpreter or #! program",
                "exec %s: the program exists but its interpreter is missing in the image", cmd);
        if (e == ENOENT || e == ENOTDIR)
            die(EXIT_NOT_FOUND, 0, NULL, "exec %s: no such file in the image", cmd);
        die(EXIT_CANNOT_EXEC, e, e == EACCES ? "is it executable, and not on a noexec mount?" : NULL,
            "exec %s: cannot execute it", cmd);
    }
    const char *path = env_get("PATH");
    if (!path)
        path = DEFAULT_PATH;
    size_t cl = strlen(cmd);
    int denied = 0, other = 0;
    char buf[PATH_MAX], interp[PATH_MAX] = "";
    for (const char *p = path;;) {
        const char *c = strchr(p, ':');
        size_t dl = c ? (size_t)(c - p) : strlen(p);
        if (dl + cl + 2 <= sizeof buf) {
            if (dl) {
                memcpy(buf, p, dl);
                buf[dl] = '/';
                memcpy(buf + dl + 1, cmd, cl + 1);
            } else {
                memcpy(buf, cmd, cl + 1); /* an empty entry is the working directory */
            }
            try_exec(buf);
            int e = errno;
            if (e == EACCES)
                denied = e;
            else if (e == ENOENT && !interp[0] && access(buf, F_OK) == 0)
                snprintf(interp, sizeof interp, "%s", buf);
            else if (e != ENOENT && e != ENOTDIR && e != ELOOP && e != ENAMETOOLONG && !other)
                other = e;
        }
        if (!c)
            break;
        p = c + 1;
    }
    if (interp[0])
        die(EXIT_NOT_FOUND, 0, "a missing ELF interpreter or #! program",
            "exec %s: %s exists but its interpreter is missing in the image", cmd, interp);
    if (other || denied)
        die(EXIT_CANNOT_EXEC, other ? other : denied,
            other ? NULL : "is it executable, and not on a noexec mount?", "exec %s: cannot execute it", cmd);
    die(EXIT_NOT_FOUND, 0, NULL, "exec %s: command not found in the image (PATH=%s)", cmd, path);
}

/* The process that execs the command under a waiter: own process group, terminal, signals. */
static void child_prepare(void)
{
    if (g_status_fd >= 0)
        close(g_status_fd);
    setpgid(0, 0);
    if (g_tty_fd >= 0)
        tcsetpgrp(g_tty_fd, getpid());
    sigprocmask(SIG_SETMASK, &g_oldmask, NULL);
}

__attribute__((noreturn)) static void op_exec(void)
{
    if (!g_pidns)
        do_exec();
    pid_t c = fork();
    if (c < 0)
        DIE(errno, NULL, "exec: fork");
    if (c == 0) {
        child_prepare();
        do_exec();
    }
    setpgid(c, c);
    init_loop(c);
}

/* ------------------------------------------------------------------ */
/* --join PID                                                          */
/* ------------------------------------------------------------------ */

/* The effective id on the "Uid:"/"Gid:" line of /proc/PID/status. */
static unsigned long status_id(const char *status, const char *key, const char *step)
{
    const char *p = strstr(status, key);
    if (!p)
        DIE(0, NULL, "%s: no %s line in /proc/PID/status", step, key);
    p += strlen(key);
    char *end;
    strtoul(p, &end, 10); /* real */
    return strtoul(end, NULL, 10); /* effective */
}

/* Translate an id seen from here into the target's user namespace via its map. */
static unsigned long map_inward(int pfd, const char *file, unsigned long id, const char *step)
{
    char *m = read_all(pfd, file, NULL);
    if (!m)
        DIE(errno, NULL, "%s: cannot read %s", step, file);
    for (char *line = m; *line;) {
        unsigned long in, out, count;
        if (sscanf(line, "%lu %lu %lu", &in, &out, &count) == 3 && id >= out && id - out < count) {
            free(m);
            return in + (id - out);
        }
        char *nl = strchr(line, '\n');
        if (!nl)
            break;
        line = nl + 1;
    }
    free(m);
    DIE(0, NULL, "%s: id %lu is not mapped in the sandbox (%s)", step, id, file);
}

static bool same_ns(int pfd, const char *ns)
{
    char self[64];
    struct stat a, b;
    snprintf(self, sizeof self, "/proc/self/%s", ns);
    if (fstatat(pfd, ns, &a, 0) < 0 || stat(self, &b) < 0)
        return false;
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int open_ns(int pfd, const char *ns, const char *step)
{
    int fd = openat(pfd, ns, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        DIE(errno, errno == EACCES ? "the sandbox belongs to another user?" : NULL, "%s: cannot open %s", step, ns);
    return fd;
}

__attribute__((noreturn)) static void do_join(const char *pidstr, char **cli_env, int ncli_env, bool fakeroot)
{
    char step[64];
    snprintf(step, sizeof step, "join %.40s", pidstr);
    parse_num(step, pidstr, 10, 0x7fffffff);
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/%s", pidstr);
    int pfd = open(proc, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (pfd < 0)
        DIE(errno == ENOENT ? 0 : errno, NULL, "%s: no such process (has the sandbox exited?)", step);
    struct stat st;
    if (fstatat(pfd, "ns/mnt", &st, 0) < 0) {
        if (errno == ENOENT || errno == ESRCH)
            DIE(0, NULL, "%s: no such process (has the sandbox exited?)", step);
        DIE(errno, errno == EACCES || errno == EPERM ? "the sandbox belongs to another user?" : NULL,
            "%s: cannot inspect the process", step);
    }
    if (same_ns(pfd, "ns/mnt"))
        DIE(0, "give the pid of a process inside a Gantry sandbox",
            "%s: process %s is not in a sandbox: it shares the launcher's mount namespace", step, pidstr);
    bool join_user = !same_ns(pfd, "ns/user"), join_pid = !same_ns(pfd, "ns/pid"),
         join_net = !same_ns(pfd, "ns/net");
    int userfd = join_user ? open_ns(pfd, "ns/user", step) : -1;
    int mntfd = open_ns(pfd, "ns/mnt", step);
    int pidfd = join_pid ? open_ns(pfd, "ns/pid", step) : -1;
    int netfd = join_net ? open_ns(pfd, "ns/net", step) : -1;
    int rootfd = openat(pfd, "root", O_PATH | O_DIRECTORY | O_CLOEXEC);
    int cwdfd = openat(pfd, "cwd", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0 || cwdfd < 0)
        DIE(errno, NULL, "%s: cannot open the sandbox's root or working directory", step);
    size_t elen;
    char *environ_buf = read_all(pfd, "environ", &elen);
    if (!environ_buf)
        DIE(errno, NULL, "%s: cannot read its environment", step);
    char *status = read_all(pfd, "status", NULL);
    if (!status)
        DIE(errno, NULL, "%s: cannot read its status", step);
    unsigned long uid = status_id(status, "\nUid:", step), gid = status_id(status, "\nGid:", step);
    if (join_user) {
        uid = map_inward(pfd, "uid_map", uid, step);
        gid = map_inward(pfd, "gid_map", gid, step);
    }
    /* Still alive?  (the ids and namespaces must belong to the same process) */
    if (kill((pid_t)atoi(pidstr), 0) < 0 && errno == ESRCH)
        DIE(0, NULL, "%s: no such process (has the sandbox exited?)", step);

    if (setgroups(0, NULL) < 0 && errno != EPERM)
        DIE(errno, NULL, "%s: setgroups", step);
    if (join_user && setns(userfd, CLONE_NEWUSER) < 0)
        DIE(errno, NULL, "%s: cannot enter its user namespace", step);
    if (setns(mntfd, CLONE_NEWNS) < 0)
        DIE(errno, NULL, "%s: cannot enter its mount namespace", step);
    if (join_net && setns(netfd, CLONE_NEWNET) < 0)
        DIE(errno, NULL, "%s: cannot enter its network namespace", step);
    if (join_pid && setns(pidfd, CLONE_NEWPID) < 0)
        DIE(errno, NULL, "%s: cannot enter its pid namespace", step);
    if (fchdir(rootfd) < 0 || chroot(".") < 0)
        DIE(errno, NULL, "%s: cannot enter its root directory", step);
    if (!g_cwd && fchdir(cwdfd) < 0)
        DIE(errno, NULL, "%s: cannot enter its working directory", step);
    if (setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) < 0)
        DIE(errno, NULL, "%s: setresgid(%lu)", step, gid);
    if (setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) < 0)
        DIE(errno, NULL, "%s: setresuid(%lu)", step, uid);
    op_nonewprivs();
    if (fakeroot)
        op_fakeroot();
    for (size_t i = 0; i < elen; i += strlen(environ_buf + i) + 1)
        if (strchr(environ_buf + i, '=') && environ_buf[i] != '=')
            env_put(environ_buf + i);
    for (int i = 0; i < ncli_env; i++)
        env_put(cli_env[i]);
    close(pfd);
    close(rootfd);
    close(cwdfd);
    if (!join_pid)
        do_exec();
    /* setns(CLONE_NEWPID) applies to children only */
    g_tty_fd = foreground_tty();
    sigset_t set;
    fwd_set(&set);
    sigprocmask(SIG_BLOCK, &set, &g_oldmask);
    pid_t c = fork();
    if (c < 0)
        DIE(errno, NULL, "%s: fork", step);
    if (c == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        child_prepare();
        do_exec();
    }
    setpgid(c, c);
    waiter(c);
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static const char USAGE[] =
    "usage: gantry-exec [--env KEY=VALUE]... [--cwd DIR] [--bind-parent PATH]... PLAN_FILE [--] [COMMAND [ARG...]]\n"
    "       gantry-exec [--env KEY=VALUE]... [--cwd DIR] [--fakeroot] --join PID [--] COMMAND [ARG...]\n";

static char *read_plan(const char *file, size_t *len)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        DIE(errno, NULL, "plan %s: cannot open it", file);
    struct stat st;
    if (fstat(fd, &st) < 0)
        DIE(errno, NULL, "plan %s: cannot stat it", file);
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 65536, n = 0;
    char *buf = xmalloc(cap + 1);
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            DIE(errno, NULL, "plan %s: cannot read it", file);
        }
        n += (size_t)r;
        if (r == 0 || (S_ISREG(st.st_mode) && n == (size_t)st.st_size))
            break;
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb)
                DIE(ENOMEM, NULL, "out of memory");
            buf = nb;
        }
    }
    close(fd);
    *len = n;
    return buf;
}

/*
 * --bind-parent PATH: the directory that contains PATH (lexically; a relative
 * PATH is taken from the launcher's working directory).  It must exist and
 * must not be the host's root.
 */
static char *bind_parent(const char *path)
{
    char step[PATH_MAX + 32];
    snprintf(step, sizeof step, "--bind-parent %s", path);
    if (!path[0])
        DIE(0, NULL, "--bind-parent needs a PATH");
    char *dir;
    if (path[0] == '/') {
        dir = concat(path, "");
    } else {
        if (!g_start_cwd)
            DIE(g_start_cwd_err, NULL, "%s: the launcher's working directory is unknown", step);
        char *c = concat(g_start_cwd, "/");
        dir = concat(c, path);
        free(c);
    }
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    while (n > 1 && dir[n - 1] != '/')
        n--;
    while (n > 1 && dir[n - 1] == '/')
        n--;
    dir[n] = 0;
    struct stat st, root;
    if (stat(dir, &st) < 0)
        DIE(errno == ENOENT ? 0 : errno, NULL, "%s: the directory %s %s", step, dir,
            errno == ENOENT ? "does not exist" : "cannot be accessed");
    if (!S_ISDIR(st.st_mode))
        DIE(ENOTDIR, NULL, "%s: %s", step, dir);
    if (stat("/", &root) == 0 && st.st_dev == root.st_dev && st.st_ino == root.st_ino)
        DIE(0, NULL, "%s: refusing to bind the root directory", step);
    return dir;
}

int main(int argc, char **argv)
{
    const char *legacy = getenv("GANTRY_EXEC_LEGACY");
    if (legacy && strcmp(legacy, "1") == 0)
        g_no_newmount = g_no_openat2 = true;
    g_start_cwd = getcwd(NULL, 0);
    g_start_cwd_err = errno;

    char **cli_env = xmalloc((size_t)argc * sizeof *cli_env);
    char **parents = xmalloc((size_t)argc * sizeof *parents);
    int ncli_env = 0, nparents = 0;
    const char *join = NULL, *cli_cwd = NULL;
    bool fakeroot = false;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--env") == 0 || strncmp(a, "--env=", 6) == 0) {
            char *kv = a[5] == '=' ? argv[i] + 6 : (i + 1 < argc ? argv[++i] : NULL);
            if (!kv)
                DIE(0, NULL, "--env needs KEY=VALUE");
            char *eq = strchr(kv, '=');
            if (!eq)
                DIE(0, NULL, "--env %s: not KEY=VALUE", kv);
            check_key("--env", kv, (size_t)(eq - kv));
            cli_env[ncli_env++] = kv;
        } else if (strcmp(a, "--cwd") == 0 || strcmp(a, "--join") == 0) {
            if (i + 1 >= argc)
                DIE(0, NULL, "%s needs an argument", a);
            if (a[2] == 'c')
                cli_cwd = argv[++i];
            else
                join = argv[++i];
        } else if (strcmp(a, "--bind-parent") == 0 || strncmp(a, "--bind-parent=", 14) == 0) {
            const char *v = a[13] == '=' ? a + 14 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v)
                DIE(0, NULL, "--bind-parent needs a PATH");
            parents[nparents++] = bind_parent(v);
        } else if (strcmp(a, "--fakeroot") == 0) {
            fakeroot = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(USAGE, stdout);
            return 0;
        } else if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (a[0] == '-' && a[1]) {
            DIE(0, NULL, "unknown option %s", a);
        } else {
            break;
        }
    }
    g_umask = umask(0);
    g_cwd = cli_cwd;

    if (join) {
        if (nparents)
            DIE(0, NULL, "--bind-parent goes with a plan, not --join");
        if (i < argc && strcmp(argv[i], "--") == 0)
            i++;
        if (i >= argc)
            DIE(0, NULL, "--join needs a COMMAND");
        g_argv = argv + i;
        do_join(join, cli_env, ncli_env, fakeroot);
    }
    if (fakeroot)
        DIE(0, "use the fakeroot op in the plan", "--fakeroot goes with --join");
    if (i >= argc) {
        fputs(USAGE, stderr);
        _exit(EXIT_LAUNCHER);
    }
    const char *file = argv[i++];
    if (i < argc && strcmp(argv[i], "--") == 0)
        i++;
    if (i < argc)
        g_argv = argv + i;

    size_t len;
    char *buf = read_plan(file, &len);
    struct plan plan;
    char err[512];
    if (plan_parse(buf, len, &plan, err, sizeof err) < 0)
        DIE(0, NULL, "plan %s: %s", file, err);
    for (int k = 0; k < plan.nops - 1; k++)
        if (plan.ops[k].code == OP_EXEC)
            DIE(0, NULL, "plan %s: line %d: exec must be the last op", file, plan.ops[k].line);
    if (plan.nops == 0 || plan.ops[plan.nops - 1].code != OP_EXEC)
        DIE(0, NULL, "plan %s: no exec op (it must be the last op)", file);

    for (int k = 0; k < plan.nops; k++) {
        struct plan_op *op = &plan.ops[k];
        char **a = op->argv;
        switch (op->code) {
        case OP_CHECK: op_check(a[0], op->argc > 1 ? a[1] : NULL); break;
        case OP_USERNS: op_userns(a[0], a[1]); break;
        case OP_MOUNTNS: op_mountns(); break;
        case OP_NETNS: op_netns(); break;
        case OP_PIDNS: op_pidns(); break;
        case OP_TMPFS: op_tmpfs(a[0], a[1]); break;
        case OP_MKDIR: op_mkdir(a[0], a[1]); break;
        case OP_OVERLAY: op_overlay(op->argc, a); break;
        case OP_ROOTFS: op_rootfs(a[0]); break;
        case OP_BIND: op_bind(expand("bind", a[0], true), expand("bind", a[1], true), a[2]); break;
        case OP_HOOK: op_hook(expand("hook", a[0], true)); break;
        case OP_PROC: op_proc(a[0]); break;
        case OP_SYS: op_sys(a[0]); break;
        case OP_DEV: op_dev(a[0]); break;
        case OP_TMPFS_IN: op_tmpfs_in(a[0], a[1]); break;
        case OP_SYMLINK: op_symlink(a[0], a[1]); break;
        case OP_LDCONFIG: op_ldconfig(op->argc, a, false); break;
        case OP_LDCONFIG_RW: op_ldconfig(op->argc, a, true); break;
        case OP_PIVOT:
            for (int p = 0; p < nparents; p++)
                op_bind(parents[p], parents[p], "rbind,create=dir");
            op_pivot();
            break;
        case OP_REMOUNT_RO: op_remount_ro(); break;
        case OP_ENV: op_env(a[0], a[1]); break;
        case OP_ENV_PASS: op_env_pass(a[0]); break;
        case OP_CWD: if (!cli_cwd) g_cwd = expand("cwd", a[0], true); break;
        case OP_NONEWPRIVS: op_nonewprivs(); break;
        case OP_FAKEROOT: op_fakeroot(); break;
        case OP_ARGV: if (i >= argc) g_argv = a; break;
        case OP_EXEC:
            for (int e = 0; e < ncli_env; e++)
                env_put(cli_env[e]);
            op_exec();
        }
    }
    DIE(0, NULL, "plan %s: no exec op", file);
}
