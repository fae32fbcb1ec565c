import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { GantryError } from '../errors.js';
import { hostPath } from './driver.js';

/**
 * The host's dynamic-linker cache, which is how the NVIDIA container toolkit finds the driver's
 * libraries (they live in /usr/lib64, /usr/lib/x86_64-linux-gnu, /usr/lib/nvidia/... depending
 * on the distribution). Read with glibc's own ldconfig (`-p -C FILE`), which understands every
 * cache format; glibc's ldconfig is statically linked, so the same binary also refreshes a
 * sandbox's cache from inside it (the launcher's `ldconfig` op).
 */
export interface LdCacheEntry {
  /** The soname, e.g. libcuda.so.1. */
  soname: string;
  /** x86-64, aarch64 or i386 (32-bit x86), from the entry's flags. */
  arch: string;
  /** The path the cache records, as seen from the driver root. */
  path: string;
}

/** Ubuntu's /sbin/ldconfig is a shell wrapper around ldconfig.real: take the real one. */
const LDCONFIG_CANDIDATES = ['/sbin/ldconfig.real', '/usr/sbin/ldconfig.real', '/sbin/ldconfig', '/usr/sbin/ldconfig'];

export async function findLdconfig(): Promise<string> {
  for (const path of LDCONFIG_CANDIDATES) {
    try {
      await access(path, constants.X_OK);
      return path;
    } catch {
      // next
    }
  }
  throw new GantryError('DEPENDENCY', `glibc's ldconfig is not installed (looked for ${LDCONFIG_CANDIDATES.join(', ')})`, 'install the libc-bin package (Debian, Ubuntu) or glibc (RHEL, SUSE)');
}

/** `(libc6,x86-64)`, `(libc6,AArch64, hwcap: ...)`, `(libc6)` -> an architecture name. */
function archOf(flags: string): string {
  const parts = flags.split(',').map((p) => p.trim().toLowerCase());
  if (parts.includes('x86-64')) return 'x86-64';
  if (parts.includes('aarch64')) return 'aarch64';
  if (parts[0] === 'libc6' && parts.length === 1) return 'i386';
  return parts.filter((p) => p !== 'libc6' && !p.startsWith('hwcap') && !p.startsWith('os abi')).join(',') || 'i386';
}

/** Lines of `ldconfig -p`: `\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1`. */
export function parseLdconfigOutput(text: string): LdCacheEntry[] {
  const entries: LdCacheEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s+(\S+) \((.*)\) => (\/.*)$/.exec(line);
    if (m) entries.push({ soname: m[1]!, arch: archOf(m[2]!), path: m[3]! });
  }
  return entries;
}

export async function readLdCache(root: string, ldconfig: string): Promise<LdCacheEntry[]> {
  const file = hostPath(root, '/etc/ld.so.cache');
  const out = await new Promise<string>((resolve, reject) => {
    execFile(ldconfig, ['-p', '-C', file], { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new GantryError('DEPENDENCY', `cannot read the dynamic-linker cache ${file}: ${stderr.trim() || err.message}`, 'run ldconfig as root to rebuild it'));
      else resolve(stdout);
    });
  });
  return parseLdconfigOutput(out);
}

/** The machine's own architecture as ld caches name it. */
export function nativeArch(): string {
  return process.arch === 'x64' ? 'x86-64' : process.arch === 'arm64' ? 'aarch64' : process.arch;
}
