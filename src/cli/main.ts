import { parseArgs, type ParseArgsConfig } from 'node:util';
import { asGantryError, EXIT_CODES, GantryError } from '../errors.js';
import { gantryPaths } from '../paths.js';
import { formatPlatform, parsePlatform } from '../registry/manifest.js';
import { Store, type ImageRecord } from '../store/store.js';
import { createProgress, humanBytes } from './progress.js';
import { gpuCommand } from './gpu-commands.js';
import { kernelCommand } from './kernel-commands.js';
import { sandboxCommands } from './sandbox-commands.js';

/**
 * The `gantry` command line. Each command parses its arguments, calls one core function, and
 * prints the result for people (or as JSON with --json). No logic lives here.
 */
const USAGE = `usage: gantry COMMAND [OPTIONS]

Images
  import URI [--name NAME] [--arch ARCH] [--json] [--quiet]
                       pull an image into the store (docker://[USER@][REGISTRY#]IMAGE[:TAG] or [REGISTRY/]IMAGE[:TAG][@DIGEST])
  images [--json]      list the images in the store
  digest URI           print the manifest digest the registry serves now
  unpack NAME DIR      write the image's merged root filesystem into a new or empty DIR
  rmi NAME...          remove images from the store (their layers stay until prune)
  prune [--json]       remove layers and blobs no image uses, and debris of interrupted imports

Sandboxes
  create [--name NAME] IMAGE   a named sandbox: the image plus a private writable layer
  start [--root] [--rw] [-e KEY[=VAL]] [-m SRC[:DST[:OPTS]]] [--pid] [--net] [--gpus SPEC] NAME|IMAGE [COMMAND ARGS...]
                       run a command in a sandbox (an IMAGE gets a throwaway writable layer);
                       --gpus all|none|void|0,1|GPU-UUID sets NVIDIA_VISIBLE_DEVICES
  exec PID COMMAND...  run a command in the running sandbox that process PID is in
  list [--json]        sandboxes with their image, writable-layer size and running pids
  remove [-f] NAME...  remove sandboxes (-f: even while running)

Kernels
  kernel install IMAGE [--name KERNEL] [--display-name TEXT] [--user|--sys-prefix|--prefix DIR|--system]
                 [-e KEY=VAL] [-m SRC:DST[:OPTS]] [--gpus SPEC] [--python PATH]
                       make the image a Jupyter kernel (checks that its Python has ipykernel)
  kernel list [--json] Gantry's kernelspecs: image, digest, location
  kernel remove KERNEL remove one

GPUs
  gpu [--gpus SPEC] [--json]  the NVIDIA driver, its GPUs, and what a sandbox would receive

Environment: GANTRY_STORE, GANTRY_DATA, GANTRY_CONFIG (paths), GANTRY_PARALLEL, GANTRY_RETRIES,
GANTRY_TIMEOUT, GANTRY_ALLOW_HTTP, GANTRY_KEEP_BLOBS, GANTRY_MOUNT_HOME, GANTRY_DRIVER_ROOT;
NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES, NVIDIA_REQUIRE_*. See the README.
`;

type Options = NonNullable<ParseArgsConfig['options']>;

interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

function parse(args: string[], options: Options, positionals: [min: number, max: number], usage: string): Parsed | undefined {
  let parsed: Parsed;
  try {
    parsed = parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true }) as Parsed;
  } catch (err) {
    throw new GantryError('USAGE', (err as Error).message, `usage: ${usage}`);
  }
  if (parsed.values.help) {
    process.stdout.write(`usage: ${usage}\n`);
    return undefined;
  }
  const n = parsed.positionals.length;
  if (n < positionals[0] || n > positionals[1]) throw new GantryError('USAGE', n < positionals[0] ? 'missing arguments' : `unexpected argument "${parsed.positionals[positionals[1]]}"`, `usage: ${usage}`);
  return parsed;
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

function imageSummary(image: ImageRecord): Record<string, unknown> {
  return {
    name: image.name,
    reference: image.reference,
    digest: image.digest,
    platform: formatPlatform(image.platform),
    layers: image.layers.length,
    compressedSize: image.compressedSize,
    size: image.size,
    created: image.created ?? null,
    importedAt: image.importedAt,
  };
}

const commands: Record<string, (args: string[]) => Promise<number>> = {
  async import(args) {
    const usage = 'gantry import URI [--name NAME] [--arch ARCH] [--json] [--quiet]';
    const p = parse(args, { name: { type: 'string' }, arch: { type: 'string' }, json: { type: 'boolean' }, quiet: { type: 'boolean', short: 'q' } }, [1, 1], usage);
    if (!p) return 0;
    const paths = gantryPaths();
    const progress = createProgress(process.stderr, p.values.quiet === true);
    // Loaded on demand: the registry client (undici) is not needed by the other commands.
    const { importImage } = await import('../image/import.js');
    try {
      const record = await importImage(p.positionals[0]!, {
        store: new Store(paths.store),
        configDir: paths.config,
        ...(typeof p.values.name === 'string' ? { name: p.values.name } : {}),
        ...(typeof p.values.arch === 'string' ? { platform: parsePlatform(p.values.arch) } : {}),
        emit: (e) => progress.onEvent(e),
      });
      progress.finish();
      if (p.values.json) printJson(imageSummary(record));
      else process.stdout.write(`${record.name}\n`);
    } catch (err) {
      progress.finish();
      throw err;
    }
    return 0;
  },

  async images(args) {
    const p = parse(args, { json: { type: 'boolean' } }, [0, 0], 'gantry images [--json]');
    if (!p) return 0;
    const images = await new Store(gantryPaths().store).listImages();
    if (p.values.json) {
      printJson(images.map(imageSummary));
      return 0;
    }
    const rows = [['NAME', 'REFERENCE', 'DIGEST', 'PLATFORM', 'SIZE', 'CREATED']];
    for (const i of images) {
      rows.push([i.name, i.reference, i.digest.slice(0, 19), formatPlatform(i.platform), humanBytes(i.size), (i.created ?? '-').slice(0, 19).replace('T', ' ')]);
    }
    process.stdout.write(table(rows));
    return 0;
  },

  async digest(args) {
    const p = parse(args, {}, [1, 1], 'gantry digest URI');
    if (!p) return 0;
    const { remoteDigest } = await import('../image/import.js');
    process.stdout.write(`${await remoteDigest(p.positionals[0]!, gantryPaths().config)}\n`);
    return 0;
  },

  async unpack(args) {
    const p = parse(args, {}, [2, 2], 'gantry unpack NAME DIR');
    if (!p) return 0;
    const { unpackImage } = await import('../image/unpack.js');
    await unpackImage(new Store(gantryPaths().store), p.positionals[0]!, p.positionals[1]!);
    return 0;
  },

  async rmi(args) {
    const p = parse(args, {}, [1, Infinity], 'gantry rmi NAME...');
    if (!p) return 0;
    const store = new Store(gantryPaths().store);
    for (const name of p.positionals) {
      await store.removeImage(name);
      process.stdout.write(`removed ${name}\n`);
    }
    return 0;
  },

  async prune(args) {
    const p = parse(args, { json: { type: 'boolean' } }, [0, 0], 'gantry prune [--json]');
    if (!p) return 0;
    const result = await new Store(gantryPaths().store).prune();
    if (p.values.json) printJson(result);
    else {
      for (const l of result.layers) process.stdout.write(`removed layer ${l}\n`);
      for (const b of result.blobs) process.stdout.write(`removed blob ${b}\n`);
      for (const d of result.debris) process.stdout.write(`removed ${d}\n`);
      process.stdout.write(`freed ${humanBytes(result.freedBytes)}\n`);
    }
    return 0;
  },
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  if (command === '--version' || command === 'version') {
    process.stdout.write('gantry 0.1.0\n');
    return 0;
  }
  const run = command === 'kernel' ? kernelCommand : command === 'gpu' ? gpuCommand : commands[command] ?? sandboxCommands[command];
  if (!run) {
    process.stderr.write(`error: unknown command "${command}"\n${USAGE}`);
    return EXIT_CODES.USAGE;
  }
  try {
    return await run(rest);
  } catch (err) {
    const e = asGantryError(err);
    const json = rest.includes('--json');
    if (json) process.stdout.write(`${JSON.stringify({ error: e.toJSON() })}\n`);
    process.stderr.write(`error: ${e.message}\n${e.hint ? `hint: ${e.hint}\n` : ''}`);
    if (e.code === 'INTERNAL' && process.env.GANTRY_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    return EXIT_CODES[e.code];
  }
}
