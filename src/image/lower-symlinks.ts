import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { GantryError } from '../errors.js';
import type { LayerRecord, Store } from '../store/store.js';

/**
 * A layer whose entries lie beneath a directory it never created itself (`up/tmp` without `up`)
 * while a lower layer has a symbolic link at that path (`up -> /`) is ambiguous: Docker's unpacker
 * writes through the link (possibly out of the image), overlayfs hides the link. Gantry refuses
 * such an image. Each layer is unpacked on its own (so layers can be shared and fetched in
 * parallel), and the extractor reports those implicit directories; this check runs once all the
 * image's layers are in the store.
 */
type Presence = 'absent' | 'symlink' | 'whiteout' | 'present';

/** What a path is in one layer directory, without following any symlink. */
async function presence(root: string, path: string): Promise<Presence> {
  const parts = path.split('/');
  for (let i = 1; i <= parts.length; i++) {
    let st;
    try {
      st = await lstat(join(root, ...parts.slice(0, i)));
    } catch {
      return 'absent';
    }
    const last = i === parts.length;
    if (st.isCharacterDevice() && st.rdev === 0) return last ? 'whiteout' : 'absent';
    if (!last && !st.isDirectory()) return 'absent';
    if (last) return st.isSymbolicLink() ? 'symlink' : 'present';
  }
  return 'absent';
}

export async function checkLowerSymlinks(store: Store, layers: LayerRecord[]): Promise<void> {
  for (let i = 1; i < layers.length; i++) {
    for (const dir of layers[i]!.implicitDirs ?? []) {
      for (let j = i - 1; j >= 0; j--) {
        const found = await presence(store.layerRoot(layers[j]!.diffId), dir.path);
        if (found === 'absent') continue;
        if (found === 'symlink') {
          throw new GantryError(
            'LAYER',
            `layer ${layers[i]!.digest} writes "${dir.entry}" beneath "${dir.path}", which a lower layer (${layers[j]!.digest}) made a symbolic link: refusing to write through it`,
            'the image is malformed or malicious (Docker would follow the link, overlayfs would hide it); ask its publisher to rebuild it',
          );
        }
        break; // a directory, file or whiteout in the nearest lower layer decides
      }
    }
  }
}
