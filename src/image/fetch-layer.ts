import { createHash } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { GantryError } from '../errors.js';
import { digestMismatch, type RegistryClient } from '../registry/client.js';
import type { LayerDescriptor } from '../registry/manifest.js';
import { gaveUp, isRetryable } from '../registry/transport.js';
import { removeTree, writeJsonAtomic } from '../store/fsutil.js';
import { hexOf, type LayerRecord, type Store } from '../store/store.js';
import { LayerExtraction, sniffCompression } from './extract.js';
import type { ImportEvent } from './events.js';

/**
 * Brings one layer into the store: download, verify and unpack in a single streaming pass
 * (the bytes go to the extractor as they arrive, while their sha256 is computed), resuming with
 * Range after a dropped connection. Nothing is visible in the store until the blob's digest and
 * the unpacked tar's diff_id have both been checked.
 */
export interface FetchLayerOptions {
  client: RegistryClient;
  store: Store;
  layer: LayerDescriptor;
  diffId: string;
  keepBlob: boolean;
  emit: (event: ImportEvent) => void;
  env?: NodeJS.ProcessEnv;
}

export async function fetchLayer(opts: FetchLayerOptions): Promise<LayerRecord> {
  const { store, layer, diffId, emit } = opts;
  const existing = await store.readLayer(diffId);
  if (existing) {
    emit({ type: 'layer', digest: layer.digest, state: 'exists', bytes: layer.size, size: layer.size });
    return existing;
  }
  const held = await store.lockLayer(diffId, (pid) => emit({ type: 'layer', digest: layer.digest, state: 'waiting', bytes: 0, size: layer.size, holder: pid }));
  try {
    // Another process may have finished this layer while we waited for its lock.
    const done = await store.readLayer(diffId);
    if (done) {
      emit({ type: 'layer', digest: layer.digest, state: 'exists', bytes: layer.size, size: layer.size });
      return done;
    }
    const work = await store.workDir(`layer-${hexOf(diffId).slice(0, 12)}`);
    try {
      const record = await downloadAndUnpack(opts, work);
      await store.commitLayer(work, diffId);
      emit({ type: 'layer', digest: layer.digest, state: 'done', bytes: layer.size, size: layer.size });
      return record;
    } finally {
      await removeTree(work);
    }
  } finally {
    await held.release();
  }
}

async function downloadAndUnpack(opts: FetchLayerOptions, work: string): Promise<LayerRecord> {
  const { client, layer, diffId, emit } = opts;
  const root = join(work, 'root');
  await mkdir(root);
  const hash = createHash('sha256');
  let received = 0;
  let extraction: LayerExtraction | undefined;
  let blobFile: WriteStream | undefined;
  const blobTmp = join(work, 'blob');
  if (opts.keepBlob) blobFile = createWriteStream(blobTmp);
  emit({ type: 'layer', digest: layer.digest, state: 'downloading', bytes: 0, size: layer.size });

  try {
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await client.blob(layer.digest, received);
        // A server that ignores Range sends the whole blob again: skip what we already have.
        let skip = received - res.offset;
        for await (const data of res.body) {
          let chunk = data as Buffer;
          if (skip > 0) {
            if (chunk.length <= skip) {
              skip -= chunk.length;
              continue;
            }
            chunk = chunk.subarray(skip);
            skip = 0;
          }
          if (received + chunk.length > layer.size) {
            res.body.destroy();
            throw new GantryError('DIGEST', `layer ${layer.digest} from ${client.registry} is larger than the ${layer.size} bytes its manifest declares`, 'the registry served wrong data; nothing was stored');
          }
          received += chunk.length;
          hash.update(chunk);
          if (blobFile && !blobFile.write(chunk)) await new Promise<void>((r) => blobFile!.once('drain', () => r()));
          if (!extraction) extraction = new LayerExtraction(layer.digest, root, sniffCompression(chunk, layer.compression), opts.env);
          if (!extraction.failed) await extraction.write(chunk);
          emit({ type: 'layer', digest: layer.digest, state: 'downloading', bytes: received, size: layer.size });
        }
        if (received < layer.size) {
          throw Object.assign(new Error(`connection closed after ${received} of ${layer.size} bytes`), { code: 'ECONNRESET' });
        }
        break;
      } catch (err) {
        if (attempt >= client.transport.options.retries || !isRetryable(err)) {
          if (isRetryable(err)) throw gaveUp(new Error(`downloading layer ${layer.digest} from ${client.registry}: ${(err as Error).message}`), attempt + 1);
          throw err;
        }
        emit({ type: 'retry', digest: layer.digest, attempt: attempt + 1, reason: (err as Error).message, offset: received });
        await new Promise((r) => setTimeout(r, Math.min(8000, 250 * 2 ** attempt)));
      }
    }

    const actual = `sha256:${hash.digest('hex')}`;
    if (actual !== layer.digest) throw digestMismatch(layer.digest, actual, client.registry);
    if (!extraction) extraction = new LayerExtraction(layer.digest, root, layer.compression, opts.env);
    emit({ type: 'layer', digest: layer.digest, state: 'unpacking', bytes: received, size: layer.size });
    const result = await extraction.finish();
    extraction = undefined;
    if (`sha256:${result.sha256}` !== diffId) {
      throw new GantryError(
        'DIGEST',
        `layer ${layer.digest} unpacks to sha256:${result.sha256}, but the image config says its diff_id is ${diffId}`,
        'the image is inconsistent (manifest and config disagree); nothing was stored. Ask its publisher to push it again',
      );
    }
    if (blobFile) {
      await new Promise<void>((r) => blobFile!.end(() => r()));
      blobFile = undefined;
      await mkdir(opts.store.blobsDir, { recursive: true });
      await rename(blobTmp, join(opts.store.blobsDir, hexOf(layer.digest)));
    }
    const record: LayerRecord = {
      diffId,
      digest: layer.digest,
      mediaType: layer.mediaType,
      compressedSize: layer.size,
      size: result.size,
      files: result.files,
      implicitDirs: result.implicit,
      unpackedAt: new Date().toISOString(),
    };
    await writeJsonAtomic(join(work, 'layer.json'), record);
    return record;
  } finally {
    if (extraction) await extraction.abort();
    if (blobFile) {
      blobFile.destroy();
      await rm(blobTmp, { force: true });
    }
  }
}
