import { access, constants, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * What the host's NVIDIA driver offers, read the way the driver publishes it: the kernel module's
 * version in /proc/driver/nvidia/version, one /proc/driver/nvidia/gpus/<bus id>/information per
 * GPU, /proc/modules for nvidia_uvm. Everything is read beneath a driver root, `/` normally and
 * GANTRY_DRIVER_ROOT in tests (a fake driver tree laid out like the host's `/`): no GPU code path
 * reads the host's files except through `hostPath`.
 */
export interface GpuInfo {
  /** The GPU's position in PCI bus order: what NVIDIA_VISIBLE_DEVICES and nvidia-smi call its index. */
  index: number;
  /** The minor number of /dev/nvidia<minor>. */
  minor: number;
  busId: string;
  uuid: string;
  model: string;
}

export interface DriverInfo {
  root: string;
  /** The kernel module's version, e.g. 550.54.15: every user-space library must carry it. */
  version: string;
  gpus: GpuInfo[];
  /** Whether /proc/modules lists nvidia_uvm (CUDA needs it); undefined when unreadable. */
  uvmLoaded: boolean | undefined;
}

export function driverRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env.GANTRY_DRIVER_ROOT || '/';
}

/** A host path (as the driver root's own programs see it) as it is reached from here. */
export function hostPath(root: string, path: string): string {
  return root === '/' ? path : join(root, path);
}

/** `Key: value` lines of a /proc/driver/nvidia file. */
export function parseInformation(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  return fields;
}

/** `NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar ...` -> 550.54.15. */
export function parseDriverVersion(text: string): string | undefined {
  return /^NVRM version:.*?\s(\d+\.\d+(?:\.\d+)?)\s/m.exec(text)?.[1];
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** The driver under `root`, or undefined when no NVIDIA kernel module is loaded there. */
export async function readDriver(root: string): Promise<DriverInfo | undefined> {
  const versionText = await readText(hostPath(root, '/proc/driver/nvidia/version'));
  if (versionText === undefined) return undefined;
  const version = parseDriverVersion(versionText);
  if (!version) return undefined;
  const gpusDir = hostPath(root, '/proc/driver/nvidia/gpus');
  const gpus: GpuInfo[] = [];
  for (const busId of (await readdir(gpusDir).catch(() => [] as string[])).sort()) {
    const info = parseInformation((await readText(join(gpusDir, busId, 'information'))) ?? '');
    const minor = parseInt(info.get('Device Minor') ?? '', 10);
    if (!Number.isInteger(minor)) continue;
    gpus.push({ index: gpus.length, minor, busId: info.get('Bus Location') ?? busId, uuid: info.get('GPU UUID') ?? '', model: info.get('Model') ?? 'NVIDIA GPU' });
  }
  const modules = await readText(hostPath(root, '/proc/modules'));
  return { root, version, gpus, uvmLoaded: modules === undefined ? undefined : /^nvidia_uvm\s/m.test(modules) };
}

/** Whether the caller may open a device node for reading and writing (group-restricted nodes are not offered). */
export async function canOpen(path: string): Promise<boolean> {
  try {
    await access(path, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
