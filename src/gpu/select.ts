import { basename } from 'node:path';
import { BINARIES, CONFIG_FILES, LIBRARIES, type Capability } from './capabilities.js';
import { hostPath, type DriverInfo, type GpuInfo } from './driver.js';
import type { LdCacheEntry } from './ldcache.js';
import { directoryLookup, resolveInTree } from './resolve.js';

/**
 * Which of the host's driver files a sandbox receives for a set of capabilities and GPUs. Paths
 * here are as the driver root sees them (/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15); where
 * they go inside the image is decided by place.ts.
 */
export interface DriverLibrary {
  /** The library's real file (not a link), named <name>.so.<driver version>. */
  path: string;
  /** The names the loader asks for, each to become a link to the file: libcuda.so.1, libcuda.so. */
  links: string[];
  arch: string;
}

export interface DriverSelection {
  driver: DriverInfo;
  gpus: GpuInfo[];
  capabilities: Capability[];
  devices: string[];
  libraries: DriverLibrary[];
  binaries: string[];
  /** Files the sandbox sees at the same path: loader vendor files, the persistenced socket. */
  files: string[];
  /** Directories the sandbox sees at the same path: GSP firmware, the MPS pipe directory. */
  dirs: string[];
  warnings: string[];
}

const BIN_DIRS = ['/usr/bin', '/usr/sbin', '/bin', '/sbin', '/usr/local/bin'];

async function exists(root: string, path: string): Promise<{ path: string; type?: string }> {
  return resolveInTree(directoryLookup(root), path);
}

/** The driver's libraries for the capabilities, from the ld cache: only files of this driver's version. */
export async function selectLibraries(driver: DriverInfo, cache: LdCacheEntry[], caps: Set<Capability>, archs: string[], warnings: string[]): Promise<DriverLibrary[]> {
  const names = [...caps].flatMap((c) => LIBRARIES[c]);
  const byFile = new Map<string, DriverLibrary>();
  for (const entry of cache) {
    if (!archs.includes(entry.arch)) continue;
    const name = names.find((n) => entry.soname === `${n}.so` || entry.soname.startsWith(`${n}.so.`));
    if (!name) continue;
    const real = await exists(driver.root, entry.path);
    if (real.type !== 'file') continue;
    const file = basename(real.path);
    if (file !== `${name}.so.${driver.version}`) {
      warnings.push(`ignoring ${entry.path} (${file}): it does not belong to the loaded driver ${driver.version}; reinstall the driver or run ldconfig`);
      continue;
    }
    const lib = byFile.get(real.path) ?? { path: real.path, links: [], arch: entry.arch };
    if (entry.soname !== file && !lib.links.includes(entry.soname)) lib.links.push(entry.soname);
    byFile.set(real.path, lib);
  }
  // Build systems link with -lcuda (Triton, for one, looks for libcuda.so): give it the dev link too.
  for (const lib of byFile.values()) if (basename(lib.path).startsWith('libcuda.so.') && !lib.links.includes('libcuda.so')) lib.links.push('libcuda.so');
  return [...byFile.values()].sort((a, b) => a.path.localeCompare(b.path));
}

export interface SelectInput {
  driver: DriverInfo;
  cache: LdCacheEntry[];
  capabilities: Set<Capability>;
  gpus: GpuInfo[];
  nativeArch: string;
}

export async function selectDriverFiles(input: SelectInput): Promise<DriverSelection> {
  const { driver, capabilities: caps } = input;
  const warnings: string[] = [];
  const root = driver.root;
  const present = async (path: string): Promise<boolean> => (await exists(root, path)).type !== undefined;

  const devices: string[] = [];
  const want = ['/dev/nvidiactl', ...(caps.has('compute') ? ['/dev/nvidia-uvm', '/dev/nvidia-uvm-tools'] : []), ...(caps.has('display') ? ['/dev/nvidia-modeset'] : [])];
  for (const dev of want) {
    if (await present(dev)) devices.push(dev);
    else if (dev === '/dev/nvidiactl') warnings.push(`${hostPath(root, dev)} is missing: the driver's device nodes were never created (run nvidia-smi once as root, or nvidia-modprobe)`);
  }
  if (caps.has('compute') && (driver.uvmLoaded === false || !devices.includes('/dev/nvidia-uvm'))) {
    warnings.push('the nvidia_uvm kernel module is not loaded: CUDA will not find the GPUs (load it as root: nvidia-modprobe -u -c=0, or modprobe nvidia-uvm)');
  }
  for (const gpu of input.gpus) {
    const dev = `/dev/nvidia${gpu.minor}`;
    if (await present(dev)) devices.push(dev);
    else warnings.push(`${hostPath(root, dev)} (GPU ${gpu.index}) is missing: run nvidia-smi once as root, or nvidia-modprobe -c=${gpu.minor}`);
  }

  const archs = [input.nativeArch, ...(caps.has('compat32') && input.nativeArch === 'x86-64' ? ['i386'] : [])];
  const libraries = await selectLibraries(driver, input.cache, caps, archs, warnings);

  const binaries: string[] = [];
  for (const name of [...caps].flatMap((c) => BINARIES[c])) {
    for (const dir of BIN_DIRS) {
      const found = await exists(root, `${dir}/${name}`);
      if (found.type === 'file') {
        binaries.push(found.path);
        break;
      }
    }
  }

  const files: string[] = [];
  for (const f of [...caps].flatMap((c) => CONFIG_FILES[c])) if ((await exists(root, f)).type === 'file') files.push(f);
  // The persistence daemon's socket lets NVML skip re-initialising idle GPUs.
  if ((await exists(root, '/run/nvidia-persistenced/socket')).type) files.push('/run/nvidia-persistenced/socket');

  const dirs: string[] = [];
  const firmware = `/lib/firmware/nvidia/${driver.version}`;
  if ((await exists(root, firmware)).type === 'dir') dirs.push(firmware);
  if (caps.has('compute') && (await exists(root, '/tmp/nvidia-mps')).type === 'dir') dirs.push('/tmp/nvidia-mps');

  return { driver, gpus: input.gpus, capabilities: [...caps].sort(), devices, libraries, binaries, files, dirs, warnings };
}
