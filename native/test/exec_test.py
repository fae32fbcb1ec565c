#!/usr/bin/python3
"""Dev-aid tests for gantry-exec (the launcher; the real suite is in test/).

    /usr/bin/python3 native/test/exec_test.py [--legacy] [--base DIR] [--bin PATH] [-k NAME]
    runuser -u gtest -- /usr/bin/python3 native/test/exec_test.py [--legacy]

Builds a busybox image by hand (two layers), writes plans by hand and checks
every op, as whoever runs it.  --legacy sets GANTRY_EXEC_LEGACY=1: no openat2,
no new mount API (the code paths for old kernels).
"""
import argparse
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BIN = os.path.join(HERE, "..", "build", "Release", "gantry-exec")

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=DEFAULT_BIN)
ap.add_argument("--base", default="/dev/shm")
ap.add_argument("--legacy", action="store_true")
ap.add_argument("-k", default="", help="only tests whose name contains this")
args = ap.parse_args()
BIN = os.path.abspath(args.bin)
UID, GID = os.getuid(), os.getgid()
ENV = dict(os.environ)
if args.legacy:
    ENV["GANTRY_EXEC_LEGACY"] = "1"

SAFE = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/:=+,@~^-")


def enc(s):
    if s == "":
        return '""'
    return "".join(chr(b) if b in SAFE else "%%%02X" % b for b in s.encode())


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# ---------------------------------------------------------------- fixture

BASE = tempfile.mkdtemp(prefix="gx-exec-", dir=args.base)
os.chmod(BASE, 0o755)
L1 = os.path.join(BASE, "layers", "l1", "root")
L2 = os.path.join(BASE, "layers", "l2", "root")
OUTSIDE = os.path.join(BASE, "outside")  # a host directory that symlinks in the image point at
HOSTDIR = os.path.join(BASE, "hostdir")  # a bind source
HOSTFILE = os.path.join(BASE, "hostfile")
counter = [0]
TAG = "%05d" % random.randrange(100000)  # in the tests' sleep durations: tells our sleeps from anybody else's


def build_image():
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp", "mnt", "root", "home", "var/empty"):
        os.makedirs(os.path.join(L1, d), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(L1, "bin", "busybox"))
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", os.path.join(L1, "bin", a))
    with open(os.path.join(L1, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(L1, "etc", "group"), "w") as f:
        f.write("root:x:0:\n")
    with open(os.path.join(L1, "etc", "os-release"), "w") as f:
        f.write("ID=lower-layer-should-be-hidden\n")
    os.makedirs(os.path.join(L2, "etc"))
    os.makedirs(os.path.join(L2, "bin"))
    with open(os.path.join(L2, "etc", "os-release"), "w") as f:
        f.write("ID=gantry-test\n")
    # symlinks that point out of the rootfs if followed on the host
    os.symlink(OUTSIDE, os.path.join(L2, "escape"))
    os.symlink("../../../../../../../../../../.." + OUTSIDE, os.path.join(L2, "escape2"))
    os.symlink("/bin", os.path.join(L2, "binlink"))
    os.symlink("/etc/os-release", os.path.join(L2, "samelink"))  # the symlink op finds it already there
    with open(os.path.join(L2, "bin", "noexec"), "w") as f:
        f.write("#!/bin/sh\necho should-not-run\n")
    os.chmod(os.path.join(L2, "bin", "noexec"), 0o644)
    with open(os.path.join(L2, "bin", "badinterp"), "w") as f:
        f.write("#!/nonexistent/interp\n")
    os.chmod(os.path.join(L2, "bin", "badinterp"), 0o755)
    with open(os.path.join(L2, "bin", "noshebang"), "w") as f:
        f.write("echo noshebang-ok\n")
    os.chmod(os.path.join(L2, "bin", "noshebang"), 0o755)
    os.makedirs(OUTSIDE)
    with open(os.path.join(OUTSIDE, "host-marker"), "w") as f:
        f.write("host\n")
    os.makedirs(os.path.join(HOSTDIR, "sub"))
    with open(os.path.join(HOSTDIR, "hello"), "w") as f:
        f.write("hello from the host\n")
    with open(HOSTFILE, "w") as f:
        f.write("a host file\n")


def new_sandbox():
    counter[0] += 1
    d = os.path.join(BASE, "sb%d" % counter[0])
    sb = {k: os.path.join(d, k) for k in ("upper", "work", "merged")}
    for p in sb.values():
        os.makedirs(p)
    sb["dir"] = d
    return sb


def std_ops(sb, uid=0, gid=0, pidns=False, netns=False, pre=(), extra=(), post=(), env=(("PATH", "/bin"),),
            lowers=None, upper=True):
    ops = [["userns", str(uid), str(gid)], ["mountns"]]
    if netns:
        ops.append(["netns"])
    if pidns:
        ops.append(["pidns"])
    ops += [list(o) for o in pre]
    lowers = lowers or [L2, L1]
    if upper:
        ops.append(["overlay", sb["merged"], sb["upper"], sb["work"]] + lowers)
    else:
        ops.append(["overlay", sb["merged"], "", ""] + lowers)
    ops += [["rootfs", sb["merged"]], ["proc", "/proc"], ["dev", "/dev"], ["tmpfs-in", "/tmp", "mode=1777"]]
    ops += [list(o) for o in extra]
    ops.append(["pivot"])
    ops += [list(o) for o in post]
    ops += [["env", k, v] for k, v in env]
    ops += [["argv", "/bin/sh"], ["exec"]]
    return ops


def write_plan(ops, raw=None):
    counter[0] += 1
    path = os.path.join(BASE, "plan%d" % counter[0])
    with open(path, "w") as f:
        if raw is not None:
            f.write(raw)
        else:
            f.write("gantry-plan 1\n")
            for op in ops:
                f.write(" ".join(enc(x) for x in op) + "\n")
    return path


def run(ops, *cmd, opts=(), raw=None, env=None, timeout=30, input=None):
    plan = write_plan(ops, raw)
    return subprocess.run([BIN] + list(opts) + [plan] + list(cmd), capture_output=True, text=True,
                          env=env or ENV, timeout=timeout, input=input)


def sh(ops, script, **kw):
    return run(ops, "/bin/sh", "-c", script, **kw)


def ok(r, what=""):
    check(r.returncode == 0, "%s: exit %d, stderr=%r stdout=%r" % (what, r.returncode, r.stderr, r.stdout[-2000:]))
    return r.stdout


def fails(r, code, pattern):
    check(r.returncode == code, "expected exit %d, got %d: stderr=%r stdout=%r" % (code, r.returncode, r.stderr,
                                                                                     r.stdout))
    lines = r.stderr.strip().split("\n")
    check(len(lines) == 1 and lines[0].startswith("gantry-exec: "), "not one gantry-exec line: %r" % r.stderr)
    check(re.search(pattern, r.stderr), "stderr %r does not match %r" % (r.stderr, pattern))


# ---------------------------------------------------------------- tests

TESTS = []


class Skip(Exception):
    """A test that cannot run here: reported by name in the summary, never counted as passed."""


def test(fn):
    TESTS.append(fn)
    return fn


@test
def image_and_uid():
    sb = new_sandbox()
    out = ok(sh(std_ops(sb), "cat /etc/os-release; id -u; id -g; grep ' / / ' /proc/self/mountinfo"))
    check(out.startswith("ID=gantry-test\n0\n0\n"), out)
    check(("lowerdir=" if args.legacy else "lowerdir+=") in out, "mount API: %r" % out)
    sb = new_sandbox()
    out = ok(sh(std_ops(sb, uid=UID, gid=GID), "id -u; id -g"))
    check(out == "%d\n%d\n" % (UID, GID), out)
    sb = new_sandbox()
    out = ok(sh(std_ops(sb, uid=1234, gid=5678), "id -u; id -g"))
    check(out == "1234\n5678\n", out)
    sb = new_sandbox()
    out = ok(sh(std_ops(sb, uid="self", gid="self"), "id -u; id -g"))
    check(out == "%d\n%d\n" % (os.geteuid(), os.getegid()), "userns self: " + out)


@test
def writes_go_to_upper():
    sb = new_sandbox()
    ok(sh(std_ops(sb), "echo new > /newfile; echo changed > /etc/os-release; mkdir -p /var/x; rm /bin/noexec"))
    check(open(os.path.join(sb["upper"], "newfile")).read() == "new\n", "newfile not in upper")
    check(open(os.path.join(sb["upper"], "etc/os-release")).read() == "changed\n", "copy-up")
    check(open(os.path.join(L2, "etc/os-release")).read() == "ID=gantry-test\n", "lower changed")
    check(os.path.exists(os.path.join(L2, "bin/noexec")), "lower file removed")
    wh = os.lstat(os.path.join(sb["upper"], "bin/noexec"))
    check(stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0, "no whiteout in upper")
    check(not os.path.exists(os.path.join(L1, "newfile")) and not os.path.exists(os.path.join(L2, "newfile")), "lower")
    # a second run sees the first run's writes
    out = ok(sh(std_ops(sb), "cat /newfile /etc/os-release; ls /bin/noexec 2>&1 || true"))
    check(out.startswith("new\nchanged\n") and "No such file" in out, out)


@test
def read_only_overlay_and_single_layer():
    sb = new_sandbox()
    r = sh(std_ops(sb, upper=False), "cat /etc/os-release; echo x > /x 2>&1 || echo refused")
    out = ok(r)
    check("ID=gantry-test" in out and "refused" in out, out)
    sb = new_sandbox()
    r = sh(std_ops(sb, upper=False, lowers=[L1]), "cat /etc/os-release; echo x > /x 2>&1 || echo refused")
    out = ok(r)
    check("lower-layer-should-be-hidden" in out and "refused" in out, out)


@test
def ephemeral_upper_on_tmpfs():
    # the throwaway sandbox: a tmpfs (in the launcher's mount namespace) holds upper, work and the root
    sb = new_sandbox()
    eph = os.path.join(sb["dir"], "eph")
    os.makedirs(eph)
    ops = std_ops(sb, pre=[["tmpfs", eph, "mode=0755,size=10%"], ["mkdir", eph + "/upper", "0755"],
                           ["mkdir", eph + "/work", "0700"], ["mkdir", eph + "/root", "0755"]])
    i = [o[0] for o in ops].index("overlay")
    ops[i][1:4] = [eph + "/root", eph + "/upper", eph + "/work"]
    ops[i + 1] = ["rootfs", eph + "/root"]
    out = ok(sh(ops, "echo x > /new && cat /new; rm -rf /etc && mkdir /etc && ls -a /etc | wc -l; rm /bin/noexec;"
                     "ls /bin/noexec 2>&1; grep ' / / ' /proc/self/mountinfo"))
    check(out.startswith("x\n2\n") and "No such file" in out and "overlay" in out, out)
    check(os.listdir(eph) == [], "the tmpfs leaked: %r" % os.listdir(eph))


@test
def remount_ro():
    sb = new_sandbox()
    r = sh(std_ops(sb, post=[["remount-ro"]]), "echo x > /x; echo rc=$?; echo y > /tmp/y && echo tmp-ok")
    out = ok(r)
    check("Read-only file system" in r.stderr and "rc=1" in out and "tmp-ok" in out, (out, r.stderr))
    check(not os.path.exists(os.path.join(sb["upper"], "x")), "wrote to upper")


@test
def bind_flags():
    sb = new_sandbox()
    extra = [
        ["bind", HOSTDIR, "/mnt/rw", "create=dir"],
        ["bind", HOSTDIR, "/mnt/ro", "ro,create=dir"],
        ["bind", HOSTFILE, "/etc/hostfile", "create=file,ro"],
        ["bind", HOSTFILE, "/etc/autofile", "create=auto"],
        ["bind", HOSTDIR, "/mnt/autodir", "create=auto,nosuid,nodev,noexec"],
        ["bind", os.path.join(BASE, "missing"), "/mnt/missing", "nofail,create=dir"],
    ]
    script = ("cat /mnt/ro/hello; echo w > /mnt/rw/written && echo rw-ok; echo w > /mnt/ro/x || echo ro-refused;"
              "cat /etc/hostfile; test -f /etc/autofile && echo autofile; test -d /mnt/autodir/sub && echo autodir;"
              "test -e /mnt/missing && echo missing-exists; grep ' /mnt/autodir ' /proc/self/mountinfo")
    r = sh(std_ops(sb, extra=extra), script)
    out = ok(r)
    for w in ("hello from the host", "rw-ok", "ro-refused", "a host file", "autofile", "autodir"):
        check(w in out, "%s missing: %r %r" % (w, out, r.stderr))
    check("missing-exists" not in out, out)
    mi = out.strip().split("\n")[-1]
    check("nosuid" in mi and "nodev" in mi and "noexec" in mi, mi)
    check(open(os.path.join(HOSTDIR, "written")).read() == "w\n", "rw bind did not write through")
    os.unlink(os.path.join(HOSTDIR, "written"))
    check(os.path.isdir(os.path.join(sb["upper"], "mnt/rw")), "mount point not created in the upper layer")


@test
def bind_errors():
    sb = new_sandbox()
    missing = os.path.join(BASE, "nope")
    r = sh(std_ops(sb, extra=[["bind", missing, "/mnt/x", "create=dir"]]), "true")
    fails(r, 125, r"^gantry-exec: bind %s: the source does not exist \(add nofail to ignore\)$" % re.escape(missing))
    r = sh(std_ops(sb, extra=[["bind", HOSTDIR, "/mnt/nothere", ""]]), "true")
    fails(r, 125, r"bind .* -> /mnt/nothere: the mount point /mnt/nothere does not exist .*create=")
    r = sh(std_ops(sb, extra=[["bind", HOSTDIR, "/mnt/x", "bogus"]]), "true")
    fails(r, 125, r"unknown flag 'bogus'")
    r = sh(std_ops(sb, extra=[["bind", HOSTFILE, "/etc", ""]]), "true")
    fails(r, 125, r"bind .*hostfile -> /etc: ")


@test
def bind_rbind():
    # a submount below the source (a tmpfs mounted by the plan itself, after mountns)
    sb = new_sandbox()
    src = os.path.join(BASE, "rsrc%d" % counter[0])
    os.makedirs(os.path.join(src, "sub"))
    pre = [["tmpfs", os.path.join(src, "sub"), "mode=0755"], ["mkdir", os.path.join(src, "sub", "inner"), "0700"]]
    extra = [["bind", src, "/mnt/flat", "create=dir"], ["bind", src, "/mnt/rec", "rbind,create=dir"],
             ["bind", src, "/mnt/recro", "rbind,ro,create=dir"]]
    script = ("test -d /mnt/flat/sub/inner && echo flat-has-inner; test -d /mnt/rec/sub/inner && echo rec-has-inner;"
              "stat -c %a /mnt/rec/sub/inner; touch /mnt/rec/sub/f && echo rec-rw;"
              "touch /mnt/recro/sub/f2 2>/dev/null || echo recro-sub-refused;"
              "touch /mnt/recro/f3 2>/dev/null || echo recro-top-refused")
    out = ok(sh(std_ops(sb, pre=pre, extra=extra), script))
    check("flat-has-inner" not in out, out)
    for w in ("rec-has-inner", "700", "rec-rw", "recro-sub-refused", "recro-top-refused"):
        check(w in out, "%s: %r" % (w, out))
    check(not os.path.exists(os.path.join(src, "sub", "inner")), "the tmpfs leaked onto the host")


@test
def bind_symlink_dst_stays_inside():
    sb = new_sandbox()
    extra = [["bind", HOSTDIR, "/escape/m", "create=dir"], ["bind", HOSTDIR, "/escape2/m2", "create=dir"],
             ["bind", HOSTFILE, "/binlink/hf", "create=file"]]
    out = ok(sh(std_ops(sb, extra=extra), "cat /escape/m/hello /escape2/m2/hello; ls /bin/hf; ls /escape"))
    check(out.count("hello from the host") == 2 and "/bin/hf" in out, out)
    check("host-marker" not in out, "resolved outside the rootfs: %r" % out)
    check(not os.path.exists(os.path.join(OUTSIDE, "m")) and not os.path.exists(os.path.join(OUTSIDE, "m2")),
          "created a mount point outside the rootfs")
    out = ok(sh(std_ops(sb, extra=extra), "ls -d %s/m %s/m2" % (OUTSIDE, OUTSIDE)))
    check(out == "%s/m\n%s/m2\n" % (OUTSIDE, OUTSIDE), "not created inside: %r" % out)


@test
def symlink_op():
    sb = new_sandbox()
    extra = [["symlink", "/etc/os-release", "/mnt/link"],           # created
             ["symlink", "../../../etc/os-release", "/new/a/b/rel"],  # missing parents created 0755
             ["symlink", "/etc/os-release", "/samelink"],           # already there (in the image): nothing to do
             ["symlink", "/etc/passwd", "/bin/noshebang"],           # a file: replaced
             ["symlink", "/etc", "/binlink/"],                      # another symlink (-> /bin): replaced, not followed
             ["symlink", "x", "/escape/inside"],                    # /escape -> OUTSIDE: followed inside the rootfs
             ["symlink", "y", "/escape2/inside2"],
             ["symlink", "z", "/mnt/twice"], ["symlink", "z", "/mnt/twice"]]
    post = [["symlink", "/etc/os-release", "/after-pivot"]]
    links = ["/mnt/link", "/new/a/b/rel", "/samelink", "/bin/noshebang", "/binlink", OUTSIDE + "/inside",
             OUTSIDE + "/inside2", "/mnt/twice", "/after-pivot"]
    script = "for f in %s; do readlink $f; done; stat -c %%a /new /new/a /new/a/b; cat /new/a/b/rel" % " ".join(links)
    want = ["/etc/os-release", "../../../etc/os-release", "/etc/os-release", "/etc/passwd", "/etc", "x", "y", "z",
            "/etc/os-release", "755", "755", "755", "ID=gantry-test", ""]
    out = ok(sh(std_ops(sb, extra=extra, post=post), script))
    check(out.split("\n") == want, "symlinks: %r" % out)
    # the next launch of the same sandbox finds them all in place (and its mount empties the overlay's work dir,
    # where the kernel keeps a whiteout after a deletion: the clean-up below could not remove it as a user)
    out = ok(sh(std_ops(sb, extra=extra, post=post), script))
    check(out.split("\n") == want, "symlinks, second launch: %r" % out)
    up = sb["upper"]
    check(os.readlink(os.path.join(up, "mnt/link")) == "/etc/os-release", "not in the upper layer")
    check(not os.path.lexists(os.path.join(up, "samelink")), "an identical symlink was replaced")
    check(not os.path.lexists(os.path.join(OUTSIDE, "inside")) and not os.path.lexists(os.path.join(OUTSIDE, "inside2")),
          "created outside the rootfs")
    # a read-only image: an identical symlink needs no write; anything else fails naming the path
    sb = new_sandbox()
    ok(sh(std_ops(sb, upper=False, extra=[["symlink", "/etc/os-release", "/samelink"]]), "true"), "read-only, same")
    fails(sh(std_ops(sb, upper=False, extra=[["symlink", "/etc/passwd", "/samelink"]]), "true"), 125,
          r"^gantry-exec: symlink /etc/passwd -> /samelink: cannot remove the existing /samelink: Read-only file system$")
    fails(sh(std_ops(sb, upper=False, extra=[["symlink", "/x", "/mnt/new"]]), "true"), 125,
          r"^gantry-exec: symlink /x -> /mnt/new: cannot create /mnt/new: Read-only file system$")
    sb = new_sandbox()
    for path in ("/etc", "/etc/", "/", "/mnt/.."):
        fails(sh(std_ops(sb, extra=[["symlink", "x", path]]), "true"), 125,
              r"^gantry-exec: symlink x -> %s: %s is a directory in the image$" % (re.escape(path), re.escape(path)))
    fails(sh(std_ops(sb, extra=[["symlink", "x", "/etc/passwd/y"]]), "true"), 125,
          r"^gantry-exec: symlink x -> /etc/passwd/y: /etc/passwd is not a directory in the image$")
    fails(sh(std_ops(sb, extra=[["symlink", "x", "/etc/passwd/z/y"]]), "true"), 125,
          r"^gantry-exec: symlink x -> /etc/passwd/z/y: cannot open the directory /etc/passwd/z: Not a directory$")
    fails(sh(std_ops(sb, extra=[["symlink", "x", "rel/y"]]), "true"), 125, r"^gantry-exec: symlink x -> rel/y: the path must be absolute$")
    fails(sh(std_ops(sb, extra=[["symlink", "", "/y"]]), "true"), 125, r"^gantry-exec: symlink  -> /y: the target is empty$")
    fails(run([["userns", "0", "0"], ["mountns"], ["symlink", "x", "/y"], ["exec"]], "true"), 125,
          r"^gantry-exec: symlink x -> /y: no rootfs declared \(add a rootfs op before it\)$")
    fails(run(None, raw="gantry-plan 1\nsymlink x\nexec\n"), 125, r"line 2: symlink takes 2 arguments, not 1")
    check(not os.path.lexists(os.path.join(sb["upper"], "y")), "created on an error")


LDCONFIG = "/sbin/ldconfig"
LDCONFIG_HINT = r" \(start without GPUs \(NVIDIA_VISIBLE_DEVICES=void\), or check the image's /etc/ld\.so\.conf\)$"
GLIBC = {}


def c_compiler():
    return shutil.which("cc") or shutil.which("gcc")


def glibc_layers():
    """Layers for the busybox image: one with glibc (the host's ld.so and libc) and a program that needs
    libgxtest.so.1 (in /opt/gxlib) and libgxconf.so.1 (in /opt/gxconf, listed in /etc/ld.so.conf) by soname,
    and one with a stale /etc/ld.so.cache (images normally have one).  None without a C compiler."""
    if "layers" in GLIBC:
        return GLIBC["layers"]
    GLIBC["layers"] = None
    cc = c_compiler()
    if not cc:
        return None
    src = os.path.join(BASE, "glibc-src")
    os.makedirs(src)
    lg = os.path.join(BASE, "layers", "glibc", "root")
    lc = os.path.join(BASE, "layers", "stale-cache", "root")
    files = {"gxtest.c": "int gx_answer(void) { return 42; }\n", "gxconf.c": "int gx_conf(void) { return 7; }\n",
             "gxprog.c": "#include <stdio.h>\nint gx_answer(void);\nint gx_conf(void);\n"
                         "int main(void) { printf(\"answer=%d conf=%d\\n\", gx_answer(), gx_conf()); return 0; }\n"}
    for name, text in files.items():
        with open(os.path.join(src, name), "w") as f:
            f.write(text)
    for lib in ("gxtest", "gxconf"):
        subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,lib%s.so.1" % lib, "-o", os.path.join(src, "lib%s.so.1" % lib),
                        os.path.join(src, lib + ".c")], check=True)
    prog = os.path.join(src, "gxprog")
    subprocess.run([cc, "-o", prog, os.path.join(src, "gxprog.c"), os.path.join(src, "libgxtest.so.1"),
                    os.path.join(src, "libgxconf.so.1")], check=True)
    ldd = subprocess.run(["ldd", prog], capture_output=True, text=True, env=dict(ENV, LD_LIBRARY_PATH=src)).stdout
    for line in ldd.split("\n"):
        for word in line.split():
            if word.startswith("/") and not word.startswith(src):  # libc, ld.so: at the same path in the image
                dst = os.path.join(lg, word.lstrip("/"))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy(word, dst)
    for d, lib in (("opt/gxlib", "libgxtest.so.1"), ("opt/gxconf", "libgxconf.so.1"), ("bin", "gxprog")):
        os.makedirs(os.path.join(lg, d), exist_ok=True)
        shutil.copy(os.path.join(src, lib), os.path.join(lg, d, lib))
    os.makedirs(os.path.join(lg, "etc"))
    with open(os.path.join(lg, "etc", "ld.so.conf"), "w") as f:
        f.write("/opt/gxconf\n")
    os.makedirs(os.path.join(lc, "etc"))
    with open(os.path.join(lc, "etc", "ld.so.cache"), "w") as f:
        f.write("stale, not a cache\n")
    GLIBC["layers"] = (lg, lc)
    return GLIBC["layers"]


@test
def ldconfig_op():
    layers = glibc_layers()
    if not layers or not os.path.exists(LDCONFIG):
        raise Skip("no C compiler or no %s" % LDCONFIG)
    lg, lc = layers
    lowers = [lg, L2, L1]
    sb = new_sandbox()
    r = run(std_ops(sb, lowers=lowers), "/bin/gxprog")
    check(r.returncode == 127 and "libgx" in r.stderr, "found without a cache: %r %r" % (r.stdout, r.stderr))
    script = ("gxprog; ls -a /dev | grep gantry; grep -q /opt/gxlib/libgxtest.so.1 /etc/ld.so.cache && echo cached;"
              "grep ' /etc/ld.so.cache ' /proc/self/mountinfo; echo x 2>/dev/null > /etc/ld.so.cache || echo ro-refused")
    for kw in (dict(), dict(uid=1234, gid=5678), dict(uid=UID, gid=GID, pidns=True)):
        sb = new_sandbox()
        ops = std_ops(sb, lowers=lowers, extra=[["ldconfig", LDCONFIG, "/opt/gxlib"]], **kw)
        out = ok(sh(ops, script), "ldconfig %r" % kw)
        lines = out.split("\n")
        check(lines[0] == "answer=42 conf=7" and lines[1] == "cached", "%r: %r" % (kw, out))
        mi = lines[2].split()
        check(mi[4] == "/etc/ld.so.cache" and mi[5].split(",")[:3] == ["ro", "nosuid", "nodev"], "mount: %r" % lines[2])
        check(lines[3:] == ["ro-refused", ""], "left in /dev, or writable: %r" % out)
        cache = os.path.join(sb["upper"], "etc", "ld.so.cache")
        check(os.path.isfile(cache) and os.path.getsize(cache) == 0, "the mount point in the upper layer")
    # a read-only image with a stale cache: the new one hides it; several DIRs
    sb = new_sandbox()
    ops = std_ops(sb, lowers=[lc] + lowers, upper=False, extra=[["ldconfig", LDCONFIG, "/opt/gxlib", "/opt/none"]])
    out = ok(sh(ops, "gxprog; ls -a /dev | grep -c gantry || true"))
    check(out == "answer=42 conf=7\n0\n", out)
    # what the op costs: the best of 5 launches with and without it
    best = {}
    for name, extra in (("with", [["ldconfig", LDCONFIG, "/opt/gxlib"]]), ("without", [])):
        plan = write_plan(std_ops(new_sandbox(), lowers=lowers, extra=extra))
        for _ in range(5):
            t0 = time.time()
            subprocess.run([BIN, plan, "/bin/true"], env=ENV, check=True)
            best[name] = min(best.get(name, 1e9), time.time() - t0)
    print("   (the ldconfig op: +%.1f ms on a launch of %.1f ms)" % (1000 * (best["with"] - best["without"]),
                                                                 1000 * best["without"]))


@test
def ldconfig_errors():
    layers = glibc_layers()
    sb = new_sandbox()
    if layers:
        lowers = [layers[0], L2, L1]
        fails(sh(std_ops(sb, lowers=lowers, extra=[["ldconfig", "/bin/false"]]), "true"), 125,
              r"^gantry-exec: ldconfig /bin/false: exited with status 1" + LDCONFIG_HINT)
    # a static program that fails with output: its last lines are in the message (busybox has no ldconfig applet)
    fails(sh(std_ops(sb, extra=[["ldconfig", "/bin/busybox"]]), "true"), 125,
          r"^gantry-exec: ldconfig /bin/busybox: exited with status 127: ldconfig: applet not found" + LDCONFIG_HINT)
    # a dynamically linked program in an image without its interpreter
    fails(sh(std_ops(sb, extra=[["ldconfig", "/bin/false"]]), "true"), 125,
          r"^gantry-exec: ldconfig /bin/false: cannot execute it in the rootfs: No such file or directory "
          r"\(it runs inside the image: use a statically linked ldconfig, like glibc's /sbin/ldconfig\)$")
    fails(sh(std_ops(sb, extra=[["ldconfig", "/no/ldconfig"]]), "true"), 125,
          r"^gantry-exec: ldconfig /no/ldconfig: cannot open it: No such file or directory \(install glibc's ldconfig")
    fails(sh(std_ops(sb, extra=[["ldconfig", LDCONFIG, "opt/lib"]]), "true"), 125,
          r"^gantry-exec: ldconfig %s: the directory 'opt/lib' must be an absolute path$" % LDCONFIG)
    ops = std_ops(sb)
    ops.insert([o[0] for o in ops].index("dev"), ["ldconfig", LDCONFIG])
    fails(sh(ops, "true"), 125, r"^gantry-exec: ldconfig %s: no dev op before it \(add a dev op before it" % LDCONFIG)
    fails(sh(std_ops(sb, post=[["ldconfig", LDCONFIG]]), "true"), 125,
          r"^gantry-exec: ldconfig %s: after pivot \(ldconfig runs between dev and pivot\)$" % LDCONFIG)
    fails(sh(std_ops(sb, pre=[["ldconfig", LDCONFIG]]), "true"), 125, r"^gantry-exec: ldconfig %s: no rootfs declared" % LDCONFIG)
    fails(run(None, raw="gantry-plan 1\nldconfig\nexec\n"), 125, r"line 2: ldconfig takes at least 1 argument, not 0")


@test
def cuda_version():
    # next to --bin, else in the build directory (test/integration/native.test.ts copies only --bin)
    cuda = next((p for p in (os.path.join(os.path.dirname(BIN), "gantry-cuda-version"),
                             os.path.join(os.path.dirname(DEFAULT_BIN), "gantry-cuda-version")) if os.access(p, os.X_OK)),
                "gantry-cuda-version")
    cc = c_compiler()
    if not cc or not os.access(cuda, os.X_OK):
        raise Skip("no C compiler or no %s" % cuda)
    d = os.path.join(BASE, "fakecuda")
    os.makedirs(d)
    variants = {
        "ok": "int cuDriverGetVersion(int *v) { *v = 12040; return 0; }\n",
        "named": "int cuDriverGetVersion(int *v) { (void)v; return 3; }\n"
                 "int cuGetErrorName(int e, const char **s) { *s = \"CUDA_ERROR_NOT_INITIALIZED\"; return e != 3; }\n",
        "err": "int cuDriverGetVersion(int *v) { (void)v; return 999; }\n",
        "nosym": "int cuInit(unsigned f) { (void)f; return 0; }\n",
    }
    libs = {}
    for name, text in variants.items():
        with open(os.path.join(d, name + ".c"), "w") as f:
            f.write(text)
        libs[name] = os.path.join(d, "libcuda-%s.so.1" % name)
        subprocess.run([cc, "-shared", "-fPIC", "-o", libs[name], os.path.join(d, name + ".c")], check=True)

    def cv(*a):
        return subprocess.run([cuda] + list(a), capture_output=True, text=True)

    r = cv(libs["ok"])
    check((r.returncode, r.stdout, r.stderr) == (0, "12040\n", ""), r)
    for name, want in (("named", "cuDriverGetVersion returned the error code 3 (CUDA_ERROR_NOT_INITIALIZED)"),
                       ("err", "cuDriverGetVersion returned the error code 999"),
                       ("nosym", "%s has no symbol cuDriverGetVersion (is it libcuda?)" % libs["nosym"])):
        r = cv(libs[name])
        check((r.returncode, r.stdout, r.stderr) == (1, "", "gantry-cuda-version: %s\n" % want), (name, r))
    missing = os.path.join(d, "libcuda.so.1")
    r = cv(missing)
    check(r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1 and
          r.stderr.startswith("gantry-cuda-version: cannot load the library: %s: " % missing) and "No such file" in r.stderr, r)
    r = cv()
    check((r.returncode, r.stderr) == (1, "gantry-cuda-version: usage: gantry-cuda-version LIBCUDA_PATH\n"), r)


@test
def proc_dev_tmp():
    sb = new_sandbox()
    script = ("ls /proc/self/ >/dev/null && echo proc-ok; ps >/dev/null && echo ps-ok; echo x > /dev/null && echo null-ok;"
              "test -d /dev/pts && echo pts-ok; test -c /dev/null && echo chr-ok; readlink /dev/ptmx; readlink /dev/fd;"
              "ls -l /dev; stat -f -c %T /tmp; stat -c %a /tmp; stat -c %a /dev/shm; head -c 4 /dev/urandom | wc -c;"
              "grep ' /dev/pts ' /proc/self/mountinfo")
    out = ok(sh(std_ops(sb), script))
    for w in ("proc-ok", "ps-ok", "null-ok", "pts-ok", "chr-ok", "pts/ptmx", "/proc/self/fd", "tmpfs", "1777", "\n4\n",
              "ptmxmode=666", "mode=620"):
        check(w in out, "%s: %r" % (w, out))
    names = set(re.sub(r" -> .*", "", l).split()[-1] for l in out.split("\n")
                if l.startswith(("c", "l", "d")) and len(l.split()) > 5)
    want = {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "fd", "stdin", "stdout", "stderr"}
    check(want <= names, "ls -l /dev: %r" % names)


@test
def sys_ro():
    sb = new_sandbox()
    out = ok(sh(std_ops(sb, extra=[["sys", "/sys"]]),
                "ls /sys/class >/dev/null && echo sys-ok; echo 1 > /sys/kernel/uevent_helper 2>/dev/null || echo refused;"
                "awk '$5 ~ \"^/sys\" {print $5, $6}' /proc/self/mountinfo"))
    check("sys-ok" in out and "refused" in out, out)
    for l in out.strip().split("\n")[2:]:
        check(l.split()[1].startswith("ro"), "not read-only: %r" % l)


@test
def env_and_host_vars():
    sb = new_sandbox()
    env = (("PATH", "/bin"), ("FROMHOST", "home=${host:HOME};none=${host:GX_UNSET_VAR};lit=$HOME ${x}"),
           ("TWICE", "a"), ("TWICE", "b"), ("EMPTY", ""), ("SPACES", "a b\tc%d"))
    e = dict(ENV, HOME="/home/somebody", GX_SECRET="must-not-leak")
    e.pop("GX_UNSET_VAR", None)
    r = run(std_ops(sb, env=env), "/bin/env", opts=["--env", "CLI=1", "--env", "TWICE=c"], env=e)
    out = ok(r)
    got = dict(l.split("=", 1) for l in out.strip().split("\n"))
    want = {"PATH": "/bin", "FROMHOST": "home=/home/somebody;none=;lit=$HOME ${x}", "TWICE": "c", "EMPTY": "",
            "SPACES": "a b\tc%d", "CLI": "1"}
    check(got == want, "env: %r" % got)
    # env-pass: the launcher's variable when set; nothing at all when unset
    sb = new_sandbox()
    r = run(std_ops(sb, post=(("env-pass", "GX_PASSED"), ("env-pass", "GX_UNSET_VAR"))), "/bin/env", env=dict(e, GX_PASSED="x y"))
    got = dict(l.split("=", 1) for l in ok(r).strip().split("\n"))
    check(got.get("GX_PASSED") == "x y" and "GX_UNSET_VAR" not in got, "env-pass: %r" % got)


@test
def cwd():
    sb = new_sandbox()
    ops = std_ops(sb)
    ops.insert(-2, ["cwd", "/etc"])
    check(ok(run(ops, "/bin/pwd")) == "/etc\n", "cwd op")
    check(ok(run(ops, "/bin/pwd", opts=["--cwd", "/bin"])) == "/bin\n", "--cwd")
    check(ok(run(std_ops(sb), "/bin/pwd")) == "/\n", "default cwd")
    ops = std_ops(sb)
    ops.insert(-2, ["cwd", "/no/such/dir"])
    fails(run(ops, "/bin/pwd"), 125, r"cwd /no/such/dir: .*No such file")


@test
def exit_codes():
    sb = new_sandbox()
    ops = std_ops(sb)
    check(sh(ops, "exit 3").returncode == 3, "exit 3")
    fails(run(ops, "nosuchcmd"), 127, r"^gantry-exec: exec nosuchcmd: command not found in the image \(PATH=/bin\)$")
    fails(run(ops, "/bin/nosuchcmd"), 127, r"exec /bin/nosuchcmd: no such file")
    fails(run(ops, "noexec"), 126, r"exec noexec: cannot execute it: Permission denied")
    fails(run(ops, "badinterp"), 127, r"interpreter is missing")
    check(ok(run(ops, "noshebang")) == "noshebang-ok\n", "script without #!")
    check(ok(run(ops)) == "", "default argv (sh with empty stdin)")
    check(ok(run(ops, "--", "echo", "x")) == "x\n", "-- before the command")
    r = sh(ops, "kill -TERM $$")
    check(r.returncode == -signal.SIGTERM, "signal death: %d" % r.returncode)


@test
def plan_errors():
    sb = new_sandbox()
    fails(run(None, raw="gantry-plan 2\nexec\n"), 125, r"not a gantry plan")
    fails(run(None, raw="gantry-plan 1\nfrobnicate x\nexec\n"), 125, r"line 2: unknown op 'frobnicate' \(a plan from a newer Gantry\?\)")
    fails(run(None, raw="gantry-plan 1\nenv A  B\nexec\n"), 125, r"line 2: empty field")
    fails(run(None, raw="gantry-plan 1\nenv A %zz\nexec\n"), 125, r"line 2: malformed percent escape")
    fails(run(None, raw="gantry-plan 1\nenv A b$c\nexec\n"), 125, r"line 2: byte 0x24 must be percent-encoded")
    fails(run(None, raw="gantry-plan 1\nenv A\nexec\n"), 125, r"line 2: env takes 2 arguments, not 1")
    fails(run(None, raw="gantry-plan 1\nexec\nenv A B\n"), 125, r"exec must be the last op")
    fails(run(None, raw="gantry-plan 1\nenv A B\n"), 125, r"no exec op \(it must be the last op\)")
    fails(run(None, raw="gantry-plan 1\n# comment\n\n  \nenv A %41%2f%2F\"\"\nexec\n"), 125, r"byte 0x22")
    r = run(None, "/bin/true", raw="gantry-plan 1\n# c\n\nenv A \"\"\nexec")
    check(r.returncode == 0, r.stderr)  # no namespaces at all: runs on the host
    out = ok(run(None, "/bin/sh", "-c", "echo \"$A\"", raw="gantry-plan 1\nenv A %25%41%3d%20x\nexec\n"))
    check(out == "%A= x\n", "percent decoding: %r" % out)
    fails(run([["check", os.path.join(BASE, "gone")], ["exec"]], "true"), 125,
          r"check .*gone: the sandbox's plan is stale: .*gone is missing \(recreate the sandbox, or import its image again\)")
    fails(run([["userns", "0", "0"], ["overlay", sb["merged"], sb["upper"], sb["work"], L2, L1], ["exec"]], "true"), 125,
          r"refusing to mount outside a private mount namespace")
    fails(run([["userns", "0", "0"], ["mountns"], ["proc", "/proc"], ["exec"]], "true"), 125, r"no rootfs declared")
    fails(run([["userns", "x", "0"], ["exec"]], "true"), 125, r"userns: invalid number 'x'")


def hook_script(body, path=None):
    counter[0] += 1
    path = path or os.path.join(BASE, "hook%d.sh" % counter[0])
    with open(path, "w") as f:
        f.write(body)  # not executable: the launcher runs /bin/sh SCRIPT
    return path


def fstab_escape(p):
    return "".join("\\%03o" % ord(c) if c in " \t\n\\" else c for c in p)


@test
def hook():
    sb = new_sandbox()
    n = counter[0]
    log = os.path.join(BASE, "hooklog%d" % n)
    src = os.path.join(BASE, "hook src %d" % n)  # a space: \040 in the mounts file
    os.makedirs(src)
    with open(os.path.join(src, "in-src"), "w") as f:
        f.write("from the hook's mount\n")
    rsrc = os.path.join(BASE, "hookrsrc%d" % n)
    os.makedirs(os.path.join(rsrc, "sub"))
    body = r"""set -e
LOG=@LOG@
echo "pid=$GANTRY_PID" > $LOG
echo "rootfs=$GANTRY_ROOTFS" >> $LOG
echo "files=$GANTRY_ENVIRON $GANTRY_MOUNTS" >> $LOG
echo "state=$(stat -c %a "$GANTRY_ENVIRON") $(stat -c %a "$GANTRY_MOUNTS") $(wc -c < "$GANTRY_ENVIRON") $(wc -c < "$GANTRY_MOUNTS")" >> $LOG
echo "inherited=$GX_HOOK_VAR forged=$GANTRY_ROOTFS" >> $LOG
echo "umask=$(umask)" >> $LOG
if read x; then echo "stdin=data" >> $LOG; else echo "stdin=eof" >> $LOG; fi
test -f "$GANTRY_ROOTFS/etc/os-release" && echo "sees-rootfs" >> $LOG
echo hook-stdout
echo hook-stderr >&2
mkdir -p "$GANTRY_ROOTFS/mnt/byhook" && mount --bind @HOSTDIR@ "$GANTRY_ROOTFS/mnt/byhook"
printf 'HOOKED=yes\nSPACED=a b=c\n\nTWICE=1\nTWICE=2\nEARLY=hook\nLATE=hook\n' >> "$GANTRY_ENVIRON"
cat >> "$GANTRY_MOUNTS" <<EOF
# a comment

  @SRC@ /mnt/hooked none x-create=dir,ro,nosuid
@HOSTFILE@	/etc/hookfile	bind	x-create=file
@BASE@/missing /mnt/missing none nofail,x-create=dir
@RSRC@ /mnt/rec rbind x-create=auto
@HOSTDIR@ /mnt/rw none rw,ro,rw,bind,x-create=dir,nodev,noexec
@HOSTDIR@ /home
EOF
"""
    for k, v in (("@LOG@", log), ("@SRC@", fstab_escape(src)), ("@HOSTFILE@", HOSTFILE), ("@BASE@", BASE),
                 ("@RSRC@", rsrc), ("@HOSTDIR@", HOSTDIR)):
        body = body.replace(k, v)
    h = hook_script(body)
    pre = [["env", "EARLY", "plan"], ["tmpfs", os.path.join(rsrc, "sub"), "mode=0755"],
           ["mkdir", os.path.join(rsrc, "sub", "inner"), "0700"]]
    ops = std_ops(sb, pre=pre, extra=[["hook", h]], env=(("PATH", "/bin"), ("LATE", "plan")))
    script = ("env | sort; cat /mnt/hooked/in-src; touch /mnt/hooked/x 2>/dev/null || echo ro-refused;"
              "cat /etc/hookfile; test -e /mnt/missing || echo no-missing; test -d /mnt/rec/sub/inner && echo rec-inner;"
              "touch /mnt/rw/hook-rw && rm /mnt/rw/hook-rw && echo rw-ok; cat /home/hello /mnt/byhook/hello;"
              "grep -E ' /mnt/(rw|hooked) ' /proc/self/mountinfo")
    plan = write_plan(ops)
    e = dict(ENV, GX_HOOK_VAR="passed", GANTRY_ROOTFS="forged")
    p = subprocess.Popen([BIN, "--env", "TWICE=cli", plan, "/bin/sh", "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=e, stdin=subprocess.PIPE)
    out, err = p.communicate(input="stdin must not reach the hook\n", timeout=30)
    check(p.returncode == 0, "exit %d: %r %r" % (p.returncode, err, out))
    with open(log) as f:
        got = f.read()
    check("pid=%d\n" % p.pid in got, "GANTRY_PID: %r (launcher %d)" % (got, p.pid))
    check("rootfs=%s\n" % sb["merged"] in got and "sees-rootfs" in got, got)
    check("state=600 600 0 0\n" in got, "temp files not empty and private: %r" % got)
    check("inherited=passed forged=%s\n" % sb["merged"] in got, got)
    check("stdin=eof" in got, got)
    check("umask=%04o" % UMASK in got or "umask=%03o" % UMASK in got, "umask: %r" % got)
    files = re.search(r"files=(\S+) (\S+)", got).groups()
    tmpdir = ENV.get("TMPDIR") or "/tmp"
    check(all(os.path.dirname(x) == tmpdir for x in files), files)
    check(not any(os.path.exists(x) for x in files), "temp files left: %r" % (files,))
    check(out.startswith("hook-stdout\n") and "hook-stderr" in err, (out, err))
    env = dict(l.split("=", 1) for l in out.split("\n") if re.match(r"^[A-Z_]+=", l))
    want = {"HOOKED": "yes", "SPACED": "a b=c", "TWICE": "cli", "EARLY": "hook", "LATE": "plan", "PATH": "/bin"}
    check(all(env.get(k) == v for k, v in want.items()), "env: %r" % env)
    check(not any(k.startswith("GANTRY_") for k in env), env)
    for w in ("from the hook's mount", "ro-refused", "a host file", "no-missing", "rec-inner", "rw-ok"):
        check(w in out, "%s: %r" % (w, out))
    check(out.count("hello from the host") == 2, out)
    mi = {l.split()[4]: l for l in out.strip().split("\n") if " /mnt/" in l}
    check(mi["/mnt/hooked"].split()[5].startswith("ro") and "nosuid" in mi["/mnt/hooked"], mi)
    check(mi["/mnt/rw"].split()[5].startswith("rw") and "nodev" in mi["/mnt/rw"] and "noexec" in mi["/mnt/rw"], mi)


UMASK = os.umask(0o022)
os.umask(UMASK)


@test
def hook_pidns_and_order():
    sb = new_sandbox()
    log = os.path.join(BASE, "hooklog%d" % counter[0])
    h1 = hook_script("echo one $GANTRY_PID >> %s; grep NSpid /proc/$GANTRY_PID/status >> %s;"
                     "sleep 0.1 & wait; echo 'A=1' >> $GANTRY_ENVIRON; echo 'B=1' >> $GANTRY_ENVIRON\n" % (log, log))
    h2 = hook_script("echo two A=$A $(wc -c < $GANTRY_ENVIRON) >> %s; echo 'B=2' >> $GANTRY_ENVIRON\n" % log)
    ops = std_ops(sb, pidns=True, extra=[["hook", h1], ["hook", h2]])
    out = ok(sh(ops, "echo $A $B"))  # (the command's pid is not 2: the hooks ran in the pid namespace)
    check(out == "1 2\n", out)
    with open(log) as f:
        lines = f.read().split("\n")
    check(lines[0].startswith("one ") and lines[2] == "two A= 0", lines)
    pid = lines[0].split()[1]
    ns = lines[1].split()
    check(ns[0] == "NSpid:" and ns[1] == pid and ns[-1] == "1" and len(ns) >= 3,
          "GANTRY_PID is not pid 1 of the sandbox: %r" % lines)


@test
def hook_errors():
    sb = new_sandbox()
    log = os.path.join(BASE, "hooklog%d" % counter[0])
    files = "echo $GANTRY_ENVIRON $GANTRY_MOUNTS >> %s; " % log

    def hooked(body, **kw):
        h = hook_script(files + body)
        return h, sh(std_ops(sb, extra=[["hook", h]]), "echo should-not-run", **kw)

    h, r = hooked("exit 3")
    fails(r, 125, r"^gantry-exec: hook %s: exited with status 3$" % re.escape(h))
    h, r = hooked("kill -9 $$")
    fails(r, 125, r"^gantry-exec: hook %s: killed by signal 9$" % re.escape(h))
    h, r = hooked("printf 'GOOD=1\\n\\nnot a variable\\n' >> $GANTRY_ENVIRON")
    fails(r, 125, r"^gantry-exec: hook %s: GANTRY_ENVIRON line 3: not KEY=VALUE: 'not a variable' \(" % re.escape(h))
    h, r = hooked("echo '=x' >> $GANTRY_ENVIRON")
    fails(r, 125, r"GANTRY_ENVIRON line 1: not KEY=VALUE: '=x'")
    # every mounts line is checked before any is applied
    h, r = hooked("printf '%s /mnt/first none x-create=dir\\n%s /mnt/x tmpfs\\n' >> $GANTRY_MOUNTS" % (HOSTDIR, HOSTDIR))
    fails(r, 125, r"^gantry-exec: hook %s: GANTRY_MOUNTS line 2: unknown type 'tmpfs' \(" % re.escape(h))
    check(not os.path.exists(os.path.join(sb["upper"], "mnt", "first")), "applied before checking")
    h, r = hooked("echo '%s /mnt/x none ro,suid' >> $GANTRY_MOUNTS" % HOSTDIR)
    fails(r, 125, r"GANTRY_MOUNTS line 1: unknown option 'suid' \(OPTIONS: ro, rw, bind, rbind, nofail")
    h, r = hooked("echo '%s /mnt/x none ro 0 0' >> $GANTRY_MOUNTS" % HOSTDIR)
    fails(r, 125, r"GANTRY_MOUNTS line 1: too many fields")
    h, r = hooked("echo '#c' >> $GANTRY_MOUNTS; echo '%s' >> $GANTRY_MOUNTS" % HOSTDIR)
    fails(r, 125, r"GANTRY_MOUNTS line 2: no DST")
    # the bind op's own messages
    h, r = hooked("echo '%s/nope /mnt/x none x-create=dir' >> $GANTRY_MOUNTS" % BASE)
    fails(r, 125, r"^gantry-exec: bind %s/nope: the source does not exist \(add nofail to ignore\)$" % re.escape(BASE))
    h, r = hooked("echo '%s /mnt/nothere' >> $GANTRY_MOUNTS" % HOSTDIR)
    fails(r, 125, r"^gantry-exec: bind %s -> /mnt/nothere: the mount point /mnt/nothere does not exist in the sandbox "
                  r"\(add create=dir\|file\|auto to the bind\)$" % re.escape(HOSTDIR))
    with open(log) as f:
        left = [x for x in f.read().split() if os.path.exists(x)]
    check(not left, "temp files left: %r" % left)
    missing = os.path.join(BASE, "no-such-hook.sh")
    fails(sh(std_ops(sb, extra=[["hook", missing]]), "true"), 125,
          r"^gantry-exec: hook %s: cannot read the script: No such file or directory$" % re.escape(missing))
    fails(sh(std_ops(sb, extra=[["hook", "rel.sh"]]), "true"), 125, r"^gantry-exec: hook rel\.sh: the path must be absolute$")
    h = hook_script("true\n")
    fails(sh(std_ops(sb, pre=[["hook", h]]), "true"), 125, r"^gantry-exec: hook %s: no rootfs declared" % re.escape(h))
    fails(sh(std_ops(sb, post=[["hook", h]]), "true"), 125, r"^gantry-exec: hook %s: after pivot" % re.escape(h))
    fails(run(None, raw="gantry-plan 1\nhook\nexec\n"), 125, r"line 2: hook takes 1 argument, not 0")


@test
def expand_fields():
    # ${cwd} and ${host:NAME} in bind, cwd and hook fields (a Jupyter kernel in its notebook directory)
    sb = new_sandbox()
    work = os.path.join(BASE, "note book%d" % counter[0])
    os.makedirs(work)
    with open(os.path.join(work, "nb.ipynb"), "w") as f:
        f.write("notebook\n")
    hook_script("echo HOOKED=$GX_DST >> $GANTRY_ENVIRON\n", os.path.join(work, "hook.sh"))
    extra = [["bind", "${cwd}", "${cwd}", "rbind,create=dir"], ["bind", "${host:GX_SRC}", "/mnt/${host:GX_DST}", "create=dir"],
             ["hook", "${cwd}/hook.sh"]]
    env = (("PATH", "/bin"), ("LIT", "${cwd}"))
    ops = std_ops(sb, extra=extra, env=env)
    ops.insert(-2, ["cwd", "${cwd}"])
    plan = write_plan(ops)
    e = dict(ENV, GX_SRC=HOSTDIR, GX_DST="fromhost")
    cmd = "pwd; cat nb.ipynb; cat /mnt/fromhost/hello; echo $HOOKED $LIT; echo new > written"
    r = subprocess.run([BIN, plan, "/bin/sh", "-c", cmd], capture_output=True, text=True, env=e, cwd=work)
    out = ok(r)
    check(out == "%s\nnotebook\nhello from the host\nfromhost ${cwd}\n" % work, out)
    check(open(os.path.join(work, "written")).read() == "new\n", "not the host directory")
    ops = std_ops(sb)
    ops.insert(-2, ["cwd", "/etc${host:GX_UNSET}"])
    check(ok(run(ops, "/bin/pwd")) == "/etc\n", "unset ${host:}")


@test
def bind_parent():
    sb = new_sandbox()
    top = os.path.join(BASE, "runtime%d" % counter[0])
    rt = os.path.join(top, "jupyter")
    os.makedirs(rt)
    conn = os.path.join(rt, "kernel-1.json")
    with open(conn, "w") as f:
        f.write("port 1\n")
    # the plan's own bind at the same path comes first: --bind-parent goes on top of it
    ops = std_ops(sb, extra=[["bind", HOSTDIR, rt, "create=dir"]])
    cmd = "cat %s; test -e %s/hello || echo on-top; echo port 2 > %s" % (conn, rt, conn)
    out = ok(run(ops, "/bin/sh", "-c", cmd, opts=["--bind-parent", conn]))
    check(out == "port 1\non-top\n", out)
    check(open(conn).read() == "port 2\n", "not written through")
    # relative: from the launcher's working directory; the =PATH form; several
    plan = write_plan(std_ops(sb))
    r = subprocess.run([BIN, "--bind-parent", "jupyter/kernel-1.json", "--bind-parent=%s/x" % HOSTDIR, plan, "/bin/sh",
                        "-c", "cat %s %s/hello" % (conn, HOSTDIR)], capture_output=True, text=True, env=ENV, cwd=top)
    check(ok(r) == "port 2\nhello from the host\n", r.stdout)
    missing = os.path.join(BASE, "nodir", "k.json")
    fails(run(ops, "true", opts=["--bind-parent", missing]), 125,
          r"^gantry-exec: --bind-parent %s: the directory %s does not exist$" % (re.escape(missing),
                                                                               re.escape(os.path.dirname(missing))))
    fails(run(ops, "true", opts=["--bind-parent", "/k.json"]), 125, r"--bind-parent /k\.json: refusing to bind the root")
    fails(subprocess.run([BIN, "--bind-parent"], capture_output=True, text=True), 125, r"--bind-parent needs a PATH")
    fails(subprocess.run([BIN, "--bind-parent", conn, "--join", "1", "true"], capture_output=True, text=True), 125,
          r"--bind-parent goes with a plan")
    # no pivot: the command sees the host's files already
    out = ok(run(None, "/bin/cat", conn, raw="gantry-plan 1\nexec\n", opts=["--bind-parent", conn]))
    check(out == "port 2\n", out)


def other_user():
    """(name, uid, gid) of an unprivileged user (gtest, or test/'s gantry-test), or None: for the tests that need
    root to prepare files and another user to run the launcher."""
    if UID != 0:
        return None
    import pwd
    for name in ("gtest", "gantry-test"):
        try:
            u = pwd.getpwnam(name)
        except KeyError:
            continue
        return name, u.pw_uid, u.pw_gid
    return None


def chown_tree(path, ids):
    for d, dirs, files in os.walk(path):
        for x in [d] + [os.path.join(d, n) for n in dirs + files]:
            os.lchown(x, *ids)


def tree_state(path):
    """Every path below PATH with its mode, owner and content (a symlink's target): to see that nothing changed."""
    out = {}
    for d, dirs, files in os.walk(path):
        for n in [d] + [os.path.join(d, x) for x in dirs + files]:
            st = os.lstat(n)
            data = os.readlink(n) if stat.S_ISLNK(st.st_mode) else open(n, "rb").read() if stat.S_ISREG(st.st_mode) else None
            out[os.path.relpath(n, path)] = (st.st_mode, st.st_uid, st.st_gid, data)
    return out


def overlay_mounts(out, ro=False):
    """The mount points of the overlays in mountinfo lines (in OUT, among other lines); with ro, the read-only ones."""
    pts = []
    for l in out.split("\n"):
        if " - " in l and len(l.split(" - ")[0].split()) >= 6:
            left, right = l.split(" - ", 1)
            if right.split()[0] == "overlay" and (not ro or left.split()[5].split(",")[0] == "ro"):
                pts.append(left.split()[4])
    return sorted(pts)


@test
def unwritable_image_dirs():
    # A shared store written by root, used by another user: inside the user namespace the image's directories
    # belong to an unmapped uid, and mount points there are created in read-only helper overlays.
    user = other_user()
    if not user:
        raise Skip("needs root (to prepare a root-owned layer) and gtest or gantry-test (to run the launcher)")
    name, ids = user[0], user[1:]
    lr = os.path.join(BASE, "layers", "rootowned", "root")
    for d in ("etc", "home/alice", "home/bob"):
        os.makedirs(os.path.join(lr, d))
    for f, text in (("etc/motd", "welcome\n"), ("etc/shells", "/bin/sh\n"), ("home/alice/.profile", "# alice\n")):
        with open(os.path.join(lr, f), "w") as fh:
            fh.write(text)
    for d, _, _ in os.walk(lr):  # world-readable, owned by root
        os.chmod(d, 0o755)
    proj = os.path.join(BASE, "project%d" % counter[0])  # the user's project: both may write there
    os.makedirs(proj)
    os.chmod(proj, 0o777)
    with open(os.path.join(proj, "notebook.ipynb"), "w") as fh:
        fh.write("{}\n")
    lowers = [lr, L2, L1]
    layers_before = {p: tree_state(p) for p in (lr, L2, L1)}
    extra = [["bind", HOSTFILE, "/etc/hosts", "create=file"], ["bind", HOSTFILE, "/etc/resolv.conf", "ro,create=file"],
             ["bind", proj, "/home/someone/project", "create=dir"]]
    script = ("cat /etc/hosts /etc/resolv.conf; ls /home/someone/project; echo ---; ls /etc; echo ---; ls /home;"
              "echo ---; cat /etc/motd /home/alice/.profile; ls -a /dev | grep -c gantry; touch /etc/new 2>&1;"
              "touch /home/someone/new 2>&1; touch /home/someone/project/from-inside && rm /home/someone/project/from-inside"
              " && echo bind-rw; cat /proc/self/mountinfo")

    def check_view(out, who):
        parts = out.split("---\n")
        check(parts[0] == "a host file\na host file\nnotebook.ipynb\n", "%s: the binds: %r" % (who, out))
        check(set(parts[1].split()) >= {"hosts", "resolv.conf", "motd", "shells", "passwd", "os-release"},
              "%s: /etc: %r" % (who, parts[1]))
        check(parts[2].split() == ["alice", "bob", "someone"], "%s: /home: %r" % (who, parts[2]))
        check(parts[3].startswith("welcome\n# alice\n0\n"), "%s: the image, or /dev: %r" % (who, parts[3]))
        check("bind-rw" in parts[3], "%s: the bind: %r" % (who, parts[3]))

    # the user: /etc and /home get a helper overlay each (one for both files in /etc), read-only
    sb = new_sandbox()
    chown_tree(sb["dir"], ids)
    plan = write_plan(std_ops(sb, lowers=lowers, extra=extra))
    r = subprocess.run(["runuser", "-u", name, "--", BIN, plan, "/bin/sh", "-c", script], capture_output=True,
                       text=True, env=ENV, timeout=30)
    out = ok(r, "as " + name)
    check_view(out, name)
    for p in ("/etc/new", "/home/someone/new"):
        check(re.search(r"touch: %s: (Read-only file system|Permission denied)" % p, out), "%s written: %r" % (p, out))
    check(overlay_mounts(out) == ["/", "/etc", "/home"], "overlays as %s: %r" % (name, overlay_mounts(out)))
    check(overlay_mounts(out, ro=True) == ["/etc", "/home"], "read-only overlays: %r" % overlay_mounts(out, ro=True))
    check(os.listdir(sb["upper"]) == [], "the sandbox's upper layer changed: %r" % os.listdir(sb["upper"]))
    check({p: tree_state(p) for p in (lr, L2, L1)} == layers_before, "a layer changed")
    # root (the owner, mapped): nothing changes, the mount points go into the upper layer
    sb = new_sandbox()
    out = ok(sh(std_ops(sb, lowers=lowers, extra=extra), script), "as root")
    check_view(out, "root")
    check(overlay_mounts(out) == ["/"], "overlays as root: %r" % overlay_mounts(out))
    check(os.path.isfile(os.path.join(sb["upper"], "etc", "hosts")), "not in root's upper layer")
    check(os.path.isdir(os.path.join(sb["upper"], "home", "someone", "project")), "not in root's upper layer")
    os.unlink(os.path.join(sb["upper"], "etc", "new"))
    os.unlink(os.path.join(sb["upper"], "home", "someone", "new"))
    check({p: tree_state(p) for p in (lr, L2, L1)} == layers_before, "a layer changed")

    # no dev op before it: the original error, and why the fallback could not help
    sb = new_sandbox()
    chown_tree(sb["dir"], ids)
    ops = std_ops(sb, lowers=lowers)
    ops.insert([o[0] for o in ops].index("dev"), ["bind", HOSTFILE, "/etc/hosts", "create=file"])
    r = subprocess.run(["runuser", "-u", name, "--", BIN, write_plan(ops), "true"], capture_output=True, text=True,
                       env=ENV, timeout=30)
    fails(r, 125, r"^gantry-exec: bind %s -> /etc/hosts: cannot create the mount point /etc/hosts: Permission denied "
                  r"\(and making /etc writable failed: no dev op before it " % re.escape(HOSTFILE))

    # a root-owned plain directory as the root: its / gets a helper overlay (the mounts already made on the root
    # move onto it), and /home and /etc, directories of that overlay's lower layer, one each of their own
    ops = [["userns", "0", "0"], ["mountns"], ["rootfs", L1], ["bind", L1, "/", ""], ["proc", "/proc"], ["dev", "/dev"],
           ["tmpfs-in", "/tmp", "mode=1777"], ["bind", HOSTDIR, "/work/x", "rbind,create=dir"],
           ["bind", HOSTFILE, "/home/someone/file", "create=file"], ["bind", HOSTFILE, "/etc/hosts", "create=file"],
           ["pivot"], ["env", "PATH", "/bin"], ["argv", "/bin/sh"], ["exec"]]
    script = ("cat /work/x/hello /home/someone/file /etc/hosts /etc/os-release; echo x > /tmp/t && cat /tmp/t;"
              "echo y > /dev/null && test -c /dev/null && echo dev-ok; test -e /proc/self/mountinfo && echo proc-ok;"
              "ls -a /dev | grep -c gantry; touch /new 2>&1; cat /proc/self/mountinfo")
    r = subprocess.run(["runuser", "-u", name, "--", BIN, write_plan(ops), "/bin/sh", "-c", script],
                       capture_output=True, text=True, env=ENV, timeout=30)
    out = ok(r, "flat root as " + name)
    check(out.startswith("hello from the host\na host file\na host file\nID=lower-layer-should-be-hidden\nx\n"
                         "dev-ok\nproc-ok\n0\n"), "flat root: %r" % out)
    check(re.search(r"touch: /new: (Read-only file system|Permission denied)", out), "/ written: %r" % out)
    check(overlay_mounts(out) == overlay_mounts(out, ro=True) == ["/", "/etc", "/home"],
          "overlays, flat root: %r" % overlay_mounts(out))
    check({p: tree_state(p) for p in (lr, L2, L1)} == layers_before, "a layer changed (flat root)")


@test
def overlay_refused():
    sb = new_sandbox()
    # workdir on another filesystem than upperdir: the kernel refuses
    other = tempfile.mkdtemp(dir="/tmp" if BASE.startswith("/dev/shm") else "/dev/shm")
    try:
        ops = std_ops(sb)
        i = [o[0] for o in ops].index("overlay")
        ops[i][3] = other
        fails(run(ops, "true"), 125, r"^gantry-exec: overlay .*: the kernel refused the overlay mount.*\(overlayfs in a user namespace needs Linux >= 5\.11\)$")
        ops[i][3] = sb["work"]
        ops[i][5] = os.path.join(BASE, "no-such-layer")
        fails(run(ops, "true"), 125, r"overlay .*no-such-layer")
    finally:
        shutil.rmtree(other)


@test
def userns_disabled_message():
    # a nested user namespace whose limit is 0: unshare(CLONE_NEWUSER) fails with ENOSPC
    sb = new_sandbox()
    plan = write_plan(std_ops(sb))
    r = subprocess.run(["unshare", "-U", "-r", "sh", "-c",
                        "echo 0 > /proc/sys/user/max_user_namespaces && exec %s %s true" % (BIN, plan)],
                       capture_output=True, text=True, env=ENV)
    if "Permission denied" in r.stderr and "gantry-exec" not in r.stderr:
        raise Skip("cannot lower max_user_namespaces here: %s" % r.stderr.strip())
    fails(r, 125, r"^gantry-exec: userns: cannot create a user namespace: .* \(check the sysctls user\.max_user_namespaces and kernel\.unprivileged_userns_clone\)$")


def wait_line(p, want, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        line = p.stdout.readline()
        if not line:
            break
        if want in line:
            return line
    raise AssertionError("did not see %r" % want)


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def popen(ops, *cmd, **kw):
    plan = write_plan(ops)
    return subprocess.Popen([BIN, plan] + list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, **kw)


TRAP = ("trap 'echo got-$1; exit 7' TERM; n=0; trap 'n=$((n+1)); echo int-$n' INT; echo ready $$;"
        "while :; do sleep 0.05; done")


@test
def signals_without_pidns():
    sb = new_sandbox()
    p = popen(std_ops(sb), "/bin/sh", "-c", TRAP.replace("$1", "term"))
    wait_line(p, "ready")
    with open("/proc/%d/comm" % p.pid) as f:
        comm = f.read().strip()
    check(comm in ("sh", "busybox"), "the launcher pid is not the command: %r" % comm)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    check(p.returncode == 7 and "got-term" in out, (p.returncode, out, err))


@test
def pidns():
    sb = new_sandbox()
    ops = std_ops(sb, pidns=True)
    out = ok(sh(ops, "echo $$; cat /proc/1/comm; ls -d /proc/[0-9]* | wc -l"))
    check(out.split("\n")[:2] == ["2", "gantry-exec"], out)
    check(sh(ops, "exit 5").returncode == 5, "exit status")
    check(sh(ops, "kill -TERM $$").returncode == -signal.SIGTERM, "signal death not re-raised")
    # SIGTERM to the outer waiter reaches the command
    p = popen(ops, "/bin/sh", "-c", TRAP.replace("$1", "term"))
    wait_line(p, "ready 2")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    check(p.returncode == 7 and "got-term" in out, (p.returncode, out, err))
    # killpg (Jupyter's interrupt): the command gets SIGINT exactly once
    p = popen(ops, "/bin/sh", "-c", TRAP.replace("$1", "term"), start_new_session=True)
    wait_line(p, "ready 2")
    os.killpg(p.pid, signal.SIGINT)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    check(out.count("int-") == 1 and p.returncode == 7, "killpg SIGINT: %r %r" % (out, err))
    # orphans are reaped by pid 1
    out = ok(sh(ops, "sh -c 'sleep 0.1 & sleep 0.1 & exit 0'; sleep 0.6; cat /proc/[0-9]*/stat | awk '{print $3}' | sort | uniq -c"))
    check(" Z" not in out, "zombies: %r" % out)
    # SIGKILL of the waiter kills the sandbox (PDEATHSIG)
    p = popen(ops, "/bin/sh", "-c", "sleep 3%d.%s & echo ready; wait" % (counter[0], TAG))
    wait_line(p, "ready")
    inner = children(p.pid)
    check(len(inner) == 1, "pid 1: %r" % inner)
    tree = inner + children(inner[0])
    tree += [g for c in children(inner[0]) for g in children(c)]
    check(len(tree) >= 3, "process tree: %r" % tree)
    p.kill()
    p.wait()
    time.sleep(0.3)
    left = [x for x in tree if alive(x)]
    check(not left, "left behind: %r" % left)


@test
def netns():
    sb = new_sandbox()
    out = ok(sh(std_ops(sb, netns=True), "tail -n +3 /proc/net/dev; echo ---; ip link show"))
    ifs = [l.split(":")[0].strip() for l in out.split("---")[0].strip().split("\n")]
    check(ifs == ["lo"], "interfaces: %r in %r" % (ifs, out))
    check(re.search(r"\d+: lo: <[^>]*\bUP\b", out), "lo not up: %r" % out)


@test
def fakeroot():
    sb = new_sandbox()
    ops = std_ops(sb, post=[["nonewprivs"], ["fakeroot"]])
    out = ok(sh(ops, "touch /f && chown 123:456 /f && echo chown-ok; id -u; su -s /bin/sh nobody -c 'id -u' 2>&1; "
                     "grep -E 'NoNewPrivs|Seccomp:' /proc/self/status"))
    check("chown-ok" in out and out.split("\n")[1] == "0", out)
    check(re.search(r"NoNewPrivs:\s+1", out) and re.search(r"Seccomp:\s+2", out), out)
    sb = new_sandbox()
    r = sh(std_ops(sb, post=[["nonewprivs"]]), "touch /f && chown 123:456 /f && echo chown-ok")
    check("chown-ok" not in r.stdout, "chown succeeded without fakeroot: %r" % r.stdout)


@test
def join():
    for pid_ns in (False, True):
        sb = new_sandbox()
        env = (("PATH", "/bin"), ("FOO", "bar baz"))
        ops = std_ops(sb, pidns=pid_ns, env=env)
        ops.insert(-2, ["cwd", "/etc"])
        p = popen(ops, "/bin/sh", "-c", "echo ready; exec sleep 3%d.%s" % (counter[0], TAG))
        try:
            wait_line(p, "ready")
            target = p.pid
            if pid_ns:
                target = children(children(p.pid)[0])[0]
            for _ in range(100):  # wait for the exec of sleep
                with open("/proc/%d/comm" % target) as f:
                    if f.read().strip() == "sleep":
                        break
                time.sleep(0.02)
            r = subprocess.run([BIN, "--join", str(target), "/bin/sh", "-c",
                                "cat /etc/os-release; env | sort; id -u; pwd; echo $$; ls /proc | grep -c '^[0-9]'"],
                               capture_output=True, text=True, env=ENV)
            out = ok(r, "join (pidns=%s)" % pid_ns)
            check("ID=gantry-test" in out and "FOO=bar baz" in out and "PATH=/bin" in out, out)
            lines = out.strip().split("\n")
            check(lines[-4] == "0" and lines[-3] == "/etc", "uid/cwd: %r" % lines)
            if pid_ns:
                check(int(lines[-2]) > 2 and int(lines[-1]) <= 6, "not in the pid namespace: %r" % lines)
            r = subprocess.run([BIN, "--join", str(target), "--env", "FOO=x", "--cwd", "/bin", "/bin/sh", "-c",
                                "echo $FOO; pwd; exit 4"], capture_output=True, text=True, env=ENV)
            check(r.returncode == 4 and r.stdout == "x\n/bin\n", (r.returncode, r.stdout, r.stderr))
            r = subprocess.run([BIN, "--fakeroot", "--join", str(target), "/bin/sh", "-c",
                                "touch /tmp/f && chown 12:34 /tmp/f && grep Seccomp: /proc/self/status"],
                               capture_output=True, text=True, env=ENV)
            check(r.returncode == 0 and "2" in r.stdout, ("--fakeroot", r.returncode, r.stdout, r.stderr))
        finally:
            p.kill()
            p.wait()
    fails(subprocess.run([BIN, "--join", "999999999", "true"], capture_output=True, text=True), 125,
          r"join 999999999: no such process")
    fails(subprocess.run([BIN, "--join", str(os.getpid()), "true"], capture_output=True, text=True), 125,
          r"is not in a sandbox")


@test
def many_layers():
    # 45 lowers with ~100-character paths: more than one page of lowerdir=
    top = os.path.join(BASE, "many", "x" * 40)
    lowers = []
    for i in range(45):
        name = "layer-%02d-" % i
        name += "y" * max(1, 100 - len(top) - len(name) - len("//root"))
        d = os.path.join(top, name, "root")
        os.makedirs(os.path.join(d, "etc"))
        with open(os.path.join(d, "layer%02d" % i), "w") as f:
            f.write("%d\n" % i)
        with open(os.path.join(d, "etc", "who"), "w") as f:
            f.write("%d\n" % i)
        lowers.append(d)
    check(len(lowers[0]) >= 100 and sum(len(x) + 1 for x in lowers) > 4096, "paths too short")
    lowers = lowers[::-1] + [L2, L1]  # top-most first: layer 44 wins
    sb = new_sandbox()
    out = ok(sh(std_ops(sb, lowers=lowers), "ls / | grep -c '^layer'; cat /etc/who /etc/os-release"))
    check(out == "45\n44\nID=gantry-test\n", out)
    # a long upper path (> 255 bytes: passed to fsconfig as /proc/self/fd/N)
    long = os.path.join(BASE, "u" * 120, "v" * 120)
    sb = {k: os.path.join(long, k) for k in ("upper", "work", "merged")}
    for x in sb.values():
        os.makedirs(x)
    out = ok(sh(std_ops(sb, lowers=lowers), "echo hi > /z; cat /etc/who"))
    check(out == "44\n" and os.path.exists(os.path.join(sb["upper"], "z")), out)


@test
def pidns_terminal():
    # on a terminal, the command becomes the foreground process group (Ctrl-C reaches it, once)
    import fcntl
    import termios
    sb = new_sandbox()
    plan = write_plan(std_ops(sb, pidns=True))
    master, slave = os.openpty()

    def pre():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    script = ("n=0; trap 'n=$((n+1))' INT; cut -d' ' -f5,8 /proc/self/stat; echo ready;"
              "i=0; while [ $i -lt 40 ] && [ $n = 0 ]; do sleep 0.05; i=$((i+1)); done; sleep 0.2; echo ints=$n")
    p = subprocess.Popen([BIN, plan, "/bin/sh", "-c", script], stdin=slave, stdout=slave, stderr=slave,
                         preexec_fn=pre, env=ENV)
    os.close(slave)
    out = b""
    sent = False
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if b"ready" in out and not sent:
            os.write(master, b"\x03")
            sent = True
    os.close(master)
    p.wait(timeout=10)
    text = out.decode(errors="replace").replace("\r", "")
    first = text.split("\n")[0].split()
    check(len(first) == 2 and first[0] == first[1], "not the foreground group: %r" % text)
    check("ints=1" in text and p.returncode == 0, "Ctrl-C: %r rc=%d" % (text, p.returncode))


@test
def join_other_user():
    # root joins a sandbox started by another user: inside it is their uid 0, outside it is them
    user = other_user()
    if not user:
        raise Skip("needs root and gtest or gantry-test")
    name, uid = user[0], user[1]
    sb = new_sandbox()
    plan = write_plan(std_ops(sb, upper=False))
    p = subprocess.Popen(["runuser", "-u", name, "--", BIN, plan, "/bin/sh", "-c", "echo ready; exec sleep 36." + TAG],
                         stdout=subprocess.PIPE, text=True, env=ENV)
    target = None
    try:
        wait_line(p, "ready")
        for _ in range(100):
            for c in children(p.pid):
                with open("/proc/%d/comm" % c) as f:
                    if f.read().strip() == "sleep":
                        target = c
            if target:
                break
            time.sleep(0.02)
        check(target, "no sandbox process")
        j = subprocess.Popen([BIN, "--join", str(target), "/bin/sh", "-c", "id -u; cat /etc/os-release; exec sleep 35." + TAG],
                             stdout=subprocess.PIPE, text=True, env=ENV)
        check(wait_line(j, "0") == "0\n" and wait_line(j, "ID=") == "ID=gantry-test\n", "inside view")
        with open("/proc/%d/status" % j.pid) as f:
            st = f.read()
        check(re.search(r"\nUid:\s+%d\s+%d" % (uid, uid), st), "host uid: %r" % st)
        check(re.search(r"\nNoNewPrivs:\s+1", st), "no_new_privs")
        j.kill()
        j.wait()
    finally:
        if target:
            os.kill(target, signal.SIGKILL)  # runuser's child: killing runuser would not end it
        p.kill()
        p.wait()


@test
def no_fork_without_pidns():
    sb = new_sandbox()
    p = popen(std_ops(sb), "/bin/sh", "-c", "echo ready; sh -c 'sleep 5; true'; true")
    wait_line(p, "ready")
    with open("/proc/%d/comm" % p.pid) as f:
        comm = f.read().strip()
    check(comm in ("sh", "busybox"), "the launcher's pid is not the command: %r" % comm)
    for _ in range(100):
        kids = children(p.pid)
        if kids:
            break
        time.sleep(0.02)
    check(len(kids) == 1, kids)
    with open("/proc/%d/comm" % kids[0]) as f:
        comm = f.read().strip()
    check(comm in ("sh", "busybox", "sleep", "exe"), "unexpected child: %r" % comm)
    p.kill()
    p.wait()


def mounts():
    # Only mounts that involve this run's files: other programs may mount and unmount meanwhile.
    with open("/proc/self/mountinfo") as f:
        return sorted(" ".join(l.split()[3:5]) for l in f if BASE in l or BIN in l)


def ours():
    """Processes started by these tests that are still around."""
    left = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"exec_test.py" in cmd:
            continue  # this script and whatever started it (runuser)
        if BIN.encode() in cmd or BASE.encode() in cmd or re.match(rb"sleep\x003\d+\." + TAG.encode() + rb"\x00", cmd):
            left.append((d, cmd))
    return left


def main():
    before = mounts()
    build_image()
    failures = []
    skipped = []
    n = 0
    for t in TESTS:
        if args.k and args.k not in t.__name__:
            continue
        n += 1
        t0 = time.time()
        try:
            t()
            print("ok   %-40s %.2fs" % (t.__name__, time.time() - t0))
        except Skip as e:
            skipped.append(t.__name__)
            print("SKIP %-40s %s" % (t.__name__, e))
        except Exception as e:
            failures.append(t.__name__)
            print("FAIL %-40s %s" % (t.__name__, e))
    time.sleep(0.3)
    after = mounts()
    if before != after:
        failures.append("mounts-left")
        print("FAIL mounts left on the host:", sorted(set(after) - set(before)))
    left = ours()
    if left:
        failures.append("processes-left")
        print("FAIL processes left:", left)
    subprocess.run(["rm", "-rf", BASE])
    who = "uid %d%s" % (UID, ", legacy" if args.legacy else "")
    result = "all passed" if not failures else "FAILED: " + ", ".join(failures)
    print("%d tests (%s): %s" % (n - len(skipped), who, result))
    print("skipped: %s" % (", ".join(skipped) or "none"))
    sys.exit(1 if failures else 0)


main()
