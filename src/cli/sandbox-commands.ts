import { spawn } from 'node:child_process';
import { GantryError } from '../errors.js';
import { execBinary } from '../native.js';
import { gantryPaths } from '../paths.js';
import { checkEnvOption, parseMountOption } from '../sandbox/config.js';
import { createSandbox, prepareStart, type Launch, type StartRequest } from '../sandbox/launch.js';
import { Sandboxes } from '../sandbox/sandboxes.js';
import { Store } from '../store/store.js';
import { humanBytes } from './progress.js';

/**
 * create, start, exec, list, remove: argument handling and output only; the work is in
 * src/sandbox/. `start` and `exec` end by running the native launcher: the `gantry` wrapper
 * script execs it (GANTRY_LAUNCH=print), or, when Node was started directly, Node runs it and
 * passes its exit status on.
 */
const START_USAGE = 'gantry start [--root] [--rw] [-e|--env KEY[=VAL]]... [-m|--mount SRC[:DST[:OPTS]]]... [--pid] [--net] [--gpus SPEC] NAME|IMAGE [COMMAND ARGS...]';

/** Options stop at the first argument that is not one, so the command keeps its own flags. */
export function parseStartArgs(args: string[], cwd: string = process.cwd()): StartRequest {
  const req: StartRequest = { target: '', root: false, rw: false, pid: false, net: false, env: [], mounts: [], command: [] };
  let i = 0;
  const value = (flag: string): string => {
    const v = args[++i];
    if (v === undefined) throw new GantryError('USAGE', `${flag} needs a value`, `usage: ${START_USAGE}`);
    return v;
  };
  for (; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('-') || a === '-') break;
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    switch (flag) {
      case '--root':
        req.root = true;
        break;
      case '--rw':
        req.rw = true;
        break;
      case '--pid':
        req.pid = true;
        break;
      case '--net':
        req.net = true;
        break;
      case '--gpus':
        req.gpus = inline ?? value(flag);
        break;
      case '-e':
      case '--env':
        req.env.push(checkEnvOption(inline ?? value(flag)));
        break;
      case '-m':
      case '--mount':
        req.mounts.push(parseMountOption(inline ?? value(flag), cwd));
        break;
      default:
        throw new GantryError('USAGE', `unknown option "${a}"`, `usage: ${START_USAGE}`);
    }
  }
  const target = args[i];
  if (!target) throw new GantryError('USAGE', 'missing the sandbox or image to start', `usage: ${START_USAGE}`);
  req.target = target;
  req.command = args.slice(i + 1);
  return req;
}

function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./:=+,@%-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Hands over to the launcher: print it for the wrapper to exec, or run it and wait. */
async function launch(l: Launch): Promise<number> {
  if (process.env.GANTRY_LAUNCH === 'print') {
    process.stdout.write(`${l.argv.map(shellQuote).join(' ')}\n`);
    return 0;
  }
  const child = spawn(l.argv[0]!, l.argv.slice(1), { stdio: 'inherit' });
  const forward = (sig: NodeJS.Signals): void => void child.kill(sig);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const) process.on(sig, forward);
  return new Promise((resolve) => child.on('close', (code, signal) => resolve(code ?? 128 + (signal ? 15 : 0))));
}

export const sandboxCommands: Record<string, (args: string[]) => Promise<number>> = {
  async create(args) {
    let name: string | undefined;
    const rest: string[] = [];
    for (let i = 0; i < args.length; i++) {
      if (args[i] === '--name' || args[i] === '-n') name = args[++i];
      else if (args[i]!.startsWith('--name=')) name = args[i]!.slice(7);
      else if (args[i] === '-h' || args[i] === '--help') {
        process.stdout.write('usage: gantry create [--name NAME] IMAGE\n');
        return 0;
      } else rest.push(args[i]!);
    }
    if (rest.length !== 1 || (name !== undefined && !name)) throw new GantryError('USAGE', rest.length ? 'too many arguments' : 'missing the image', 'usage: gantry create [--name NAME] IMAGE');
    const paths = gantryPaths();
    const record = await createSandbox(new Store(paths.store), paths, rest[0]!, name);
    process.stdout.write(`${record.name}\n`);
    return 0;
  },

  async start(args) {
    const paths = gantryPaths();
    return launch(await prepareStart(new Store(paths.store), paths, parseStartArgs(args)));
  },

  async exec(args) {
    const [pid, ...command] = args[0] === '--' ? args.slice(1) : args;
    if (!pid || !/^\d+$/.test(pid) || command.length === 0) throw new GantryError('USAGE', 'expected a pid and a command', 'usage: gantry exec PID COMMAND [ARGS...] (the pid of a process in the sandbox: see gantry list)');
    return launch({ argv: [execBinary(), '--join', pid, '--', ...command] });
  },

  async list(args) {
    const json = args.includes('--json');
    const sandboxes = new Sandboxes(gantryPaths().data);
    const rows = [];
    for (const s of await sandboxes.list()) rows.push({ ...s, upperSize: await sandboxes.upperSize(s.name), pids: await sandboxes.runningPids(s.name) });
    if (json) {
      process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      return 0;
    }
    const table = [['NAME', 'IMAGE', 'CREATED', 'SIZE', 'PIDS'], ...rows.map((r) => [r.name, r.image, r.created.slice(0, 19).replace('T', ' '), humanBytes(r.upperSize), r.pids.join(',') || '-'])];
    const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
    process.stdout.write(table.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n');
    return 0;
  },

  async remove(args) {
    const force = args.includes('-f') || args.includes('--force');
    const names = args.filter((a) => a !== '-f' && a !== '--force');
    if (!names.length) throw new GantryError('USAGE', 'missing the sandbox name', 'usage: gantry remove [-f] NAME...');
    const sandboxes = new Sandboxes(gantryPaths().data);
    for (const name of names) {
      if (!(await sandboxes.read(name))) throw new GantryError('NOT_FOUND', `no sandbox named "${name}"`, 'list them with `gantry list`');
      const pids = await sandboxes.runningPids(name);
      if (pids.length && !force) throw new GantryError('USAGE', `sandbox ${name} is running (pids ${pids.join(', ')})`, `stop it first, or remove it anyway with: gantry remove -f ${name}`);
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await sandboxes.remove(name);
      process.stdout.write(`removed ${name}\n`);
    }
    return 0;
  },
};
