import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, readdir, rename, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomSuffix, removeTree } from '../store/fsutil.js';
import type { SkeletonEntry } from './place.js';

/**
 * The GPU skeleton: a small directory laid over the image as its top-most lower layer. It holds
 * empty files where the driver's files will be bound and the soname links, so the launcher never
 * has to create anything in the image's own directories (which a user may not write when the
 * store is shared and owned by root). Content-addressed and immutable: one per layout, shared by
 * every sandbox with that layout.
 */
const HIDDEN = ['/dev/', '/tmp/', '/proc/', '/sys/'];

export async function writeSkeleton(parent: string, entries: SkeletonEntry[]): Promise<string | undefined> {
  const kept = entries.filter((e) => !HIDDEN.some((h) => e.path.startsWith(h)));
  if (!kept.length) return undefined;
  const canonical = JSON.stringify(kept.map((e) => [e.path, e.kind, e.target ?? '']).sort());
  const dir = join(parent, createHash('sha256').update(canonical).digest('hex').slice(0, 32));
  try {
    if ((await stat(dir)).isDirectory()) return dir;
  } catch {
    // not made yet
  }
  await mkdir(parent, { recursive: true });
  const tmp = join(parent, `.tmp-${randomSuffix()}`);
  try {
    for (const e of kept) {
      const path = join(tmp, e.path);
      if (e.kind === 'dir') {
        await mkdir(path, { recursive: true, mode: 0o755 });
        continue;
      }
      await mkdir(dirname(path), { recursive: true, mode: 0o755 });
      if (e.kind === 'link') await symlink(e.target!, path);
      else await writeFile(path, '', { mode: 0o644 });
    }
    await normaliseModes(tmp);
    await rename(tmp, dir);
  } catch (err) {
    await removeTree(tmp);
    // Another process made the same skeleton first: theirs is identical.
    if (['EEXIST', 'ENOTEMPTY'].includes((err as NodeJS.ErrnoException).code ?? '')) return dir;
    throw err;
  }
  return dir;
}

/** 0755 directories and 0644 files whatever the umask: the layer's directories show in the sandbox. */
async function normaliseModes(path: string): Promise<void> {
  const st = await lstat(path);
  if (st.isSymbolicLink()) return;
  await chmod(path, st.isDirectory() ? 0o755 : 0o644);
  if (st.isDirectory()) for (const name of await readdir(path)) await normaliseModes(join(path, name));
}
