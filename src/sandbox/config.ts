import { readdir, readFile } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { GantryError } from '../errors.js';
import type { Mount } from './plan.js';

/**
 * enroot-style configuration directories, system (`/etc/gantry`) then user (`$GANTRY_CONFIG`):
 *   environ.d/*.env     KEY=VALUE lines (`${VAR}` is the host's VAR at start)
 *   mounts.d/*.fstab    fstab lines: SRC DST TYPE OPTIONS (enroot's x-create=, nofail, ro, rbind)
 *   hooks.d/*.sh        scripts run before the command (they can add mounts and environment)
 * Files are read in name order, system first, so a user's file can override the system's.
 */
export interface SandboxConfig {
  environ: [string, string][];
  mounts: Mount[];
  /** hooks.d/*.sh, run before the command with GANTRY_PID, GANTRY_ROOTFS, GANTRY_ENVIRON, GANTRY_MOUNTS. */
  hooks: string[];
}

const KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

async function filesIn(dir: string, suffix: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw unreadable(dir, err);
  }
  return names.filter((n) => n.endsWith(suffix)).sort().map((n) => join(dir, n));
}

function unreadable(path: string, err: unknown): GantryError {
  return new GantryError('CONFIG', `cannot read the configuration ${path}: ${(err as Error).message}`, 'fix its permissions or remove it');
}

async function read(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw unreadable(path, err);
  }
}

/** `${VAR}` and `$VAR` become the launcher's `${host:VAR}`, resolved at each start. */
export function hostVariables(value: string): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_, a: string | undefined, b: string | undefined) => `\${host:${a ?? b}}`);
}

export function parseEnvFile(text: string, file: string): [string, string][] {
  const out: [string, string][] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const eq = line.indexOf('=');
    const key = eq < 0 ? line : line.slice(0, eq);
    if (!KEY.test(key)) throw new GantryError('CONFIG', `${file}:${i + 1}: "${key}" is not a valid variable name`, 'write KEY=VALUE, with KEY made of letters, digits and _');
    // KEY alone passes the host's value, as enroot does.
    let value = eq < 0 ? `\${${key}}` : line.slice(eq + 1);
    if (/^(["']).*\1$/.test(value)) value = value.slice(1, -1);
    out.push([key, hostVariables(value)]);
  });
  return out;
}

/** Options of a mount (fstab or --mount) into the launcher's bind flags. */
function bindFlags(options: string[], where: string): string[] {
  const flags: string[] = [];
  for (const o of options) {
    if (o === '' || o === 'rw' || o === 'bind' || o === 'defaults') continue;
    if (o === 'ro' || o === 'nofail' || o === 'rbind' || o === 'nosuid' || o === 'nodev' || o === 'noexec') flags.push(o);
    else if (/^x-create=(dir|file|auto)$/.test(o)) flags.push(o.replace('x-', ''));
    else throw new GantryError('USAGE', `${where}: unknown mount option "${o}"`, 'use ro, rw, nofail, rbind, nosuid, nodev, noexec, x-create=dir|file|auto');
  }
  return flags;
}

function checkDestination(dst: string, where: string): void {
  if (!isAbsolute(dst) || dst.split('/').includes('..')) {
    throw new GantryError('USAGE', `${where}: the destination "${dst}" must be an absolute path without ".."`, 'e.g. /data');
  }
}

export function parseFstab(text: string, file: string, env: NodeJS.ProcessEnv = process.env): Mount[] {
  const mounts: Mount[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const where = `${file}:${i + 1}`;
    const expand = (s: string): string => s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_, a, b) => env[(a ?? b) as string] ?? '');
    const [src, dst, type, opts] = line.split(/\s+/).map(expand);
    if (!src || !dst) throw new GantryError('USAGE', `${where}: expected "SOURCE DESTINATION [TYPE [OPTIONS]]"`, 'e.g. /data /data none x-create=dir,bind,nofail');
    checkDestination(dst, where);
    const options = (opts ?? '').split(',');
    if (type === 'tmpfs') {
      mounts.push({ kind: 'tmpfs', dst, options: options.filter((o) => o && !o.startsWith('x-') && o !== 'nofail').join(',') });
      return;
    }
    if (type && type !== 'none' && type !== 'bind' && type !== 'rbind') {
      throw new GantryError('USAGE', `${where}: mount type "${type}" is not supported`, 'use none (a bind mount) or tmpfs');
    }
    if (!isAbsolute(src)) throw new GantryError('USAGE', `${where}: the source "${src}" must be an absolute path`, 'e.g. /data');
    const flags = bindFlags(options, where);
    if (type === 'rbind' && !flags.includes('rbind')) flags.push('rbind');
    mounts.push({ kind: 'bind', src, dst, flags });
  });
  return mounts;
}

/** `--mount SRC[:DST[:OPTIONS]]`; a relative SRC is relative to the current directory; the mount point is created on demand. */
export function parseMountOption(spec: string, cwd: string = process.cwd()): Mount {
  const parts = spec.split(':');
  if (parts.length > 3 || !parts[0]) {
    throw new GantryError('USAGE', `invalid --mount "${spec}"`, 'write SRC[:DST[:OPTIONS]], e.g. -m /data:/data:ro');
  }
  const src = resolve(cwd, parts[0]);
  const dst = parts[1] || src;
  checkDestination(dst, `--mount ${spec}`);
  const flags = bindFlags((parts[2] ?? '').split(','), `--mount ${spec}`);
  // Like docker -v: the mount point is created when the image lacks it (x-create= overrides).
  if (!flags.some((f) => f.startsWith('create='))) flags.push('create=auto');
  return { kind: 'bind', src, dst, flags };
}

/** `--env KEY[=VALUE]`. */
export function checkEnvOption(item: string): string {
  const key = item.split('=')[0]!;
  if (!KEY.test(key)) throw new GantryError('USAGE', `invalid --env "${item}": "${key}" is not a variable name`, 'write KEY=VALUE, or KEY to pass the host\'s value');
  return item;
}

export async function loadSandboxConfig(dirs: string[], env: NodeJS.ProcessEnv = process.env): Promise<SandboxConfig> {
  const config: SandboxConfig = { environ: [], mounts: [], hooks: [] };
  for (const dir of dirs) {
    for (const file of await filesIn(join(dir, 'environ.d'), '.env')) config.environ.push(...parseEnvFile(await read(file), file));
    for (const file of await filesIn(join(dir, 'mounts.d'), '.fstab')) config.mounts.push(...parseFstab(await read(file), file, env));
    for (const file of await filesIn(join(dir, 'hooks.d'), '.sh')) {
      await read(file); // unreadable hooks fail here, with the file's name, not in the sandbox
      config.hooks.push(file);
    }
  }
  return config;
}
