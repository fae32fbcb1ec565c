import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chown, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KernelManager, KernelSpecManager, SessionManager } from '@jupyterlab/services';
import { executeCode, startJupyterServer, type JupyterServer } from '../fixtures/jupyter.js';
import { makeFakeDriver, type FakeDriver } from '../fixtures/fake-driver.js';
import { seedStorage, startRegistry, type Registry, type SeededStorage } from '../fixtures/registry.js';
import { userTempDir, type UserTempDir } from '../fixtures/users.js';
import { gantry, identities, makeEnv, ok, type Env } from '../integration/helpers.js';

/**
 * Container kernels under a real jupyter-server (Debian's), driven from Node with
 * @jupyterlab/services as JupyterLab drives it, as root and as an unprivileged user.
 */
let seed: SeededStorage;
let registry: Registry;
let fakeDir: UserTempDir;
let fake: FakeDriver;
before(async () => {
  seed = await seedStorage();
  registry = await startRegistry({ auth: 'none', storageDir: seed.dir });
  fakeDir = await userTempDir(null, 'gantry-kernel-driver');
  fake = await makeFakeDriver(join(fakeDir.path, 'root'));
});
after(async () => {
  await registry?.stop();
  await fakeDir?.cleanup();
});

const KERNEL = 'gantry-deb';

for (const identity of await identities()) {
  describe(`kernels as ${identity.label}`, () => {
    let env: Env;
    let server: JupyterServer;
    let notebooks: string;
    const uid = identity.user?.uid ?? 0;
    before(async () => {
      env = await makeEnv(identity, 'gantry-kernels');
      notebooks = join(env.home, 'notebooks');
      for (const d of [notebooks, join(notebooks, 'sub')]) {
        await mkdir(d, { recursive: true });
        if (identity.user) await chown(d, identity.user.uid, identity.user.gid);
      }
      ok(await gantry(env, ['import', `${registry.host}/${seed.images['debian-ipykernel']}`, '--name', 'deb']));
      ok(await gantry(env, ['kernel', 'install', 'deb', '--prefix', join(env.dir, 'jupyter-prefix')]));
      server = await startJupyterServer({
        kernelspecDirs: [join(env.dir, 'jupyter-prefix', 'share', 'jupyter')],
        rootDir: notebooks,
        ...(identity.user ? { user: { ...identity.user, home: env.home } } : {}),
        env: { HOME: env.home },
      });
    });
    after(async () => {
      await server?.stop();
      await env?.cleanup();
    });

    it('is listed with its resources', async () => {
      const specs = new KernelSpecManager({ serverSettings: server.settings });
      await specs.refreshSpecs();
      const spec = specs.specs?.kernelspecs[KERNEL];
      assert.ok(spec, `listed: ${Object.keys(specs.specs?.kernelspecs ?? {}).join(', ')}`);
      assert.equal(spec.display_name, 'Python 3 (debian ipykernel)');
      assert.equal(spec.language, 'python');
      assert.ok(spec.resources['logo-64x64'], 'has a logo');
      assert.equal((spec.metadata as { gantry?: { image?: string } }).gantry?.image, 'deb');
      specs.dispose();
    });

    it('runs in the image, as the user, with the home directory of the host', async () => {
      const kernels = new KernelManager({ serverSettings: server.settings });
      const kernel = await kernels.startNew({ name: KERNEL });
      try {
        const r = await executeCode(kernel, [
          'import os',
          "print(open('/etc/gantry-fixture').read().strip())",
          'print(os.getuid())',
          "open(os.path.expanduser('~/from-kernel.txt'), 'w').write('written in the kernel')",
        ].join('\n'));
        assert.equal(r.status, 'ok', `${r.ename}: ${r.evalue}\n${await server.log()}`);
        assert.equal(r.stdout, `debian-ipykernel\n${uid}\n`);
        assert.equal(await readFile(join(env.home, 'from-kernel.txt'), 'utf8'), 'written in the kernel');
      } finally {
        await kernel.shutdown();
        kernels.dispose();
      }
    });

    it('works in the notebook folder, interrupts, restarts, and leaves nothing behind', async () => {
      const kernels = new KernelManager({ serverSettings: server.settings });
      const sessions = new SessionManager({ serverSettings: server.settings, kernelManager: kernels });
      const session = await sessions.startNew({ path: 'sub/nb.ipynb', type: 'notebook', name: 'nb.ipynb', kernel: { name: KERNEL } });
      const kernel = session.kernel!;
      try {
        const cwd = await executeCode(kernel, 'import os; print(os.getcwd())');
        assert.equal(cwd.stdout.trim(), join(notebooks, 'sub'));

        const t0 = Date.now();
        const sleeping = executeCode(kernel, 'import time; time.sleep(60)', 30_000, () => void setTimeout(() => void kernel.interrupt(), 500));
        const interrupted = await sleeping;
        assert.equal(interrupted.ename, 'KeyboardInterrupt');
        assert.ok(Date.now() - t0 < 10_000, `interrupted after ${Date.now() - t0} ms`);

        await kernel.restart();
        const after = await executeCode(kernel, 'print(6 * 7)');
        assert.equal(after.stdout, '42\n');
      } finally {
        await session.shutdown();
        sessions.dispose();
        kernels.dispose();
      }
      for (let i = 0; i < 50 && server.processes().length; i++) await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(server.processes(), [], 'no kernel process is left');
      assert.deepEqual(await server.kernels(), []);
    });

    it('a kernelspec installed with --gpus gives the kernel those GPUs and CUDA', async () => {
      const installed = ok(
        await gantry(env, ['kernel', 'install', 'deb', '--name', 'gantry-deb-gpu1', '--gpus', '1', '-e', 'NVIDIA_DRIVER_CAPABILITIES=compute,utility', '--prefix', join(env.dir, 'jupyter-prefix')], {
          extraEnv: { GANTRY_DRIVER_ROOT: fake.root },
        }),
      );
      assert.match(installed, /"Python 3 \(debian ipykernel, GPU 1\)"/);
      const specs = new KernelSpecManager({ serverSettings: server.settings });
      await specs.refreshSpecs();
      assert.equal(specs.specs?.kernelspecs['gantry-deb-gpu1']?.display_name, 'Python 3 (debian ipykernel, GPU 1)');
      specs.dispose();
      const kernels = new KernelManager({ serverSettings: server.settings });
      const kernel = await kernels.startNew({ name: 'gantry-deb-gpu1' });
      try {
        const r = await executeCode(kernel, [
          'import os, ctypes',
          "print(sorted(d for d in os.listdir('/dev') if d.startswith('nvidia')))",
          'v = ctypes.c_int()',
          "cuda = ctypes.CDLL('libcuda.so.1')",
          'n = ctypes.c_int()',
          'print(cuda.cuInit(0), cuda.cuDriverGetVersion(ctypes.byref(v)), v.value, cuda.cuDeviceGetCount(ctypes.byref(n)), n.value)',
          "print(os.environ['NVIDIA_VISIBLE_DEVICES'])",
        ].join('\n'));
        assert.equal(r.status, 'ok', `${r.ename}: ${r.evalue}\n${await server.log()}`);
        assert.equal(r.stdout, "['nvidia-uvm', 'nvidia-uvm-tools', 'nvidia1', 'nvidiactl']\n0 0 12040 0 1\n1\n");
      } finally {
        await kernel.shutdown();
        kernels.dispose();
      }
      ok(await gantry(env, ['kernel', 'remove', 'gantry-deb-gpu1'], { extraEnv: { JUPYTER_PATH: join(env.dir, 'jupyter-prefix', 'share', 'jupyter') } }));
    });

    it('is restarted by the server when killed', async () => {
      const kernels = new KernelManager({ serverSettings: server.settings });
      const kernel = await kernels.startNew({ name: KERNEL });
      try {
        const pid = Number((await executeCode(kernel, 'import os; print(os.getpid())')).stdout.trim());
        // Inside the sandbox the pid is the host's (no pid namespace): the kernel is the launcher's pid.
        const before = server.processes();
        assert.ok(before.includes(pid), `the kernel (${pid}) is the process the server started (${before})`);
        process.kill(pid, 'SIGKILL');
        let r;
        for (let i = 0; i < 40; i++) {
          await new Promise((res) => setTimeout(res, 500));
          r = await executeCode(kernel, 'print("back")', 5_000).catch(() => undefined);
          if (r?.stdout === 'back\n') break;
        }
        assert.equal(r?.stdout, 'back\n', 'the restarted kernel answers');
      } finally {
        await kernel.shutdown().catch(() => undefined);
        kernels.dispose();
      }
    });
  });
}

describe('kernel lifecycle', () => {
  it('leaks nothing over 30 start/shutdown cycles, and fails fast once its image is pruned', async () => {
    const env = await makeEnv((await identities())[0]!, 'gantry-kernel-cycles');
    const notebooks = join(env.home, 'notebooks');
    await mkdir(notebooks, { recursive: true });
    ok(await gantry(env, ['import', `${registry.host}/${seed.images['debian-ipykernel']}`, '--name', 'deb']));
    ok(await gantry(env, ['kernel', 'install', 'deb', '--prefix', join(env.dir, 'jp')]));
    const server = await startJupyterServer({ kernelspecDirs: [join(env.dir, 'jp', 'share', 'jupyter')], rootDir: notebooks, env: { HOME: env.home } });
    const kernels = new KernelManager({ serverSettings: server.settings });
    try {
      const mountsBefore = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(env.dir)).length;
      for (let i = 0; i < 30; i++) {
        const kernel = await kernels.startNew({ name: KERNEL });
        assert.equal((await executeCode(kernel, `print(${i})`)).stdout, `${i}\n`);
        await kernel.shutdown();
      }
      for (let i = 0; i < 50 && server.processes().length; i++) await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(server.processes(), [], 'no kernel process is left');
      assert.equal((await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(env.dir)).length, mountsBefore, 'no mount is left');
      assert.deepEqual(await server.kernels(), []);

      // The image goes away: the next start fails at once, and says why in the server's log.
      ok(await gantry(env, ['rmi', 'deb']));
      ok(await gantry(env, ['prune']));
      const kernel = await kernels.startNew({ name: KERNEL }).catch(() => undefined);
      let log = '';
      for (let i = 0; i < 100 && !/plan is stale/.test(log); i++) {
        await new Promise((r) => setTimeout(r, 200));
        log = await server.log();
      }
      assert.match(log, /gantry-exec: check .*: the sandbox's plan is stale: .* is missing \(recreate the sandbox, or import its image again\)/);
      await kernel?.shutdown().catch(() => undefined);
    } finally {
      kernels.dispose();
      await server.stop();
      await env.cleanup();
    }
  });
});

describe('kernel install refusals', () => {
  it('says what is missing when the image has no ipykernel, and installs nothing', async () => {
    const env = await makeEnv((await identities())[1]!, 'gantry-kernel-bad');
    try {
      ok(await gantry(env, ['import', `${registry.host}/${seed.images['busybox-edge']}`, '--name', 'bb']));
      const r = await gantry(env, ['kernel', 'install', 'bb', '--prefix', join(env.dir, 'p')]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /image bb has no python3/);
      assert.match(r.stderr, /hint: use an image with Python and ipykernel/);
      assert.equal(existsSync(join(env.dir, 'p', 'share', 'jupyter', 'kernels', 'gantry-bb')), false);
      assert.deepEqual(JSON.parse(ok(await gantry(env, ['kernel', 'list', '--json']))), []);
    } finally {
      await env.cleanup();
    }
  });
});

describe('a GPU kernel an administrator installed for everyone', () => {
  it('runs for an unprivileged user from the administrator store (owned by root), with its GPU and the user home', async () => {
    const [rootIdentity, userIdentity] = await identities();
    const admin = await makeEnv(rootIdentity!, 'gantry-kernel-admin');
    const user = await makeEnv(userIdentity!, 'gantry-kernel-user');
    let server: JupyterServer | undefined;
    try {
      const prefix = join(admin.dir, 'system-prefix');
      ok(await gantry(admin, ['import', `${registry.host}/${seed.images['debian-ipykernel']}`, '--name', 'deb']));
      ok(await gantry(admin, ['kernel', 'install', 'deb', '--name', 'site-gpu', '--gpus', '0', '-e', 'NVIDIA_DRIVER_CAPABILITIES=compute,utility', '--prefix', prefix], { extraEnv: { GANTRY_DRIVER_ROOT: fake.root } }));
      const notebooks = join(user.home, 'work');
      await mkdir(notebooks, { recursive: true });
      await chown(notebooks, userIdentity!.user!.uid, userIdentity!.user!.gid);
      server = await startJupyterServer({ kernelspecDirs: [join(prefix, 'share', 'jupyter')], rootDir: notebooks, user: { ...userIdentity!.user!, home: user.home }, env: { HOME: user.home } });
      const kernels = new KernelManager({ serverSettings: server.settings });
      const kernel = await kernels.startNew({ name: 'site-gpu' });
      try {
        const r = await executeCode(kernel, [
          'import os, ctypes',
          'print(os.getuid(), os.getcwd())',
          "print(sorted(d for d in os.listdir('/dev') if d.startswith('nvidia')))",
          "n = ctypes.c_int(); cuda = ctypes.CDLL('libcuda.so.1'); print(cuda.cuInit(0), cuda.cuDeviceGetCount(ctypes.byref(n)), n.value)",
          "open(os.path.expanduser('~/from-site-kernel.txt'), 'w').write('mine')",
        ].join('\n'));
        assert.equal(r.status, 'ok', `${r.ename}: ${r.evalue}\n${await server.log()}`);
        assert.equal(r.stdout, `${userIdentity!.user!.uid} ${notebooks}\n['nvidia-uvm', 'nvidia-uvm-tools', 'nvidia0', 'nvidiactl']\n0 0 1\n`);
        assert.equal(await readFile(join(user.home, 'from-site-kernel.txt'), 'utf8'), 'mine');
      } finally {
        await kernel.shutdown();
        kernels.dispose();
      }
    } finally {
      await server?.stop();
      await user.cleanup();
      await admin.cleanup();
    }
  });
});
