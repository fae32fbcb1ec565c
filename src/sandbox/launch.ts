import { createHash } from 'node:crypto';
import { access, mkdir, readlink } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import { unpackImage } from '../image/unpack.js';
import { GantryError } from '../errors.js';
import { execBinary } from '../native.js';
import type { GantryPaths } from '../paths.js';
import { writeFileAtomic, writeFileOnce } from '../store/fsutil.js';
import type { ImageRecord, Store } from '../store/store.js';
import { gpuRequest, planGpu, type GpuRequest } from '../gpu/inject.js';
import { parseVisibleDevices } from '../gpu/devices.js';
import type { Lookup } from '../gpu/resolve.js';
import { loadSandboxConfig } from './config.js';
import { buildPlan, compilePlan, type Mount, type PlanGpu } from './plan.js';
import { currentIdentity, identityFiles, imageEntry, imageFile, Sandboxes, validateSandboxName, writeIdentityFiles, type SandboxRecord } from './sandboxes.js';

/**
 * create and start: gather the facts (image, sandbox, configuration, the caller, the request),
 * build the plan, compile it to a file, and name the native launcher that runs it. Node stops
 * there: the `gantry` wrapper script execs the launcher, so no Node process stays resident.
 */
export interface StartRequest {
  target: string;
  root: boolean;
  rw: boolean;
  pid: boolean;
  net: boolean;
  env: string[];
  mounts: Mount[];
  command: string[];
  /** --gpus SPEC: NVIDIA_VISIBLE_DEVICES for this start. */
  gpus?: string;
}

export interface Launch {
  /** argv to exec: the launcher, the plan, the command. */
  argv: string[];
}

export const SYSTEM_CONFIG = '/etc/gantry';
const HOST_FILES = ['/etc/hosts', '/etc/resolv.conf', '/etc/hostname'];

function mountHome(env: NodeJS.ProcessEnv): boolean {
  return /^(1|y|yes|true|on)$/i.test(env.GANTRY_MOUNT_HOME ?? '');
}

export async function checkLayers(store: Store, image: ImageRecord): Promise<string[]> {
  const roots: string[] = [];
  for (const layer of image.layers) {
    const root = store.layerRoot(layer.diffId);
    try {
      await access(root);
    } catch {
      throw new GantryError('STORE', `layer ${layer.diffId} of image ${image.name} is missing from the store`, `import the image again: gantry import ${image.reference} --name ${image.name}`);
    }
    roots.push(root);
  }
  return roots;
}

/** Writes a compiled plan under a content-addressed name and returns its path. */
async function savePlan(dir: string, text: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${createHash('sha256').update(text).digest('hex').slice(0, 32)}.plan`);
  await writeFileOnce(path, text);
  return path;
}

async function planText(
  store: Store,
  paths: GantryPaths,
  image: ImageRecord,
  writable: Parameters<typeof buildPlan>[0]['writable'],
  req: Omit<StartRequest, 'target'>,
  identityDir: string,
  env: NodeJS.ProcessEnv,
  hostCwd: string = process.cwd(),
): Promise<{ text: string; userMounts: boolean; gpuRequested: boolean }> {
  const layers = await checkLayers(store, image);
  const who = currentIdentity(env);
  const ids = identityFiles(await imageFile(store, image, 'etc/passwd'), await imageFile(store, image, 'etc/group'), who, req.root);
  const files = await writeIdentityFiles(identityDir, ids);
  const config = await loadSandboxConfig([SYSTEM_CONFIG, paths.config], env);
  const hostFiles = await hostFilesFor(store, image);
  const request = gpuRequest({ image: image.config.Env, environ: config.environ, host: env, cli: req.env, ...(req.gpus !== undefined ? { gpus: req.gpus } : {}), env });
  const gpu = await gpuFor(store, paths, image, request, writable.kind !== 'flat', env, env);
  const ops = buildPlan({
    layers,
    writable,
    user: { uid: who.uid, gid: who.gid, name: who.name, home: who.home },
    identityFiles: files,
    hostFiles,
    image: image.config,
    root: req.root,
    rw: req.rw,
    pid: req.pid,
    net: req.net,
    environ: config.environ,
    env: req.env,
    mounts: [...config.mounts, ...req.mounts],
    hooks: config.hooks,
    mountHome: mountHome(env),
    hostCwd,
    command: req.command,
    ...(gpu ? { gpu } : {}),
  });
  return {
    text: compilePlan(ops),
    userMounts: config.mounts.length > 0 || req.mounts.length > 0 || mountHome(env),
    gpuRequested: parseVisibleDevices(request.vars.get('NVIDIA_VISIBLE_DEVICES')).kind !== 'void',
  };
}

/**
 * The image's merged files, for placing the driver's (symlinks are read, never followed out).
 * Remembered per lookup: every placed file resolves the same /usr, /usr/lib... again.
 */
export function imageLookup(store: Store, image: ImageRecord): Lookup {
  const seen = new Map<string, ReturnType<Lookup>>();
  const lookup: Lookup = async (path) => {
    const entry = await imageEntry(store, image, path.replace(/^\/+/, ''));
    if (!entry) return undefined;
    return entry.type === 'symlink' ? { type: 'symlink', target: await readlink(entry.file) } : { type: entry.type };
  };
  return (path) => {
    let found = seen.get(path);
    if (!found) seen.set(path, (found = lookup(path)));
    return found;
  };
}

/**
 * The GPU pieces of a plan (undefined without GPUs). `host` is the environment whose GPU limits
 * apply (CUDA_VISIBLE_DEVICES): the caller's at a start; none for a kernelspec, fixed at install.
 */
export async function gpuFor(
  store: Store,
  paths: GantryPaths,
  image: ImageRecord,
  request: GpuRequest,
  overlay: boolean,
  env: NodeJS.ProcessEnv,
  host: NodeJS.ProcessEnv | undefined,
  skeletonParent: string = join(paths.data, 'gpu'),
): Promise<PlanGpu | undefined> {
  return planGpu({
    request,
    what: `image ${image.name}`,
    lookup: imageLookup(store, image),
    ...(overlay ? { skeletonParent } : {}),
    ...(host ? { host } : {}),
    env,
    warn: (m) => process.stderr.write(`warning: ${m}\n`),
  });
}

/** The host's /etc/hosts, resolv.conf, hostname: a bind follows a symlink inside the image, so skip those the image makes symlinks (never let /etc/hostname -> os-release hide a file). */
export async function hostFilesFor(store: Store, image: ImageRecord): Promise<string[]> {
  const files: string[] = [];
  for (const f of HOST_FILES) if ((await imageEntry(store, image, f.slice(1)))?.type !== 'symlink') files.push(f);
  return files;
}

const DEFAULTS: Omit<StartRequest, 'target'> = { root: false, rw: false, pid: false, net: false, env: [], mounts: [], command: [] };

/**
 * Whether this kernel mounts overlayfs in a user namespace (Linux >= 5.11). GANTRY_OVERLAY=0
 * forces the fallback (a flattened copy per sandbox), e.g. on a patched older kernel that refuses.
 */
export function overlayInUserns(env: NodeJS.ProcessEnv = process.env, kernel: string = release()): boolean {
  if (env.GANTRY_OVERLAY === '0') return false;
  const [major = 0, minor = 0] = kernel.split('.').map((n) => parseInt(n, 10));
  return major > 5 || (major === 5 && minor >= 11);
}

let warned = false;
function warnFlatten(): void {
  if (warned) return;
  warned = true;
  process.stderr.write(`warning: this kernel (${release()}) cannot mount overlayfs in a user namespace: sandboxes get a flattened copy of their image (slower to create, uses more disk)\n`);
}

/** Where a named sandbox's root comes from: the overlay directories, or its flattened copy. */
function namedWritable(dir: string, flat: boolean): Parameters<typeof buildPlan>[0]['writable'] {
  return flat ? { kind: 'flat', root: join(dir, 'rootfs') } : { kind: 'named', upper: join(dir, 'upper'), work: join(dir, 'work'), root: join(dir, 'root') };
}

export async function createSandbox(store: Store, paths: GantryPaths, imageName: string, name?: string, env: NodeJS.ProcessEnv = process.env): Promise<SandboxRecord> {
  const image = await store.readImage(imageName);
  const sandboxes = new Sandboxes(paths.data);
  const sandboxName = validateSandboxName(name ?? image.name);
  const final = sandboxes.pathOf(sandboxName);
  const flat = !overlayInUserns(env);
  if (flat) warnFlatten();
  return sandboxes.create(sandboxName, image, flat, async (dir) => {
    if (flat) await unpackImage(store, image.name, join(dir, 'rootfs'), env);
    // The plan names the final paths: the directory is renamed into place right after. It does
    // not depend on where it is started from ('/' as the host cwd): with no mounts of the user's,
    // the working directory is always the image's.
    const plan = await planText(store, paths, image, namedWritable(final, flat), DEFAULTS, join(paths.data, 'identity'), env, '/');
    await writeFileAtomic(join(dir, 'plan'), plan.text);
    // `gantry start NAME [CMD]` may run this plan without Node (see bin/gantry) only when it is
    // exactly what Node would compute: no mounts (no working-directory rule), no options.
    // The marker holds the image record's path: a re-imported or removed image takes the slow path.
    // A GPU plan is computed at each start: the driver, the GPUs and the caller's limits change.
    if (!plan.userMounts && !plan.gpuRequested) await writeFileAtomic(join(dir, 'fast'), `${store.imagePath(image.name)}\n`);
  });
}

export async function prepareStart(store: Store, paths: GantryPaths, req: StartRequest, env: NodeJS.ProcessEnv = process.env): Promise<Launch> {
  const sandboxes = new Sandboxes(paths.data);
  const named = /^[a-z0-9][a-z0-9._+-]{0,127}$/.test(req.target) ? await sandboxes.read(req.target) : undefined;
  let text: string;
  if (named) {
    const image = await store.readImage(named.image).catch(() => {
      throw new GantryError('STORE', `the image "${named.image}" of sandbox ${named.name} was removed`, `import it again (gantry import ${named.reference} --name ${named.image}) or remove the sandbox`);
    });
    if (image.digest !== named.digest) {
      throw new GantryError('STORE', `the image "${named.image}" was re-imported since sandbox ${named.name} was created (${named.digest} is now ${image.digest})`, `recreate the sandbox: gantry remove ${named.name} && gantry create --name ${named.name} ${named.image}`);
    }
    const dir = sandboxes.pathOf(named.name);
    text = (await planText(store, paths, image, namedWritable(dir, named.flat === true), { ...req, command: [] }, join(paths.data, 'identity'), env)).text;
  } else {
    let image: ImageRecord;
    try {
      image = await store.readImage(req.target);
    } catch (err) {
      if (err instanceof GantryError && (err.code === 'NOT_FOUND' || err.code === 'BAD_NAME')) {
        throw new GantryError('NOT_FOUND', `no sandbox or image named "${req.target}"`, 'list them with `gantry list` and `gantry images`; create a sandbox with `gantry create IMAGE`');
      }
      throw err;
    }
    if (!overlayInUserns(env)) {
      throw new GantryError('DEPENDENCY', `this kernel (${release()}) cannot mount overlayfs in a user namespace, so an image cannot be started directly`, `create a sandbox (a flattened copy) and start that: gantry create --name ${image.name} ${image.name}`);
    }
    const scratch = join(paths.data, 'scratch');
    await mkdir(scratch, { recursive: true });
    text = (await planText(store, paths, image, { kind: 'ephemeral', scratch }, { ...req, command: [] }, join(paths.data, 'identity'), env)).text;
  }
  const plan = await savePlan(join(paths.data, 'plans'), text);
  // The command is not part of the plan (plans are shared by content); the launcher takes it.
  return { argv: [execBinary(env), plan, ...(req.command.length ? ['--', ...req.command] : [])] };
}
