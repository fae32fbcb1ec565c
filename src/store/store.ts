import { mkdir, readdir, readFile, rename, rm, stat, access, constants } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { GantryError } from '../errors.js';
import type { ImageConfig, Platform } from '../registry/manifest.js';
import { validateImageName } from '../reference.js';
import { randomSuffix, removeTree, treeSize, writeJsonAtomic } from './fsutil.js';
import { lock, ownerAlive, type Lock } from './lock.js';

/**
 * The content-addressed store:
 *
 *   STORE/layers/sha256/<diff_id hex>/root/     one unpacked layer (overlay format: whiteouts are
 *                                               0/0 char devices, opaque dirs carry
 *                                               user.overlay.opaque=y), shared by every image
 *   STORE/layers/sha256/<diff_id hex>/layer.json what it came from and how big it is
 *   STORE/blobs/sha256/<hex>                    compressed blobs, only with GANTRY_KEEP_BLOBS=1
 *   STORE/images/<name>.json                    image records
 *   STORE/tmp/                                  work in progress (downloads, extractions, pending imports)
 *   STORE/locks/                                inter-process locks
 *
 * Every entry appears by rename: a layer directory is complete or absent, an image record is
 * written only after all its layers exist. A crash leaves debris only in tmp/ and locks/, which
 * `prune` clears and an import ignores.
 */
export interface LayerRecord {
  diffId: string;
  /** The compressed blob it was unpacked from. */
  digest: string;
  mediaType: string;
  compressedSize: number;
  /** Bytes of regular files. */
  size: number;
  files: number;
  /** Directories the layer creates only as parents of its entries, with the entry that caused each. */
  implicitDirs?: { path: string; entry: string }[];
  unpackedAt: string;
}

export interface ImageRecord {
  name: string;
  /** The reference as given, canonicalised (registry/repository[:tag][@digest]). */
  reference: string;
  registry: string;
  repository: string;
  tag?: string;
  /** Digest of the manifest (for a multi-platform image, of the chosen platform's manifest). */
  digest: string;
  /** Digest of the index when the reference named a multi-platform image. */
  indexDigest?: string;
  mediaType: string;
  platform: Platform;
  configDigest: string;
  config: ImageConfig['config'];
  layers: { diffId: string; digest: string; size: number; mediaType: string }[];
  /** Compressed bytes (what the registry sends). */
  compressedSize: number;
  /** Bytes of regular files across layers (what unpacking writes, before whiteouts). */
  size: number;
  /** When the image was built (from its config), if it says. */
  created?: string;
  importedAt: string;
}

export class Store {
  constructor(readonly root: string) {}

  get layersDir(): string {
    return join(this.root, 'layers', 'sha256');
  }
  get imagesDir(): string {
    return join(this.root, 'images');
  }
  get blobsDir(): string {
    return join(this.root, 'blobs', 'sha256');
  }
  get tmpDir(): string {
    return join(this.root, 'tmp');
  }
  get locksDir(): string {
    return join(this.root, 'locks');
  }

  /** Creates the layout; a clear error when the store is not ours to write. */
  async ensure(): Promise<void> {
    try {
      for (const dir of [this.layersDir, this.imagesDir, this.tmpDir, this.locksDir]) await mkdir(dir, { recursive: true });
      await access(this.tmpDir, constants.W_OK);
    } catch (err) {
      throw new GantryError(
        'STORE',
        `cannot write to the image store ${this.root}: ${(err as Error).message}`,
        'set GANTRY_STORE to a directory you can write, or ask the administrator of the shared store to import the image',
      );
    }
  }

  layerDir(diffId: string): string {
    return join(this.layersDir, hexOf(diffId));
  }

  /** The unpacked root of a layer, as overlayfs will stack it. */
  layerRoot(diffId: string): string {
    return join(this.layerDir(diffId), 'root');
  }

  async hasLayer(diffId: string): Promise<boolean> {
    try {
      await stat(join(this.layerDir(diffId), 'layer.json'));
      return true;
    } catch {
      return false;
    }
  }

  async readLayer(diffId: string): Promise<LayerRecord | undefined> {
    try {
      return JSON.parse(await readFile(join(this.layerDir(diffId), 'layer.json'), 'utf8')) as LayerRecord;
    } catch {
      return undefined;
    }
  }

  /** A fresh directory under tmp/ for work in progress; the name carries our pid for `prune`. */
  async workDir(label: string): Promise<string> {
    const dir = join(this.tmpDir, `${randomSuffix()}-${label}`);
    await mkdir(dir, { recursive: true });
    return dir;
  }

  /** Moves a finished layer (a work dir holding root/ and layer.json) into place. */
  async commitLayer(work: string, diffId: string): Promise<void> {
    try {
      await rename(work, this.layerDir(diffId));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Someone else committed the same layer first (possible only without the lock): keep theirs.
      if (code === 'ENOTEMPTY' || code === 'EEXIST') await removeTree(work);
      else throw err;
    }
  }

  lockLayer(diffId: string, onWait?: (pid: number) => void): Promise<Lock> {
    return lock(join(this.locksDir, `layer-${hexOf(diffId)}.lock`), onWait);
  }

  lockStore(): Promise<Lock> {
    return lock(join(this.locksDir, 'store.lock'));
  }

  imagePath(name: string): string {
    return join(this.imagesDir, `${validateImageName(name)}.json`);
  }

  async readImage(name: string): Promise<ImageRecord> {
    const path = this.imagePath(name);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new GantryError('NOT_FOUND', `no image named "${name}" in the store ${this.root}`, 'list the images with `gantry images`, or import it with `gantry import REFERENCE`');
      }
      throw err;
    }
    try {
      return JSON.parse(text) as ImageRecord;
    } catch {
      throw new GantryError('STORE', `the image record ${path} is damaged (not JSON)`, `remove it with \`gantry rmi ${name}\` and import the image again`);
    }
  }

  async writeImage(record: ImageRecord): Promise<void> {
    await writeJsonAtomic(this.imagePath(record.name), record);
  }

  async listImages(): Promise<ImageRecord[]> {
    let names: string[];
    try {
      names = await readdir(this.imagesDir);
    } catch {
      return [];
    }
    const records: ImageRecord[] = [];
    for (const file of names.filter((n) => n.endsWith('.json')).sort()) {
      try {
        records.push(JSON.parse(await readFile(join(this.imagesDir, file), 'utf8')) as ImageRecord);
      } catch {
        // A damaged record is reported by readImage when someone asks for it by name.
      }
    }
    return records;
  }

  async removeImage(name: string): Promise<ImageRecord> {
    const record = await this.readImage(name);
    await rm(this.imagePath(name));
    return record;
  }

  /**
   * An import in progress announces the layers it is about to use, so that a concurrent `prune`
   * does not delete a layer between its unpacking and the image record that will reference it.
   */
  async announcePending(diffIds: string[]): Promise<() => Promise<void>> {
    const path = join(this.tmpDir, `${randomSuffix()}.pending.json`);
    await writeJsonAtomic(path, { pid: process.pid, host: hostname(), diffIds });
    return () => rm(path, { force: true });
  }

  /** Layers referenced by image records or by live pending imports. */
  async referencedLayers(images?: ImageRecord[]): Promise<Set<string>> {
    const used = new Set<string>();
    for (const image of images ?? (await this.listImages())) for (const l of image.layers) used.add(hexOf(l.diffId));
    for (const name of await readdir(this.tmpDir).catch(() => [] as string[])) {
      if (!name.endsWith('.pending.json')) continue;
      try {
        const pending = JSON.parse(await readFile(join(this.tmpDir, name), 'utf8')) as { pid: number; host: string; diffIds: string[] };
        if (ownerAlive(pending)) for (const id of pending.diffIds) used.add(hexOf(id));
      } catch {
        // Half-written by a live writer (rename makes that impossible) or garbage: ignore.
      }
    }
    return used;
  }

  /**
   * Removes layers and blobs that no image references, and what crashed imports left in tmp/ and
   * locks/. Returns what it removed and the bytes freed.
   */
  async prune(): Promise<{ layers: string[]; blobs: string[]; debris: string[]; freedBytes: number }> {
    await this.ensure();
    const storeLock = await this.lockStore();
    try {
      const images = await this.listImages();
      const used = await this.referencedLayers(images);
      const result = { layers: [] as string[], blobs: [] as string[], debris: [] as string[], freedBytes: 0 };
      for (const hex of await readdir(this.layersDir).catch(() => [] as string[])) {
        if (used.has(hex)) continue;
        const dir = join(this.layersDir, hex);
        const record = await this.readLayer(`sha256:${hex}`);
        const size = record?.size ?? (await treeSize(dir));
        // Rename first so the layer disappears atomically, then delete at leisure.
        const trash = join(this.tmpDir, `${randomSuffix()}-trash`);
        await rename(dir, trash);
        await removeTree(trash);
        result.layers.push(`sha256:${hex}`);
        result.freedBytes += size;
      }
      const usedBlobs = new Set<string>();
      for (const image of images) for (const l of image.layers) usedBlobs.add(hexOf(l.digest));
      for (const hex of await readdir(this.blobsDir).catch(() => [] as string[])) {
        if (usedBlobs.has(hex)) continue;
        const path = join(this.blobsDir, hex);
        result.freedBytes += (await stat(path).catch(() => ({ size: 0 }))).size;
        await rm(path, { force: true });
        result.blobs.push(`sha256:${hex}`);
      }
      result.debris.push(...(await this.clearDebris()));
      return result;
    } finally {
      await storeLock.release();
    }
  }

  /** tmp/ entries and locks whose owner process is gone. */
  private async clearDebris(): Promise<string[]> {
    const removed: string[] = [];
    for (const name of await readdir(this.tmpDir).catch(() => [] as string[])) {
      const pid = Number(/^(\d+)-/.exec(name)?.[1]);
      if (!pid || ownerAlive({ pid, host: hostname() })) continue;
      await removeTree(join(this.tmpDir, name));
      removed.push(join('tmp', name));
    }
    for (const name of await readdir(this.locksDir).catch(() => [] as string[])) {
      if (name === 'store.lock') continue;
      try {
        const owner = JSON.parse(await readFile(join(this.locksDir, name), 'utf8')) as { pid: number; host: string };
        if (ownerAlive(owner)) continue;
      } catch {
        // unreadable: stale
      }
      await rm(join(this.locksDir, name), { force: true });
      removed.push(join('locks', name));
    }
    return removed;
  }
}

export function hexOf(digest: string): string {
  const hex = digest.startsWith('sha256:') ? digest.slice(7) : digest;
  if (!/^[a-f0-9]{64}$/.test(hex)) throw new GantryError('INTERNAL', `not a sha256 digest: ${digest}`);
  return hex;
}
