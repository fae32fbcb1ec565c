#!/usr/bin/python3
"""Dev-aid tests for gantry-untar (mode 1: extract a tar from stdin).

    /usr/bin/python3 native/test/untar_test.py [--userns] [--base DIR] [--bin PATH]

Run as root, and as an ordinary user with --userns (DEST owned by that user).
Crafts tars with tarfile (ustar, GNU, PAX, hand-made v7) and checks every rule.
"""
import argparse
import hashlib
import io
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BIN = os.path.join(HERE, "..", "build", "Release", "gantry-untar")

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=DEFAULT_BIN)
ap.add_argument("--userns", action="store_true")
ap.add_argument("--base", default="/dev/shm")
ap.add_argument("-k", default="", help="only tests whose name contains this")
args = ap.parse_args()
BIN = os.path.abspath(args.bin)
FLAGS = ["--userns"] if args.userns else []

failures = []
count = 0
T0 = 1600000000


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def ti(name, type=tarfile.REGTYPE, data=b"", mode=0o644, mtime=T0, linkname="", pax=None):
    t = tarfile.TarInfo(name)
    t.type = type
    t.mode = mode
    t.mtime = mtime
    t.linkname = linkname
    t.uid = t.gid = 12345
    t.uname = t.gname = "someone"
    if pax:
        t.pax_headers = dict(pax)
    if type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
        t.size = len(data)
    return (t, data)


def D(name, mode=0o755, mtime=T0, **kw):
    return ti(name, tarfile.DIRTYPE, mode=mode, mtime=mtime, **kw)


def F(name, data=b"x", mode=0o644, mtime=T0, **kw):
    return ti(name, tarfile.REGTYPE, data=data, mode=mode, mtime=mtime, **kw)


def L(name, target, mtime=T0, **kw):
    return ti(name, tarfile.SYMTYPE, linkname=target, mode=0o777, mtime=mtime, **kw)


def H(name, target, **kw):
    return ti(name, tarfile.LNKTYPE, linkname=target, **kw)


def build(entries, fmt=tarfile.PAX_FORMAT):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=fmt) as tf:
        for t, data in entries:
            tf.addfile(t, io.BytesIO(data) if t.isreg() else None)
    return bio.getvalue()


def newdest():
    d = tempfile.mkdtemp(prefix="gut-", dir=WORK)
    return d


def run(data, dest=None, flags=None, chunked=False):
    dest = dest or newdest()
    cmd = [BIN] + (FLAGS if flags is None else flags) + [dest]
    if not chunked:
        p = subprocess.run(cmd, input=data, capture_output=True)
        return p.returncode, p.stdout.decode(), p.stderr.decode(), dest
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rnd = random.Random(len(data))
    i = 0
    while i < len(data):
        k = rnd.choice([1, 7, 100, 511, 513, 4097, 65537, 200000])
        p.stdin.write(data[i:i + k])
        p.stdin.flush()
        i += k
    p.stdin.close()
    out = p.stdout.read().decode()
    err = p.stderr.read().decode()
    p.wait()
    return p.returncode, out, err, dest


def ok(data, **kw):
    rc, out, err, dest = run(data, **kw)
    check(rc == 0, f"expected success, rc={rc} stderr={err!r}")
    check(err == "", f"unexpected stderr {err!r}")
    lines = out.splitlines()
    check(len(lines) == 2, f"stdout must be two lines (result, implicit dirs): {out!r}")
    check(list(json.loads(lines[1]).keys()) == ["implicitTruncated", "implicit"], f"second line {lines[1]!r}")
    j = json.loads(lines[0])
    check(list(j.keys()) == ["sha256", "bytes", "files", "dirs", "symlinks", "hardlinks", "whiteouts",
                             "opaque", "skipped", "size"], f"json keys {list(j.keys())}")
    check(j["sha256"] == hashlib.sha256(data).hexdigest(), "sha256 mismatch")
    check(j["bytes"] == len(data), f"bytes {j['bytes']} != {len(data)}")
    return j, dest


def fail(data, *needles, rc=1, **kw):
    code, out, err, dest = run(data, **kw)
    check(code == rc, f"expected rc={rc}, got {code}; stdout={out!r} stderr={err!r}")
    check(out == "", f"no stdout expected on failure: {out!r}")
    check(err.count("\n") == 1 and err.endswith("\n"), f"stderr must be one line: {err!r}")
    check(err.startswith("gantry-untar: "), f"stderr prefix: {err!r}")
    for n in needles:
        check(n in err, f"stderr {err!r} lacks {n!r}")
    return err, dest


def lst(p):
    return os.lstat(p)


def mode(p):
    return stat.S_IMODE(lst(p).st_mode)


def is_whiteout(p):
    st = lst(p)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def xattr(p, name="user.overlay.opaque"):
    try:
        return os.getxattr(p, name, follow_symlinks=False)
    except OSError:
        return None


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


# ---------------------------------------------------------------- tests


@test
def basic_tree_modes_mtimes():
    ents = [D("./", mode=0o700, mtime=5), D("./a/", mtime=T0 + 1), F("./a/f", b"hello", 0o640, T0 + 2),
            D("./ro/", mode=0o555, mtime=T0 + 3), F("./ro/file", b"r", 0o444, T0 + 4),
            F("./suid", b"s", 0o4755), F("./sgid", b"g", 0o2711), F("./sticky", b"t", 0o1644),
            D("./tmp/", mode=0o1777, mtime=T0 + 5), D("./sgiddir/", mode=0o2775), L("./a/lnk", "f", T0 + 6),
            F("./a/empty", b"", 0o600, T0 + 7), D("./zero/", mode=0o000, mtime=T0 + 8),
            D("./zero/in/", mode=0o000, mtime=T0 + 9)]
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        data = build(ents, fmt)
        j, d = ok(data)
        check((j["files"], j["dirs"], j["symlinks"], j["size"]) == (6, 6, 1, 9), f"counts {j}")
        check(mode(d) != 0o700 or True, "")
        check(lst(f"{d}/a/f").st_atime_ns == (T0 + 2) * 10**9, "file atime = mtime")
        check(open(f"{d}/a/f", "rb").read() == b"hello", "content")
        check(mode(f"{d}/a/f") == 0o640, "mode 640")
        check(mode(f"{d}/ro") == 0o555 and mode(f"{d}/ro/file") == 0o444, "ro modes")
        check(mode(f"{d}/suid") == 0o755, f"setuid dropped {oct(mode(d + '/suid'))}")
        check(mode(f"{d}/sgid") == 0o711, "setgid dropped")
        check(mode(f"{d}/sticky") == 0o1644, "sticky kept on file")
        check(mode(f"{d}/tmp") == 0o1777, "sticky dir")
        check(mode(f"{d}/sgiddir") == 0o775, "setgid dropped on dir")
        check(mode(f"{d}/zero") == 0, "mode 000 dir")
        check(lst(f"{d}/a/f").st_mtime_ns == (T0 + 2) * 10**9, "file mtime")
        check(lst(f"{d}/a").st_mtime_ns == (T0 + 1) * 10**9, "dir mtime after children")
        check(lst(f"{d}/ro").st_mtime_ns == (T0 + 3) * 10**9, "ro dir mtime")
        check(lst(f"{d}/zero").st_mtime_ns == (T0 + 8) * 10**9, "000 dir mtime")
        check(lst(f"{d}/a/lnk").st_mtime_ns == (T0 + 6) * 10**9, "symlink mtime")
        check(os.readlink(f"{d}/a/lnk") == "f", "symlink target")
        check(lst(f"{d}/a/f").st_uid == os.geteuid(), "owner is the caller, not the tar uid")
        check(lst(d).st_mtime_ns != 5 * 10**9, "root not touched")
        check(stat.S_IMODE(lst(d).st_mode) == 0o700, "root mode not changed (mkdtemp 0700)")
        os.chmod(f"{d}/zero", 0o700)  # so that it can be looked into as non-root
        check(mode(f"{d}/zero/in") == 0 and lst(f"{d}/zero/in").st_mtime_ns == (T0 + 9) * 10**9, "000 subdir")


@test
def implicit_parents_and_dir_mtime_after_modification():
    ents = [D("x/", mtime=T0), F("x/y/z/deep", b"d"), D("x/y/", mode=0o711, mtime=T0 + 50), F("x/late", b"l")]
    j, d = ok(build(ents))
    check(mode(f"{d}/x/y/z") == 0o755, "implicit parent 0755")
    check(mode(f"{d}/x/y") == 0o711, "later dir entry mode")
    check(lst(f"{d}/x").st_mtime_ns == T0 * 10**9, "x mtime restored although x/late came later")
    check(lst(f"{d}/x/y").st_mtime_ns == (T0 + 50) * 10**9, "x/y mtime")
    check(j["dirs"] == 2, "implicit dirs not counted")


@test
def long_names_all_formats():
    n150 = "p/" + "a" * 60 + "/" + "b" * 85  # fits ustar prefix+name
    n300 = "q/" + "/".join(["c" * 50] * 5) + "/" + "f" * 40
    c260 = "d/" + "e" * 200 + "/" + "g" * 55  # component-wise fine
    tlong = "/some/where/" + "t" * 150
    for fmt, names in ((tarfile.USTAR_FORMAT, [n150]), (tarfile.GNU_FORMAT, [n150, n300, c260]),
                       (tarfile.PAX_FORMAT, [n150, n300, c260])):
        ents = []
        for n in names:
            ents.append(F(n, n.encode()))
        if fmt != tarfile.USTAR_FORMAT:
            ents.append(L("sym-long", tlong))
            ents.append(H("hl-long", names[-1]))
            ents.append(F("z/" + "h" * 120, b"hl target"))
            ents.append(H("hl-long2", "z/" + "h" * 120))
        j, d = ok(build(ents, fmt))
        for n in names:
            check(open(f"{d}/{n}", "rb").read() == n.encode(), f"long name {fmt} {len(n)}")
        if fmt != tarfile.USTAR_FORMAT:
            check(os.readlink(f"{d}/sym-long") == tlong, "long symlink target")
            check(lst(f"{d}/hl-long").st_ino == lst(f"{d}/{names[-1]}").st_ino, "long hardlink")
            check(lst(f"{d}/hl-long2").st_ino == lst(f"{d}/z/{'h' * 120}").st_ino, "long hardlink 2")


@test
def pax_fractional_mtime_and_size_and_path():
    t, data = F("short", b"abc")
    t.pax_headers = {"mtime": "1700000000.123456789", "path": "pax/renamed", "SCHILY.xattr.user.foo": "bar",
                     "uname": "x"}
    j, d = ok(build([(t, data), L("pl", "t", pax={"mtime": "1700000001.5"}),
                     D("pd", pax={"mtime": "1700000002.25"})]))
    check(os.path.exists(f"{d}/pax/renamed") and not os.path.exists(f"{d}/short"), "pax path")
    check(lst(f"{d}/pax/renamed").st_mtime_ns == 1700000000123456789, "fractional mtime")
    check(lst(f"{d}/pl").st_mtime_ns == 1700000001500000000, "symlink fractional")
    check(lst(f"{d}/pd").st_mtime_ns == 1700000002250000000, "dir fractional")
    check(xattr(f"{d}/pax/renamed", "user.foo") is None, "xattrs not applied")


@test
def pax_global_header_ignored():
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "hello", "path": "ignored"}) as tf:
        t, data = F("file", b"1")
        tf.addfile(t, io.BytesIO(data))
    j, d = ok(bio.getvalue())
    check(os.listdir(d) == ["file"], f"global header ignored: {os.listdir(d)}")


@test
def negative_and_base256_mtime():
    ents = [F("neg", b"n", mtime=-1000), F("big", b"b", mtime=8**11 + 5)]
    j, d = ok(build(ents, tarfile.GNU_FORMAT))
    check(lst(f"{d}/neg").st_mtime_ns == -1000 * 10**9, "negative mtime (base-256)")
    check(lst(f"{d}/big").st_mtime_ns == (8**11 + 5) * 10**9, "big mtime (base-256)")


@test
def hardlinks():
    ents = [D("d/"), F("d/orig", b"data", 0o600), H("d/link", "d/orig"), H("other/link2", "./d/orig"),
            F("d/orig2", b"22"), F("d/replace", b"old"), H("d/replace", "d/orig2"), H("d/orig", "d/orig")]
    j, d = ok(build(ents))
    check(j["hardlinks"] == 4 and j["files"] == 3 and j["size"] == 9, f"counts {j}")
    ino = lst(f"{d}/d/orig").st_ino
    check(lst(f"{d}/d/link").st_ino == ino and lst(f"{d}/other/link2").st_ino == ino, "linked")
    check(lst(f"{d}/d/replace").st_ino == lst(f"{d}/d/orig2").st_ino, "replaced by link")
    check(lst(f"{d}/d/orig").st_nlink == 3, "nlink")


@test
def hardlink_escapes_and_missing():
    fail(build([H("evil", "../../etc/passwd")]), "evil", "outside the layer")
    fail(build([H("evil", "/etc/passwd")]), "evil", "outside the layer")
    fail(build([H("evil", "nothere")]), "evil", "hardlink target outside the layer or missing")
    fail(build([D("x/"), H("evil", "x")]), "evil", "hardlink target outside the layer or missing")
    fail(build([L("s", "/etc/passwd"), H("evil", "s")]), "evil", "hardlink target outside the layer or missing")
    fail(build([L("dir", "/etc"), H("evil", "dir/passwd")]), "evil", "hardlink target outside the layer or missing")


@test
def symlink_parents_rejected():
    for target in ("/tmp", ".", "..", "sub", WORK, "/nonexistent-dir", "missing"):
        err, d = fail(build([D("sub/"), L("link", target), F("link/x", b"x")]), "link/x", "symlink")
        check(not os.path.exists(os.path.join(WORK, "x")) and not os.path.exists("/tmp/x") or True, "")
        check(os.listdir(f"{d}/sub") == [], "nothing written through the symlink")
    fail(build([L("a", "."), D("a/b/")]), "a/b", "symlink")
    fail(build([D("real/"), L("real/l", "/"), F("real/l/etc/x", b"1")]), "real/l/etc/x", "symlink")
    fail(build([F("file", b"1"), F("file/x", b"2")]), "file/x", "not a directory")


@test
def symlinks_replace_and_are_verbatim():
    ents = [F("a", b"1"), L("a", "/abs/target"), L("b", "../../../etc"), D("c/"), F("c/in", b"x"), L("c", "b"),
            L("d", "x"), D("d/", mode=0o750)]
    j, d = ok(build(ents))
    check(os.readlink(f"{d}/a") == "/abs/target", "file replaced by symlink")
    check(os.readlink(f"{d}/b") == "../../../etc", "target verbatim")
    check(os.readlink(f"{d}/c") == "b", "dir replaced by symlink")
    check(stat.S_ISDIR(lst(f"{d}/d").st_mode) and mode(f"{d}/d") == 0o750, "symlink replaced by dir")


@test
def replace_file_dir():
    ents = [F("x", b"file"), D("x/"), F("x/in", b"in"), D("y/"), D("y/sub/", mode=0o500), F("y/sub/f", b"1"),
            F("y", b"now a file", 0o600), F("z", b"1"), F("z", b"second", 0o640)]
    j, d = ok(build(ents))
    check(stat.S_ISDIR(lst(f"{d}/x").st_mode) and open(f"{d}/x/in").read() == "in", "file -> dir")
    check(stat.S_ISREG(lst(f"{d}/y").st_mode) and open(f"{d}/y").read() == "now a file", "dir -> file")
    check(mode(f"{d}/y") == 0o600, "mode of replacing file")
    check(open(f"{d}/z").read() == "second" and mode(f"{d}/z") == 0o640, "file -> file")


@test
def whiteouts_and_opaque():
    ents = [D("etc/"), F("etc/keep", b"k"), F("etc/gone", b"g"), D("etc/gdir/"), F("etc/gdir/f", b"f"),
            F("etc/.wh.gone"), F("etc/.wh.gdir"), F("etc/.wh.never"), D("opq/", mode=0o751, mtime=T0 + 9),
            F("opq/.wh..wh..opq"), F("opq/new", b"n"), F(".wh..wh.plnk", b""), F("new/dir/.wh.x"),
            F(".wh..wh..opq")]
    j, d = ok(build(ents))
    check(j["whiteouts"] == 4 and j["opaque"] == 2 and j["skipped"] == 1, f"counts {j}")
    for n in ("etc/gone", "etc/gdir", "etc/never", "new/dir/x"):
        check(is_whiteout(f"{d}/{n}"), f"whiteout {n}")
        check(lst(f"{d}/{n}").st_uid == os.geteuid(), "whiteout owned by caller")
    check(not os.path.exists(f"{d}/etc/.wh.gone"), "no .wh. files")
    check(xattr(f"{d}/opq") == b"y", "opaque xattr")
    check(xattr(d) == b"y", "opaque root")
    check(mode(f"{d}/opq") == 0o751 and lst(f"{d}/opq").st_mtime_ns == (T0 + 9) * 10**9, "opaque dir meta")
    check(open(f"{d}/etc/keep").read() == "k", "others kept")
    check(not os.path.exists(f"{d}/.wh..wh.plnk"), "plnk skipped")
    fail(build([F(".wh..")]), "invalid whiteout name")


@test
def devices_skipped():
    c = ti("dev/null", tarfile.CHRTYPE, mode=0o666)
    c[0].devmajor, c[0].devminor = 1, 3
    b = ti("dev/sda", tarfile.BLKTYPE, mode=0o660)
    b[0].devmajor, b[0].devminor = 8, 0
    z = ti("dev/zero00", tarfile.CHRTYPE, mode=0o600)  # a 0/0 char device that is not a .wh. name
    f = ti("dev/fifo", tarfile.FIFOTYPE, mode=0o644)
    j, d = ok(build([D("dev/"), c, b, z, f]))
    check(j["skipped"] == 4 and os.listdir(f"{d}/dev") == [], f"devices skipped: {j} {os.listdir(d + '/dev')}")


@test
def bad_names():
    fail(build([F("../x", b"1")]), "../x", "..")
    fail(build([F("a/../../x", b"1")]), "a/../../x", "..")
    fail(build([F("/abs", b"1")]), "/abs", "absolute")
    j, d = ok(build([D("./"), D("."), F("./././ok", b"1"), D("b//c/./")]))
    check(sorted(os.listdir(d)) == ["b", "ok"] and os.path.isdir(f"{d}/b/c"), "normalised names")


@test
def v7_headers():
    def v7(name, data=b"", typ=b"0", mode=0o644):
        h = bytearray(512)
        h[0:len(name)] = name.encode()
        h[100:108] = b"%07o\0" % mode
        h[108:116] = b"%07o\0" % 0
        h[116:124] = b"%07o\0" % 0
        h[124:136] = b"%011o\0" % len(data)
        h[136:148] = b"%011o\0" % T0
        h[156:157] = typ
        h[148:156] = b" " * 8
        h[148:156] = b"%06o\0 " % sum(h)
        pad = (512 - len(data) % 512) % 512
        return bytes(h) + data + b"\0" * pad
    data = v7("olddir/", typ=b"\0", mode=0o750) + v7("olddir/f", b"v7 data") + v7("old2", b"x", typ=b"\0") + \
        b"\0" * 1024
    j, d = ok(data)
    check(os.path.isdir(f"{d}/olddir") and mode(f"{d}/olddir") == 0o750, "v7 dir via trailing slash")
    check(open(f"{d}/olddir/f", "rb").read() == b"v7 data", "v7 file")
    check(open(f"{d}/old2", "rb").read() == b"x", "v7 \\0 type")


@test
def bad_checksum():
    data = bytearray(build([F("ok", b"1"), F("bad", b"2")]))
    # second header: find it and corrupt one name byte
    i = data.find(b"bad\0")
    data[i] = ord("c")
    fail(bytes(data), "checksum")


@test
def truncated():
    data = build([F("first", b"1"), F("big", os.urandom(5000))])
    i = data.find(b"big\0")
    fail(data[:i + 512 + 100], "unexpected end of input inside big")
    fail(data[:i + 512 + 5000 + 5], "unexpected end of input inside big")   # inside the padding
    fail(data[:i + 200], "unexpected end of input inside a tar header")
    fail(data[:i], "missing end-of-archive marker")
    fail(b"", "missing end-of-archive marker")
    p = build([F("p" * 200, b"1")], tarfile.PAX_FORMAT)
    fail(p[:700], "unexpected end of input inside a PAX header")


@test
def end_marker_and_drain():
    data = build([F("a", b"1")])  # tarfile pads to 10240 bytes
    j, d = ok(data + os.urandom(12345))
    check(j["bytes"] == len(data) + 12345, "drained")
    core = data[:1024 + 512 * 2]  # header+data + one zero block + EOF
    core = data[:1024] + b"\0" * 512
    j, d = ok(core)
    check(os.listdir(d) == ["a"], "one zero block then EOF")
    j, d = ok(data[:1024] + b"\0" * 512 + build([F("after", b"2")]))
    check(os.listdir(d) == ["a"], "stops at the first zero block like GNU tar")


@test
def unsupported_types():
    fail(build([ti("vol", b"V")]), "vol", "'V'")
    fail(build([ti("sp", b"S")]), "sp", "'S'")
    fail(build([ti("mv", b"M")]), "mv", "'M'")
    t, data = F("sparse", b"123")
    t.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "sparse"}
    fail(build([(t, data)]), "sparse", "sparse files are not supported")


@test
def large_files_and_chunked_input():
    rnd = random.Random(5)
    ents = []
    blobs = {}
    for i in range(40):
        n = rnd.choice([0, 1, 511, 512, 513, 1 << 20, (1 << 20) + 7, 3 * (1 << 20) + 1, rnd.randrange(100000)])
        b = rnd.randbytes(n)
        blobs[f"f{i}"] = b
        ents.append(F(f"dir{i % 3}/f{i}", b))
    data = build(ents)
    for chunked in (False, True):
        j, d = ok(data, chunked=chunked)
        for i in range(40):
            check(open(f"{d}/dir{i % 3}/f{i}", "rb").read() == blobs[f"f{i}"], f"content f{i} chunked={chunked}")
        check(j["size"] == sum(len(b) for b in blobs.values()), "size sum")


@test
def many_small_files_random_chunks():
    rnd = random.Random(11)
    blobs = {}
    ents = []
    for i in range(3000):
        n = rnd.choice([0, 1, 100, 511, 512, 513, 1023, rnd.randrange(3000), rnd.randrange(300000)])
        b = rnd.randbytes(n)
        name = f"d{i % 17}/" + "n" * rnd.randrange(1, 150) + f"{i}"
        blobs[name] = b
        ents.append(F(name, b))
    data = build(ents, rnd.choice([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])) + os.urandom(777)
    for chunked in (True, False):
        j, d = ok(data, chunked=chunked)
        for name, b in blobs.items():
            check(open(f"{d}/{name}", "rb").read() == b, f"content {name}")


@test
def default_acl_on_dest():
    """A default ACL on DEST would mask open(2) modes: modes must still be exact."""
    if not shutil.which("setfacl"):
        print("    (skipped: no setfacl)")
        return
    d = newdest()
    subprocess.run(["setfacl", "-d", "-m", "u::rwx,g::---,o::---,m::---", d], check=True)
    j, d = ok(build([F("f644", b"1", 0o644), F("f755", b"2", 0o755), D("sub/", mode=0o775), F("sub/g", b"3", 0o664)]),
              dest=d)
    for n, m in (("f644", 0o644), ("f755", 0o755), ("sub", 0o775), ("sub/g", 0o664)):
        check(mode(f"{d}/{n}") == m, f"{n}: {oct(mode(d + '/' + n))} != {oct(m)} with a default ACL")


@test
def dest_checks_and_usage():
    d = newdest()
    open(f"{d}/x", "w").close()
    fail(build([F("a")]), "not empty", dest=d)
    fail(build([F("a")]), "cannot open destination", dest=f"{WORK}/does-not-exist")
    p = subprocess.run([BIN], capture_output=True)
    check(p.returncode == 2, "usage rc 2")
    p = subprocess.run([BIN, "--bogus", "x"], capture_output=True)
    check(p.returncode == 2, "unknown option rc 2")
    p = subprocess.run([BIN, "--apply", "x"], capture_output=True)
    check(p.returncode == 2, "apply needs two")


@test
def error_mentions_entry_for_unwritable():
    # a regular file entry whose parent is a regular file
    fail(build([F("f", b"1"), D("f/sub/")]), "f/sub", "not a directory")


@test
def whiteout_without_userns():
    """As non-root without --userns: either it works (kernel >= 5.8 allows unprivileged
    whiteout mknod) or it fails with the clear message."""
    rc, out, err, d = run(build([F(".wh.foo")]), flags=[])
    if rc == 0:
        check(is_whiteout(f"{d}/foo"), "whiteout created")
        print("    (note: whiteout mknod worked without --userns here)")
    else:
        check("needs a user namespace: run with --userns" in err, err)


def main():
    global WORK, count
    WORK = tempfile.mkdtemp(prefix="gantry-untar-test-", dir=args.base)
    for fn in TESTS:
        if args.k not in fn.__name__:
            continue
        count += 1
        try:
            fn()
            print(f"ok   {fn.__name__}")
        except AssertionError as e:
            failures.append(fn.__name__)
            print(f"FAIL {fn.__name__}: {e}")
        except Exception as e:  # noqa
            failures.append(fn.__name__)
            print(f"ERR  {fn.__name__}: {type(e).__name__}: {e}")
    subprocess.run(["chmod", "-R", "u+rwx", WORK])
    shutil.rmtree(WORK, ignore_errors=True)
    print(f"{count - len(failures)}/{count} passed (euid={os.geteuid()} userns={args.userns})")
    sys.exit(1 if failures else 0)


main()
