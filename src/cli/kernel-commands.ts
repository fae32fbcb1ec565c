import { GantryError } from '../errors.js';
import { installKernel, listKernels, removeKernel } from '../kernels/install.js';
import type { KernelLocation } from '../kernels/locations.js';
import { gantryPaths } from '../paths.js';
import { checkEnvOption, parseMountOption } from '../sandbox/config.js';
import type { Mount } from '../sandbox/plan.js';
import { Store } from '../store/store.js';

/** `gantry kernel install|list|remove`: arguments and output; the work is in src/kernels/. */
const INSTALL_USAGE = 'gantry kernel install IMAGE [--name KERNEL] [--display-name TEXT] [--user | --sys-prefix | --prefix DIR | --system] [-e KEY=VAL]... [-m SRC:DST[:OPTS]]... [--gpus SPEC] [--python PATH]';

async function install(args: string[]): Promise<number> {
  let image: string | undefined;
  let name: string | undefined;
  let displayName: string | undefined;
  let python: string | undefined;
  let gpus: string | undefined;
  let location: KernelLocation = { kind: 'user' };
  const env: string[] = [];
  const mounts: Mount[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = (): string => {
      const v = args[++i];
      if (v === undefined) throw new GantryError('USAGE', `${a} needs a value`, `usage: ${INSTALL_USAGE}`);
      return v;
    };
    switch (a) {
      case '--name':
        name = value();
        break;
      case '--display-name':
        displayName = value();
        break;
      case '--python':
        python = value();
        break;
      case '--gpus':
        gpus = value();
        break;
      case '--user':
        location = { kind: 'user' };
        break;
      case '--sys-prefix':
        location = { kind: 'sys-prefix' };
        break;
      case '--system':
        location = { kind: 'system' };
        break;
      case '--prefix':
        location = { kind: 'prefix', dir: value() };
        break;
      case '-e':
      case '--env': {
        const item = checkEnvOption(value());
        if (!item.includes('=')) throw new GantryError('USAGE', `kernel environment "${item}" needs a value (KEY=VAL)`, 'kernelspecs are static: write -e KEY=VALUE');
        env.push(item);
        break;
      }
      case '-m':
      case '--mount':
        mounts.push(parseMountOption(value()));
        break;
      case '-h':
      case '--help':
        process.stdout.write(`usage: ${INSTALL_USAGE}\n`);
        return 0;
      default:
        if (a.startsWith('-') || image !== undefined) throw new GantryError('USAGE', `unexpected argument "${a}"`, `usage: ${INSTALL_USAGE}`);
        image = a;
    }
  }
  if (!image) throw new GantryError('USAGE', 'missing the image', `usage: ${INSTALL_USAGE}`);
  const paths = gantryPaths();
  const k = await installKernel(new Store(paths.store), paths, { image, location, env, mounts, ...(name ? { name } : {}), ...(displayName ? { displayName } : {}), ...(python ? { python } : {}), ...(gpus !== undefined ? { gpus } : {}) });
  for (const note of k.notes) process.stderr.write(`note: ${note}\n`);
  process.stdout.write(`installed kernel ${k.name} ("${k.spec.display_name}") in ${k.dir}\n`);
  return 0;
}

export async function kernelCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'install':
      return install(rest);
    case 'list': {
      const kernels = await listKernels();
      if (rest.includes('--json')) process.stdout.write(`${JSON.stringify(kernels, null, 2)}\n`);
      else {
        const rows = [['NAME', 'IMAGE', 'DIGEST', 'LOCATION'], ...kernels.map((k) => [k.name, k.image, k.digest.slice(0, 19), k.dir])];
        const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
        process.stdout.write(rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n');
      }
      return 0;
    }
    case 'remove': {
      if (rest.length !== 1) throw new GantryError('USAGE', 'expected one kernel name', 'usage: gantry kernel remove KERNEL');
      process.stdout.write(`removed ${await removeKernel(rest[0]!)}\n`);
      return 0;
    }
    default:
      throw new GantryError('USAGE', sub ? `unknown kernel command "${sub}"` : 'missing the kernel command', 'usage: gantry kernel install|list|remove ...');
  }
}
