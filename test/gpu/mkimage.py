#!/usr/bin/env python3
"""Build the GPU check's test image as an OCI image layout (standard library only).

  mkimage.py OUTDIR [--tag latest] [--busybox PATH] [--tool PATH]... [--add SRC=DST[:MODE]]...

The image is one gzip layer made from this host's files, with nothing of NVIDIA's in it:
  --busybox PATH    busybox at /bin/busybox with one symlink per applet (`busybox --list`)
  --tool PATH       a host program at its own path (the fallback when there is no busybox)
  --add SRC=DST     a file at DST (mode 0755 unless :MODE, octal); ELF programs among
                    them (e.g. /cuda-vecadd) get their shared libraries too
Every ELF file brings the libraries `ldd` names and its dynamic loader, and the host's glibc
(ld-linux, libc, libm, libdl, libpthread, librt) is always there, so that the driver libraries
Gantry injects (libcuda.so.1 needs libm, libdl, libpthread, librt) and nvidia-smi find what they
need. Files keep their host directory, resolved through the host's merged-/usr symlinks
(/bin -> usr/bin, /lib -> usr/lib, ...), which the image repeats as symlinks, so no entry lies
beneath a symlink. /etc has passwd, group and the host's ld.so.conf(.d) minus anything naming
cuda or nvidia. The config: os linux, this host's architecture, Env PATH only (no NVIDIA_*).

Refuses (exit 1) if any entry looks like an NVIDIA driver file (libcuda*, libnvidia-*,
nvidia-smi, ...). Prints a JSON summary on stdout.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tarfile

MTIME = 1700000000
CREATED = "2024-01-01T00:00:00Z"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
GLIBC = ["libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1"]
TOP_LINKS = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"]
NVIDIA = re.compile(r"^(libcuda\.so|libcuda_|libnvidia|libnvcuvid|libnvoptix|libnvrtc|libnvjitlink|nvidia-)|^nvidia")
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}


def die(msg):
    sys.stderr.write(f"mkimage.py: {msg}\n")
    sys.exit(1)


def is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def ldd(path):
    """The host paths of the libraries and the loader that `ldd PATH` lists (nothing if static)."""
    r = subprocess.run(["ldd", path], capture_output=True, text=True)
    out = r.stdout + r.stderr
    if r.returncode != 0 or "not a dynamic executable" in out or "statically linked" in out:
        return []
    libs = []
    for line in out.splitlines():
        line = line.strip()
        if "=> not found" in line:
            die(f"{path}: library {line.split()[0]} not found on this host (ldd)")
        m = re.match(r"^\S+ => (/\S+) \(0x", line) or re.match(r"^(/\S+) \(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def canonical(path):
    """PATH with its directory resolved through host symlinks (/lib/x/libc.so.6 -> /usr/lib/x/libc.so.6)."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(d), base)


class Image:
    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.entries = {}   # image path (no leading /) -> kind
        self.sources = {}   # image path -> host source, for the summary

    def _ti(self, name, typ, mode):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime = typ, mode, MTIME
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    def dir(self, name, mode=0o755):
        name = name.strip("/")
        if not name or name in self.entries:
            return
        parent = os.path.dirname(name)
        if parent:
            self.dir(parent)
        if self.entries.get(name) not in (None, "dir"):
            die(f"/{name}: wanted a directory, have a {self.entries[name]}")
        self.tar.addfile(self._ti(name, tarfile.DIRTYPE, mode))
        self.entries[name] = "dir"

    def symlink(self, name, target):
        name = name.strip("/")
        if name in self.entries:
            return
        self.dir(os.path.dirname(name))
        ti = self._ti(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)
        self.entries[name] = "symlink"

    def data(self, name, data, mode=0o644, source=None):
        name = name.strip("/")
        if name in self.entries:
            return False
        self.dir(os.path.dirname(name))
        ti = self._ti(name, tarfile.REGTYPE, mode)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))
        self.entries[name] = "file"
        if source:
            self.sources[name] = source
        return True

    def host_file(self, src, dst, mode=None, with_libs=True):
        """SRC's content (symlinks followed) at DST, plus its libraries when it is an ELF file."""
        try:
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            die(f"{src}: {e.strerror}")
        if mode is None:
            mode = os.stat(src).st_mode & 0o755
        if self.data(dst, data, mode, source=src) and with_libs and is_elf(src):
            for lib in ldd(src):
                self.host_file(lib, canonical(lib), None, with_libs=True)

    def finish(self):
        self.tar.close()
        return self.buf.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--tag", default="latest")
    ap.add_argument("--busybox")
    ap.add_argument("--tool", action="append", default=[])
    ap.add_argument("--add", action="append", default=[])
    a = ap.parse_args()
    if os.path.exists(os.path.join(a.outdir, "index.json")):
        die(f"{a.outdir} already holds a layout")

    img = Image()
    # the host's merged-/usr symlinks, then the usual directories
    for top in TOP_LINKS:
        p = "/" + top
        target = os.path.realpath(p)
        if os.path.islink(p) and os.path.isdir(target) and target != p:
            img.dir(target.lstrip("/"))
            img.symlink(top, os.readlink(p))
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "usr/lib", "usr/local/bin", "etc", "proc", "sys", "dev",
              "run", "var", "mnt", "home", "opt"]:
        if img.entries.get(d) != "symlink":
            img.dir(d)
    img.dir("root", 0o700)
    img.dir("tmp", 0o1777)
    img.dir("var/tmp", 0o1777)

    bindir = canonical("/bin/x").rsplit("/", 1)[0]
    if a.busybox:
        bb = canonical(os.path.join(bindir, "busybox"))
        img.host_file(a.busybox, bb, 0o755)
        applets = subprocess.run([a.busybox, "--list"], check=True, capture_output=True, text=True).stdout.split()
        for ap_name in sorted(set(applets)):
            if "/" in ap_name or ap_name in ("busybox",):
                continue
            img.symlink(os.path.join(bindir, ap_name), "busybox")
    for tool in a.tool:
        img.host_file(tool, canonical(tool))
    if not img.entries.get(os.path.join(bindir, "sh").lstrip("/")):
        die("no /bin/sh in the image: give --busybox or --tool /bin/sh")

    # glibc: the directory and loader that /bin/sh (or python3 itself) uses on this host
    ref = os.path.realpath("/bin/sh")
    libs = ldd(ref) or ldd(sys.executable)
    libc = next((l for l in libs if os.path.basename(l) == "libc.so.6"), None)
    if not libc:
        die("cannot find the host's libc.so.6 through ldd")
    libdir = os.path.dirname(libc)
    for name in GLIBC:
        p = os.path.join(libdir, name)
        if os.path.exists(p):
            img.host_file(p, canonical(p), None)
    for l in libs:
        if os.path.basename(l).startswith("ld-linux") or os.path.basename(l).startswith("ld64"):
            img.host_file(l, canonical(l), None)

    for spec in a.add:
        src, _, rest = spec.partition("=")
        dst, _, mode = rest.partition(":")
        if not src or not dst.startswith("/"):
            die(f"--add {spec}: want SRC=/DST[:MODE]")
        img.host_file(src, dst, int(mode, 8) if mode else 0o755)

    img.data("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    img.data("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    # the files Gantry binds from the host, present as in distribution images (a sandbox of
    # another user than the store's owner cannot create mount points in the image's /etc)
    img.data("etc/hosts", b"127.0.0.1\tlocalhost\n")
    img.data("etc/hostname", b"gpucheck\n")
    img.data("etc/resolv.conf", b"")
    img.data("etc/ld.so.conf", b"include /etc/ld.so.conf.d/*.conf\n\n")
    img.dir("etc/ld.so.conf.d")
    if os.path.isdir("/etc/ld.so.conf.d"):
        for name in sorted(os.listdir("/etc/ld.so.conf.d")):
            p = os.path.join("/etc/ld.so.conf.d", name)
            if not name.endswith(".conf") or not os.path.isfile(p) or re.search(r"cuda|nvidia", name, re.I):
                continue
            with open(p, "rb") as f:
                text = f.read()
            if re.search(rb"cuda|nvidia", text, re.I):
                continue
            img.data("etc/ld.so.conf.d/" + name, text)

    bad = sorted(n for n in img.entries if NVIDIA.search(os.path.basename(n)))
    if bad:
        die("the image would contain NVIDIA driver files: " + ", ".join("/" + b for b in bad))

    layer = img.finish()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    gz = gzip.compress(layer, compresslevel=6, mtime=0)

    blobs = os.path.join(a.outdir, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data):
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, d), "wb") as f:
            f.write(data)
        return "sha256:" + d, len(data)

    arch = ARCH.get(platform.machine(), platform.machine())
    ldigest, lsize = put(gz)
    config = {
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": CREATED, "created_by": "gantry test/gpu/mkimage.py"}],
    }
    cdigest, csize = put(json.dumps(config, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": cdigest, "size": csize},
        "layers": [{"mediaType": MT_LAYER, "digest": ldigest, "size": lsize}],
    }
    mdigest, msize = put(json.dumps(manifest, separators=(",", ":")).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST, "digest": mdigest, "size": msize,
            "annotations": {"org.opencontainers.image.ref.name": a.tag},
            "platform": {"architecture": arch, "os": "linux"},
        }],
    }
    with open(os.path.join(a.outdir, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(a.outdir, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    json.dump({
        "tag": a.tag, "manifestDigest": mdigest, "architecture": arch, "entries": len(img.entries),
        "tarBytes": len(layer), "gzipBytes": lsize,
        "files": {"/" + k: v for k, v in sorted(img.sources.items())},
    }, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
