/*
 * gantry-untar: extract one OCI/Docker layer tar into an overlayfs-style
 * layer directory, or flatten such a layer directory onto a merged tree.
 *
 *   gantry-untar [--userns] DEST_DIR                     (tar on stdin)
 *   gantry-untar [--userns] --apply SRC_LAYER_DIR DEST_DIR
 *
 * Everything is done relative to a directory fd for DEST; parent
 * directories are resolved with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)
 * (or a component-by-component O_NOFOLLOW walk when openat2 is missing), so
 * nothing is ever written outside DEST or through a symlink.
 *
 * On success one JSON line goes to stdout; on failure one line
 * "gantry-untar: [ENTRY: ]message" goes to stderr and the exit status is 1
 * (2 for usage errors).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <linux/openat2.h>

#include "sha256.h"

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

#define IOBUF_SIZE (1u << 20)
#define BLOCK 512
#define MAX_PAX_HEADER (64u << 20)
#define MAX_LONGNAME (1u << 20)
#define OPAQUE_XATTR "user.overlay.opaque"

/* ------------------------------------------------------------------ */
/* errors                                                              */
/* ------------------------------------------------------------------ */

/* Copy of s with control characters written as \xNN (messages stay on one line). */
static char *esc(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(4 * n + 1);
    if (!out)
        return (char *)s;
    char *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            o += sprintf(o, "\\x%02x", *p);
        } else {
            *o++ = (char)*p;
        }
    }
    *o = 0;
    return out;
}

__attribute__((noreturn, format(printf, 3, 4)))
static void die(const char *entry, int err, const char *fmt, ...)
{
    char msg[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (entry)
        fprintf(stderr, "gantry-untar: %s: %s", esc(entry), msg);
    else
        fprintf(stderr, "gantry-untar: %s", msg);
    if (err)
        fprintf(stderr, ": %s", strerror(err));
    fputc('\n', stderr);
    exit(1);
}

__attribute__((noreturn))
static void usage(int status)
{
    fputs("usage: gantry-untar [--userns] DEST_DIR            (layer tar on stdin)\n"
          "       gantry-untar [--userns] --apply SRC_LAYER_DIR DEST_DIR\n",
          status ? stderr : stdout);
    exit(status);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die(NULL, 0, "out of memory");
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        die(NULL, 0, "out of memory");
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);
    if (!p)
        die(NULL, 0, "out of memory");
    return p;
}

static char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

/* ------------------------------------------------------------------ */
/* counters                                                            */
/* ------------------------------------------------------------------ */

static uint64_t n_files, n_dirs, n_symlinks, n_hardlinks, n_whiteouts, n_opaque, n_skipped, n_size;
static uint64_t n_removed;

/* ------------------------------------------------------------------ */
/* implicit directories                                                */
/* ------------------------------------------------------------------ */

/*
 * Directories this layer creates only because an entry lies beneath them (the tar has no entry
 * of their own). If a lower layer has a symlink at such a path, overlayfs would hide the symlink
 * while Docker's own unpacker would write through it: the caller refuses such an image. They are
 * reported in the JSON result (at most MAX_IMPLICIT), with the entry that caused each.
 */
#define MAX_IMPLICIT 1000
static struct { char *path; char *entry; } implicit[MAX_IMPLICIT];
static size_t n_implicit;
static bool implicit_truncated;

static void note_implicit(const char *path, size_t len, const char *entry)
{
    if (n_implicit == MAX_IMPLICIT) {
        implicit_truncated = true;
        return;
    }
    implicit[n_implicit].path = xstrndup(path, len);
    implicit[n_implicit].entry = xstrdup(entry ? entry : "");
    n_implicit++;
}

/* A JSON string (quotes included); bytes >= 0x80 pass through (names are UTF-8 in practice). */
static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* ------------------------------------------------------------------ */
/* beneath-DEST path resolution                                        */
/* ------------------------------------------------------------------ */

static int root_fd = -1;        /* DEST, O_RDONLY|O_DIRECTORY */
static bool have_openat2 = true;

/*
 * Open directory PATH (relative, normalised, non-empty) beneath root_fd,
 * never following a symlink in any component.  FLAGS are the open flags for
 * the last component (O_PATH or O_RDONLY; O_DIRECTORY is implied).  With
 * CREATE, missing components are created with mode 0755.
 * On failure: if ENTRY is set, die with a message naming it; otherwise
 * return -1 with errno ENOENT / ENOTDIR / ELOOP (a symlink) / other.
 */
static int walk_beneath(const char *entry, const char *path, int flags, bool create)
{
    char *copy = xstrdup(path);
    char *s = copy;
    int cur = root_fd;
    for (;;) {
        char *slash = strchr(s, '/');
        bool last = slash == NULL;
        if (slash)
            *slash = 0;
        int of = last ? (flags | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                      : (O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int fd = openat(cur, s, of);
        if (fd < 0 && errno == ENOENT && create) {
            if (mkdirat(cur, s, 0755) < 0 && errno != EEXIST) {
                int err = errno;
                if (entry)
                    die(entry, err, "cannot create directory \"%s\"", esc(copy));
                if (cur != root_fd)
                    close(cur);
                free(copy);
                errno = err;
                return -1;
            }
            else
                note_implicit(copy, strlen(copy), entry);
            fd = openat(cur, s, of);
        }
        if (fd < 0) {
            int err = errno;
            struct stat st;
            if ((err == ENOTDIR || err == ELOOP) && fstatat(cur, s, &st, AT_SYMLINK_NOFOLLOW) == 0)
                err = S_ISLNK(st.st_mode) ? ELOOP : S_ISDIR(st.st_mode) ? err : ENOTDIR;
            if (entry) {
                if (err == ELOOP)
                    die(entry, 0, "parent directory \"%s\" is a symlink (refusing to write through it)", esc(copy));
                if (err == ENOTDIR)
                    die(entry, 0, "parent \"%s\" is not a directory", esc(copy));
                die(entry, err, "cannot open directory \"%s\"", esc(copy));
            }
            if (cur != root_fd)
                close(cur);
            free(copy);
            errno = err;
            return -1;
        }
        if (cur != root_fd)
            close(cur);
        cur = fd;
        if (last)
            break;
        *slash = '/';
        s = slash + 1;
    }
    free(copy);
    return cur;
}

static int open_beneath(const char *entry, const char *path, int flags, bool create)
{
    if (have_openat2) {
        for (int tries = 0; tries < 16; tries++) {
            struct open_how how;
            memset(&how, 0, sizeof how);
            how.flags = (uint64_t)(flags | O_DIRECTORY | O_CLOEXEC);
            how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
            long fd = syscall(SYS_openat2, root_fd, path, &how, sizeof how);
            if (fd >= 0)
                return (int)fd;
            if (errno == EAGAIN || errno == EINTR)
                continue;
            if (errno == ENOSYS || errno == EPERM || errno == EINVAL || errno == E2BIG)
                have_openat2 = false;   /* old kernel or seccomp: walk from now on */
            break;
        }
        /* Any failure: the walk creates missing parents and gives the precise error. */
    }
    return walk_beneath(entry, path, flags, create);
}

/* Cache of the last parent directory (O_PATH fd). */
static char *pc_path;
static size_t pc_len, pc_cap;
static int pc_fd = -1;

static void pc_drop(void)
{
    if (pc_fd >= 0)
        close(pc_fd);
    pc_fd = -1;
    pc_len = 0;
}

/* fd of the parent directory (first PLEN bytes of PATH), created if missing. */
static int parent_fd(const char *entry, const char *path, size_t plen)
{
    if (plen == 0)
        return root_fd;
    if (pc_fd >= 0 && pc_len == plen && memcmp(pc_path, path, plen) == 0)
        return pc_fd;
    pc_drop();
    if (pc_cap < plen + 1) {
        pc_cap = plen + 256;
        pc_path = xrealloc(pc_path, pc_cap);
    }
    memcpy(pc_path, path, plen);
    pc_path[plen] = 0;
    int fd = open_beneath(entry, pc_path, O_PATH, true);
    pc_fd = fd;
    pc_len = plen;
    return fd;
}

/* ------------------------------------------------------------------ */
/* directory metadata applied at the end, deepest first                */
/* ------------------------------------------------------------------ */

struct dirrec {
    char *path;
    uint32_t depth;
    uint32_t seq;
    mode_t mode;
    bool dead;
    struct timespec mtime;
};

static struct dirrec *recs;
static size_t nrecs, caprecs;

static void add_dirrec(const char *path, mode_t mode, struct timespec mtime)
{
    if (nrecs == caprecs) {
        caprecs = caprecs ? caprecs * 2 : 256;
        recs = xrealloc(recs, caprecs * sizeof *recs);
    }
    uint32_t depth = 1;
    for (const char *p = path; *p; p++)
        depth += *p == '/';
    recs[nrecs].path = xstrdup(path);
    recs[nrecs].depth = depth;
    recs[nrecs].seq = (uint32_t)nrecs;
    recs[nrecs].mode = mode;
    recs[nrecs].dead = false;
    recs[nrecs].mtime = mtime;
    nrecs++;
}

static bool is_same_or_below(const char *p, size_t plen, const char *top, size_t toplen)
{
    return plen >= toplen && memcmp(p, top, toplen) == 0 && (plen == toplen || p[toplen] == '/');
}

/* A directory at PATH was removed: forget everything recorded at or below it. */
static void invalidate_below(const char *path)
{
    size_t len = strlen(path);
    if (pc_fd >= 0 && is_same_or_below(pc_path, pc_len, path, len))
        pc_drop();
    for (size_t i = 0; i < nrecs; i++)
        if (!recs[i].dead && is_same_or_below(recs[i].path, strlen(recs[i].path), path, len))
            recs[i].dead = true;
}

static int cmp_dirrec(const void *a, const void *b)
{
    const struct dirrec *x = a, *y = b;
    if (x->depth != y->depth)
        return x->depth > y->depth ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq ? 1 : 0;
}

static void apply_dirrecs(void)
{
    pc_drop();
    qsort(recs, nrecs, sizeof *recs, cmp_dirrec);
    for (size_t i = 0; i < nrecs; i++) {
        struct dirrec *r = &recs[i];
        if (r->dead)
            continue;
        int fd = open_beneath(NULL, r->path, O_RDONLY, false);
        if (fd < 0) {
            if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
                continue;       /* replaced by a later entry */
            die(r->path, errno, "cannot open directory to set its mode and mtime");
        }
        if (fchmod(fd, r->mode) < 0)
            die(r->path, errno, "cannot set directory mode");
        struct timespec ts[2] = {r->mtime, r->mtime};
        if (futimens(fd, ts) < 0)
            die(r->path, errno, "cannot set directory mtime");
        close(fd);
    }
    for (size_t i = 0; i < nrecs; i++)
        free(recs[i].path);
    free(recs);
    recs = NULL;
    nrecs = caprecs = 0;
}

/* ------------------------------------------------------------------ */
/* removal                                                             */
/* ------------------------------------------------------------------ */

static void rmtree_at(const char *entry, int pfd, const char *name);

/* Remove everything inside the directory open as FD (not the directory itself).
 * Returns the number of entries directly inside it that were removed. */
static uint64_t empty_dir(const char *entry, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        die(entry, errno, "cannot stat directory");
    if ((st.st_mode & 0700) != 0700 && fchmod(fd, (st.st_mode & 07777) | 0700) < 0)
        die(entry, errno, "cannot make directory writable");
    int rfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rfd < 0)
        die(entry, errno, "cannot read directory");
    DIR *d = fdopendir(rfd);
    if (!d)
        die(entry, errno, "cannot read directory");
    uint64_t removed = 0;
    for (;;) {
        bool any = false;
        rewinddir(d);
        struct dirent *de;
        errno = 0;
        while ((de = readdir(d)) != NULL) {
            const char *n = de->d_name;
            if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0)))
                continue;
            any = true;
            if (de->d_type == DT_DIR) {
                rmtree_at(entry, fd, n);
            } else if (unlinkat(fd, n, 0) < 0) {
                int err = errno;
                struct stat s2;
                if ((err == EISDIR || err == EPERM) && fstatat(fd, n, &s2, AT_SYMLINK_NOFOLLOW) == 0 &&
                    S_ISDIR(s2.st_mode))
                    rmtree_at(entry, fd, n);
                else if (err != ENOENT)
                    die(entry, err, "cannot remove \"%s\"", esc(n));
            }
            removed++;
            errno = 0;
        }
        if (errno)
            die(entry, errno, "cannot read directory");
        if (!any)
            break;
    }
    closedir(d);
    return removed;
}

static void rmtree_at(const char *entry, int pfd, const char *name)
{
    int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) {
        /* unreadable directory of ours (e.g. mode 0000): make it usable */
        struct stat st;
        if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
            fchmodat(pfd, name, (st.st_mode & 07777) | 0700, 0);
        fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0)
        die(entry, errno, "cannot open directory \"%s\" to remove it", esc(name));
    empty_dir(entry, fd);
    close(fd);
    if (unlinkat(pfd, name, AT_REMOVEDIR) < 0)
        die(entry, errno, "cannot remove directory \"%s\"", esc(name));
}

/*
 * Remove whatever exists at NAME in directory PFD (recursively for a
 * directory).  PATH is its full path below DEST (for the caches).
 * Returns true when something was removed.
 */
static bool remove_at(const char *entry, int pfd, const char *name, const char *path)
{
    if (unlinkat(pfd, name, 0) == 0)
        return true;
    int err = errno;
    if (err == ENOENT)
        return false;
    if (err == EISDIR || err == EPERM) {
        struct stat st;
        if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
            invalidate_below(path);
            rmtree_at(entry, pfd, name);
            return true;
        }
    }
    die(entry, err, "cannot remove existing \"%s\"", esc(path));
}

/* ------------------------------------------------------------------ */
/* input                                                               */
/* ------------------------------------------------------------------ */

/*
 * The input is read into NSLOT slots of SLOT_SIZE bytes used in turn.  File
 * data is written straight out of the slot.  A slot's bytes are hashed by a
 * helper thread once the reader moves on to the next slot, so SHA-256 runs in
 * parallel with the file-system work; a slot is reused only after it has been
 * hashed.  Without the thread (pthread_create failed) hashing is inline.
 */
#define NSLOT 4
#define SLOT_SIZE (1u << 20)
#define MIN_READ (64u << 10)

static struct {
    unsigned char *slot[NSLOT];
    int cur;
    unsigned char *buf;     /* == slot[cur] */
    size_t pos, len;        /* unread bytes are buf[pos..len) */
    size_t hstart;          /* buf[hstart..len) not yet handed to the hasher */
    uint64_t total;
    sha256_ctx sha;
} in;

static struct {
    pthread_t th;
    bool running, quit;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    const unsigned char *qp[NSLOT];
    size_t qn[NSLOT];
    int qslot[NSLOT];
    unsigned qhead, qcount;
    bool busy[NSLOT];
} hz = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv_work = PTHREAD_COND_INITIALIZER, .cv_done = PTHREAD_COND_INITIALIZER};

static void *hash_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&hz.mu);
    for (;;) {
        while (hz.qcount == 0 && !hz.quit)
            pthread_cond_wait(&hz.cv_work, &hz.mu);
        if (hz.qcount == 0)
            break;
        unsigned h = hz.qhead;
        pthread_mutex_unlock(&hz.mu);
        sha256_update(&in.sha, hz.qp[h], hz.qn[h]);
        pthread_mutex_lock(&hz.mu);
        hz.busy[hz.qslot[h]] = false;
        hz.qhead = (hz.qhead + 1) % NSLOT;
        hz.qcount--;
        pthread_cond_broadcast(&hz.cv_done);
    }
    pthread_mutex_unlock(&hz.mu);
    return NULL;
}

static void input_init(void)
{
    for (int i = 0; i < NSLOT; i++)
        if (posix_memalign((void **)&in.slot[i], 4096, SLOT_SIZE) != 0)
            die(NULL, 0, "out of memory");
    in.cur = 0;
    in.buf = in.slot[0];
    sha256_init(&in.sha);
    hz.running = pthread_create(&hz.th, NULL, hash_main, NULL) == 0;
}

/* Hand buf[hstart..len) of the current slot to the hasher. */
static void hash_submit(void)
{
    size_t n = in.len - in.hstart;
    if (n == 0)
        return;
    if (!hz.running) {
        sha256_update(&in.sha, in.buf + in.hstart, n);
    } else {
        pthread_mutex_lock(&hz.mu);
        while (hz.qcount == NSLOT)
            pthread_cond_wait(&hz.cv_done, &hz.mu);
        unsigned t = (hz.qhead + hz.qcount) % NSLOT;
        hz.qp[t] = in.buf + in.hstart;
        hz.qn[t] = n;
        hz.qslot[t] = in.cur;
        hz.busy[in.cur] = true;
        hz.qcount++;
        pthread_cond_signal(&hz.cv_work);
        pthread_mutex_unlock(&hz.mu);
    }
    in.hstart = in.len;
}

/* Finish hashing; the digest is then in in.sha. */
static void input_finish(void)
{
    hash_submit();
    if (hz.running) {
        pthread_mutex_lock(&hz.mu);
        hz.quit = true;
        pthread_cond_signal(&hz.cv_work);
        pthread_mutex_unlock(&hz.mu);
        pthread_join(hz.th, NULL);
        hz.running = false;
    }
    for (int i = 0; i < NSLOT; i++)
        free(in.slot[i]);
}

/* Move to the next slot, carrying the last KEEP unread bytes over. */
static void switch_slot(size_t keep)
{
    hash_submit();
    int next = (in.cur + 1) % NSLOT;
    if (hz.running) {
        pthread_mutex_lock(&hz.mu);
        while (hz.busy[next])
            pthread_cond_wait(&hz.cv_done, &hz.mu);
        pthread_mutex_unlock(&hz.mu);
    }
    memcpy(in.slot[next], in.buf + in.len - keep, keep);
    in.cur = next;
    in.buf = in.slot[next];
    in.pos = 0;
    in.len = keep;
    in.hstart = keep;   /* already hashed as part of the previous slot */
}

/* Read more input after in.len (there must be room); returns the number of
 * bytes read, 0 at EOF. */
static size_t rd_fill(void)
{
    for (;;) {
        ssize_t n = read(0, in.buf + in.len, SLOT_SIZE - in.len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die(NULL, errno, "cannot read the input");
        }
        in.len += (size_t)n;
        in.total += (uint64_t)n;
        return (size_t)n;
    }
}

/* Bytes available now, reading more if none are (0 only at EOF). */
static size_t rd_avail(void)
{
    if (in.pos == in.len) {
        if (SLOT_SIZE - in.len < MIN_READ)
            switch_slot(0);
        rd_fill();
    }
    return in.len - in.pos;
}

/* Make N (<= BLOCK) contiguous bytes available; false at EOF. */
static bool rd_ensure(size_t n)
{
    if (in.len - in.pos >= n)
        return true;
    if (in.pos + n > SLOT_SIZE || SLOT_SIZE - in.len < MIN_READ)
        switch_slot(in.len - in.pos);
    while (in.len - in.pos < n)
        if (rd_fill() == 0)
            return false;
    return true;
}

static bool rd_skip(uint64_t n)
{
    while (n) {
        size_t a = rd_avail();
        if (a == 0)
            return false;
        size_t k = a < n ? a : (size_t)n;
        in.pos += k;
        n -= k;
    }
    return true;
}

static uint64_t padded(uint64_t n)
{
    return (n + (BLOCK - 1)) & ~(uint64_t)(BLOCK - 1);
}

/* Archive offset of the next unread byte. */
static uint64_t rd_offset(void)
{
    return in.total - (in.len - in.pos);
}

__attribute__((noreturn))
static void die_eof(const char *entry)
{
    die(NULL, 0, "unexpected end of input inside %s", esc(entry));
}

/* Read a SIZE-byte member body (plus padding) into a NUL-terminated buffer. */
static char *read_blob(const char *what, uint64_t size, uint64_t limit)
{
    if (size > limit)
        die(NULL, 0, "%s header too large (%" PRIu64 " bytes)", what, size);
    char *b = xmalloc((size_t)size + 1);
    size_t got = 0;
    while (got < size) {
        size_t a = rd_avail();
        if (a == 0)
            die(NULL, 0, "unexpected end of input inside a %s header", what);
        size_t k = a < size - got ? a : (size_t)(size - got);
        memcpy(b + got, in.buf + in.pos, k);
        in.pos += k;
        got += k;
    }
    b[size] = 0;
    if (!rd_skip(padded(size) - size))
        die(NULL, 0, "unexpected end of input inside a %s header", what);
    return b;
}

/* ------------------------------------------------------------------ */
/* tar header parsing                                                  */
/* ------------------------------------------------------------------ */

static bool parse_num(const unsigned char *f, size_t n, int64_t *out)
{
    if (f[0] & 0x80) {
        /* base-256 (GNU / star), two's complement */
        unsigned char inv = (f[0] & 0x40) ? 0xff : 0;
        uint64_t x = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = f[i] ^ inv;
            if (i == 0)
                c &= 0x7f;
            if (x >> 56)
                return false;
            x = (x << 8) | c;
        }
        if (x >> 63)
            return false;
        *out = inv ? ~(int64_t)x : (int64_t)x;
        return true;
    }
    size_t i = 0;
    while (i < n && (f[i] == ' ' || f[i] == 0))
        i++;
    uint64_t v = 0;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
        if (v >> 60)
            return false;
        v = v * 8 + (uint64_t)(f[i] - '0');
    }
    for (; i < n; i++)
        if (f[i] != ' ' && f[i] != 0)
            return false;
    *out = (int64_t)v;
    return true;
}

static bool checksum_ok(const unsigned char *h)
{
    int64_t want;
    if (!parse_num(h + 148, 8, &want))
        return false;
    int64_t u = 0, s = 0;
    for (int i = 0; i < BLOCK; i++) {
        unsigned char c = (i >= 148 && i < 156) ? ' ' : h[i];
        u += c;
        s += (signed char)c;
    }
    return want == u || want == s;
}

static bool is_zero_block(const unsigned char *h)
{
    static const unsigned char zero[BLOCK];
    return memcmp(h, zero, BLOCK) == 0;
}

/* Pending extended-header values for the next entry. */
static struct {
    char *path, *link;
    bool has_size, has_mtime, sparse;
    uint64_t size;
    struct timespec mtime;
} pax;
static char *gnu_name, *gnu_link;

static void pending_clear(void)
{
    free(pax.path);
    free(pax.link);
    memset(&pax, 0, sizeof pax);
    free(gnu_name);
    free(gnu_link);
    gnu_name = gnu_link = NULL;
}

static bool key_is(const char *k, size_t klen, const char *want)
{
    return strlen(want) == klen && memcmp(k, want, klen) == 0;
}

static bool parse_dec(const char *s, size_t n, uint64_t *out)
{
    if (n == 0)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

static bool parse_pax_time(const char *s, size_t n, struct timespec *ts)
{
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    size_t start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    uint64_t sec;
    if (!parse_dec(s + start, i - start, &sec) || sec > (uint64_t)INT64_MAX / 2)
        return false;
    long nsec = 0;
    if (i < n && s[i] == '.') {
        i++;
        int digits = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (digits < 9) {
                nsec = nsec * 10 + (s[i] - '0');
                digits++;
            }
            i++;
        }
        while (digits++ < 9)
            nsec *= 10;
    }
    if (i != n)
        return false;
    int64_t ssec = (int64_t)sec;
    if (neg) {
        ssec = -ssec;
        if (nsec) {
            ssec -= 1;
            nsec = 1000000000L - nsec;
        }
    }
    ts->tv_sec = (time_t)ssec;
    ts->tv_nsec = nsec;
    return true;
}

static void parse_pax(char *buf, size_t n)
{
    size_t off = 0;
    while (off < n) {
        if (buf[off] == 0)
            break;      /* tolerate NUL padding */
        size_t i = off;
        uint64_t len = 0;
        while (i < n && buf[i] >= '0' && buf[i] <= '9') {
            len = len * 10 + (uint64_t)(buf[i] - '0');
            if (len > n)
                die(NULL, 0, "malformed PAX extended header");
            i++;
        }
        if (i == off || i >= n || buf[i] != ' ' || len == 0 || off + len > n || buf[off + len - 1] != '\n')
            die(NULL, 0, "malformed PAX extended header");
        char *kv = buf + i + 1;
        char *end = buf + off + len - 1;
        char *eq = kv < end ? memchr(kv, '=', (size_t)(end - kv)) : NULL;
        if (!eq)
            die(NULL, 0, "malformed PAX extended header");
        size_t klen = (size_t)(eq - kv);
        const char *val = eq + 1;
        size_t vlen = (size_t)(end - val);
        if (key_is(kv, klen, "path")) {
            free(pax.path);
            pax.path = vlen ? xstrndup(val, vlen) : NULL;
        } else if (key_is(kv, klen, "linkpath")) {
            free(pax.link);
            pax.link = vlen ? xstrndup(val, vlen) : NULL;
        } else if (key_is(kv, klen, "size")) {
            pax.has_size = vlen != 0;
            if (vlen && !parse_dec(val, vlen, &pax.size))
                die(NULL, 0, "malformed PAX size \"%s\"", esc(xstrndup(val, vlen)));
        } else if (key_is(kv, klen, "mtime")) {
            pax.has_mtime = vlen != 0;
            if (vlen && !parse_pax_time(val, vlen, &pax.mtime))
                die(NULL, 0, "malformed PAX mtime \"%s\"", esc(xstrndup(val, vlen)));
        } else if (klen > 11 && memcmp(kv, "GNU.sparse.", 11) == 0) {
            pax.sparse = true;
        }
        off += len;
    }
}

/*
 * Normalise an archive name: no leading "/" (-1), no ".." component (-2);
 * empty and "." components are dropped.  *out gets the result ("" = root).
 */
static int normalize(const char *name, char **out)
{
    if (name[0] == '/') {
        /* "/" (or "/./") names the layer root, which some tools (umoci) write: allow only that. */
        if (name[strspn(name, "/.")] != 0 || strstr(name, "..") != NULL)
            return -1;
        *out = xstrdup("");
        return 0;
    }
    size_t n = strlen(name);
    char *o = xmalloc(n + 1);
    size_t olen = 0;
    const char *p = name;
    while (*p) {
        const char *q = strchr(p, '/');
        size_t clen = q ? (size_t)(q - p) : strlen(p);
        if (clen == 0 || (clen == 1 && p[0] == '.')) {
            /* skip */
        } else if (clen == 2 && p[0] == '.' && p[1] == '.') {
            free(o);
            return -2;
        } else {
            if (olen)
                o[olen++] = '/';
            memcpy(o + olen, p, clen);
            olen += clen;
        }
        p += clen;
        if (*p == '/')
            p++;
    }
    o[olen] = 0;
    *out = o;
    return 0;
}

static size_t parent_len(const char *path, const char **base)
{
    const char *s = strrchr(path, '/');
    if (!s) {
        *base = path;
        return 0;
    }
    *base = s + 1;
    return (size_t)(s - path);
}

/* ------------------------------------------------------------------ */
/* mode 1: extract                                                     */
/* ------------------------------------------------------------------ */

static void write_all(const char *entry, int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die(entry, errno, "cannot write file");
        }
        p += w;
        n -= (size_t)w;
    }
}

struct entry {
    const char *name;   /* as in the archive, for messages */
    char *path;         /* normalised, non-empty */
    const char *link;
    uint64_t size;
    struct timespec mtime;
    mode_t mode;
};

/*
 * With umask 0 a new file gets exactly the mode passed to open(2), which saves
 * an fchmod per file -- unless DEST carries a default ACL (inherited by every
 * directory created below it), which would mask the mode: then fchmod.
 */
static bool need_fchmod = true;

static void x_regular(struct entry *e, int pfd, const char *base)
{
    mode_t cmode = need_fchmod ? 0600 : (e->mode & 01777);
    int fd = openat(pfd, base, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, cmode);
    if (fd < 0 && errno == EEXIST) {
        remove_at(e->name, pfd, base, e->path);
        fd = openat(pfd, base, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, cmode);
    }
    if (fd < 0)
        die(e->name, errno, "cannot create file");
    uint64_t left = e->size;
    while (left) {
        size_t a = rd_avail();
        if (a == 0)
            die_eof(e->name);
        size_t k = a < left ? a : (size_t)left;
        write_all(e->name, fd, in.buf + in.pos, k);
        in.pos += k;
        left -= k;
    }
    if (!rd_skip(padded(e->size) - e->size))
        die_eof(e->name);
    if (need_fchmod && fchmod(fd, e->mode & 01777) < 0)
        die(e->name, errno, "cannot set file mode");
    struct timespec ts[2] = {e->mtime, e->mtime};
    if (futimens(fd, ts) < 0)
        die(e->name, errno, "cannot set file mtime");
    if (close(fd) < 0)
        die(e->name, errno, "cannot write file");
    n_files++;
    n_size += e->size;
}

static void x_directory(struct entry *e, int pfd, const char *base)
{
    if (mkdirat(pfd, base, 0700) < 0) {
        if (errno != EEXIST)
            die(e->name, errno, "cannot create directory");
        struct stat st;
        if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
            die(e->name, errno, "cannot stat existing entry");
        if (S_ISDIR(st.st_mode)) {
            if ((st.st_mode & 0700) != 0700 && fchmodat(pfd, base, (st.st_mode & 07777) | 0700, 0) < 0)
                die(e->name, errno, "cannot make directory writable");
        } else {
            remove_at(e->name, pfd, base, e->path);
            if (mkdirat(pfd, base, 0700) < 0)
                die(e->name, errno, "cannot create directory");
        }
    }
    add_dirrec(e->path, e->mode & 01777, e->mtime);
    n_dirs++;
}

static void x_symlink(struct entry *e, int pfd, const char *base)
{
    if (e->link[0] == 0)
        die(e->name, 0, "symlink with an empty target");
    if (symlinkat(e->link, pfd, base) < 0) {
        if (errno != EEXIST)
            die(e->name, errno, "cannot create symlink");
        remove_at(e->name, pfd, base, e->path);
        if (symlinkat(e->link, pfd, base) < 0)
            die(e->name, errno, "cannot create symlink");
    }
    struct timespec ts[2] = {e->mtime, e->mtime};
    if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
        die(e->name, errno, "cannot set symlink mtime");
    n_symlinks++;
}

static void x_hardlink(struct entry *e, int pfd, const char *base)
{
    char *target;
    int r = normalize(e->link, &target);
    if (r == -1 || r == -2)
        die(e->name, 0, "hardlink target \"%s\" is outside the layer", esc(e->link));
    if (target[0] == 0)
        die(e->name, 0, "hardlink target outside the layer or missing: \"%s\"", esc(e->link));
    const char *tbase;
    size_t tplen = parent_len(target, &tbase);
    const char *bp;
    size_t plen = parent_len(e->path, &bp);
    int tpfd;
    bool own = false;
    if (tplen == 0) {
        tpfd = root_fd;
    } else if (tplen == plen && memcmp(target, e->path, plen) == 0) {
        tpfd = pfd;
    } else {
        char *tp = xstrndup(target, tplen);
        tpfd = open_beneath(NULL, tp, O_PATH, false);
        free(tp);
        if (tpfd < 0)
            die(e->name, 0, "hardlink target outside the layer or missing: \"%s\"", esc(e->link));
        own = true;
    }
    struct stat tst;
    if (fstatat(tpfd, tbase, &tst, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(tst.st_mode))
        die(e->name, 0, "hardlink target outside the layer or missing: \"%s\"", esc(e->link));
    if (linkat(tpfd, tbase, pfd, base, 0) < 0) {
        if (errno != EEXIST)
            die(e->name, errno, "cannot create hardlink to \"%s\"", esc(e->link));
        struct stat st;
        if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == tst.st_dev &&
            st.st_ino == tst.st_ino) {
            /* already the same file */
        } else {
            remove_at(e->name, pfd, base, e->path);
            if (linkat(tpfd, tbase, pfd, base, 0) < 0)
                die(e->name, errno, "cannot create hardlink to \"%s\"", esc(e->link));
        }
    }
    if (own)
        close(tpfd);
    free(target);
    n_hardlinks++;
}

static void x_whiteout(struct entry *e, int pfd, const char *base, size_t plen)
{
    if (strcmp(base, ".wh..wh..opq") == 0) {
        int fd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            die(e->name, errno, "cannot open directory to mark it opaque");
        if (fsetxattr(fd, OPAQUE_XATTR, "y", 1, 0) < 0)
            die(e->name, errno, "cannot set " OPAQUE_XATTR " on the directory");
        close(fd);
        n_opaque++;
        return;
    }
    const char *name = base + 4;
    if (strncmp(base, ".wh..wh.", 8) == 0 || name[0] == 0) {
        n_skipped++;
        return;
    }
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        die(e->name, 0, "invalid whiteout name");
    size_t nlen = strlen(name);
    char *wpath = xmalloc(plen + 1 + nlen + 1);
    if (plen) {
        memcpy(wpath, e->path, plen);
        wpath[plen] = '/';
        memcpy(wpath + plen + 1, name, nlen + 1);
    } else {
        memcpy(wpath, name, nlen + 1);
    }
    remove_at(e->name, pfd, name, wpath);
    if (mknodat(pfd, name, S_IFCHR | 0000, makedev(0, 0)) < 0) {
        if (errno == EPERM)
            die(e->name, 0, "creating overlay whiteout for %s needs a user namespace: run with --userns",
                esc(e->name));
        die(e->name, errno, "cannot create overlay whiteout");
    }
    free(wpath);
    n_whiteouts++;
}

static void check_empty_dest(const char *dest)
{
    int fd = openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d)
        die(NULL, errno, "cannot read destination directory \"%s\"", esc(dest));
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0)))
            continue;
        die(NULL, 0, "destination directory \"%s\" is not empty", esc(dest));
    }
    closedir(d);
}

static int run_extract(const char *dest)
{
    root_fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        die(NULL, errno, "cannot open destination directory \"%s\"", esc(dest));
    check_empty_dest(dest);
    if (fgetxattr(root_fd, "system.posix_acl_default", NULL, 0) < 0 && (errno == ENODATA || errno == ENOTSUP))
        need_fchmod = false;

    input_init();
    struct stat sst;
    if (fstat(0, &sst) == 0 && S_ISFIFO(sst.st_mode))
        (void)fcntl(0, F_SETPIPE_SZ, (int)SLOT_SIZE);   /* fewer, larger reads; best effort */

    unsigned char h[BLOCK];
    for (;;) {
        if (!rd_ensure(BLOCK)) {
            if (in.len == in.pos)
                die(NULL, 0, "unexpected end of input: missing end-of-archive marker");
            die(NULL, 0, "unexpected end of input inside a tar header");
        }
        uint64_t hoff = rd_offset();
        memcpy(h, in.buf + in.pos, BLOCK);
        in.pos += BLOCK;
        if (is_zero_block(h))
            break;      /* end of archive (like GNU tar, the block after it is not required) */
        if (!checksum_ok(h))
            die(NULL, 0, "bad tar header checksum at offset %" PRIu64, hoff);

        char type = (char)h[156];
        bool posix = memcmp(h + 257, "ustar\0", 6) == 0;
        int64_t hsize;
        if (!parse_num(h + 124, 12, &hsize) || hsize < 0)
            die(NULL, 0, "bad size field in tar header at offset %" PRIu64, hoff);

        switch (type) {
        case 'x': {
            char *b = read_blob("PAX", (uint64_t)hsize, MAX_PAX_HEADER);
            parse_pax(b, (size_t)hsize);
            free(b);
            continue;
        }
        case 'g':
            if (!rd_skip(padded((uint64_t)hsize)))
                die(NULL, 0, "unexpected end of input inside a PAX global header");
            continue;
        case 'L':
            free(gnu_name);
            gnu_name = read_blob("GNU long name", (uint64_t)hsize, MAX_LONGNAME);
            continue;
        case 'K':
            free(gnu_link);
            gnu_link = read_blob("GNU long link name", (uint64_t)hsize, MAX_LONGNAME);
            continue;
        default:
            break;
        }

        /* the entry's own name and link name */
        char namebuf[256 + 1 + 1];
        char linkbuf[100 + 1];
        const char *name;
        if (pax.path) {
            name = pax.path;
        } else if (gnu_name) {
            name = gnu_name;
        } else {
            size_t nl = strnlen((const char *)h, 100);
            size_t pl = posix ? strnlen((const char *)h + 345, 155) : 0;
            size_t o = 0;
            if (pl) {
                memcpy(namebuf, h + 345, pl);
                o = pl;
                namebuf[o++] = '/';
            }
            memcpy(namebuf + o, h, nl);
            namebuf[o + nl] = 0;
            name = namebuf;
        }
        const char *link;
        if (pax.link) {
            link = pax.link;
        } else if (gnu_link) {
            link = gnu_link;
        } else {
            size_t ll = strnlen((const char *)h + 157, 100);
            memcpy(linkbuf, h + 157, ll);
            linkbuf[ll] = 0;
            link = linkbuf;
        }
        struct entry e;
        e.name = name;
        e.link = link;
        e.size = pax.has_size ? pax.size : (uint64_t)hsize;
        if (pax.has_mtime) {
            e.mtime = pax.mtime;
        } else {
            int64_t mt;
            if (!parse_num(h + 136, 12, &mt))
                die(name, 0, "bad mtime field");
            e.mtime.tv_sec = (time_t)mt;
            e.mtime.tv_nsec = 0;
        }
        int64_t mode;
        if (!parse_num(h + 100, 8, &mode))
            die(name, 0, "bad mode field");
        e.mode = (mode_t)mode & 07777;

        bool regular = type == '0' || type == '\0' || type == '7';
        size_t nlen = strlen(name);
        if (regular && nlen && name[nlen - 1] == '/')
            type = '5';         /* old archives: a "file" whose name ends in '/' is a directory */
        uint64_t data = regular && type != '5' ? e.size : 0;

        switch (type) {
        case '0': case '\0': case '7': case '1': case '2': case '3': case '4': case '5': case '6':
            break;
        default:
            if (type >= 0x20 && type < 0x7f)
                die(name, 0, "unsupported tar entry type '%c'", type);
            die(name, 0, "unsupported tar entry type 0x%02x", (unsigned char)type);
        }
        if (pax.sparse)
            die(name, 0, "sparse files are not supported");

        int nr = normalize(name, &e.path);
        if (nr == -1)
            die(name, 0, "absolute path not allowed");
        if (nr == -2)
            die(name, 0, "path contains a \"..\" component");

        if (e.path[0] == 0) {
            /* the layer root itself ("./"): nothing to do */
            if (!rd_skip(padded(data)))
                die_eof(name);
            free(e.path);
            pending_clear();
            continue;
        }

        const char *base;
        size_t plen = parent_len(e.path, &base);

        if (strncmp(base, ".wh.", 4) == 0) {
            if (!rd_skip(padded(data)))
                die_eof(name);
            int pfd = parent_fd(name, e.path, plen);
            x_whiteout(&e, pfd, base, plen);
        } else if (type == '3' || type == '4' || type == '6') {
            n_skipped++;
        } else {
            int pfd = parent_fd(name, e.path, plen);
            switch (type) {
            case '5':
                x_directory(&e, pfd, base);
                if (!rd_skip(padded(data)))
                    die_eof(name);
                break;
            case '2':
                x_symlink(&e, pfd, base);
                break;
            case '1':
                x_hardlink(&e, pfd, base);
                break;
            default:
                x_regular(&e, pfd, base);
                break;
            }
        }
        free(e.path);
        pending_clear();
    }

    /* drain: the digest covers every byte of the input */
    for (;;) {
        in.pos = in.len;
        if (rd_avail() == 0)
            break;
    }
    input_finish();

    apply_dirrecs();

    uint8_t digest[32];
    char hex[65];
    sha256_final(&in.sha, digest);
    sha256_hex(digest, hex);
    printf("{\"sha256\":\"%s\",\"bytes\":%" PRIu64 ",\"files\":%" PRIu64 ",\"dirs\":%" PRIu64
           ",\"symlinks\":%" PRIu64 ",\"hardlinks\":%" PRIu64 ",\"whiteouts\":%" PRIu64
           ",\"opaque\":%" PRIu64 ",\"skipped\":%" PRIu64 ",\"size\":%" PRIu64 "}\n",
           hex, in.total, n_files, n_dirs, n_symlinks, n_hardlinks, n_whiteouts, n_opaque, n_skipped,
           n_size);
    /* the implicit directories, as a second JSON line */
    printf("{\"implicitTruncated\":%s,\"implicit\":[", implicit_truncated ? "true" : "false");
    for (size_t i = 0; i < n_implicit; i++) {
        printf(i ? ",{\"path\":" : "{\"path\":");
        json_string(stdout, implicit[i].path);
        printf(",\"entry\":");
        json_string(stdout, implicit[i].entry);
        printf("}");
    }
    printf("]}\n");
    if (fflush(stdout) != 0 || ferror(stdout))
        die(NULL, errno, "cannot write to stdout");
    free(pc_path);
    close(root_fd);
    return 0;
}

/* ------------------------------------------------------------------ */
/* mode 2: apply a layer directory onto a merged tree                  */
/* ------------------------------------------------------------------ */

struct pbuf {
    char *s;
    size_t len, cap;
};

static size_t pb_push(struct pbuf *b, const char *name)
{
    size_t old = b->len, n = strlen(name);
    if (b->len + n + 2 > b->cap) {
        b->cap = (b->len + n + 2) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    if (b->len)
        b->s[b->len++] = '/';
    memcpy(b->s + b->len, name, n + 1);
    b->len += n;
    return old;
}

static void pb_pop(struct pbuf *b, size_t old)
{
    b->len = old;
    b->s[old] = 0;
}

/* hardlink map: source (dev, ino) -> first DEST path */
struct hlink {
    dev_t dev;
    ino_t ino;
    char *path;
};
static struct hlink *hl_tab;
static size_t hl_cap, hl_n;

static size_t hl_hash(dev_t dev, ino_t ino)
{
    uint64_t x = (uint64_t)ino * 0x9E3779B97F4A7C15ULL ^ (uint64_t)dev * 0xC2B2AE3D27D4EB4FULL;
    return (size_t)(x ^ (x >> 29));
}

static const char *hl_find(dev_t dev, ino_t ino)
{
    if (!hl_cap)
        return NULL;
    for (size_t i = hl_hash(dev, ino) & (hl_cap - 1);; i = (i + 1) & (hl_cap - 1)) {
        if (!hl_tab[i].path)
            return NULL;
        if (hl_tab[i].dev == dev && hl_tab[i].ino == ino)
            return hl_tab[i].path;
    }
}

static void hl_add(dev_t dev, ino_t ino, const char *path)
{
    if ((hl_n + 1) * 2 > hl_cap) {
        size_t ncap = hl_cap ? hl_cap * 2 : 64;
        struct hlink *nt = calloc(ncap, sizeof *nt);
        if (!nt)
            die(NULL, 0, "out of memory");
        for (size_t j = 0; j < hl_cap; j++) {
            if (!hl_tab[j].path)
                continue;
            size_t i = hl_hash(hl_tab[j].dev, hl_tab[j].ino) & (ncap - 1);
            while (nt[i].path)
                i = (i + 1) & (ncap - 1);
            nt[i] = hl_tab[j];
        }
        free(hl_tab);
        hl_tab = nt;
        hl_cap = ncap;
    }
    size_t i = hl_hash(dev, ino) & (hl_cap - 1);
    while (hl_tab[i].path)
        i = (i + 1) & (hl_cap - 1);
    hl_tab[i].dev = dev;
    hl_tab[i].ino = ino;
    hl_tab[i].path = xstrdup(path);
    hl_n++;
}

static void hl_free(void)
{
    for (size_t i = 0; i < hl_cap; i++)
        free(hl_tab[i].path);
    free(hl_tab);
    hl_tab = NULL;
    hl_cap = hl_n = 0;
}

static bool cfr_works = true;
static unsigned char *copy_buf;

static void copy_data(const char *entry, int from, int to, uint64_t size)
{
    uint64_t left = size;
    while (cfr_works && left) {
        size_t chunk = left > (1u << 30) ? (1u << 30) : (size_t)left;
        ssize_t n = copy_file_range(from, NULL, to, NULL, chunk, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP ||
                errno == EBADF || errno == EPERM) {
                cfr_works = false;      /* plain read/write from here on */
                break;
            }
            die(entry, errno, "cannot copy file data");
        }
        if (n == 0)
            return;     /* source shorter than its stat size: copied all there is */
        left -= (uint64_t)n;
    }
    if (!left)
        return;
    if (!copy_buf)
        copy_buf = xmalloc(IOBUF_SIZE);
    for (;;) {
        ssize_t n = read(from, copy_buf, IOBUF_SIZE);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die(entry, errno, "cannot read file in the source layer");
        }
        if (n == 0)
            break;
        write_all(entry, to, copy_buf, (size_t)n);
    }
}

static int open_src_file(const char *entry, int sdir, const char *name, const struct stat *st)
{
    int fd = openat(sdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES && st->st_uid == geteuid()) {
        /* unreadable file of ours (e.g. mode 0000): read it with a temporary u+r */
        if (fchmodat(sdir, name, (st->st_mode & 07777) | 0400, 0) == 0) {
            fd = openat(sdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            int err = errno;
            fchmodat(sdir, name, st->st_mode & 07777, 0);
            errno = err;
        } else {
            errno = EACCES;
        }
    }
    if (fd < 0)
        die(entry, errno, "cannot open file in the source layer");
    return fd;
}

static void ap_regular(const char *path, int sdir, int dfd, const char *name, const struct stat *st)
{
    if (st->st_nlink > 1) {
        const char *first = hl_find(st->st_dev, st->st_ino);
        if (first) {
            const char *tbase;
            size_t tplen = parent_len(first, &tbase);
            int tpfd = root_fd;
            if (tplen) {
                char *tp = xstrndup(first, tplen);
                tpfd = open_beneath(path, tp, O_PATH, false);
                free(tp);
            }
            int r = linkat(tpfd, tbase, dfd, name, 0);
            if (r < 0 && errno == EEXIST) {
                remove_at(path, dfd, name, path);
                r = linkat(tpfd, tbase, dfd, name, 0);
            }
            if (r < 0 && errno != EMLINK)
                die(path, errno, "cannot create hardlink to \"%s\"", esc(first));
            if (tpfd != root_fd)
                close(tpfd);
            if (r == 0) {
                n_hardlinks++;
                return;
            }
            /* too many links: fall through and copy */
        }
    }
    int out = openat(dfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0 && errno == EEXIST) {
        remove_at(path, dfd, name, path);
        out = openat(dfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
    }
    if (out < 0)
        die(path, errno, "cannot create file");
    if (st->st_size > 0) {
        int from = open_src_file(path, sdir, name, st);
        copy_data(path, from, out, (uint64_t)st->st_size);
        close(from);
    }
    if (fchmod(out, st->st_mode & 01777) < 0)
        die(path, errno, "cannot set file mode");
    struct timespec ts[2] = {st->st_mtim, st->st_mtim};
    if (futimens(out, ts) < 0)
        die(path, errno, "cannot set file mtime");
    if (close(out) < 0)
        die(path, errno, "cannot write file");
    if (st->st_nlink > 1)
        hl_add(st->st_dev, st->st_ino, path);
    n_files++;
}

static void ap_symlink(const char *path, int sdir, int dfd, const char *name, const struct stat *st)
{
    size_t cap = st->st_size > 0 ? (size_t)st->st_size + 1 : 256;
    char *target;
    for (;;) {
        target = xmalloc(cap);
        ssize_t n = readlinkat(sdir, name, target, cap);
        if (n < 0)
            die(path, errno, "cannot read symlink in the source layer");
        if ((size_t)n < cap) {
            target[n] = 0;
            break;
        }
        free(target);
        cap *= 2;
    }
    if (symlinkat(target, dfd, name) < 0) {
        if (errno != EEXIST)
            die(path, errno, "cannot create symlink");
        remove_at(path, dfd, name, path);
        if (symlinkat(target, dfd, name) < 0)
            die(path, errno, "cannot create symlink");
    }
    struct timespec ts[2] = {st->st_mtim, st->st_mtim};
    if (utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
        die(path, errno, "cannot set symlink mtime");
    free(target);
    n_symlinks++;
}

static bool is_opaque(int fd)
{
    char v[4];
    ssize_t n = fgetxattr(fd, OPAQUE_XATTR, v, sizeof v);
    return n == 1 && v[0] == 'y';
}

static void apply_tree(int sfd, int dfd, struct pbuf *pb);

static void ap_directory(struct pbuf *pb, int sdir, int dfd, const char *name, const struct stat *st)
{
    const char *path = pb->s;
    /* source side */
    int s2 = openat(sdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    bool restore = false;
    if (s2 < 0 && errno == EACCES && st->st_uid == geteuid()) {
        if (fchmodat(sdir, name, (st->st_mode & 07777) | 0500, 0) == 0) {
            restore = true;
            s2 = openat(sdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        } else {
            errno = EACCES;
        }
    }
    if (s2 < 0)
        die(path, errno, "cannot open directory in the source layer");
    if (!restore && (st->st_mode & 0100) == 0 && st->st_uid == geteuid() && geteuid() != 0) {
        /* readable but not searchable: children could not be looked up */
        if (fchmod(s2, (st->st_mode & 07777) | 0500) == 0)
            restore = true;
    }
    bool opaque = is_opaque(s2);

    /* destination side */
    bool existed = false;
    if (mkdirat(dfd, name, 0700) < 0) {
        if (errno != EEXIST)
            die(path, errno, "cannot create directory");
        struct stat dst;
        if (fstatat(dfd, name, &dst, AT_SYMLINK_NOFOLLOW) < 0)
            die(path, errno, "cannot stat");
        if (S_ISDIR(dst.st_mode)) {
            existed = true;
        } else {
            remove_at(path, dfd, name, path);
            if (mkdirat(dfd, name, 0700) < 0)
                die(path, errno, "cannot create directory");
        }
    }
    int d2 = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (d2 < 0 && errno == EACCES) {
        struct stat dst;
        if (fstatat(dfd, name, &dst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(dst.st_mode))
            fchmodat(dfd, name, (dst.st_mode & 07777) | 0700, 0);
        d2 = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (d2 < 0)
        die(path, errno, "cannot open directory");
    if (existed) {
        if (opaque) {
            n_removed += empty_dir(path, d2);
        } else {
            struct stat dst;
            if (fstat(d2, &dst) < 0)
                die(path, errno, "cannot stat");
            if ((dst.st_mode & 0700) != 0700 && fchmod(d2, (dst.st_mode & 07777) | 0700) < 0)
                die(path, errno, "cannot make directory writable");
        }
    }
    add_dirrec(path, st->st_mode & 01777, st->st_mtim);
    n_dirs++;
    apply_tree(s2, d2, pb);     /* takes s2 */
    close(d2);
    if (restore)
        fchmodat(sdir, name, st->st_mode & 07777, 0);
}

static void apply_tree(int sfd, int dfd, struct pbuf *pb)
{
    DIR *d = fdopendir(sfd);
    if (!d)
        die(pb->len ? pb->s : NULL, errno, "cannot read directory in the source layer");
    int sdir = dirfd(d);
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) {
            errno = 0;
            continue;
        }
        size_t old = pb_push(pb, name);
        struct stat st;
        if (fstatat(sdir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            die(pb->s, errno, "cannot stat in the source layer");
        if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
            if (remove_at(pb->s, dfd, name, pb->s))
                n_removed++;
        } else if (S_ISDIR(st.st_mode)) {
            ap_directory(pb, sdir, dfd, name, &st);
        } else if (S_ISREG(st.st_mode)) {
            ap_regular(pb->s, sdir, dfd, name, &st);
        } else if (S_ISLNK(st.st_mode)) {
            ap_symlink(pb->s, sdir, dfd, name, &st);
        } else {
            n_skipped++;
        }
        pb_pop(pb, old);
        errno = 0;
    }
    if (errno)
        die(pb->len ? pb->s : NULL, errno, "cannot read directory in the source layer");
    closedir(d);
}

static int run_apply(const char *src, const char *dest)
{
    int sfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sfd < 0)
        die(NULL, errno, "cannot open source layer directory \"%s\"", esc(src));
    root_fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        die(NULL, errno, "cannot open destination directory \"%s\"", esc(dest));
    struct stat a, b;
    if (fstat(sfd, &a) < 0 || fstat(root_fd, &b) < 0)
        die(NULL, errno, "cannot stat");
    if (a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        die(NULL, 0, "source and destination are the same directory");
    if (is_opaque(sfd))
        n_removed += empty_dir(dest, root_fd);

    struct pbuf pb = {xmalloc(256), 0, 256};
    pb.s[0] = 0;
    apply_tree(sfd, root_fd, &pb);      /* takes sfd */
    free(pb.s);
    apply_dirrecs();
    hl_free();
    free(copy_buf);
    free(pc_path);

    printf("{\"files\":%" PRIu64 ",\"dirs\":%" PRIu64 ",\"symlinks\":%" PRIu64 ",\"hardlinks\":%" PRIu64
           ",\"removed\":%" PRIu64 "}\n",
           n_files, n_dirs, n_symlinks, n_hardlinks, n_removed);
    if (fflush(stdout) != 0 || ferror(stdout))
        die(NULL, errno, "cannot write to stdout");
    close(root_fd);
    return 0;
}

/* ------------------------------------------------------------------ */
/* user namespace                                                      */
/* ------------------------------------------------------------------ */

static void write_proc(const char *file, const char *text)
{
    int fd = open(file, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        die(NULL, errno, "cannot open %s", file);
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n)
        die(NULL, errno, "cannot write %s", file);
    close(fd);
}

static void enter_userns(void)
{
    uid_t uid = geteuid();
    gid_t gid = getegid();
    if (uid == 0)
        return;
    if (unshare(CLONE_NEWUSER) < 0)
        die(NULL, errno,
            "cannot create a user namespace (is kernel.unprivileged_userns_clone or user.max_user_namespaces 0?)");
    char map[64];
    write_proc("/proc/self/setgroups", "deny");
    snprintf(map, sizeof map, "0 %u 1", (unsigned)uid);
    write_proc("/proc/self/uid_map", map);
    snprintf(map, sizeof map, "0 %u 1", (unsigned)gid);
    write_proc("/proc/self/gid_map", map);
}

int main(int argc, char **argv)
{
    bool userns = false, apply = false, opts = true;
    const char *pos[3];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts && strcmp(a, "--userns") == 0) {
            userns = true;
        } else if (opts && strcmp(a, "--apply") == 0) {
            apply = true;
        } else if (opts && (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)) {
            usage(0);
        } else if (opts && strcmp(a, "--") == 0) {
            opts = false;
        } else if (opts && a[0] == '-' && a[1]) {
            fprintf(stderr, "gantry-untar: unknown option %s\n", a);
            usage(2);
        } else {
            if (npos == 2)
                usage(2);
            pos[npos++] = a;
        }
    }
    if (npos != (apply ? 2 : 1))
        usage(2);

    if (getenv("GANTRY_UNTAR_NO_OPENAT2"))
        have_openat2 = false;   /* test hook: exercise the pre-5.6 fallback walk */
    if (userns)
        enter_userns();
    umask(0);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    return apply ? run_apply(pos[0], pos[1]) : run_extract(pos[0]);
}
