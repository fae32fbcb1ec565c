import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * Where Jupyter looks for kernelspecs, with the meaning `jupyter kernelspec install` gives the
 * location flags: --user (the user's data dir), --sys-prefix (Python's prefix), --prefix DIR,
 * --system (/usr/local/share/jupyter/kernels). Gantry's default is --user, which needs no root.
 */
export type KernelLocation = { kind: 'user' } | { kind: 'sys-prefix' } | { kind: 'prefix'; dir: string } | { kind: 'system' };

export function userKernelsDir(env: NodeJS.ProcessEnv = process.env): string {
  const dataHome = env.XDG_DATA_HOME || join(env.HOME || homedir(), '.local', 'share');
  return join(env.JUPYTER_DATA_DIR || join(dataHome, 'jupyter'), 'kernels');
}

/** Debian's python3 has sys.prefix /usr. */
export const SYS_PREFIX = '/usr';
export const SYSTEM_KERNELS = '/usr/local/share/jupyter/kernels';

export function kernelsDir(location: KernelLocation, env: NodeJS.ProcessEnv = process.env): string {
  switch (location.kind) {
    case 'user':
      return userKernelsDir(env);
    case 'sys-prefix':
      return join(SYS_PREFIX, 'share', 'jupyter', 'kernels');
    case 'prefix':
      return join(location.dir, 'share', 'jupyter', 'kernels');
    case 'system':
      return SYSTEM_KERNELS;
  }
}

/** Every directory Jupyter searches, in its order (JUPYTER_PATH first). */
export function searchedKernelDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const dirs = [
    ...(env.JUPYTER_PATH ?? '').split(':').filter(Boolean).map((d) => join(d, 'kernels')),
    userKernelsDir(env),
    join(SYS_PREFIX, 'share', 'jupyter', 'kernels'),
    SYSTEM_KERNELS,
    '/usr/share/jupyter/kernels',
  ];
  return [...new Set(dirs)];
}
