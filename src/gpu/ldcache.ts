import { execFile } from 'node:child_process';
import { access, constants, readFile } from 'node:fs/promises';
import { GantryError } from '../errors.js';
import { hostPath } from './driver.js';

/**
 * The host's dynamic-linker cache, which is how the NVIDIA container toolkit finds the driver's
 * libraries (they live in /usr/lib64, /usr/lib/x86_64-linux-gnu, /usr/lib/nvidia/... depending
 * on the distribution). The cache format glibc has written since 2.32 (`glibc-ld.so.cache1.1`,
 * alone or after the old format) is read here directly; anything else goes through glibc's own
 * `ldconfig -p -C FILE`. glibc's ldconfig is statically linked, so the same binary also
 * refreshes a sandbox's cache from inside it (the launcher's `ldconfig` op).
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

const OLD_MAGIC = 'ld.so-1.7.0';
const NEW_MAGIC = 'glibc-ld.so.cache1.1';

/** The architecture bits of an entry's flags (glibc's FLAG_*_LIB64; none: 32-bit x86). */
function archOfFlags(flags: number): string | undefined {
  if ((flags & 0xff) !== 0x03) return undefined; // not a glibc (libc6) library
  switch (flags & 0xff00) {
    case 0x0000:
      return 'i386';
    case 0x0300:
      return 'x86-64';
    case 0x0800:
      return 'x32';
    case 0x0a00:
      return 'aarch64';
    default:
      return `flags-${(flags & 0xff00).toString(16)}`;
  }
}

/** Entries of a `glibc-ld.so.cache1.1` cache, or undefined for a format this does not read. */
export function parseLdCache(buf: Buffer): LdCacheEntry[] | undefined {
  let base = 0;
  if (buf.subarray(0, OLD_MAGIC.length).toString('latin1') === OLD_MAGIC) {
    // The old format first (16-byte header, 12-byte entries), the new one after it, 8-aligned.
    if (buf.length < 16) return undefined;
    base = (16 + buf.readUInt32LE(12) * 12 + 7) & ~7;
  }
  if (buf.length < base + 48 || buf.subarray(base, base + NEW_MAGIC.length).toString('latin1') !== NEW_MAGIC) return undefined;
  if (buf[base + 28] === 3) return undefined; // big-endian: not this machine's
  const nlibs = buf.readUInt32LE(base + 20);
  if (base + 48 + nlibs * 24 > buf.length) return undefined;
  const text = (offset: number): string | undefined => {
    const start = base + offset;
    const end = buf.indexOf(0, start);
    return start < buf.length && end > start ? buf.subarray(start, end).toString('utf8') : undefined;
  };
  const entries: LdCacheEntry[] = [];
  for (let i = 0; i < nlibs; i++) {
    const at = base + 48 + i * 24;
    const arch = archOfFlags(buf.readInt32LE(at));
    const soname = text(buf.readUInt32LE(at + 4));
    const path = text(buf.readUInt32LE(at + 8));
    if (arch && soname && path?.startsWith('/')) entries.push({ soname, arch, path });
  }
  return entries;
}

export async function readLdCache(root: string, ldconfig: string): Promise<LdCacheEntry[]> {
  const file = hostPath(root, '/etc/ld.so.cache');
  const parsed = parseLdCache(await readFile(file).catch(() => Buffer.alloc(0)));
  if (parsed) return parsed;
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
