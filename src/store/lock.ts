import { hostname } from 'node:os';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { GantryError } from '../errors.js';

/**
 * Inter-process locks as files created with O_EXCL, holding the owner's pid and host. A lock whose
 * owner died (kill -9, power loss) is stale and taken over, so a crashed import never blocks the
 * next one. Waiting is by polling: locks are held for the length of a layer download, not microseconds.
 */
interface LockOwner {
  pid: number;
  host: string;
  since?: string;
}

export interface Lock {
  release(): Promise<void>;
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readOwner(path: string): Promise<LockOwner | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as LockOwner;
  } catch {
    return undefined;
  }
}

export function ownerAlive(owner: LockOwner | undefined): boolean {
  // A lock from another host (shared store on NFS) is trusted as alive.
  if (!owner) return false;
  return owner.host !== hostname() || processAlive(owner.pid);
}

export async function tryLock(path: string): Promise<Lock | undefined> {
  await mkdir(dirname(path), { recursive: true });
  for (;;) {
    try {
      const fh = await open(path, 'wx', 0o644);
      await fh.writeFile(JSON.stringify({ pid: process.pid, host: hostname(), since: new Date().toISOString() }));
      await fh.close();
      return { release: () => rm(path, { force: true }) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EACCES') {
        throw new GantryError('STORE', `cannot create the lock ${path}: permission denied`, 'the store is read-only to you; set GANTRY_STORE to a directory of your own');
      }
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = await readOwner(path);
    if (owner === undefined) {
      // Being written right now, or left empty by a crash: give a writer a moment, then take it.
      await new Promise((r) => setTimeout(r, 50));
      const again = await readOwner(path);
      if (again !== undefined) return undefined;
    } else if (ownerAlive(owner)) {
      return undefined;
    }
    await rm(path, { force: true });
  }
}

/** Waits for a lock, calling `onWait` once with the holder's pid when it has to wait. */
export async function lock(path: string, onWait?: (pid: number) => void): Promise<Lock> {
  let told = false;
  for (;;) {
    const held = await tryLock(path);
    if (held) return held;
    if (!told) {
      told = true;
      const owner = await readOwner(path);
      if (owner) onWait?.(owner.pid);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
