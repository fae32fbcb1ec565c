import { spawn } from 'node:child_process';
import { mkdir, readdir } from 'node:fs/promises';
import { GantryError } from '../errors.js';
import { untarBinary } from '../native.js';
import { removeTree } from '../store/fsutil.js';
import type { Store } from '../store/store.js';

/**
 * `gantry unpack NAME DIR`: the image's merged root filesystem as a plain directory (what
 * `umoci unpack --rootless` gives): each store layer applied in order by the native extractor,
 * whiteouts and opaque directories resolved, files owned by the caller. DIR must be new or empty;
 * on failure it is returned to the state it was in.
 */
export async function unpackImage(store: Store, name: string, dest: string, env: NodeJS.ProcessEnv = process.env): Promise<{ layers: number }> {
  const image = await store.readImage(name);
  for (const layer of image.layers) {
    if (!(await store.hasLayer(layer.diffId))) {
      throw new GantryError('STORE', `layer ${layer.diffId} of image ${name} is missing from the store`, `import the image again: gantry import ${image.reference} --name ${name}`);
    }
  }
  const untar = untarBinary(env);
  let created = false;
  try {
    const entries = await readdir(dest);
    if (entries.length > 0) {
      throw new GantryError('USAGE', `${dest} is not empty`, 'unpack into a new or empty directory, so that nothing of yours is overwritten');
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      await mkdir(dest, { recursive: true });
      created = true;
    } else if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') {
      throw new GantryError('USAGE', `${dest} exists and is not a directory`, 'choose a new directory');
    } else throw err;
  }
  try {
    for (const layer of image.layers) await applyLayer(untar, store.layerRoot(layer.diffId), dest);
    return { layers: image.layers.length };
  } catch (err) {
    await removeTree(dest);
    if (!created) await mkdir(dest).catch(() => undefined);
    throw err;
  }
}

function applyLayer(untar: string, layerRoot: string, dest: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(untar, ['--apply', layerRoot, dest], { stdio: ['ignore', 'ignore', 'pipe'] });
    const err: Buffer[] = [];
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) return resolve();
      const said = Buffer.concat(err).toString().trim().split('\n').pop() ?? `exit ${code}`;
      reject(new GantryError('LAYER', `cannot apply layer ${layerRoot}: ${said.replace(/^gantry-untar: /, '')}`, 'the store may be damaged: `gantry prune` then import the image again'));
    });
  });
}
