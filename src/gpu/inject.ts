import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { GantryError } from '../errors.js';
import { PACKAGE_ROOT } from '../native.js';
import { parseCapabilities, type Capability } from './capabilities.js';
import { canOpen, driverRoot, hostPath, readDriver, type DriverInfo } from './driver.js';
import { cudaVisibleLimit, parseVisibleDevices, selectGpus, type HostLimit } from './devices.js';
import { findLdconfig, nativeArch, readLdCache, type LdCacheEntry } from './ldcache.js';
import type { PlanGpu } from '../sandbox/plan.js';
import { placeInImage } from './place.js';
import { checkRequirements, cudaVersionText } from './require.js';
import type { Lookup } from './resolve.js';
import { selectDriverFiles } from './select.js';
import { writeSkeleton } from './skeleton.js';

/**
 * GPU injection for one sandbox or kernel, from the NVIDIA_* variables to the plan's pieces:
 * the request (image Env, then environ.d, then the host's environment, then -e, then --gpus),
 * the driver (its version, GPUs, ld cache), the GPUs this caller may use, the requirements,
 * the files for the capabilities, and where they go in the image.
 */
export type Source = 'image' | 'config' | 'host' | 'option';

export interface GpuRequest {
  /** NVIDIA_* variables after every override. */
  vars: Map<string, string>;
  /** Where NVIDIA_VISIBLE_DEVICES came from: an image's default is dropped quietly where there is no driver. */
  visibleFrom?: Source;
}

export interface GpuRequestInput {
  image: string[] | undefined;
  environ: [string, string][];
  /** The host's environment at start (undefined for a kernelspec, fixed at install). */
  host?: NodeJS.ProcessEnv;
  /** -e entries: KEY=VALUE, or KEY for the host's value. */
  cli: string[];
  /** --gpus SPEC. */
  gpus?: string;
  /** For `${host:VAR}` in environ.d values. */
  env: NodeJS.ProcessEnv;
}

const isNvidia = (key: string): boolean => key.startsWith('NVIDIA_');

export function gpuRequest(input: GpuRequestInput): GpuRequest {
  const vars = new Map<string, string>();
  let visibleFrom: Source | undefined;
  const set = (key: string, value: string | undefined, from: Source): void => {
    if (!isNvidia(key)) return;
    if (value === undefined) vars.delete(key);
    else vars.set(key, value);
    if (key === 'NVIDIA_VISIBLE_DEVICES') visibleFrom = value === undefined ? undefined : from;
  };
  for (const line of input.image ?? []) {
    const eq = line.indexOf('=');
    if (eq > 0) set(line.slice(0, eq), line.slice(eq + 1), 'image');
  }
  for (const [k, v] of input.environ) set(k, v.replace(/\$\{host:([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => input.env[name] ?? ''), 'config');
  for (const [k, v] of Object.entries(input.host ?? {})) if (v !== undefined) set(k, v, 'host');
  for (const item of input.cli) {
    const eq = item.indexOf('=');
    if (eq < 0) set(item, input.env[item], 'option');
    else set(item.slice(0, eq), item.slice(eq + 1), 'option');
  }
  if (input.gpus !== undefined) set('NVIDIA_VISIBLE_DEVICES', input.gpus, 'option');
  return { vars, ...(visibleFrom ? { visibleFrom } : {}) };
}

/** The native helper that asks libcuda which CUDA version the driver supports. */
function cudaVersionBinary(env: NodeJS.ProcessEnv): string {
  return env.GANTRY_CUDA_VERSION || join(PACKAGE_ROOT, 'native', 'build', 'Release', 'gantry-cuda-version');
}

/** cuDriverGetVersion of the driver's libcuda (in a child process: libcuda stays out of Node). */
export async function cudaVersion(driver: DriverInfo, cache: LdCacheEntry[], env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  const entry = cache.find((e) => e.soname === 'libcuda.so.1' && e.arch === nativeArch());
  if (!entry) return undefined;
  const bin = cudaVersionBinary(env);
  try {
    accessSync(bin, constants.X_OK);
  } catch {
    throw new GantryError('DEPENDENCY', `the native helper ${bin} is missing`, 'build it: npm run build:native');
  }
  return new Promise((resolve) => {
    execFile(bin, [hostPath(driver.root, entry.path)], { timeout: 20_000 }, (err, stdout) => {
      const v = parseInt(stdout.trim(), 10);
      resolve(err || !Number.isFinite(v) ? undefined : cudaVersionText(v));
    });
  });
}

export interface GpuContext {
  request: GpuRequest;
  /** "image pytorch": for messages. */
  what: string;
  /** The image's files, to place the driver's where its loader looks. */
  lookup: Lookup;
  /** Where skeleton layers are kept; undefined where the root is not an overlay (a flattened copy). */
  skeletonParent?: string;
  /** The host's environment at start, for its GPU limits (CUDA_VISIBLE_DEVICES); none for kernelspecs. */
  host?: NodeJS.ProcessEnv;
  env: NodeJS.ProcessEnv;
  warn: (message: string) => void;
}

/** Why this caller may not use some of the host's GPUs: a scheduler's CUDA_VISIBLE_DEVICES, device permissions. */
export async function hostLimits(driver: DriverInfo, host: NodeJS.ProcessEnv | undefined): Promise<HostLimit[]> {
  const limits: HostLimit[] = [];
  const scheduler = cudaVisibleLimit(host?.CUDA_VISIBLE_DEVICES, driver.gpus);
  if (scheduler) limits.push(scheduler);
  for (const gpu of driver.gpus) {
    const node = hostPath(driver.root, `/dev/nvidia${gpu.minor}`);
    if (!(await canOpen(node))) {
      const allowed = new Set(driver.gpus.map((g) => g.index).filter((i) => i !== gpu.index));
      limits.push({ allowed, reason: `${node} is not readable and writable by you` });
    }
  }
  return limits;
}

/** The plan's GPU pieces for a request, or undefined when it gets no GPU support. */
export async function planGpu(ctx: GpuContext): Promise<PlanGpu | undefined> {
  const visible = ctx.request.vars.get('NVIDIA_VISIBLE_DEVICES');
  const req = parseVisibleDevices(visible);
  if (req.kind === 'void') return undefined;
  const capsText = ctx.request.vars.get('NVIDIA_DRIVER_CAPABILITIES');
  const caps: Set<Capability> = parseCapabilities(capsText);
  const root = driverRoot(ctx.env);
  const driver = await readDriver(root);
  const describe = `NVIDIA_VISIBLE_DEVICES=${visible}`;
  if (!driver) {
    const why = `no NVIDIA driver is loaded on this host (${hostPath(root, '/proc/driver/nvidia/version')} is missing)`;
    if (ctx.request.visibleFrom === 'image') {
      ctx.warn(`${ctx.what} asks for GPUs (${describe}) but ${why}: starting without GPUs`);
      return undefined;
    }
    throw new GantryError('DEPENDENCY', `${describe} asks for GPUs, but ${why}`, 'install and load the NVIDIA driver, or start without GPUs: NVIDIA_VISIBLE_DEVICES=void');
  }
  const gpus = selectGpus(req, driver.gpus, await hostLimits(driver, ctx.host), describe);
  if (req.kind === 'all' && !gpus.length && driver.gpus.length) ctx.warn(`${describe}: none of this host's ${driver.gpus.length} GPUs is available to you (see gantry gpu): the sandbox gets the driver but no GPU`);
  const ldconfig = await findLdconfig();
  const cache = await readLdCache(root, ldconfig);
  await checkRequirements(ctx.request.vars, { driver: driver.version, cuda: () => cudaVersion(driver, cache, ctx.env) }, ctx.what);
  const selection = await selectDriverFiles({ driver, cache, capabilities: caps, gpus, nativeArch: nativeArch() });
  for (const w of selection.warnings) ctx.warn(w);
  const { binds, links, ldconfigDirs, checks, skeletonEntries } = await placeInImage(selection, ctx.lookup);
  const skeleton = ctx.skeletonParent ? await writeSkeleton(ctx.skeletonParent, skeletonEntries) : undefined;
  return {
    binds,
    links,
    ldconfigDirs,
    checks,
    ...(skeleton ? { skeleton } : {}),
    ldconfig,
    env: [
      ['NVIDIA_VISIBLE_DEVICES', visible!.trim()],
      ['NVIDIA_DRIVER_CAPABILITIES', (capsText ?? '').trim() || 'utility'],
    ],
  };
}
