import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, lstat, mkdir, mkdtemp, readdir, readFile, readlink, chmod, writeFile, chown } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { repoRoot, run } from '../fixtures/proc.js';
import { testUser, userTempDir, type TestUser } from '../fixtures/users.js';

/**
 * What the integration tests share: running the real `gantry` CLI as root or as the unprivileged
 * test user, a private store/config per test, and a tree comparison against an independent tool.
 */
export interface Identity {
  label: 'root' | 'unprivileged';
  user: TestUser | null;
}

export async function identities(): Promise<Identity[]> {
  return [
    { label: 'root', user: null },
    { label: 'unprivileged', user: await testUser() },
  ];
}

let userInstall: Promise<string> | undefined;

/**
 * Where the unprivileged user runs Gantry from: the checkout itself when that user can read it,
 * otherwise a world-readable copy of what runs (a CI checkout under /root is not readable).
 */
async function installFor(user: TestUser | null): Promise<string> {
  if (!user) return repoRoot;
  userInstall ??= (async () => {
    const probe = await run('runuser', ['-u', user.name, '--', 'test', '-r', join(repoRoot, 'dist', 'src', 'cli', 'main.js')], { allowFail: true });
    if (probe.code === 0) return repoRoot;
    const copy = await mkdtemp(join(tmpdir(), 'gantry-install-'));
    for (const part of ['package.json', 'bin', 'dist', 'node_modules', 'kernelspecs', join('native', 'build', 'Release')]) {
      await cp(join(repoRoot, part), join(copy, part), { recursive: true, verbatimSymlinks: true });
    }
    await run('chmod', ['-R', 'a+rX', copy]);
    await chmod(copy, 0o755);
    return copy;
  })();
  return userInstall;
}

export interface Env {
  identity: Identity;
  /** A private directory owned by the identity, holding store/, config/ and home/. */
  dir: string;
  store: string;
  config: string;
  home: string;
  cleanup(): Promise<void>;
}

export async function makeEnv(identity: Identity, prefix = 'gantry-it'): Promise<Env> {
  const t = await userTempDir(identity.user, `${prefix}-${identity.label}`);
  const env: Env = {
    identity,
    dir: t.path,
    store: join(t.path, 'store'),
    config: join(t.path, 'config'),
    home: join(t.path, 'home'),
    cleanup: t.cleanup,
  };
  for (const d of [env.config, env.home]) {
    await mkdir(d, { recursive: true });
    if (identity.user) await chown(d, identity.user.uid, identity.user.gid);
  }
  return env;
}

/** Writes $GANTRY_CONFIG/credentials with the given mode, owned by the identity. */
export async function writeCredentials(env: Env, text: string, mode = 0o600): Promise<void> {
  const file = join(env.config, 'credentials');
  await writeFile(file, text);
  await chmod(file, mode);
  if (env.identity.user) await chown(file, env.identity.user.uid, env.identity.user.gid);
}

export interface GantryResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface GantryRun {
  extraEnv?: Record<string, string>;
  /** Called with the child's pid as soon as it starts (for kill -9 tests). */
  onSpawn?: (pid: number, stderr: NodeJS.ReadableStream) => void;
  /** Written to the command's stdin (otherwise stdin is /dev/null). */
  input?: string;
  /** The working directory (default: the identity's private directory). */
  cwd?: string;
}

/** Runs `gantry ARGS` as the identity with its private store and config. */
export async function gantry(env: Env, args: string[], opts: GantryRun = {}): Promise<GantryResult> {
  const root = await installFor(env.identity.user);
  const vars: Record<string, string> = {
    // node must be on PATH for the wrapper script.
    PATH: `${dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    HOME: env.home,
    GANTRY_STORE: env.store,
    GANTRY_CONFIG: env.config,
    GANTRY_DATA: join(env.dir, 'data'),
    ...opts.extraEnv,
  };
  // The installed entry point: a shell wrapper that runs Node and execs the native launcher.
  const command = [join(root, 'bin', 'gantry'), ...args];
  const [file, argv] = env.identity.user
    ? ['runuser', ['-u', env.identity.user.name, '--', 'env', '-i', ...Object.entries(vars).map(([k, v]) => `${k}=${v}`), ...command]]
    : [command[0]!, command.slice(1)];
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { env: env.identity.user ? { PATH: vars.PATH } : vars, cwd: opts.cwd ?? env.dir, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (c: Buffer) => out.push(c));
    child.stderr!.on('data', (c: Buffer) => err.push(c));
    if (child.pid !== undefined) opts.onSpawn?.(child.pid, child.stderr!);
    child.on('error', reject);
    child.on('close', (code, signal) =>
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }),
    );
  });
}

/** Asserts success and returns stdout, with the whole output in the failure message. */
export function ok(r: GantryResult, what = 'gantry'): string {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

export interface TreeEntry {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  target?: string;
  sha256?: string;
  size?: number;
  mtime?: number;
}

/** A tree as a map from relative path to what a user would see of each entry. */
export async function snapshot(root: string): Promise<Map<string, TreeEntry>> {
  const out = new Map<string, TreeEntry>();
  const walk = async (rel: string): Promise<void> => {
    const abs = rel ? join(root, rel) : root;
    for (const name of (await readdir(abs)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(root, r);
      const st = await lstat(p);
      const mode = st.mode & 0o7777;
      if (st.isSymbolicLink()) out.set(r, { type: 'symlink', mode: 0, target: await readlink(p) });
      else if (st.isDirectory()) {
        out.set(r, { type: 'dir', mode });
        await walk(r);
      } else if (st.isFile()) {
        const data = await readFile(p);
        out.set(r, { type: 'file', mode, size: st.size, sha256: createHash('sha256').update(data).digest('hex'), mtime: Math.floor(st.mtimeMs / 1000) });
      } else out.set(r, { type: 'other', mode });
    }
  };
  await walk('');
  return out;
}

/** Differences between two trees (at most `limit` lines), ignoring modes masked out by `modeMask`. */
export function diffTrees(a: Map<string, TreeEntry>, b: Map<string, TreeEntry>, modeMask = 0o7777, limit = 20): string[] {
  const diffs: string[] = [];
  for (const [path, ea] of a) {
    const eb = b.get(path);
    if (!eb) diffs.push(`only in first: ${path}`);
    else {
      const norm = (e: TreeEntry): string => JSON.stringify({ ...e, mode: e.mode & modeMask });
      if (norm(ea) !== norm(eb)) diffs.push(`differs: ${path}: ${norm(ea)} vs ${norm(eb)}`);
    }
    if (diffs.length >= limit) return diffs;
  }
  for (const path of b.keys()) {
    if (!a.has(path)) diffs.push(`only in second: ${path}`);
    if (diffs.length >= limit) break;
  }
  return diffs;
}

/** `umoci unpack --rootless` of an OCI layout, as root, into a fresh dir: the independent reference. */
export async function umociRootfs(layoutDir: string, ref: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'gantry-umoci-'));
  const bundle = join(dir, 'bundle');
  await run('/usr/bin/umoci', ['unpack', '--rootless', '--image', `${layoutDir}:${ref}`, bundle]);
  return join(bundle, 'rootfs');
}

export { userTempDir };
