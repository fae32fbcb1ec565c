import { GantryError } from '../errors.js';
import type { GpuInfo } from './driver.js';

/**
 * NVIDIA_VISIBLE_DEVICES, as the NVIDIA container toolkit reads it:
 *   unset, empty or `void`  no GPU support at all (the sandbox is left as the image made it)
 *   `none`                  the driver (libraries, binaries, the control device) but no GPU
 *   `all`                   every GPU the caller may use
 *   `0,1` / `GPU-<uuid>`    those GPUs, by index (PCI bus order, as nvidia-smi numbers them) or UUID
 */
export type DeviceRequest = { kind: 'void' } | { kind: 'none' } | { kind: 'all' } | { kind: 'list'; ids: string[] };

export function parseVisibleDevices(value: string | undefined): DeviceRequest {
  const text = (value ?? '').trim();
  if (!text || text === 'void') return { kind: 'void' };
  if (text === 'none') return { kind: 'none' };
  if (text === 'all') return { kind: 'all' };
  const ids = text.split(',').map((s) => s.trim()).filter(Boolean);
  for (const id of ids) {
    if (/^MIG-/i.test(id) || /^\d+:\d+$/.test(id)) throw new GantryError('USAGE', `NVIDIA_VISIBLE_DEVICES=${text}: MIG devices (${id}) are not supported yet`, 'give whole GPUs, by index or GPU-UUID (see gantry gpu)');
    if (!/^\d+$/.test(id) && !/^GPU-[0-9a-f-]+$/i.test(id)) throw new GantryError('USAGE', `NVIDIA_VISIBLE_DEVICES=${text}: "${id}" is neither a GPU index nor a GPU UUID`, 'use all, none, void, or comma-separated indexes (0,1) or UUIDs (GPU-...): see gantry gpu');
  }
  return ids.length ? { kind: 'list', ids } : { kind: 'void' };
}

/** The GPU an id names: an index, a full UUID or an unambiguous UUID prefix. */
function findGpu(id: string, gpus: GpuInfo[]): GpuInfo | undefined {
  if (/^\d+$/.test(id)) return gpus.find((g) => g.index === Number(id));
  const matches = gpus.filter((g) => g.uuid.toLowerCase().startsWith(id.toLowerCase()));
  return matches.length === 1 ? matches[0] : undefined;
}

/**
 * What the host already allows this caller: a scheduler's CUDA_VISIBLE_DEVICES (indexes or UUIDs;
 * empty or NoDevFiles means none), and device nodes the caller may not open (a site that limits
 * /dev/nvidia* to a group). A device cgroup keeps applying inside the sandbox in any case.
 */
export interface HostLimit {
  allowed: Set<number>;
  /** Why the others are left out, for messages. */
  reason: string;
}

export function cudaVisibleLimit(value: string | undefined, gpus: GpuInfo[]): HostLimit | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  const allowed = new Set<number>();
  if (text && text !== 'NoDevFiles') {
    for (const id of text.split(',').map((s) => s.trim())) {
      // CUDA stops at the first id it cannot use; so does this.
      const gpu = /^-?\d+$/.test(id) ? gpus.find((g) => g.index === Number(id)) : findGpu(id.startsWith('GPU-') ? id : `GPU-${id}`, gpus);
      if (!gpu) break;
      allowed.add(gpu.index);
    }
  }
  return { allowed, reason: `CUDA_VISIBLE_DEVICES=${value}` };
}

export function selectGpus(req: DeviceRequest, gpus: GpuInfo[], limits: HostLimit[], describe: string): GpuInfo[] {
  const permitted = (g: GpuInfo): HostLimit | undefined => limits.find((l) => !l.allowed.has(g.index));
  if (req.kind === 'void' || req.kind === 'none') return [];
  if (req.kind === 'all') return gpus.filter((g) => !permitted(g));
  const chosen: GpuInfo[] = [];
  const list = gpus.map((g) => `${g.index} (${g.uuid})`).join(', ') || 'none';
  for (const id of req.ids) {
    const gpu = findGpu(id, gpus);
    if (!gpu) throw new GantryError('USAGE', `${describe}: there is no GPU ${id} on this host (its GPUs: ${list})`, 'see `gantry gpu` for the GPUs, their indexes and UUIDs');
    const limit = permitted(gpu);
    if (limit) throw new GantryError('USAGE', `${describe}: GPU ${id} is not available to you here (${limit.reason})`, 'ask for a GPU your job or group was given (see `gantry gpu`)');
    if (!chosen.includes(gpu)) chosen.push(gpu);
  }
  return chosen;
}
