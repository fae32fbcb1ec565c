import { GantryError } from '../errors.js';
import { parseCapabilities } from '../gpu/capabilities.js';
import { parseVisibleDevices, selectGpus } from '../gpu/devices.js';
import { driverRoot, hostPath, readDriver } from '../gpu/driver.js';
import { cudaVersion, hostLimits } from '../gpu/inject.js';
import { findLdconfig, nativeArch, readLdCache } from '../gpu/ldcache.js';
import { selectDriverFiles } from '../gpu/select.js';

/**
 * `gantry gpu [--gpus SPEC] [--caps LIST] [--json]`: the driver, its GPUs (and which this caller
 * may use), and what a sandbox asking for SPEC (default: NVIDIA_VISIBLE_DEVICES, else all) with
 * LIST (default: NVIDIA_DRIVER_CAPABILITIES, else utility) would receive.
 */
const USAGE = 'gantry gpu [--gpus SPEC] [--caps LIST] [--json]';

export async function gpuCommand(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let json = false;
  let visible = env.NVIDIA_VISIBLE_DEVICES || 'all';
  let capsText = env.NVIDIA_DRIVER_CAPABILITIES || 'utility';
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = (): string => {
      const v = args[++i];
      if (v === undefined) throw new GantryError('USAGE', `${a} needs a value`, `usage: ${USAGE}`);
      return v;
    };
    if (a === '--json') json = true;
    else if (a === '--gpus') visible = value();
    else if (a === '--caps') capsText = value();
    else if (a === '-h' || a === '--help') {
      process.stdout.write(`usage: ${USAGE}\n`);
      return 0;
    } else throw new GantryError('USAGE', `unexpected argument "${a}"`, `usage: ${USAGE}`);
  }
  const caps = parseCapabilities(capsText);
  const req = parseVisibleDevices(visible);
  const root = driverRoot(env);
  const driver = await readDriver(root);
  if (!driver) throw new GantryError('NOT_FOUND', `no NVIDIA driver is loaded on this host (${hostPath(root, '/proc/driver/nvidia/version')} is missing)`, 'install the NVIDIA driver and load its kernel module (nvidia-smi should work on the host)');
  const ldconfig = await findLdconfig();
  const cache = await readLdCache(root, ldconfig);
  const cuda = await cudaVersion(driver, cache, env);
  const limits = await hostLimits(driver, env);
  const gpus = driver.gpus.map((g) => ({ ...g, unavailable: limits.find((l) => !l.allowed.has(g.index))?.reason }));
  const chosen = selectGpus(req, driver.gpus, limits, `--gpus ${visible}`);
  const selection = req.kind === 'void' ? undefined : await selectDriverFiles({ driver, cache, capabilities: caps, gpus: chosen, nativeArch: nativeArch() });

  if (json) {
    const sandbox = selection && { gpus: chosen.map((g) => g.index), devices: selection.devices, libraries: selection.libraries, binaries: selection.binaries, files: selection.files, dirs: selection.dirs };
    process.stdout.write(`${JSON.stringify({ driverRoot: root, driver: { version: driver.version, cuda: cuda ?? null }, uvmLoaded: driver.uvmLoaded ?? null, gpus, request: { visible, capabilities: [...caps].sort() }, sandbox: sandbox ?? null, warnings: selection?.warnings ?? [] }, null, 2)}\n`);
    return 0;
  }
  const out: string[] = [];
  out.push(`driver      ${driver.version}${cuda ? ` (CUDA ${cuda})` : ''}${root !== '/' ? `  [GANTRY_DRIVER_ROOT=${root}]` : ''}`);
  out.push(`nvidia_uvm  ${driver.uvmLoaded === undefined ? 'unknown' : driver.uvmLoaded ? 'loaded' : 'not loaded (CUDA needs it)'}`);
  const rows = [['INDEX', 'MINOR', 'BUS', 'UUID', 'MODEL', 'AVAILABLE'], ...gpus.map((g) => [String(g.index), String(g.minor), g.busId, g.uuid, g.model, g.unavailable ? `no: ${g.unavailable}` : 'yes'])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  out.push('', ...rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()));
  out.push('', `a sandbox with NVIDIA_VISIBLE_DEVICES=${visible} NVIDIA_DRIVER_CAPABILITIES=${[...caps].sort().join(',')} gets:`);
  if (!selection) out.push('  nothing (void: no GPU support)');
  else {
    const list = (label: string, items: string[]): void => void out.push(`  ${label.padEnd(10)}  ${items.length ? items.join('\n              ') : '-'}`);
    list('gpus', chosen.map((g) => `${g.index} (${g.uuid})`));
    list('devices', selection.devices);
    list('libraries', selection.libraries.map((l) => `${l.path}${l.links.length ? ` (${l.links.join(', ')})` : ''}`));
    list('binaries', selection.binaries);
    list('files', [...selection.files, ...selection.dirs]);
    for (const w of selection.warnings) out.push(`warning: ${w}`);
  }
  process.stdout.write(`${out.join('\n')}\n`);
  return 0;
}
