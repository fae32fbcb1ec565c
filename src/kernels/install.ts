import { spawn } from 'node:child_process';
import { copyFile, mkdir, readdir, readFile, rename, chmod } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { GantryError } from '../errors.js';
import { execBinary, PACKAGE_ROOT } from '../native.js';
import type { GantryPaths } from '../paths.js';
import { loadSandboxConfig, type SandboxConfig } from '../sandbox/config.js';
import { parseVisibleDevices } from '../gpu/devices.js';
import { gpuRequest } from '../gpu/inject.js';
import { gpuFor, hostFilesFor, SYSTEM_CONFIG, checkLayers } from '../sandbox/launch.js';
import { buildPlan, compilePlan, type Mount, type PlanGpu } from '../sandbox/plan.js';
import { randomSuffix, removeTree, writeFileAtomic, writeJsonAtomic } from '../store/fsutil.js';
import type { ImageRecord, Store } from '../store/store.js';
import { defaultDisplayName, defaultKernelName, KERNEL_PASS_ENV, kernelSpec, validKernelName, type KernelSpec } from './kernelspec.js';
import { kernelsDir, searchedKernelDirs, type KernelLocation } from './locations.js';

/**
 * `gantry kernel install`: checks that the image's Python has ipykernel (in a sandbox), compiles
 * the kernel's launch plan (one for every user: ids, HOME and the notebook folder are the
 * launching user's), and writes the kernelspec directory: kernel.json, plan, logos, and the empty
 * directory the kernel's throwaway writable layer is mounted on.
 */
export interface KernelInstallOptions {
  image: string;
  name?: string;
  displayName?: string;
  location: KernelLocation;
  env: string[];
  mounts: Mount[];
  python?: string;
  gpus?: string;
}

export interface InstalledKernel {
  name: string;
  dir: string;
  spec: KernelSpec;
  /** Things the installer should know (a GPU kernel without CUDA, say). */
  notes: string[];
}

const LOGOS = ['logo-32x32.png', 'logo-64x64.png', 'logo-svg.svg'];

/** The kernel's plan: a throwaway layer, home and notebook folder mounted, Jupyter's variables passed. */
async function kernelPlan(store: Store, config: SandboxConfig, image: ImageRecord, scratch: string, opts: KernelInstallOptions, gpu: PlanGpu | undefined): Promise<string> {
  // A kernel limited to some GPUs must not pass the server's CUDA_VISIBLE_DEVICES: inside, its
  // GPUs are numbered from 0 again.
  const limited = parseVisibleDevices(gpu?.env.find(([k]) => k === 'NVIDIA_VISIBLE_DEVICES')?.[1]).kind === 'list';
  const ops = buildPlan({
    layers: await checkLayers(store, image),
    writable: { kind: 'ephemeral', scratch },
    user: 'launcher',
    hostFiles: await hostFilesFor(store, image),
    image: image.config,
    root: false,
    rw: true, // a throwaway layer: libraries that write under / work, nothing persists
    pid: false, // the kernel must be the process Jupyter started
    net: false, // the ports in the connection file are on the host's loopback
    environ: config.environ,
    env: ['PYDEVD_DISABLE_FILE_VALIDATION=1', ...opts.env],
    passEnv: limited ? KERNEL_PASS_ENV.filter((k) => k !== 'CUDA_VISIBLE_DEVICES') : KERNEL_PASS_ENV,
    mounts: [...config.mounts, ...opts.mounts],
    hooks: config.hooks,
    mountHome: true,
    launchCwd: true,
    hostCwd: '/',
    ...(gpu ? { gpu } : {}),
  });
  return compilePlan(ops);
}

const CHECK = [
  'import json, sys, importlib.util as u',
  'print(json.dumps({"python": sys.version.split()[0], "ipykernel": (__import__("ipykernel").__version__ if u.find_spec("ipykernel") else None), "debugpy": u.find_spec("debugpy") is not None}))',
].join('\n');

/** Runs the image's Python in the kernel's sandbox and reports what it has. */
async function probePython(launcher: string, plan: string, python: string, image: ImageRecord, cwd: string): Promise<{ python: string; ipykernel: string | null; debugpy: boolean }> {
  const r = await new Promise<{ code: number; out: string; err: string }>((resolve, reject) => {
    const child = spawn(launcher, [plan, '--', python, '-c', CHECK], { stdio: ['ignore', 'pipe', 'pipe'], cwd });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, out, err }));
  });
  const hint = `use an image with Python and ipykernel (e.g. Debian's python3-ipykernel, or pip install ipykernel in the image), or point --python at the image's interpreter`;
  if (r.code === 127) throw new GantryError('USAGE', `image ${image.name} has no ${python}: ${r.err.trim().replace(/^gantry-exec: /, '')}`, hint);
  if (r.code !== 0) throw new GantryError('USAGE', `checking ${python} in image ${image.name} failed (exit ${r.code}): ${r.err.trim().split('\n').pop()}`, hint);
  const info = JSON.parse(r.out.trim().split('\n').pop() ?? '{}') as { python: string; ipykernel: string | null; debugpy: boolean };
  if (!info.ipykernel) throw new GantryError('USAGE', `${python} ${info.python} in image ${image.name} cannot import ipykernel`, hint);
  return info;
}

export async function installKernel(store: Store, paths: GantryPaths, opts: KernelInstallOptions, env: NodeJS.ProcessEnv = process.env): Promise<InstalledKernel> {
  const image = await store.readImage(opts.image);
  const name = opts.name ?? defaultKernelName(image);
  if (!validKernelName(name)) throw new GantryError('BAD_NAME', `invalid kernel name "${name}"`, 'use at most 64 of a-z 0-9 . _ - (starting with a letter or digit)');
  const python = opts.python ?? 'python3';
  const launcher = execBinary(env);
  const parent = kernelsDir(opts.location, env);
  try {
    await mkdir(parent, { recursive: true });
  } catch (err) {
    throw new GantryError('USAGE', `cannot create ${parent}: ${(err as Error).message}`, opts.location.kind === 'system' ? 'a --system install needs root; use --user' : 'check the permissions');
  }
  const final = join(parent, name);
  const existing = await readKernel(final);
  if (existing === null) throw new GantryError('USAGE', `${final} holds a kernel that Gantry did not install`, 'choose another --name, or remove it with jupyter kernelspec remove');

  const tmp = join(parent, `.${name}.tmp-${randomSuffix()}`);
  try {
    await mkdir(join(tmp, 'scratch'), { recursive: true });
    // The GPUs are chosen now (image Env, -e, --gpus): the kernelspec is static. Its skeleton
    // layer lives in the kernel's directory, readable by every user of a system-wide kernel.
    const config = await loadSandboxConfig([SYSTEM_CONFIG, paths.config], env);
    const request = gpuRequest({ image: image.config.Env, environ: config.environ, cli: opts.env, ...(opts.gpus !== undefined ? { gpus: opts.gpus } : {}), env });
    const gpu = await gpuFor(store, paths, image, request, true, env, undefined, join(tmp, 'gpu'));
    const gpus = gpu ? request.vars.get('NVIDIA_VISIBLE_DEVICES') : undefined;
    const notes: string[] = [];
    if (gpu && !request.vars.get('NVIDIA_DRIVER_CAPABILITIES')) {
      notes.push('the image does not set NVIDIA_DRIVER_CAPABILITIES, so the kernel gets the default, utility (nvidia-smi, no CUDA): add -e NVIDIA_DRIVER_CAPABILITIES=compute,utility for CUDA');
    }
    // Check the image with a plan of its own (the real one names the final paths).
    await writeFileAtomic(join(tmp, 'check.plan'), await kernelPlan(store, config, image, join(tmp, 'scratch'), opts, gpu));
    const info = await probePython(launcher, join(tmp, 'check.plan'), python, image, tmp);
    await removeTree(join(tmp, 'check.plan'));
    const finalGpu = gpu?.skeleton ? { ...gpu, skeleton: join(final, 'gpu', basename(gpu.skeleton)) } : gpu;
    await writeFileAtomic(join(tmp, 'plan'), await kernelPlan(store, config, image, join(final, 'scratch'), opts, finalGpu));
    const spec = kernelSpec({ launcher, plan: join(final, 'plan'), python, image, displayName: opts.displayName ?? defaultDisplayName(image, gpus), debugger: info.debugpy, ...(gpus ? { gpus } : {}) });
    await writeJsonAtomic(join(tmp, 'kernel.json'), spec);
    for (const logo of LOGOS) await copyFile(join(PACKAGE_ROOT, 'kernelspecs', logo), join(tmp, logo));
    await run('chmod', ['-R', 'a+rX', tmp]);
    await chmod(tmp, 0o755);
    if (existing) await removeTree(final);
    await rename(tmp, final);
    return { name, dir: final, spec, notes };
  } catch (err) {
    await removeTree(tmp);
    throw err;
  }
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: 'ignore' });
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}`))));
  });
}

/** The kernelspec in a directory: Gantry's, null when it is someone else's, undefined when none. */
async function readKernel(dir: string): Promise<KernelSpec | null | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, 'kernel.json'), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const spec = JSON.parse(text) as KernelSpec;
    return spec.metadata?.gantry ? spec : null;
  } catch {
    return null;
  }
}

export interface ListedKernel {
  name: string;
  dir: string;
  image: string;
  reference: string;
  digest: string;
  displayName: string;
}

export async function listKernels(env: NodeJS.ProcessEnv = process.env): Promise<ListedKernel[]> {
  const out: ListedKernel[] = [];
  const seen = new Set<string>();
  for (const parent of searchedKernelDirs(env)) {
    for (const name of (await readdir(parent).catch(() => [] as string[])).sort()) {
      if (name.startsWith('.') || seen.has(name)) continue;
      const spec = await readKernel(join(parent, name));
      if (!spec) continue;
      seen.add(name); // Jupyter uses the first directory that has a name
      const g = spec.metadata.gantry;
      out.push({ name, dir: join(parent, name), image: g.image, reference: g.reference, digest: g.digest, displayName: spec.display_name });
    }
  }
  return out;
}

export async function removeKernel(name: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const kernel = (await listKernels(env)).find((k) => k.name === name);
  if (!kernel) throw new GantryError('NOT_FOUND', `no Gantry kernel named "${name}"`, 'list them with `gantry kernel list`');
  try {
    await removeTree(kernel.dir);
  } catch (err) {
    throw new GantryError('USAGE', `cannot remove ${kernel.dir}: ${(err as Error).message}`, 'a system-wide kernel is removed by root');
  }
  return kernel.dir;
}
