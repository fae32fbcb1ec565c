import { basename, dirname } from 'node:path';
import type { BindMount } from '../sandbox/plan.js';
import { hostPath } from './driver.js';
import { resolveInTree, type Lookup } from './resolve.js';
import type { DriverSelection } from './select.js';

/**
 * Where the selected driver files go inside an image, and the plan pieces that put them there.
 * Libraries go to the directory where the image's own C library lives (so the image's loader and
 * ldconfig already search it), every other file to its host path; each path is resolved through
 * the image's symlinks first (/lib -> usr/lib), so nothing ever replaces an image's link.
 */
export interface SkeletonEntry {
  path: string;
  kind: 'file' | 'dir' | 'link';
  target?: string;
}

export interface GpuMounts {
  binds: BindMount[];
  /** Soname links next to the libraries: libcuda.so.1 -> libcuda.so.550.54.15. */
  links: { target: string; path: string }[];
  /** Directories (inside) to hand ldconfig, so the new libraries are in the sandbox's cache. */
  ldconfigDirs: string[];
  /**
   * The mount points and links above as a tree, for a layer laid over the image: the launcher
   * then binds onto files that already exist, in images whose directories the user may not
   * write (a shared store owned by root).
   */
  skeletonEntries: SkeletonEntry[];
  /** Host files the plan checks first, so that a driver upgrade shows as a stale plan. */
  checks: string[];
}

const LIB_DIRS: Record<string, string[]> = {
  'x86-64': ['/usr/lib/x86_64-linux-gnu', '/lib/x86_64-linux-gnu', '/usr/lib64', '/lib64'],
  aarch64: ['/usr/lib/aarch64-linux-gnu', '/lib/aarch64-linux-gnu', '/usr/lib64', '/lib64'],
  i386: ['/usr/lib/i386-linux-gnu', '/lib/i386-linux-gnu', '/usr/lib32', '/lib32', '/usr/lib'],
};

/** The image's library directory for an architecture: where its libc.so.6 is. */
async function imageLibDir(lookup: Lookup, arch: string, fallback: string): Promise<string> {
  for (const dir of LIB_DIRS[arch] ?? []) {
    const libc = await resolveInTree(lookup, `${dir}/libc.so.6`);
    if (libc.type === 'file') return dirname(libc.path);
  }
  return (await resolveInTree(lookup, fallback)).path;
}

const RO = ['ro', 'nosuid', 'nodev'];

export async function placeInImage(sel: DriverSelection, lookup: Lookup): Promise<GpuMounts> {
  const root = sel.driver.root;
  const out: GpuMounts = { binds: [], links: [], ldconfigDirs: [], skeletonEntries: [], checks: [] };
  const inside = async (path: string): Promise<string> => (await resolveInTree(lookup, path)).path;

  for (const dev of sel.devices) out.binds.push({ src: hostPath(root, dev), dst: dev, flags: ['nosuid', 'noexec', 'create=file'] });

  const libDirs = new Map<string, string>();
  for (const lib of sel.libraries) {
    let dir = libDirs.get(lib.arch);
    if (!dir) {
      dir = await imageLibDir(lookup, lib.arch, dirname(lib.path));
      libDirs.set(lib.arch, dir);
      out.ldconfigDirs.push(dir);
    }
    const file = `${dir}/${basename(lib.path)}`;
    out.binds.push({ src: hostPath(root, lib.path), dst: file, flags: [...RO, 'create=file'] });
    out.skeletonEntries.push({ path: file, kind: 'file' });
    out.checks.push(hostPath(root, lib.path));
    for (const link of lib.links) {
      out.links.push({ target: basename(lib.path), path: `${dir}/${link}` });
      out.skeletonEntries.push({ path: `${dir}/${link}`, kind: 'link', target: basename(lib.path) });
    }
  }
  for (const bin of sel.binaries) {
    const dst = await inside(`/usr/bin/${basename(bin)}`);
    out.binds.push({ src: hostPath(root, bin), dst, flags: ['ro', 'nosuid', 'nodev', 'create=file'] });
    out.skeletonEntries.push({ path: dst, kind: 'file' });
  }
  for (const f of sel.files) {
    const dst = await inside(f);
    const socket = f.endsWith('/socket');
    out.binds.push({ src: hostPath(root, f), dst, flags: socket ? ['nosuid', 'nodev', 'noexec', 'create=file', 'nofail'] : [...RO, 'create=file'] });
    out.skeletonEntries.push({ path: dst, kind: 'file' });
  }
  for (const d of sel.dirs) {
    const dst = await inside(d);
    out.binds.push({ src: hostPath(root, d), dst, flags: d.startsWith('/tmp/') ? ['nosuid', 'nodev', 'create=dir', 'nofail'] : [...RO, 'create=dir'] });
    out.skeletonEntries.push({ path: dst, kind: 'dir' });
  }
  // The launcher's ldconfig op binds the new cache over /etc/ld.so.cache: it needs a file there.
  if (out.ldconfigDirs.length) {
    const cache = await resolveInTree(lookup, '/etc/ld.so.cache');
    if (cache.type === undefined) out.skeletonEntries.push({ path: cache.path, kind: 'file' });
  }
  return out;
}
