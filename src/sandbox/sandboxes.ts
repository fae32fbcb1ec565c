import { createHash } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, readlink, rename } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { GantryError } from '../errors.js';
import { removeTree, treeSize, writeFileOnce, writeJsonAtomic, randomSuffix } from '../store/fsutil.js';
import type { ImageRecord, Store } from '../store/store.js';

/**
 * Named sandboxes: an image plus a private writable layer, under $GANTRY_DATA/sandboxes/NAME/:
 *   sandbox.json   name, image, digest, layers, created
 *   upper/ work/   the overlay's writable layer and its work directory
 *   root/          the mount point of the merged root (used only inside the sandbox's namespace)
 *   passwd group   the identity files bound over the image's /etc/passwd and /etc/group
 *   plan           the compiled default launch plan (the native launcher runs it directly)
 * Creating one is O(1) in the image's size: directories and small files, no copy of the image.
 */
export interface SandboxRecord {
  name: string;
  image: string;
  reference: string;
  digest: string;
  layers: string[];
  created: string;
  /** A flattened copy of the image in rootfs/ instead of an overlay (kernels without overlayfs in a user namespace). */
  flat?: boolean;
}

export interface Identity {
  uid: number;
  gid: number;
  name: string;
  group: string;
  home: string;
}

export function currentIdentity(env: NodeJS.ProcessEnv = process.env): Identity {
  const info = userInfo();
  return { uid: info.uid, gid: info.gid, name: info.username, group: info.username, home: env.HOME || info.homedir };
}

const NAME = /^[a-z0-9][a-z0-9._+-]{0,127}$/;

export function validateSandboxName(name: string): string {
  if (!NAME.test(name) || name.includes('..')) {
    throw new GantryError('BAD_NAME', `invalid sandbox name "${name}"`, 'a name starts with a lowercase letter or digit and has at most 128 of a-z 0-9 . _ + - (no "..")');
  }
  return name;
}

export class Sandboxes {
  constructor(readonly dataDir: string) {}

  get dir(): string {
    return join(this.dataDir, 'sandboxes');
  }

  pathOf(name: string): string {
    return join(this.dir, validateSandboxName(name));
  }

  async read(name: string): Promise<SandboxRecord | undefined> {
    try {
      return JSON.parse(await readFile(join(this.pathOf(name), 'sandbox.json'), 'utf8')) as SandboxRecord;
    } catch {
      return undefined;
    }
  }

  async list(): Promise<SandboxRecord[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const out: SandboxRecord[] = [];
    for (const n of names.sort()) {
      if (!NAME.test(n)) continue;
      const r = await this.read(n);
      if (r) out.push(r);
    }
    return out;
  }

  /**
   * Creates the directories and the record; `finish` writes the identity files and the plan.
   * Everything is built in a temp directory and renamed into place: a failed create leaves nothing.
   */
  async create(name: string, image: ImageRecord, flat: boolean, finish: (dir: string) => Promise<void>): Promise<SandboxRecord> {
    const dir = this.pathOf(name);
    if (await this.read(name)) throw new GantryError('USAGE', `a sandbox named "${name}" already exists`, `pick another --name, or remove it first: gantry remove ${name}`);
    await mkdir(this.dir, { recursive: true });
    const tmp = join(this.dir, `.tmp-${randomSuffix()}`);
    try {
      for (const sub of ['upper', 'work', 'root']) await mkdir(join(tmp, sub), { recursive: true });
      const record: SandboxRecord = { name, image: image.name, reference: image.reference, digest: image.digest, layers: image.layers.map((l) => l.diffId), created: new Date().toISOString(), ...(flat ? { flat } : {}) };
      await writeJsonAtomic(join(tmp, 'sandbox.json'), record);
      await finish(tmp);
      await rename(tmp, dir);
      return record;
    } catch (err) {
      await removeTree(tmp);
      if ((err as NodeJS.ErrnoException).code === 'ENOTEMPTY' || (err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new GantryError('USAGE', `a sandbox named "${name}" already exists`, `pick another --name, or remove it first: gantry remove ${name}`);
      }
      throw err;
    }
  }

  async remove(name: string): Promise<void> {
    const dir = this.pathOf(name);
    const trash = join(this.dir, `.trash-${randomSuffix()}`);
    await rename(dir, trash);
    await removeTree(trash);
  }

  /** Bytes in the sandbox's writable layer (its whole flattened copy, for a flat sandbox). */
  async upperSize(name: string): Promise<number> {
    return (await treeSize(join(this.pathOf(name), 'upper'))) + (await treeSize(join(this.pathOf(name), 'rootfs')));
  }

  /** Pids of processes whose mount namespace has this sandbox's overlay (those we can see). */
  async runningPids(name: string): Promise<number[]> {
    // An overlay sandbox shows its upperdir in mountinfo; a flat one, its rootfs as the root.
    const marker = `upperdir=${join(this.pathOf(name), 'upper')},`;
    const flatRoot = ` ${join(this.pathOf(name), 'rootfs')} / `;
    const pids: number[] = [];
    // Processes that share a mount namespace share its mountinfo: read each namespace once.
    const marked = new Map<string, boolean>();
    for (const entry of await readdir('/proc').catch(() => [] as string[])) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const ns = await readlink(`/proc/${entry}/ns/mnt`);
        let has = marked.get(ns);
        if (has === undefined) {
          const info = await readFile(`/proc/${entry}/mountinfo`, 'utf8');
          has = info.includes(marker) || info.includes(flatRoot);
          marked.set(ns, has);
        }
        if (has) pids.push(Number(entry));
      } catch {
        // gone, or not ours to read
      }
    }
    return pids;
  }
}

/** What a path is in the image's merged view (the top-most layer that has it; whiteouts respected). */
export async function imageEntry(store: Store, image: ImageRecord, path: string): Promise<{ type: 'file' | 'symlink' | 'dir' | 'other'; file: string } | undefined> {
  for (let i = image.layers.length - 1; i >= 0; i--) {
    const file = join(store.layerRoot(image.layers[i]!.diffId), path);
    let st;
    try {
      st = await lstat(file);
    } catch {
      continue;
    }
    if (st.isCharacterDevice() && st.rdev === 0) return undefined;
    return { type: st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : 'other', file };
  }
  return undefined;
}

/** A regular file of the image, or undefined. */
export async function imageFile(store: Store, image: ImageRecord, path: string): Promise<string | undefined> {
  const entry = await imageEntry(store, image, path);
  return entry?.type === 'file' ? readFile(entry.file, 'utf8') : undefined;
}

/**
 * /etc/passwd and /etc/group for inside: the image's, with the user's own entry (or root's, for
 * --root) so that whoami, id, ssh and pip find the user.
 */
export function identityFiles(imagePasswd: string | undefined, imageGroup: string | undefined, who: Identity, root: boolean): { passwd: string; group: string } {
  const lines = (text: string | undefined): string[] => (text ?? '').split('\n').filter((l) => l.trim() !== '');
  const uid = root ? 0 : who.uid;
  const gid = root ? 0 : who.gid;
  const name = root ? 'root' : who.name;
  const group = root ? 'root' : who.group;
  const home = root ? '/root' : who.home;
  const passwd = lines(imagePasswd).filter((l) => {
    const f = l.split(':');
    return f[0] !== name && f[2] !== String(uid);
  });
  passwd.push(`${name}:x:${uid}:${gid}:${name}:${home}:/bin/sh`);
  const groups = lines(imageGroup).filter((l) => {
    const f = l.split(':');
    return f[0] !== group && f[2] !== String(gid);
  });
  groups.push(`${group}:x:${gid}:`);
  return { passwd: `${passwd.join('\n')}\n`, group: `${groups.join('\n')}\n` };
}

/** Writes identity files under a content-addressed name (shared by identical sandboxes). */
export async function writeIdentityFiles(dir: string, files: { passwd: string; group: string }): Promise<{ passwd: string; group: string }> {
  const hash = createHash('sha256').update(files.passwd).update('\0').update(files.group).digest('hex').slice(0, 16);
  const base = join(dir, hash);
  await mkdir(base, { recursive: true });
  const passwd = join(base, 'passwd');
  const group = join(base, 'group');
  // Content-addressed and never replaced: a sandbox starting beside us may be binding them now.
  await writeFileOnce(passwd, files.passwd);
  await writeFileOnce(group, files.group);
  return { passwd, group };
}
