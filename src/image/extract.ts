import { spawn, type ChildProcess } from 'node:child_process';
import type { Writable } from 'node:stream';
import { createGunzip, type Gunzip } from 'node:zlib';
import { GantryError } from '../errors.js';
import { untarBinary, which } from '../native.js';

/**
 * One layer's unpacking pipeline: compressed bytes in, an unpacked directory out.
 *
 *   write(chunk) ─▶ decompressor (pigz -d, or zlib; zstd -d) ─▶ gantry-untar DIR
 *
 * The native extractor does the safety checks (nothing outside DIR, no writes through symlinks),
 * writes whiteouts in overlay format, and reports the sha256 of the tar it read: the layer's
 * diff_id. Decompression runs in its own process so that the two cores work in parallel.
 */
export interface UntarResult {
  sha256: string;
  bytes: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  whiteouts: number;
  opaque: number;
  skipped: number;
  size: number;
  /** Directories created only as parents of entries (see checkLowerSymlinks). */
  implicit: ImplicitDir[];
}

export interface ImplicitDir {
  path: string;
  entry: string;
}

export type Compression = 'gzip' | 'zstd' | 'tar';

/** The compression the bytes themselves say (media types are sometimes wrong). */
export function sniffCompression(head: Buffer, declared: Compression): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (head.length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar') return 'tar';
  return declared;
}

function collect(child: ChildProcess, stream: 'stdout' | 'stderr'): () => string {
  const chunks: Buffer[] = [];
  child[stream]?.on('data', (c: Buffer) => chunks.push(c));
  return () => Buffer.concat(chunks).toString('utf8');
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once('close', (code, signal) => resolve({ code, signal }));
  });
}

export class LayerExtraction {
  private readonly input: Writable;
  private readonly untar: ChildProcess;
  private readonly decompressor: ChildProcess | undefined;
  private readonly gunzip: Gunzip | undefined;
  private readonly untarOut: () => string;
  private readonly untarErr: () => string;
  private readonly decompressErr: () => string;
  private broken = false;

  constructor(
    private readonly layer: string,
    root: string,
    private readonly compression: Compression,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    const untarPath = untarBinary(env);
    const tool = compression === 'gzip' ? (env.GANTRY_NO_PIGZ ? undefined : which('pigz', env)) : compression === 'zstd' ? which('zstd', env) : undefined;
    if (compression === 'zstd' && !tool) {
      throw new GantryError('DEPENDENCY', `layer ${layer} is compressed with zstd and the zstd program is not installed`, 'install it (Debian/Ubuntu: apt-get install zstd) and import again');
    }
    if (tool) {
      this.decompressor = spawn(tool, ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
      this.untar = spawn(untarPath, ['--userns', root], { stdio: [this.decompressor.stdout!, 'pipe', 'pipe'] });
      // Close our copy of the pipe between the two, so that an extractor that stops early
      // (a refused entry) makes the decompressor fail with EPIPE instead of blocking forever.
      this.decompressor.stdout!.destroy();
      this.input = this.decompressor.stdin!;
    } else {
      this.untar = spawn(untarPath, ['--userns', root], { stdio: ['pipe', 'pipe', 'pipe'] });
      if (compression === 'gzip') {
        this.gunzip = createGunzip();
        this.gunzip.pipe(this.untar.stdin!);
        this.gunzip.on('error', () => this.markBroken());
        this.input = this.gunzip;
      } else {
        this.input = this.untar.stdin!;
      }
    }
    this.untarOut = collect(this.untar, 'stdout');
    this.untarErr = collect(this.untar, 'stderr');
    this.decompressErr = this.decompressor ? collect(this.decompressor, 'stderr') : () => '';
    // A child that stops reading (a refused entry) turns our writes into EPIPE: that is not the
    // error to report, so swallow it and let finish() report what the child said.
    this.input.on('error', () => this.markBroken());
    this.untar.stdin?.on('error', () => this.markBroken());
    this.untar.once('exit', (code) => {
      if (code === 0) return;
      this.markBroken();
      this.decompressor?.kill('SIGKILL');
    });
    this.decompressor?.once('close', (code) => code !== 0 && this.markBroken());
  }

  private markBroken(): void {
    this.broken = true;
  }

  /** True once a stage has failed: the caller stops feeding and asks finish() for the reason. */
  get failed(): boolean {
    return this.broken;
  }

  /** Feeds compressed bytes, honouring back-pressure. */
  async write(chunk: Buffer): Promise<void> {
    if (this.broken) return;
    if (!this.input.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.input.off('drain', done);
          this.input.off('error', done);
          this.untar.off('close', done);
          resolve();
        };
        this.input.on('drain', done);
        this.input.on('error', done);
        this.untar.on('close', done);
      });
    }
  }

  /** Ends the input and waits for the extractor's verdict. */
  async finish(): Promise<UntarResult> {
    if (!this.input.writableEnded) this.input.end();
    const [untar, decompressor] = await Promise.all([exited(this.untar), this.decompressor ? exited(this.decompressor) : Promise.resolve(undefined)]);
    if (untar.code !== 0) {
      const said = this.untarErr().trim().split('\n').filter(Boolean).pop() ?? `exited with ${untar.code ?? untar.signal}`;
      // A decompressor that failed on corrupt data makes the extractor see a truncated tar: then
      // the corruption is the error to report. Otherwise the extractor refused an entry (and we
      // killed the decompressor), and its message names the entry.
      const truncated = /unexpected end|end of input|truncated/i.test(said);
      if (decompressor && decompressor.code !== 0 && truncated) throw this.corrupt(this.decompressErr().trim());
      throw new GantryError('LAYER', `cannot unpack layer ${this.layer}: ${said.replace(/^gantry-untar: /, '')}`, 'the layer is malformed or unsafe and was refused; nothing was stored. Ask the image\'s publisher to rebuild it');
    }
    if (decompressor && decompressor.code !== 0) throw this.corrupt(this.decompressErr().trim());
    try {
      const [result, extra] = this.untarOut().trim().split('\n');
      const implicit = (JSON.parse(extra ?? '{}') as { implicit?: ImplicitDir[] }).implicit ?? [];
      return { ...(JSON.parse(result ?? '') as Omit<UntarResult, 'implicit'>), implicit };
    } catch {
      throw new GantryError('INTERNAL', `the native extractor printed no result for layer ${this.layer}`, 'rebuild it with npm run build:native');
    }
  }

  private corrupt(detail: string): GantryError {
    return new GantryError('LAYER', `layer ${this.layer} is not valid ${this.compression} data${detail ? ` (${detail.split('\n').pop()})` : ''}`, 'the registry served a damaged layer; nothing was stored');
  }

  /** Stops everything (the caller removes the half-written directory). */
  async abort(): Promise<void> {
    this.broken = true;
    this.gunzip?.destroy();
    this.decompressor?.kill('SIGKILL');
    this.untar.kill('SIGKILL');
    await Promise.all([exited(this.untar), this.decompressor ? exited(this.decompressor) : Promise.resolve()]);
  }
}
