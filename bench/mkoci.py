#!/usr/bin/python3
"""Build OCI image layouts for the Gantry benchmarks (standard library only).

  mkoci.py split SRC.tar OUTDIR [--tag T] [--level N] --layer NAME=PREFIX[,PREFIX...] ...
      Route every member of the root filesystem tarball SRC.tar (as written by mmdebstrap)
      to one layer: the layer whose PREFIX is the longest match of its path, or the first
      layer ("base", implicit) when none matches. Each layer also carries its members'
      parent directories (as real image layers do). Hard links whose target lies in another
      layer become regular files. Device nodes and FIFOs are dropped (images never carry
      them and unprivileged extractors cannot create them).

  mkoci.py busybox BUSYBOX OUTDIR [--tag T]
      A one-layer image: /bin/busybox, its applet symlinks (busybox --list-full), the usual
      empty directories and a minimal /etc/passwd and /etc/group.

Both write OUTDIR as an OCI image layout (oci-layout, index.json naming the manifest with
org.opencontainers.image.ref.name=T, blobs/sha256/...) and OUTDIR/../NAME.info.json with
the image's size figures. Layers are `tar | pigz` (gzip); the uncompressed tar is hashed
on the way for the config's rootfs.diff_ids.
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

TAR_FORMAT = tarfile.PAX_FORMAT
OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip'


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


class HashingPipe:
    """A write-only file object: hashes and counts what it is given, then hands it to pigz."""

    def __init__(self, out_path, level):
        self.out = open(out_path, 'wb')
        self.proc = subprocess.Popen(['pigz', '-n', f'-{level}'], stdin=subprocess.PIPE, stdout=self.out)
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, b):
        self.h.update(b)
        self.size += len(b)
        self.proc.stdin.write(b)
        return len(b)

    def close(self):
        self.proc.stdin.close()
        if self.proc.wait() != 0:
            raise SystemExit('pigz failed')
        self.out.close()


class Layer:
    def __init__(self, name, prefixes, tmpdir, level):
        self.name = name
        self.prefixes = prefixes
        self.path = os.path.join(tmpdir, f'layer-{name}.tar.gz')
        self.pipe = HashingPipe(self.path, level)
        self.tar = tarfile.open(fileobj=self.pipe, mode='w|', format=TAR_FORMAT)
        self.emitted = set()
        self.files = 0
        self.file_bytes = 0

    def add(self, ti, fileobj=None):
        self.tar.addfile(ti, fileobj)
        self.emitted.add(ti.name)
        self.files += 1
        if ti.isreg():
            self.file_bytes += ti.size

    def finish(self):
        self.tar.close()
        self.pipe.close()
        self.diff_id = 'sha256:' + self.pipe.h.hexdigest()
        self.tar_bytes = self.pipe.size


def norm(name):
    while name.startswith('./'):
        name = name[2:]
    return name.strip('/')


def write_layout(outdir, tag, layers, history_note, cmd):
    """Move the finished layers into an OCI layout at OUTDIR; returns the info dict."""
    blobs = os.path.join(outdir, 'blobs', 'sha256')
    os.makedirs(blobs, exist_ok=True)
    descs = []
    for layer in layers:
        digest = sha256_file(layer.path)
        size = os.path.getsize(layer.path)
        os.replace(layer.path, os.path.join(blobs, digest))
        descs.append({'mediaType': OCI_LAYER_GZIP, 'digest': 'sha256:' + digest, 'size': size})
    created = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(int(os.environ.get('SOURCE_DATE_EPOCH', '0')) or None))
    config = {
        'created': created,
        'architecture': 'amd64',
        'os': 'linux',
        'config': {
            'Env': ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
            'Cmd': cmd,
        },
        'rootfs': {'type': 'layers', 'diff_ids': [layer.diff_id for layer in layers]},
        'history': [{'created': created, 'created_by': f'{history_note}: layer {layer.name}'} for layer in layers],
    }

    def put(obj):
        data = json.dumps(obj, separators=(',', ':')).encode()
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), 'wb') as f:
            f.write(data)
        return 'sha256:' + digest, len(data)

    cdigest, csize = put(config)
    manifest = {
        'schemaVersion': 2,
        'mediaType': OCI_MANIFEST,
        'config': {'mediaType': OCI_CONFIG, 'digest': cdigest, 'size': csize},
        'layers': descs,
    }
    mdigest, msize = put(manifest)
    index = {
        'schemaVersion': 2,
        'manifests': [{
            'mediaType': OCI_MANIFEST, 'digest': mdigest, 'size': msize,
            'annotations': {'org.opencontainers.image.ref.name': tag},
            'platform': {'architecture': 'amd64', 'os': 'linux'},
        }],
    }
    with open(os.path.join(outdir, 'index.json'), 'w') as f:
        json.dump(index, f)
    with open(os.path.join(outdir, 'oci-layout'), 'w') as f:
        json.dump({'imageLayoutVersion': '1.0.0'}, f)
    return {
        'tag': tag,
        'manifestDigest': mdigest,
        'layers': len(layers),
        'compressedBytes': sum(d['size'] for d in descs),
        'tarBytes': sum(layer.tar_bytes for layer in layers),
        'fileBytes': sum(layer.file_bytes for layer in layers),
        'entries': sum(layer.files for layer in layers),
        'layerDetail': [
            {'name': layer.name, 'prefixes': layer.prefixes, 'digest': d['digest'], 'compressedBytes': d['size'],
             'fileBytes': layer.file_bytes, 'entries': layer.files}
            for layer, d in zip(layers, descs)
        ],
    }


def cmd_split(a):
    specs = [('base', [])]
    for spec in a.layer:
        name, _, prefixes = spec.partition('=')
        specs.append((name, [norm(p) for p in prefixes.split(',') if p]))
    tmpdir = a.outdir + '.parts'
    shutil.rmtree(tmpdir, ignore_errors=True)
    os.makedirs(tmpdir)
    layers = [Layer(name, prefixes, tmpdir, a.level) for name, prefixes in specs]
    routes = sorted(((p, i) for i, (_, ps) in enumerate(specs) for p in ps), key=lambda x: -len(x[0]))

    def route(path):
        for p, i in routes:
            if path == p or path.startswith(p + '/'):
                return i
        return 0

    dirs = {}      # path -> TarInfo of every directory seen (for parent entries)
    where = {}     # path -> layer index of every regular file (for hard links)
    src = tarfile.open(a.src, 'r:')
    for m in src:
        path = norm(m.name)
        if not path or m.ischr() or m.isblk() or m.isfifo():
            continue
        m.name = path
        i = route(path)
        layer = layers[i]
        # parent directories first, as copies of their own entries
        parts = path.split('/')
        for k in range(1, len(parts)):
            parent = '/'.join(parts[:k])
            if parent not in layer.emitted and parent in dirs:
                layer.add(dirs[parent])
        if m.isdir():
            dirs[path] = m
            layer.add(m)
        elif m.isreg():
            where[path] = (i, m)
            layer.add(m, src.extractfile(m))
        elif m.islnk():
            target = norm(m.linkname)
            ti, tm = where.get(target, (None, None))
            if ti == i:
                m.linkname = target
                layer.add(m)
            elif tm is not None:
                # target in another layer: store a copy, as `tar` does for a lone hard link
                copy = tarfile.TarInfo(path)
                for attr in ('mode', 'uid', 'gid', 'uname', 'gname', 'mtime', 'size', 'pax_headers'):
                    setattr(copy, attr, getattr(tm, attr))
                copy.type = tarfile.REGTYPE
                layer.add(copy, src.extractfile(tm))
            else:
                raise SystemExit(f'hard link {path} -> {target}: target not seen')
        else:  # symlinks
            layer.add(m)
    src.close()
    for layer in layers:
        layer.finish()
    info = write_layout(a.outdir, a.tag, layers, 'gantry bench ngc-like', ['/bin/bash'])
    os.rmdir(tmpdir)
    return info


def cmd_busybox(a):
    tmpdir = a.outdir + '.parts'
    shutil.rmtree(tmpdir, ignore_errors=True)
    os.makedirs(tmpdir)
    layer = Layer('busybox', ['/'], tmpdir, a.level)
    mtime = int(os.path.getmtime(a.busybox))

    def entry(name, typ, mode, **kw):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = typ, mode, mtime, 0, 0, 'root', 'root'
        for k, v in kw.items():
            setattr(ti, k, v)
        return ti

    applets = subprocess.run([a.busybox, '--list-full'], check=True, capture_output=True, text=True).stdout.split()
    tree_dirs = {'bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'etc', 'root', 'proc', 'sys', 'dev', 'tmp',
                 'var', 'var/tmp', 'home', 'mnt', 'run'}
    for ap in applets:
        if os.path.dirname(ap):  # linuxrc sits at the top
            tree_dirs.add(os.path.dirname(ap))
    for d in sorted(tree_dirs):
        layer.add(entry(d, tarfile.DIRTYPE, 0o1777 if d in ('tmp', 'var/tmp') else (0o700 if d == 'root' else 0o755)))
    with open(a.busybox, 'rb') as f:
        layer.add(entry('bin/busybox', tarfile.REGTYPE, 0o755, size=os.path.getsize(a.busybox)), f)
    for ap in sorted(set(applets)):
        if ap == 'bin/busybox':
            continue
        target = 'busybox' if os.path.dirname(ap) == 'bin' else '/bin/busybox'
        layer.add(entry(ap, tarfile.SYMTYPE, 0o777, linkname=target))
    for name, text in (('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n'),
                       ('etc/group', 'root:x:0:\nnogroup:x:65534:\n')):
        data = text.encode()
        layer.add(entry(name, tarfile.REGTYPE, 0o644, size=len(data)), io.BytesIO(data))
    layer.finish()
    info = write_layout(a.outdir, a.tag, [layer], 'gantry bench busybox', ['/bin/sh'])
    os.rmdir(tmpdir)
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('split')
    s.add_argument('src')
    s.add_argument('outdir')
    s.add_argument('--layer', action='append', default=[])
    b = sub.add_parser('busybox')
    b.add_argument('busybox')
    b.add_argument('outdir')
    for p in (s, b):
        p.add_argument('--tag', default='bench')
        p.add_argument('--level', type=int, default=6)
        p.add_argument('--info', help='where to write the info JSON (default OUTDIR.info.json)')
    a = ap.parse_args()
    if os.path.exists(os.path.join(a.outdir, 'index.json')):
        raise SystemExit(f'{a.outdir} already holds a layout')
    info = cmd_split(a) if a.cmd == 'split' else cmd_busybox(a)
    with open(a.info or a.outdir.rstrip('/') + '.info.json', 'w') as f:
        json.dump(info, f, indent=2)
    json.dump({k: v for k, v in info.items() if k != 'layerDetail'}, sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
