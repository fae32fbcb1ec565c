#!/usr/bin/python3
"""Dev-aid test for `gantry-untar --apply` (flattening overlay-format layer dirs).

    /usr/bin/python3 native/test/apply_test.py [--userns] [--umoci] [--base DIR] [--bin PATH]

Builds a 3-layer image as tars, extracts each with `gantry-untar DIR < layer.tar`,
applies them in order onto an empty DEST with `gantry-untar --apply`, and compares
DEST with a reference model of the merged view (Docker/overlay semantics) and, with
--umoci (root only), with `umoci unpack --rootless` of the same image.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "Release", "gantry-untar"))
ap.add_argument("--userns", action="store_true")
ap.add_argument("--umoci", action="store_true")
ap.add_argument("--base", default="/dev/shm")
ap.add_argument("--keep", action="store_true")
ap.add_argument("--overlay", action="store_true", help="(root) also compare with a real overlayfs mount")
args = ap.parse_args()
BIN = os.path.abspath(args.bin)
FLAGS = ["--userns"] if args.userns else []
T = 1600000000


def ti(name, type=tarfile.REGTYPE, data=b"", mode=0o644, mtime=T, linkname=""):
    t = tarfile.TarInfo(name)
    t.type, t.mode, t.mtime, t.linkname = type, mode, mtime, linkname
    t.uid = t.gid = 0
    if type == tarfile.REGTYPE:
        t.size = len(data)
    return (t, data)


def D(n, mode=0o755, mtime=T):
    return ti(n, tarfile.DIRTYPE, mode=mode, mtime=mtime)


def F(n, data=b"", mode=0o644, mtime=T):
    return ti(n, tarfile.REGTYPE, data=data, mode=mode, mtime=mtime)


def S(n, target, mtime=T):
    return ti(n, tarfile.SYMTYPE, linkname=target, mode=0o777, mtime=mtime)


def H(n, target):
    return ti(n, tarfile.LNKTYPE, linkname=target)


def W(n):  # whiteout
    d, b = os.path.split(n)
    return F(os.path.join(d, ".wh." + b))


def OPQ(d):
    return F(os.path.join(d, ".wh..wh..opq"))


LAYERS = [
    [D("etc/"), F("etc/passwd", b"root:x:0:0\n"), D("etc/conf.d/"), F("etc/conf.d/a", b"a"),
     F("etc/conf.d/b", b"b"), D("etc/conf.d/sub/"), F("etc/conf.d/sub/deep", b"deep"),
     D("usr/"), D("usr/bin/"), F("usr/bin/a", b"binary a", 0o755), H("usr/bin/a2", "usr/bin/a"),
     F("usr/bin/b", b"b", 0o755), H("usr/bin/b2", "usr/bin/b"), D("usr/lib/"), F("usr/lib/libx.so", b"x"),
     S("lib", "usr/lib", T + 1), D("ro/", 0o555, T + 2), F("ro/f", b"ro", 0o444), D("opt/"), D("opt/dir/"),
     F("opt/dir/in", b"in"), D("home/"), D("home/user/", 0o700), F("home/user/.profile", b"p"),
     D("home/user/locked/", 0o000, T + 3), S("sym", "/etc", T + 4), D("var/"), D("var/log/", 0o750),
     F("var/log/old", b"old"), F("tofile", b"f"), D("keep/", 0o711, T + 5), F("keep/x", b"x")],
    [D("etc/", 0o755, T + 10), W("etc/passwd"), D("etc/conf.d/", 0o755, T + 11), OPQ("etc/conf.d"),
     F("etc/conf.d/c", b"c"), D("usr/", 0o755, T), D("usr/bin/", 0o755, T + 12), F("usr/bin/a", b"new a", 0o700),
     D("opt/", 0o755, T + 13), F("opt/dir", b"now a file", 0o600), D("sym/", 0o700, T + 14), F("sym/f", b"sf"),
     D("ro/", 0o555, T + 15), F("ro/new", b"n", 0o400), D("home/", 0o755, T + 16), W("home/user"),
     D("lib/", 0o755, T + 17), F("lib/real", b"r"), D("new/"), F("new/h1", b"hh", 0o640), H("new/h2", "new/h1"),
     D("var/", 0o755, T + 18), D("var/log/", 0o750, T + 19), OPQ("var/log"), D("tofile/"), F("tofile/in", b"i")],
    [D("etc/", 0o755, T + 20), F("etc/passwd", b"back\n", 0o600, T + 21), D("etc/conf.d/", 0o700, T + 22),
     W("etc/conf.d/c"), D("new/", 0o755, T + 23), S("new/h1", "h2", T + 24), F("secret", b"s", 0o000, T + 25),
     D("closed/", 0o000, T + 26), F("closed/inside", b"i", 0o400, T + 27), D("usr/", 0o755, T),
     D("usr/bin/", 0o755, T + 28), W("usr/bin/b"), W("nonexistent"), D("keep/", 0o700, T + 29)],
]


def build(ents):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for t, data in ents:
            tf.addfile(t, io.BytesIO(data) if t.isreg() else None)
    return bio.getvalue()


# ---- reference model: path -> [kind, mode, mtime, payload, group]
def model_apply(model, ents, gid):
    for t, data in ents:
        name = t.name.rstrip("/")
        d, b = os.path.split(name)
        if b == ".wh..wh..opq":
            for p in [p for p in model if p.startswith(d + "/")]:
                del model[p]
            continue
        if b.startswith(".wh."):
            target = os.path.join(d, b[4:])
            for p in [p for p in model if p == target or p.startswith(target + "/")]:
                del model[p]
            continue
        if t.isdir():
            if name in model and model[name][0] == "d":
                model[name][1:3] = [t.mode & 0o1777, t.mtime]
                continue
        for p in [p for p in model if p == name or p.startswith(name + "/")]:
            del model[p]
        if t.isdir():
            model[name] = ["d", t.mode & 0o1777, t.mtime, None, None]
        elif t.isreg():
            model[name] = ["f", t.mode & 0o1777, t.mtime, data, None]
        elif t.issym():
            model[name] = ["l", None, t.mtime, t.linkname, None]
        elif t.islnk():
            tgt = model[t.linkname]
            if tgt[4] is None:
                tgt[4] = f"g{gid[0]}"
                gid[0] += 1
            model[name] = tgt  # same object = same inode


def model_view(model):
    out = {}
    groups = {}
    for p, e in model.items():
        out[p] = (e[0], e[1], e[2], e[3])
        if e[4]:
            groups.setdefault(id(e), set()).add(p)
    return out, sorted(sorted(g) for g in groups.values() if len(g) > 1)


def scan(root):
    """path -> (kind, mode, mtime, payload); works on 0000 dirs/files of ours (temporary chmod)."""
    out = {}
    inodes = {}

    def walk(dirpath):
        for n in sorted(os.listdir(dirpath)):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            m = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", m, st.st_mtime_ns // 10**9, None)
                fix = m & 0o500 != 0o500 and os.geteuid() != 0
                if fix:
                    os.chmod(p, m | 0o500)
                walk(p)
                if fix:
                    os.chmod(p, m)
                    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", None, st.st_mtime_ns // 10**9, os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                fix = not m & 0o400 and os.geteuid() != 0
                if fix:
                    os.chmod(p, m | 0o400)
                data = open(p, "rb").read()
                if fix:
                    os.chmod(p, m)
                out[rel] = ("f", m, st.st_mtime_ns // 10**9, data)
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, set()).add(rel)
            else:
                out[rel] = ("other", m, None, st.st_rdev)
    walk(root)
    return out, sorted(sorted(g) for g in inodes.values() if len(g) > 1)


def diff(a, b, what):
    bad = []
    for k in sorted(set(a[0]) | set(b[0])):
        if a[0].get(k) != b[0].get(k):
            bad.append(f"  {k}: ours={a[0].get(k)} {what}={b[0].get(k)}")
    if a[1] != b[1]:
        bad.append(f"  hardlink groups: ours={a[1]} {what}={b[1]}")
    return bad


def runbin(argv, stdin=None):
    p = subprocess.run([BIN] + FLAGS + argv, input=stdin, capture_output=True)
    if p.returncode != 0:
        sys.exit(f"gantry-untar {' '.join(argv)} failed: {p.stderr.decode()}")
    return json.loads(p.stdout.splitlines()[0])


def umoci_rootfs(work, tars):
    lay = os.path.join(work, "oci")
    os.makedirs(f"{lay}/blobs/sha256")

    def blob(b):
        h = hashlib.sha256(b).hexdigest()
        open(f"{lay}/blobs/sha256/{h}", "wb").write(b)
        return {"digest": f"sha256:{h}", "size": len(b)}
    layers, diff_ids = [], []
    for t in tars:
        diff_ids.append("sha256:" + hashlib.sha256(t).hexdigest())
        layers.append(dict(mediaType="application/vnd.oci.image.layer.v1.tar+gzip", **blob(gzip.compress(t))))
    cfg = blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                           "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode())
    man = blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": dict(mediaType="application/vnd.oci.image.config.v1+json", **cfg),
                           "layers": layers}).encode())
    json.dump({"schemaVersion": 2, "manifests": [dict(mediaType="application/vnd.oci.image.manifest.v1+json",
                                                      annotations={"org.opencontainers.image.ref.name": "t"},
                                                      **man)]}, open(f"{lay}/index.json", "w"))
    json.dump({"imageLayoutVersion": "1.0.0"}, open(f"{lay}/oci-layout", "w"))
    subprocess.run(["/usr/bin/umoci", "unpack", "--rootless", "--image", f"{lay}:t", f"{work}/bundle"],
                   check=True, capture_output=True)
    return f"{work}/bundle/rootfs"


def main():
    work = tempfile.mkdtemp(prefix="gantry-apply-test-", dir=args.base)
    tars = [build(l) for l in LAYERS]
    dest = os.path.join(work, "merged")
    os.mkdir(dest)
    model, gid = {}, [0]
    failures = 0
    for i, (t, ents) in enumerate(zip(tars, LAYERS)):
        ld = os.path.join(work, f"layer{i}")
        os.mkdir(ld)
        j = runbin([ld], t)
        print(f"layer{i}: {json.dumps(j)}")
        before = scan(ld)
        a = runbin(["--apply", ld, dest])
        if scan(ld) != before:
            failures += 1
            print(f"FAIL --apply changed the source layer {ld}")
        print(f"apply{i}: {json.dumps(a)}")
        model_apply(model, ents, gid)
        bad = diff(scan(dest), model_view(model), "model")
        if bad:
            failures += 1
            print(f"FAIL merged view after layer {i} differs from the model:\n" + "\n".join(bad))
        else:
            print(f"ok   merged view after layer {i} == model ({len(model)} paths)")
    owners = {os.lstat(os.path.join(dp, n)).st_uid for dp, ds, fs in os.walk(dest) for n in ds + fs}
    if owners - {os.geteuid()}:
        failures += 1
        print(f"FAIL owners in DEST: {owners}")
    if args.overlay:
        mnt = os.path.join(work, "mnt")
        os.mkdir(mnt)
        lower = ":".join(os.path.join(work, f"layer{i}") for i in reversed(range(len(tars))))
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"ro,userxattr,lowerdir={lower}", mnt], check=True)
        try:
            bad = diff(scan(dest), scan(mnt), "overlayfs")
        finally:
            subprocess.run(["umount", mnt], check=True)
        if bad:
            failures += 1
            print("FAIL differs from the overlayfs mount of the layer dirs:\n" + "\n".join(bad))
        else:
            print("ok   merged view == overlayfs mount (userxattr) of the extracted layer dirs")
    if args.umoci:
        rootfs = umoci_rootfs(work, tars)
        bad = diff(scan(dest), scan(rootfs), "umoci")
        if bad:
            failures += 1
            print("FAIL differs from umoci unpack --rootless:\n" + "\n".join(bad))
        else:
            print("ok   merged view == umoci unpack --rootless")
    # DEST must stay intact when a bad layer is applied? (errors) -- apply into a missing DEST
    p = subprocess.run([BIN] + FLAGS + ["--apply", os.path.join(work, "layer0"), os.path.join(work, "nope")],
                       capture_output=True)
    if p.returncode != 1 or b"cannot open destination" not in p.stderr:
        failures += 1
        print(f"FAIL missing DEST: {p.returncode} {p.stderr!r}")
    else:
        print("ok   missing DEST is an error")
    if not args.keep:
        subprocess.run(["chmod", "-R", "u+rwx", work])
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("kept", work)
    print("PASS" if not failures else f"{failures} FAILURES", f"(euid={os.geteuid()} userns={args.userns})")
    sys.exit(1 if failures else 0)


main()
