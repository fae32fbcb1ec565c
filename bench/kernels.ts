// Kernel start benchmark: how long a notebook waits for a Gantry kernel compared with the host's
// plain ipykernel on the same Python.
//
//   npx tsc -p tsconfig.json && node dist/bench/kernels.js [--rounds N] [--exec-runs N] [--json]
//
// One Jupyter server (Debian's jupyter-server, test/fixtures/jupyter.ts) has two kernelspecs in its
// JUPYTER_PATH:
//   A  gantry-deb   `gantry kernel install deb --prefix DIR` of the debian:ipykernel fixture image
//                   (imported from a seeded loopback registry, test/fixtures/registry.ts)
//   B  host-python  /usr/bin/python3 -m ipykernel_launcher -f {connection_file} (Debian's python3-ipykernel)
// Each round, A then B: t0; KernelManager.startNew({name}); executeCode(kernel, '1'); t = now - t0;
// then the kernel is shut down and we wait until its processes are gone (untimed). One warm-up
// round first (untimed; it also checks which Python and ipykernel each kernel runs).
// Then the launcher alone: `gantry-exec PLAN -- python3 -c pass` (the installed kernel's plan, from
// the notebook folder) against `/usr/bin/python3 -c pass`, alternating.
// Progress goes to stderr; the table (or with --json a JSON object) to stdout.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { KernelManager, KernelSpecManager } from '@jupyterlab/services';
import type { Kernel } from '@jupyterlab/services';
import { executeCode, startJupyterServer, writeKernelspec, type JupyterServer } from '../test/fixtures/jupyter.js';
import { run, sleep } from '../test/fixtures/proc.js';
import { seedStorage, startRegistry, type Registry } from '../test/fixtures/registry.js';
import { gantry, makeEnv, ok, type Env } from '../test/integration/helpers.js';

const GANTRY_KERNEL = 'gantry-deb';
const HOST_KERNEL = 'host-python';
const HOST_PYTHON = '/usr/bin/python3';
const TARGET = 1.1;
const STEP_TIMEOUT_MS = 120_000;

interface Options {
  rounds: number;
  execRuns: number;
  json: boolean;
}

function usage(): never {
  process.stderr.write(
    'usage: node dist/bench/kernels.js [--rounds N] [--exec-runs N] [--json]\n' +
      '  --rounds N     timed kernel starts of each kind, after one warm-up each (default 10)\n' +
      '  --exec-runs N  timed launcher runs of each kind (default 30)\n' +
      '  --json         print a JSON object on stdout instead of the table\n',
  );
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const o: Options = { rounds: 10, execRuns: 30, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) usage();
      return v;
    };
    if (a === '--rounds') o.rounds = num();
    else if (a === '--exec-runs') o.execRuns = num();
    else if (a === '--json') o.json = true;
    else usage();
  }
  return o;
}

// ---------------------------------------------------------------- statistics and output

interface Stats {
  median: number;
  min: number;
  max: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function stats(xs: number[]): Stats {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

const r1 = (x: number): number => Math.round(x * 10) / 10;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

// @jupyterlab/services logs each WebSocket start and kernel status change with console.debug,
// which Node writes to stdout: keep stdout for the results (and valid JSON with --json).
console.debug = (): void => undefined;

function progress(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

function load(): [number, number, number] {
  const [a, b, c] = loadavg();
  return [r3(a!), r3(b!), r3(c!)];
}

// ---------------------------------------------------------------- cleanup, also on Ctrl-C

const cleanups: Array<{ what: string; fn: () => Promise<void> }> = [];
const children = new Set<ChildProcess>();
/** Pids of `gantry` commands in flight (started by the helpers' gantry()). */
const gantryPids = new Set<number>();
let cleaning: Promise<void> | undefined;

function onCleanup(what: string, fn: () => Promise<void>): void {
  cleanups.push({ what, fn });
}

/** Runs the registered cleanups, last registered first, once. */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const pid of gantryPids) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
    if (gantryPids.size) await sleep(500);
    for (const { what, fn } of cleanups.reverse()) {
      try {
        await fn();
      } catch (e) {
        progress(`cleanup of ${what} failed: ${(e as Error).message}`);
      }
    }
  })();
  return cleaning;
}

let interrupted = false;
for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
  process.on(sig, () => {
    if (interrupted) {
      // A second signal: leave now; the fixtures' exit hooks still kill their services and
      // remove their directories, and ours removes the work directory.
      process.exit(code);
    }
    interrupted = true;
    progress(`${sig}: cleaning up (again to leave at once)`);
    void cleanup().finally(() => process.exit(code));
  });
}

// ---------------------------------------------------------------- helpers

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`${what}: no answer after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Run file args to completion; resolves with its wall time (spawn to exit) in ms. */
function timeProcess(file: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(file, args, { cwd, env, stdio: ['ignore', 'ignore', 'pipe'] });
    children.add(child);
    let t = 0;
    let err = '';
    child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    child.on('exit', () => (t = performance.now() - t0));
    child.on('error', (e) => {
      children.delete(child);
      reject(new Error(`${file}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      children.delete(child);
      if (code === 0) resolve(t);
      else reject(new Error(`${file} ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${err.trim().slice(-2000)}`));
    });
  });
}

interface Versions {
  python: string;
  ipykernel: string | null;
}

const VERSION_CHECK = 'import json, sys, ipykernel; print(json.dumps({"python": sys.version.split()[0], "ipykernel": ipykernel.__version__}))';

// ---------------------------------------------------------------- the benchmark

interface KernelRun {
  start_to_reply_ms: number;
  shutdown_ms: number;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) progress('not root: the figures are meant to be taken as root (see bench/README.md)');
  const loadStart = load();
  progress(`load average at start: ${loadStart.join(' ')} (${cpus().length} CPUs)`);

  // Registry with the fixture images, Gantry's own store, the image, the kernel.
  progress('seeding the registry storage (cached after the first time)');
  const seed = await seedStorage();
  const registry: Registry = await startRegistry({ auth: 'none', storageDir: seed.dir });
  onCleanup('the registry', () => registry.stop());

  const env: Env = await makeEnv({ label: 'root', user: null }, 'gantry-bench-kernels');
  onCleanup('the work directory', () => env.cleanup());
  process.on('exit', () => rmSync(env.dir, { recursive: true, force: true }));
  const notebooks = join(env.home, 'notebooks');
  await mkdir(notebooks, { recursive: true });
  const prefix = join(env.dir, 'jupyter-prefix');
  const hostSpecs = join(env.dir, 'host-kernels');

  const gantryCmd = async (args: string[]): Promise<string> => {
    let pid = 0;
    try {
      return ok(await gantry(env, args, { onSpawn: (p) => gantryPids.add((pid = p)) }), `gantry ${args.join(' ')}`);
    } finally {
      gantryPids.delete(pid);
    }
  };
  progress(`gantry import ${registry.host}/${seed.images['debian-ipykernel']} --name deb; gantry kernel install deb`);
  await gantryCmd(['import', `${registry.host}/${seed.images['debian-ipykernel']}`, '--name', 'deb', '--quiet']);
  await gantryCmd(['kernel', 'install', 'deb', '--prefix', prefix]);
  const gantryDir = join(prefix, 'share', 'jupyter', 'kernels', GANTRY_KERNEL);
  const gantrySpec = JSON.parse(readFileSync(join(gantryDir, 'kernel.json'), 'utf8')) as { argv: string[] };
  // argv: LAUNCHER --bind-parent {connection_file} PLAN -- PYTHON -m ipykernel_launcher -f {connection_file}
  const dashes = gantrySpec.argv.indexOf('--');
  const launcher = gantrySpec.argv[0]!;
  const plan = gantrySpec.argv[dashes - 1]!;
  const imagePython = gantrySpec.argv[dashes + 1]!;
  if (dashes < 2 || !existsSync(launcher) || !existsSync(plan)) throw new Error(`unexpected kernel.json argv: ${JSON.stringify(gantrySpec.argv)}`);

  await writeKernelspec(hostSpecs, HOST_KERNEL, {
    argv: [HOST_PYTHON, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
    display_name: 'Python 3 (host ipykernel)',
    env: { PYDEVD_DISABLE_FILE_VALIDATION: '1' },
    interrupt_mode: 'signal',
  });

  // Versions: the image's Python and ipykernel (through the kernel's plan) and the host's.
  const runEnv: NodeJS.ProcessEnv = { ...process.env, HOME: env.home, PYDEVD_DISABLE_FILE_VALIDATION: '1' };
  const probe = async (file: string, args: string[]): Promise<Versions> =>
    JSON.parse((await run(file, args, { cwd: notebooks, env: runEnv })).stdout.trim().split('\n').pop()!) as Versions;
  const dpkg = async (pkg: string): Promise<string> =>
    (await run('dpkg-query', ['-W', '-f', '${Version}', pkg], { allowFail: true })).stdout.trim() || '(not installed)';
  const versions = {
    gantry: await probe(launcher, [plan, '--', imagePython, '-c', VERSION_CHECK]),
    host: await probe(HOST_PYTHON, ['-c', VERSION_CHECK]),
    host_packages: {
      'python3-ipykernel': await dpkg('python3-ipykernel'),
      'python3-jupyter-server': await dpkg('python3-jupyter-server'),
      'python3-jupyter-client': await dpkg('python3-jupyter-client'),
    },
  };
  progress(
    `image: Python ${versions.gantry.python}, ipykernel ${versions.gantry.ipykernel}; host: Python ${versions.host.python}, ipykernel ${versions.host.ipykernel}`,
  );
  if (versions.gantry.python !== versions.host.python || versions.gantry.ipykernel !== versions.host.ipykernel) {
    progress('WARNING: the image and the host differ in Python or ipykernel: the comparison is not like for like');
  }

  // One server, both kernelspecs in its JUPYTER_PATH.
  const server: JupyterServer = await startJupyterServer({
    kernelspecDirs: [join(prefix, 'share', 'jupyter'), hostSpecs],
    rootDir: notebooks,
    env: { HOME: env.home, PYDEVD_DISABLE_FILE_VALIDATION: '1' },
  });
  onCleanup('the jupyter server', () => server.stop());
  const specs = new KernelSpecManager({ serverSettings: server.settings });
  await specs.refreshSpecs();
  const listed = Object.keys(specs.specs?.kernelspecs ?? {});
  specs.dispose();
  for (const k of [GANTRY_KERNEL, HOST_KERNEL]) if (!listed.includes(k)) throw new Error(`kernelspec ${k} not listed (${listed.join(', ')})`);

  const kernels = new KernelManager({ serverSettings: server.settings });
  onCleanup('the kernel manager', async () => kernels.dispose());

  const waitGone = async (id: string): Promise<void> => {
    const t0 = Date.now();
    for (;;) {
      const left = server.processes();
      const known = (await server.kernels()).some((k) => k.id === id);
      if (left.length === 0 && !known) return;
      if (Date.now() - t0 > 30_000) throw new Error(`kernel ${id} not gone after 30 s (processes ${left.join(' ')}, listed ${known})`);
      await sleep(20);
    }
  };

  /** One timed start; with check, also asks the kernel what it runs (untimed). */
  const startOnce = async (name: string, check: boolean): Promise<KernelRun & { inside?: Versions & { image: boolean } }> => {
    let kernel: Kernel.IKernelConnection | undefined;
    const t0 = performance.now();
    try {
      kernel = await withTimeout(kernels.startNew({ name }), STEP_TIMEOUT_MS, `start ${name}`);
      const r = await executeCode(kernel, '1', STEP_TIMEOUT_MS);
      const t = performance.now() - t0;
      if (r.status !== 'ok' || r.result !== '1') throw new Error(`${name}: execute '1' gave ${r.status} ${r.result ?? ''} ${r.ename ?? ''} ${r.evalue ?? ''}`);
      let inside: (Versions & { image: boolean }) | undefined;
      if (check) {
        const c = await executeCode(
          kernel,
          `import json, os, sys, ipykernel; print(json.dumps({"python": sys.version.split()[0], "ipykernel": ipykernel.__version__, "image": os.path.exists("/etc/gantry-fixture")}))`,
        );
        if (c.status !== 'ok') throw new Error(`${name}: version check failed: ${c.ename}: ${c.evalue}`);
        inside = JSON.parse(c.stdout.trim()) as Versions & { image: boolean };
      }
      const id = kernel.id;
      const s0 = performance.now();
      await withTimeout(kernel.shutdown(), STEP_TIMEOUT_MS, `shut down ${name}`);
      await waitGone(id);
      const shutdown = performance.now() - s0;
      kernel = undefined;
      return { start_to_reply_ms: t, shutdown_ms: shutdown, ...(inside ? { inside } : {}) };
    } catch (e) {
      throw new Error(`${(e as Error).message}\nserver log:\n${(await server.log()).split('\n').slice(-40).join('\n')}`);
    } finally {
      if (kernel && !kernel.isDisposed) await kernel.shutdown().catch(() => undefined);
    }
  };

  // Warm-up, which also checks that A runs in the image and B on the host.
  progress('warm-up: one start of each');
  const warmA = await startOnce(GANTRY_KERNEL, true);
  const warmB = await startOnce(HOST_KERNEL, true);
  if (!warmA.inside?.image || warmB.inside?.image) throw new Error(`kernels run in the wrong place: A ${JSON.stringify(warmA.inside)}, B ${JSON.stringify(warmB.inside)}`);
  progress(`warm-up: A ${r1(warmA.start_to_reply_ms)} ms, B ${r1(warmB.start_to_reply_ms)} ms`);

  const runsA: KernelRun[] = [];
  const runsB: KernelRun[] = [];
  for (let i = 1; i <= opts.rounds; i++) {
    const a = await startOnce(GANTRY_KERNEL, false);
    const b = await startOnce(HOST_KERNEL, false);
    runsA.push(a);
    runsB.push(b);
    progress(`round ${i}/${opts.rounds}: A ${r1(a.start_to_reply_ms)} ms, B ${r1(b.start_to_reply_ms)} ms (A/B ${(a.start_to_reply_ms / b.start_to_reply_ms).toFixed(3)})`);
  }

  // The launcher's share: the same plan, python3 -c pass, from the notebook folder.
  progress(`launcher: ${opts.execRuns} runs of each, alternating`);
  const execA: number[] = [];
  const execB: number[] = [];
  await timeProcess(launcher, [plan, '--', imagePython, '-c', 'pass'], notebooks, runEnv); // warm-up
  await timeProcess(HOST_PYTHON, ['-c', 'pass'], notebooks, runEnv);
  for (let i = 0; i < opts.execRuns; i++) {
    execA.push(await timeProcess(launcher, [plan, '--', imagePython, '-c', 'pass'], notebooks, runEnv));
    execB.push(await timeProcess(HOST_PYTHON, ['-c', 'pass'], notebooks, runEnv));
  }
  const loadEnd = load();

  const kA = stats(runsA.map((r) => r.start_to_reply_ms));
  const kB = stats(runsB.map((r) => r.start_to_reply_ms));
  const pairwise = runsA.map((a, i) => a.start_to_reply_ms / runsB[i]!.start_to_reply_ms);
  const ratio = kA.median / kB.median;
  const eA = stats(execA);
  const eB = stats(execB);
  const round = (s: Stats): Stats => ({ median: r1(s.median), min: r1(s.min), max: r1(s.max) });

  const result = {
    benchmark: 'kernel start: KernelManager.startNew to the first execute_reply',
    rounds: opts.rounds,
    warmup: 1,
    order: 'A then B each round',
    cpus: cpus().length,
    load_average: { start: loadStart, end: loadEnd },
    versions,
    kernel_start_ms: {
      A: { name: GANTRY_KERNEL, ...round(kA), runs: runsA.map((r) => r1(r.start_to_reply_ms)), shutdown_median: r1(median(runsA.map((r) => r.shutdown_ms))) },
      B: { name: HOST_KERNEL, ...round(kB), runs: runsB.map((r) => r1(r.start_to_reply_ms)), shutdown_median: r1(median(runsB.map((r) => r.shutdown_ms))) },
      warmup: { A: r1(warmA.start_to_reply_ms), B: r1(warmB.start_to_reply_ms) },
      ratio_of_medians: r3(ratio),
      median_of_pairwise_ratios: r3(median(pairwise)),
      pairwise_ratios: pairwise.map(r3),
      target: TARGET,
      within_target: ratio <= TARGET,
    },
    launcher_ms: {
      runs: opts.execRuns,
      A: { command: `gantry-exec PLAN -- ${imagePython} -c pass`, ...round(eA) },
      B: { command: `${HOST_PYTHON} -c pass`, ...round(eB) },
      ratio_of_medians: r3(eA.median / eB.median),
      difference_of_medians: r1(eA.median - eB.median),
    },
  };

  if (opts.json) {
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  } else {
    const row = (label: string, s: Stats, extra = ''): string =>
      `  ${label.padEnd(44)}${r1(s.median).toFixed(1).padStart(9)}${r1(s.min).toFixed(1).padStart(9)}${r1(s.max).toFixed(1).padStart(9)}${extra}`;
    const out = [
      `Kernel start: KernelManager.startNew -> first execute_reply ('1'), ms`,
      `${opts.rounds} rounds after 1 warm-up each, A then B each round; ${cpus().length} CPUs`,
      `load average (1/5/15 min): start ${loadStart.join(' ')}, end ${loadEnd.join(' ')}`,
      `image: Python ${versions.gantry.python}, ipykernel ${versions.gantry.ipykernel}; ` +
        `host: Python ${versions.host.python}, ipykernel ${versions.host.ipykernel} (python3-ipykernel ${versions.host_packages['python3-ipykernel']}, ` +
        `jupyter-server ${versions.host_packages['python3-jupyter-server']})`,
      '',
      `  ${''.padEnd(44)}${'median'.padStart(9)}${'min'.padStart(9)}${'max'.padStart(9)}`,
      row(`A ${GANTRY_KERNEL}`, kA),
      row(`B ${HOST_KERNEL}`, kB),
      `  ratio of medians A/B: ${ratio.toFixed(3)} (target <= ${TARGET}: ${ratio <= TARGET ? 'met' : 'NOT met'}); median of pairwise ratios: ${median(pairwise).toFixed(3)}`,
      `  (shutdown until gone, untimed above: median A ${r1(result.kernel_start_ms.A.shutdown_median)} ms, B ${r1(result.kernel_start_ms.B.shutdown_median)} ms)`,
      '',
      `Launcher alone: ${opts.execRuns} runs each, alternating, from the notebook folder, ms`,
      row(`A gantry-exec PLAN -- ${imagePython} -c pass`, eA),
      row(`B ${HOST_PYTHON} -c pass`, eB),
      `  ratio of medians A/B: ${(eA.median / eB.median).toFixed(3)}; difference: ${(eA.median - eB.median).toFixed(1)} ms`,
    ];
    process.stdout.write(out.join('\n') + '\n');
  }
}

let failed = false;
try {
  await main();
} catch (e) {
  failed = true;
  if (!interrupted) process.stderr.write(`bench/kernels: ${(e as Error).stack ?? String(e)}\n`);
} finally {
  if (!interrupted) {
    await cleanup();
    process.exit(failed ? 1 : 0);
  }
}
