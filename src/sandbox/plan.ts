/**
 * The launch plan: everything the native launcher (native/src/exec.c) does, as data. A pure
 * function turns (image, sandbox, configuration, request, host facts) into a list of typed
 * operations executed strictly in order, bubblewrap style; `compilePlan` writes them in the
 * launcher's text format. The launcher decides nothing: every namespace, mount, variable and id
 * is here, so every rule of a sandbox is a unit test of this file.
 */
export type Op =
  | { op: 'check'; path: string; hint?: string }
  | { op: 'userns'; uid: number | 'self'; gid: number | 'self' }
  | { op: 'mountns' }
  | { op: 'pidns' }
  | { op: 'netns' }
  | { op: 'tmpfs'; hostDir: string; options: string }
  | { op: 'mkdir'; hostDir: string; mode: number }
  | { op: 'overlay'; target: string; upper: string; work: string; lowers: string[] }
  | { op: 'rootfs'; hostDir: string }
  | { op: 'bind'; src: string; dst: string; flags: string[] }
  | { op: 'proc'; dst: string }
  | { op: 'sys'; dst: string }
  | { op: 'dev'; dst: string }
  | { op: 'tmpfs-in'; dst: string; options: string }
  | { op: 'hook'; script: string }
  | { op: 'symlink'; target: string; path: string }
  | { op: 'ldconfig' | 'ldconfig-rw'; ldconfig: string; dirs: string[] }
  | { op: 'pivot' }
  | { op: 'remount-ro' }
  | { op: 'env'; key: string; value: string }
  | { op: 'env-pass'; key: string }
  | { op: 'cwd'; dir: string }
  | { op: 'nonewprivs' }
  | { op: 'fakeroot' }
  | { op: 'argv'; args: string[] }
  | { op: 'exec' };

export interface BindMount {
  src: string;
  dst: string;
  /** ro, rbind, nofail, create=dir|file|auto, nosuid, nodev, noexec */
  flags: string[];
}

export interface TmpfsMount {
  dst: string;
  options: string;
}

/** GPU injection (src/gpu/): the driver's files bound in, their soname links, the loader's cache refreshed. */
export interface PlanGpu {
  /** A layer laid over the image holding the mount points and links (overlay roots only). */
  skeleton?: string;
  binds: BindMount[];
  links: { target: string; path: string }[];
  /** glibc's static ldconfig on the host, and the directories (inside) it must add to the cache. */
  ldconfig: string;
  ldconfigDirs: string[];
  /** Host files checked before anything else: a driver upgrade then reads as a stale plan. */
  checks: string[];
  /** NVIDIA_VISIBLE_DEVICES and NVIDIA_DRIVER_CAPABILITIES as the sandbox got them. */
  env: [string, string][];
}

export type Mount = ({ kind: 'bind' } & BindMount) | ({ kind: 'tmpfs' } & TmpfsMount);

export interface PlanInput {
  /** Layer roots, bottom-most first (the image's order). */
  layers: string[];
  /**
   * Where the writable layer lives: a named sandbox's directories, a throwaway tmpfs, or (where the
   * kernel cannot mount overlayfs in a user namespace) a flattened copy of the image.
   */
  writable:
    | { kind: 'named'; upper: string; work: string; root: string }
    | { kind: 'ephemeral'; scratch: string }
    | { kind: 'flat'; root: string };
  /**
   * The caller on the host, or 'launcher' for a plan shared by every user (a system-wide kernel):
   * then ids, HOME and USER are whoever runs the launcher.
   */
  user: { uid: number; gid: number; name: string; home: string } | 'launcher';
  /** Host variables passed through when set (a kernel's HOME, JPY_PARENT_PID, ...). */
  passEnv?: string[];
  /** Work in the launcher's current directory (a kernel's notebook folder), bound read-write. */
  launchCwd?: boolean;
  /** The host's /etc/hosts, /etc/resolv.conf, /etc/hostname to bind (those the image does not make symlinks). */
  hostFiles: string[];
  /** Files bound over /etc/passwd and /etc/group so that whoami, id, ssh and pip work. */
  identityFiles?: { passwd: string; group: string };
  /** The image config's Env, WorkingDir, Entrypoint, Cmd. */
  image: { Env?: string[]; WorkingDir?: string; Entrypoint?: string[]; Cmd?: string[] };
  root: boolean;
  rw: boolean;
  pid: boolean;
  net: boolean;
  /** environ.d entries, in order (later wins). VALUE may use ${host:NAME}. */
  environ: [string, string][];
  /** --env entries: `KEY=VALUE`, or `KEY` to pass the host's value. */
  env: string[];
  /** mounts.d entries, then --mount entries. */
  mounts: Mount[];
  /** hooks.d scripts, run in order once the root is mounted, before the command (enroot's contract). */
  hooks: string[];
  /** Bind the user's home (GANTRY_MOUNT_HOME). */
  mountHome: boolean;
  /** The host's working directory: used inside when it is mounted. */
  hostCwd: string;
  command?: string[];
  gpu?: PlanGpu;
}

/** A kernelspec's plan names the driver's files of the day it was installed. */
const DRIVER_CHANGED = 'the NVIDIA driver changed since this plan was made: start the sandbox again, or install the kernel again (gantry kernel install ... --gpus ...)';

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** `KEY=VALUE` lines into ordered pairs (image Env style). */
function envPairs(lines: string[] | undefined): [string, string][] {
  return (lines ?? []).map((line) => {
    const eq = line.indexOf('=');
    return eq < 0 ? [line, ''] : [line.slice(0, eq), line.slice(eq + 1)];
  });
}

/** Whether `path` is `dir` or beneath it. */
function within(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

export function buildPlan(input: PlanInput): Op[] {
  const ops: Op[] = [];
  for (const layer of input.writable.kind === 'flat' ? [input.writable.root] : input.layers) ops.push({ op: 'check', path: layer });
  for (const path of [...(input.gpu?.skeleton ? [input.gpu.skeleton] : []), ...(input.gpu?.checks ?? [])]) ops.push({ op: 'check', path, hint: DRIVER_CHANGED });

  const shared = input.user === 'launcher';
  const inside = input.root
    ? { uid: 0, gid: 0, name: 'root', home: '/root' }
    : input.user === 'launcher'
      ? { uid: 'self' as const, gid: 'self' as const, name: '${host:USER}', home: '${host:HOME}' }
      : { uid: input.user.uid, gid: input.user.gid, name: input.user.name, home: input.user.home };
  ops.push({ op: 'userns', uid: inside.uid, gid: inside.gid }, { op: 'mountns' });
  // The network namespace first: after pidns, the rest runs in the forked pid 1.
  if (input.net) ops.push({ op: 'netns' });
  if (input.pid) ops.push({ op: 'pidns' });

  // The root: the image's layers under a writable layer (the sandbox's, or a tmpfs).
  const lowers = [...(input.gpu?.skeleton ? [input.gpu.skeleton] : []), ...[...input.layers].reverse()];
  let rootDir: string;
  if (input.writable.kind === 'named') {
    rootDir = input.writable.root;
    ops.push({ op: 'overlay', target: rootDir, upper: input.writable.upper, work: input.writable.work, lowers });
  } else if (input.writable.kind === 'flat') {
    rootDir = input.writable.root;
  } else {
    const s = input.writable.scratch;
    rootDir = `${s}/root`;
    ops.push(
      { op: 'tmpfs', hostDir: s, options: 'mode=0755' },
      { op: 'mkdir', hostDir: `${s}/upper`, mode: 0o755 },
      { op: 'mkdir', hostDir: `${s}/work`, mode: 0o755 },
      { op: 'mkdir', hostDir: rootDir, mode: 0o755 },
      { op: 'overlay', target: rootDir, upper: `${s}/upper`, work: `${s}/work`, lowers },
    );
  }
  ops.push({ op: 'rootfs', hostDir: rootDir });
  // A plain directory becomes a mount (which pivot_root needs) by binding it onto itself.
  if (input.writable.kind === 'flat') ops.push({ op: 'bind', src: rootDir, dst: '/', flags: [] });

  // The system mounts every sandbox has.
  ops.push({ op: 'proc', dst: '/proc' }, { op: 'sys', dst: '/sys' }, { op: 'dev', dst: '/dev' }, { op: 'tmpfs-in', dst: '/tmp', options: 'mode=1777' });
  for (const f of input.hostFiles) ops.push({ op: 'bind', src: f, dst: f, flags: ['ro', 'nofail', 'create=file'] });
  if (input.identityFiles) {
    ops.push(
      { op: 'bind', src: input.identityFiles.passwd, dst: '/etc/passwd', flags: ['ro', 'create=file'] },
      { op: 'bind', src: input.identityFiles.group, dst: '/etc/group', flags: ['ro', 'create=file'] },
    );
  }

  // The user's mounts: home (when configured), mounts.d, --mount.
  const home = input.user === 'launcher' ? '${host:HOME}' : input.user.home;
  const mounts: Mount[] = [
    ...(input.mountHome ? [{ kind: 'bind' as const, src: home, dst: home, flags: ['rbind', 'create=dir'] }] : []),
    ...input.mounts,
    ...(input.launchCwd ? [{ kind: 'bind' as const, src: '${cwd}', dst: '${cwd}', flags: ['rbind', 'create=dir'] }] : []),
  ];
  for (const m of mounts) {
    if (m.kind === 'bind') ops.push({ op: 'bind', src: m.src, dst: m.dst, flags: m.flags });
    else ops.push({ op: 'tmpfs-in', dst: m.dst, options: m.options });
  }

  // The GPU last (enroot's nvidia hook is its 98th): the loader's cache then sees every mount.
  if (input.gpu) {
    for (const b of input.gpu.binds) ops.push({ op: 'bind', src: b.src, dst: b.dst, flags: b.flags });
    for (const l of input.gpu.links) ops.push({ op: 'symlink', target: l.target, path: l.path });
    // A writable root gets the new cache in its own /etc (apt's ldconfig trigger must replace it).
    if (input.gpu.ldconfigDirs.length) ops.push({ op: input.rw ? 'ldconfig-rw' : 'ldconfig', ldconfig: input.gpu.ldconfig, dirs: input.gpu.ldconfigDirs });
  }

  for (const script of input.hooks) ops.push({ op: 'hook', script });
  ops.push({ op: 'pivot' });
  if (!input.rw) ops.push({ op: 'remount-ro' });

  // Environment: the image's Env, then environ.d, then --env; HOME, USER, PATH, TERM sensible.
  const env = new Map<string, string>(envPairs(input.image.Env));
  if (!env.has('PATH')) env.set('PATH', DEFAULT_PATH);
  // TERM is the terminal's of whoever starts the sandbox (a compiled plan outlives its creator's).
  const pass = new Set(['TERM', ...(input.passEnv ?? [])]);
  if (shared && !input.root) for (const k of ['HOME', 'USER', 'LOGNAME']) pass.add(k);
  else {
    env.set('HOME', inside.home);
    env.set('USER', inside.name);
    env.set('LOGNAME', inside.name);
  }
  for (const [k, v] of input.environ) env.set(k, v);
  for (const item of input.env) {
    const eq = item.indexOf('=');
    if (eq < 0) {
      env.delete(item);
      pass.add(item);
    } else {
      env.set(item.slice(0, eq), item.slice(eq + 1));
      pass.delete(item.slice(0, eq));
    }
  }
  for (const [key, value] of input.gpu?.env ?? []) {
    env.set(key, value);
    pass.delete(key);
  }
  for (const [key, value] of env) if (!pass.has(key)) ops.push({ op: 'env', key, value });
  for (const key of pass) ops.push({ op: 'env-pass', key });

  // Working directory: the host's when it is mounted inside, else the image's, else /.
  const mounted = mounts.some((m) => m.kind === 'bind' && m.src === m.dst && within(input.hostCwd, m.src));
  ops.push({ op: 'cwd', dir: input.launchCwd ? '${cwd}' : mounted ? input.hostCwd : input.image.WorkingDir || '/' });

  ops.push({ op: 'nonewprivs' });
  if (input.root) ops.push({ op: 'fakeroot' });
  const argv = input.command?.length ? input.command : [...(input.image.Entrypoint ?? []), ...(input.image.Cmd ?? [])];
  ops.push({ op: 'argv', args: argv.length ? argv : ['/bin/sh'] }, { op: 'exec' });
  return ops;
}

/** Percent-encodes one field of the plan format; the empty string is written `""`. */
export function encodeField(value: string): string {
  if (value === '') return '""';
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9._/:=+,@~^-]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function fields(op: Op): string[] {
  switch (op.op) {
    case 'check':
      return op.hint ? [op.path, op.hint] : [op.path];
    case 'userns':
      return [String(op.uid), String(op.gid)];
    case 'tmpfs':
      return [op.hostDir, op.options];
    case 'mkdir':
      return [op.hostDir, op.mode.toString(8).padStart(4, '0')];
    case 'overlay':
      return [op.target, op.upper, op.work, ...op.lowers];
    case 'rootfs':
      return [op.hostDir];
    case 'bind':
      return [op.src, op.dst, op.flags.join(',')];
    case 'proc':
    case 'sys':
    case 'dev':
      return [op.dst];
    case 'tmpfs-in':
      return [op.dst, op.options];
    case 'env':
      return [op.key, op.value];
    case 'env-pass':
      return [op.key];
    case 'cwd':
      return [op.dir];
    case 'hook':
      return [op.script];
    case 'symlink':
      return [op.target, op.path];
    case 'ldconfig':
    case 'ldconfig-rw':
      return [op.ldconfig, ...op.dirs];
    case 'argv':
      return op.args;
    default:
      return [];
  }
}

/** The launcher's text format: `gantry-plan 1`, then one op per line. */
export function compilePlan(ops: Op[]): string {
  return ['gantry-plan 1', ...ops.map((op) => [op.op, ...fields(op).map(encodeField)].join(' '))].join('\n') + '\n';
}
