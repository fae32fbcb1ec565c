import { lstat, readlink } from 'node:fs/promises';
import { hostPath } from './driver.js';

/**
 * Resolving a path inside a tree whose root is not this process's `/` (the driver root of a test,
 * an image's layers): symbolic links are followed the way the sandbox will see them, absolute
 * targets restart at the tree's root, and `..` never climbs above it. The driver's libraries are
 * soname links; images make /lib a link to usr/lib (merged /usr) or /lib64 to usr/lib64.
 */
export type EntryType = 'dir' | 'file' | 'symlink' | 'other';
export type Lookup = (path: string) => Promise<{ type: EntryType; target?: string } | undefined>;

export interface Resolved {
  /** The path with every symlink on it resolved (the missing tail, if any, kept as written). */
  path: string;
  /** What is there, or undefined when (part of) the path does not exist. */
  type?: EntryType;
}

export async function resolveInTree(lookup: Lookup, path: string): Promise<Resolved> {
  const queue = path.split('/').filter((c) => c && c !== '.');
  const cur: string[] = [];
  let links = 0;
  let type: EntryType | undefined = 'dir';
  while (queue.length) {
    const comp = queue.shift()!;
    if (comp === '.') continue;
    if (comp === '..') {
      cur.pop();
      continue;
    }
    const candidate = `/${[...cur, comp].join('/')}`;
    const entry = await lookup(candidate);
    if (!entry) return { path: `/${[...cur, comp, ...queue].join('/')}` };
    if (entry.type === 'symlink' && entry.target !== undefined && links++ < 40) {
      if (entry.target.startsWith('/')) cur.length = 0;
      queue.unshift(...entry.target.split('/').filter((c) => c && c !== '.'));
      continue;
    }
    cur.push(comp);
    type = entry.type;
    if (queue.length && type !== 'dir') return { path: `/${[...cur, ...queue].join('/')}` };
  }
  return { path: `/${cur.join('/')}`, type };
}

/** Lookups in a directory tree on this machine (a driver root). */
export function directoryLookup(root: string): Lookup {
  return async (path) => {
    const file = hostPath(root, path);
    try {
      const st = await lstat(file);
      if (st.isSymbolicLink()) return { type: 'symlink', target: await readlink(file) };
      return { type: st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other' };
    } catch {
      return undefined;
    }
  };
}
