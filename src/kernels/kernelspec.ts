import type { ImageRecord } from '../store/store.js';

/**
 * kernel.json for an image: Jupyter starts the native launcher directly (no Node on the kernel's
 * path) with the kernel's compiled plan; the launcher binds the connection file's directory and
 * execs ipykernel, so the kernel is the process Jupyter started (interrupt, shutdown and liveness
 * work unchanged). Everything here is readable by every Jupyter user: no secrets.
 */
export interface KernelSpec {
  argv: string[];
  display_name: string;
  language: 'python';
  interrupt_mode: 'signal';
  env: Record<string, string>;
  metadata: {
    gantry: { image: string; reference: string; digest: string; gpus?: string };
    debugger?: boolean;
  };
}

const KERNEL_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export function defaultKernelName(image: ImageRecord): string {
  return `gantry-${image.name}`.toLowerCase().replace(/[^a-z0-9._-]/g, '-').slice(0, 64);
}

export function validKernelName(name: string): boolean {
  return KERNEL_NAME.test(name);
}

/**
 * `Python 3 (pytorch 24.05-py3)`: the repository's last component and the tag; a GPU kernel says
 * which GPUs it gets: `(pytorch 24.05-py3, all GPUs)`, `(..., GPU 1)`, `(..., GPUs 0,1)`.
 */
export function defaultDisplayName(image: ImageRecord, gpus?: string): string {
  const repo = image.repository.split('/').pop() ?? image.name;
  const tag = image.tag ?? image.digest.slice(7, 19);
  const spec = (gpus ?? '').trim();
  const list = spec.split(',').filter(Boolean);
  const gpuText = !spec || spec === 'void' ? '' : spec === 'none' ? ', no GPU' : spec === 'all' ? ', all GPUs' : list.length === 1 ? `, GPU ${list[0]}` : `, GPUs ${list.join(',')}`;
  return `Python 3 (${repo} ${tag}${gpuText})`;
}

export function kernelSpec(opts: {
  launcher: string;
  plan: string;
  python: string;
  image: ImageRecord;
  displayName: string;
  debugger: boolean;
  gpus?: string;
}): KernelSpec {
  return {
    argv: [opts.launcher, '--bind-parent', '{connection_file}', opts.plan, '--', opts.python, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
    display_name: opts.displayName,
    language: 'python',
    interrupt_mode: 'signal',
    env: {},
    metadata: {
      gantry: { image: opts.image.name, reference: opts.image.reference, digest: opts.image.digest, ...(opts.gpus ? { gpus: opts.gpus } : {}) },
      ...(opts.debugger ? { debugger: true } : {}),
    },
  };
}

/** Host variables a kernel needs (Jupyter's own, the user's locale and terminal); secrets stay out. */
export const KERNEL_PASS_ENV = ['LANG', 'LC_ALL', 'TERM', 'JPY_PARENT_PID', 'JPY_SESSION_NAME', 'JUPYTER_RUNTIME_DIR', 'JUPYTER_DATA_DIR', 'JUPYTER_CONFIG_DIR', 'JUPYTER_PATH', 'JUPYTERHUB_USER', 'JUPYTERHUB_SERVICE_PREFIX', 'CUDA_VISIBLE_DEVICES'];
