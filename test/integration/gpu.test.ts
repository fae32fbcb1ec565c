import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeFakeDriver, type FakeDriver } from '../fixtures/fake-driver.js';
import { copyStorage, seedStorage, startRegistry, type Registry, type SeededStorage } from '../fixtures/registry.js';
import { userTempDir, type UserTempDir } from '../fixtures/users.js';
import { gantry, identities, makeEnv, ok, type Env, type GantryResult } from './helpers.js';

/**
 * NVIDIA GPUs in sandboxes, against a fake driver tree (GANTRY_DRIVER_ROOT): real device nodes
 * (as root) or files, small real libraries with the driver's sonames, the tree's own ld cache.
 * Everything runs in real namespaces through the installed `gantry`, as root and unprivileged.
 */
let seed: SeededStorage;
let registry: Registry;
let fake: FakeDriver;
let fakeDir: UserTempDir;
let noDriver: UserTempDir;
const GPU_IMAGE = 'busybox:gpu';
const GPU_ENV = ['NVIDIA_VISIBLE_DEVICES=all', 'NVIDIA_DRIVER_CAPABILITIES=compute,utility', 'NVIDIA_REQUIRE_CUDA=cuda>=12.0 brand=tesla,driver>=470,driver<471'];

/** Pushes FROM again as TO with extra Env (what NGC images carry): same layers, a new config. */
async function pushWithEnv(host: string, from: string, to: string, extraEnv: string[]): Promise<void> {
  const [repo, tag] = from.split(':') as [string, string];
  const base = `http://${host}/v2/${repo}`;
  const accept = 'application/vnd.docker.distribution.manifest.v2+json';
  const manifest = (await (await fetch(`${base}/manifests/${tag}`, { headers: { Accept: accept } })).json()) as { config: { digest: string; size: number } };
  const config = (await (await fetch(`${base}/blobs/${manifest.config.digest}`)).json()) as { config: { Env?: string[] } };
  config.config.Env = [...(config.config.Env ?? []), ...extraEnv];
  const body = Buffer.from(JSON.stringify(config));
  const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  const start = await fetch(`${base}/blobs/uploads/`, { method: 'POST' });
  const location = new URL(start.headers.get('location')!, `http://${host}`);
  location.searchParams.set('digest', digest);
  assert.equal((await fetch(location, { method: 'PUT', body, headers: { 'Content-Type': 'application/octet-stream' } })).status, 201);
  manifest.config = { ...manifest.config, digest, size: body.length };
  const put = await fetch(`${base}/manifests/${to.split(':')[1]}`, { method: 'PUT', body: JSON.stringify(manifest), headers: { 'Content-Type': accept } });
  assert.equal(put.status, 201, await put.text());
}

before(async () => {
  seed = await seedStorage();
  registry = await startRegistry({ auth: 'none', storageDir: await copyStorage(seed.dir), readonly: false });
  await pushWithEnv(registry.host, seed.images['busybox-edge']!, GPU_IMAGE, GPU_ENV);
  fakeDir = await userTempDir(null, 'gantry-fake-driver');
  fake = await makeFakeDriver(join(fakeDir.path, 'root'));
  noDriver = await userTempDir(null, 'gantry-no-driver');
});
after(async () => {
  await registry?.stop();
  await fakeDir?.cleanup();
  await noDriver?.cleanup();
});

const lines = (s: string): string[] => s.split('\n').map((l) => l.trim()).filter(Boolean);
const nvidiaDevices = (out: string): string[] => lines(out).filter((l) => l.startsWith('nvidia')).sort();

for (const identity of await identities()) {
  describe(`GPUs as ${identity.label}`, () => {
    let env: Env;
    const run = (args: string[], extraEnv: Record<string, string> = {}): Promise<GantryResult> => gantry(env, args, { extraEnv: { GANTRY_DRIVER_ROOT: fake.root, ...extraEnv } });
    /** `ls /dev` inside a busybox sandbox started with ARGS. */
    const devices = async (args: string[], extraEnv: Record<string, string> = {}): Promise<string[]> => nvidiaDevices(ok(await run(['start', ...args, 'bb', 'ls', '/dev'], extraEnv)));

    before(async () => {
      env = await makeEnv(identity, 'gantry-gpu');
      ok(await gantry(env, ['import', `${registry.host}/${seed.images['busybox-edge']}`, '--name', 'bb']));
      ok(await gantry(env, ['import', `${registry.host}/${seed.images['debian-ipykernel']}`, '--name', 'deb']));
      ok(await gantry(env, ['import', `${registry.host}/${GPU_IMAGE}`, '--name', 'ngc']));
    });
    after(async () => env?.cleanup());

    it('gantry gpu shows the driver, its GPUs and what a sandbox would get', async () => {
      const info = JSON.parse(ok(await run(['gpu', '--json', '--caps', 'compute,utility,graphics']))) as {
        driver: { version: string; cuda: string };
        uvmLoaded: boolean;
        gpus: { index: number; uuid: string; unavailable?: string }[];
        sandbox: { devices: string[]; libraries: { path: string; links: string[] }[]; binaries: string[] };
        warnings: string[];
      };
      assert.deepEqual(info.driver, { version: '550.54.15', cuda: '12.4' });
      assert.equal(info.uvmLoaded, true);
      assert.deepEqual(info.gpus.map((g) => [g.index, g.uuid, g.unavailable]), fake.gpus.map((g) => [g.index, g.uuid, undefined]));
      assert.deepEqual(info.sandbox.devices, ['/dev/nvidiactl', '/dev/nvidia-uvm', '/dev/nvidia-uvm-tools', '/dev/nvidia0', '/dev/nvidia1']);
      const libs = info.sandbox.libraries.map((l) => l.path.split('/').pop());
      assert.ok(libs.includes('libcuda.so.550.54.15') && libs.includes('libnvidia-ml.so.550.54.15') && libs.includes('libEGL_nvidia.so.550.54.15'), libs.join(' '));
      assert.ok(!libs.some((l) => l!.startsWith('libfoo') || l!.includes('535')), 'neither the foreign nor the stale library');
      assert.ok(info.warnings.some((w) => /libnvidia-fbc.so.535.104.05.*does not belong to the loaded driver 550.54.15/.test(w)), info.warnings.join('\n'));
      assert.deepEqual([...info.sandbox.binaries].sort(), ['/usr/bin/nvidia-cuda-mps-control', '/usr/bin/nvidia-debugdump', '/usr/bin/nvidia-smi'], 'no nvidia-persistenced: the host has none');
      const text = ok(await run(['gpu']));
      assert.match(text, /driver +550\.54\.15 \(CUDA 12\.4\)/);
      assert.match(text, new RegExp(`1 +1 +0000:65:00.0 +${fake.gpus[1]!.uuid} +NVIDIA H100 80GB HBM3 +yes`));
      const none = await gantry(env, ['gpu'], { extraEnv: { GANTRY_DRIVER_ROOT: noDriver.path } });
      assert.equal(none.code, 3);
      assert.match(none.stderr, /no NVIDIA driver is loaded on this host \(.*proc\/driver\/nvidia\/version is missing\)/);
    });

    it('gives the devices each NVIDIA_VISIBLE_DEVICES form asks for', async () => {
      assert.deepEqual(await devices([]), [], 'unset: no GPU support');
      assert.deepEqual(await devices([], { NVIDIA_VISIBLE_DEVICES: 'all' }), ['nvidia0', 'nvidia1', 'nvidiactl']);
      assert.deepEqual(await devices(['--gpus', '1']), ['nvidia1', 'nvidiactl']);
      assert.deepEqual(await devices(['-e', `NVIDIA_VISIBLE_DEVICES=${fake.gpus[0]!.uuid}`]), ['nvidia0', 'nvidiactl']);
      assert.deepEqual(await devices(['--gpus', 'GPU-b2e9']), ['nvidia1', 'nvidiactl'], 'a unique UUID prefix');
      assert.deepEqual(await devices(['--gpus', 'none']), ['nvidiactl'], 'none: the driver, no GPU');
      assert.deepEqual(await devices(['--gpus', 'void'], { NVIDIA_VISIBLE_DEVICES: 'all' }), [], '--gpus overrides the host');
      assert.deepEqual(await devices(['--gpus', 'all', '-e', 'NVIDIA_DRIVER_CAPABILITIES=compute,display']), ['nvidia-modeset', 'nvidia-uvm', 'nvidia-uvm-tools', 'nvidia0', 'nvidia1', 'nvidiactl']);
      const env = ok(await run(['start', '--gpus', '0,1', 'bb', 'sh', '-c', 'echo $NVIDIA_VISIBLE_DEVICES $NVIDIA_DRIVER_CAPABILITIES']));
      assert.equal(env.trim(), '0,1 utility');
      if (fake.charDevices) {
        const ls = ok(await run(['start', '--gpus', '1', 'bb', 'ls', '-l', '/dev/nvidia1']));
        assert.match(ls, /^c.* 195, +1 /, 'the host node itself');
      }
    });

    it('offers only the GPUs the host gives the caller', async () => {
      assert.deepEqual(await devices(['--gpus', 'all'], { CUDA_VISIBLE_DEVICES: '1' }), ['nvidia1', 'nvidiactl']);
      const refused = await run(['start', '--gpus', '0', 'bb', 'true'], { CUDA_VISIBLE_DEVICES: '1' });
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, /GPU 0 is not available to you here \(CUDA_VISIBLE_DEVICES=1\)/);
      const unknown = await run(['start', '--gpus', '7', 'bb', 'true']);
      assert.equal(unknown.code, 2);
      assert.match(unknown.stderr, /there is no GPU 7 on this host \(its GPUs: 0 \(GPU-6a3b/);
      assert.match(unknown.stderr, /hint: see `gantry gpu`/);
    });

    it('binds the libraries of each capability, with soname links the image loader resolves', async () => {
      const listing = async (caps: string): Promise<string[]> =>
        lines(ok(await run(['start', '--gpus', 'all', '-e', `NVIDIA_DRIVER_CAPABILITIES=${caps}`, 'deb', 'sh', '-c', 'cd /usr/lib/x86_64-linux-gnu && ls -d libnvidia* libcuda* libnv* libEGL_nvidia* libfoo* 2>/dev/null | sort -u'])));
      const utility = await listing('utility');
      assert.deepEqual(utility, ['libnvidia-cfg.so.1', 'libnvidia-cfg.so.550.54.15', 'libnvidia-ml.so.1', 'libnvidia-ml.so.550.54.15']);
      const compute = await listing('compute');
      assert.ok(compute.includes('libcuda.so.1') && compute.includes('libcuda.so') && compute.includes('libnvidia-ptxjitcompiler.so.1') && compute.includes('libnvidia-opencl.so.1'), compute.join(' '));
      assert.ok(!compute.includes('libnvidia-ml.so.1'), 'compute alone has no NVML');
      const video = await listing('video');
      assert.ok(video.includes('libnvcuvid.so.1') && video.includes('libnvidia-encode.so.1') && !video.includes('libcuda.so.1'), video.join(' '));
      const graphics = await listing('graphics');
      assert.ok(graphics.includes('libEGL_nvidia.so.0') && graphics.includes('libnvidia-eglcore.so.550.54.15'), graphics.join(' '));
      assert.ok(!graphics.some((l) => l.startsWith('libnvidia-fbc') || l.startsWith('libfoo')), 'the stale and the foreign library stay out');
      const none = await listing('utility');
      assert.deepEqual(none, utility);
      const voidList = lines(ok(await run(['start', 'deb', 'sh', '-c', 'ls /usr/lib/x86_64-linux-gnu | grep -c nvidia || true'])));
      assert.deepEqual(voidList, ['0'], 'without a request the image is as it was');
    });

    it('refreshes the ld cache inside: ldconfig -p finds libcuda.so.1 and a program linked against it runs on the injected GPUs', async () => {
      const args = ['start', '-e', 'NVIDIA_DRIVER_CAPABILITIES=compute,utility', '-m', `${fake.cudaCheck}:/opt/cuda-check:ro`];
      const ldconfig = ok(await run([...args, '--gpus', 'all', 'deb', 'sh', '-c', 'ldconfig -p | grep -E "libcuda.so.1|libnvidia-ml.so.1"']));
      assert.match(ldconfig, /libcuda\.so\.1 \(libc6,x86-64\) => \/usr\/lib\/x86_64-linux-gnu\/libcuda\.so\.1/);
      assert.match(ldconfig, /libnvidia-ml\.so\.1 \(libc6,x86-64\) => \/usr\/lib\/x86_64-linux-gnu\/libnvidia-ml\.so\.1/);
      assert.deepEqual(JSON.parse(ok(await run([...args, '--gpus', 'all', 'deb', '/opt/cuda-check']))), { init: 0, version: 12040, devices: 2 });
      assert.deepEqual(JSON.parse(ok(await run([...args, '--gpus', '1', 'deb', '/opt/cuda-check']))), { init: 0, version: 12040, devices: 1 });
      const none = await run([...args, '--gpus', 'void', 'deb', '/opt/cuda-check']);
      assert.equal(none.code, 127, 'void: libcuda.so.1 is not there');
      assert.match(none.stderr, /libcuda\.so\.1: cannot open shared object file/);
      const smi = ok(await run(['start', '--gpus', '1', 'deb', 'nvidia-smi', '-L']));
      assert.deepEqual(lines(smi), ['GPU 1: Fake NVIDIA GPU (UUID: GPU-FAKE-1)']);
      const files = ok(await run(['start', '--gpus', 'all', '-e', 'NVIDIA_DRIVER_CAPABILITIES=compute,utility', 'deb', 'sh', '-c', 'ls /lib/firmware/nvidia/550.54.15; test -S /run/nvidia-persistenced/socket && echo socket; cat /etc/OpenCL/vendors/nvidia.icd; ls /usr/bin | grep nvidia']));
      assert.deepEqual(lines(files), ['gsp_ga10x.bin', 'gsp_tu10x.bin', 'socket', 'libnvidia-opencl.so.1', 'nvidia-cuda-mps-control', 'nvidia-debugdump', 'nvidia-smi']);
    });

    it('gives 32-bit libraries with compat32', async () => {
      assert.ok(fake.lib32Dir, 'the fake driver has no 32-bit libraries: install gcc-multilib (apt-get install gcc-multilib)');
      const out = ok(await run(['start', '--gpus', 'all', '-e', 'NVIDIA_DRIVER_CAPABILITIES=compute,utility,compat32', 'deb', 'sh', '-c', 'ls /usr/lib/i386-linux-gnu; ldconfig -p | grep "libcuda.so.1 (libc6)"']));
      assert.match(out, /libcuda\.so\.550\.54\.15/);
      assert.match(out, /libcuda\.so\.1 \(libc6\) => \/usr\/lib\/i386-linux-gnu\/libcuda\.so\.1/);
    });

    it('works in an image without libc or ldconfig (busybox), where the libraries go to the driver directory', async () => {
      const out = ok(await run(['start', '--gpus', 'all', '-e', 'NVIDIA_DRIVER_CAPABILITIES=compute,utility', 'bb', 'sh', '-c', 'ls -l /usr/lib/x86_64-linux-gnu/libcuda.so.1; test -s /etc/ld.so.cache && echo cache; ls -a /dev | grep -c gantry || true']));
      assert.match(out, /libcuda\.so\.1 -> libcuda\.so\.550\.54\.15/);
      assert.deepEqual(lines(out).slice(1), ['cache', '0'], 'a fresh ld cache, and nothing left behind in /dev');
    });

    it('uses the image default, and starts without GPUs where there is no driver', async () => {
      assert.deepEqual(nvidiaDevices(ok(await run(['start', 'ngc', 'ls', '/dev']))), ['nvidia-uvm', 'nvidia-uvm-tools', 'nvidia0', 'nvidia1', 'nvidiactl']);
      const quiet = await gantry(env, ['start', 'ngc', 'ls', '/dev'], { extraEnv: { GANTRY_DRIVER_ROOT: noDriver.path } });
      assert.equal(quiet.code, 0, quiet.stderr);
      assert.deepEqual(nvidiaDevices(quiet.stdout), []);
      assert.match(quiet.stderr, /warning: image ngc asks for GPUs \(NVIDIA_VISIBLE_DEVICES=all\) but no NVIDIA driver is loaded on this host .*: starting without GPUs/);
      const asked = await gantry(env, ['start', '--gpus', 'all', 'bb', 'true'], { extraEnv: { GANTRY_DRIVER_ROOT: noDriver.path } });
      assert.notEqual(asked.code, 0);
      assert.match(asked.stderr, /error: NVIDIA_VISIBLE_DEVICES=all asks for GPUs, but no NVIDIA driver is loaded/);
      assert.match(asked.stderr, /hint: .*NVIDIA_VISIBLE_DEVICES=void/);
    });

    it('checks NVIDIA_REQUIRE_* against the driver, naming both versions', async () => {
      const newer = await run(['start', '-e', 'NVIDIA_REQUIRE_CUDA=cuda>=12.6', 'ngc', 'true']);
      assert.equal(newer.code, 6);
      assert.match(newer.stderr, /error: image ngc requires NVIDIA_REQUIRE_CUDA=cuda>=12.6, but this host's NVIDIA driver is 550.54.15, which supports CUDA 12.4/);
      assert.match(newer.stderr, /NVIDIA_DISABLE_REQUIRE=1/);
      ok(await run(['start', '-e', 'NVIDIA_REQUIRE_CUDA=cuda>=12.6', '-e', 'NVIDIA_DISABLE_REQUIRE=1', 'ngc', 'true']));
      ok(await run(['start', '-e', 'NVIDIA_REQUIRE_DRIVER=driver>=550', 'ngc', 'true']));
      const bad = await run(['start', '--gpus', 'all', '-e', 'NVIDIA_DRIVER_CAPABILITIES=compute,gpu', 'bb', 'true']);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /unknown NVIDIA driver capability "gpu"/);
    });

    it('leaves the store and a named sandbox writable layer without driver files', async () => {
      const layersBefore = (await readdir(join(env.store, 'layers', 'sha256'))).sort();
      ok(await run(['create', '--name', 'gpubox', 'ngc']));
      const sandbox = join(env.dir, 'data', 'sandboxes', 'gpubox');
      assert.deepEqual((await readdir(sandbox)).filter((f) => f === 'fast'), [], 'a GPU sandbox never takes the fast path');
      assert.deepEqual(nvidiaDevices(ok(await run(['start', '--rw', 'gpubox', 'sh', '-c', 'ls /dev; touch /made-here']))), ['nvidia-uvm', 'nvidia-uvm-tools', 'nvidia0', 'nvidia1', 'nvidiactl']);
      const upper = ok(await run(['start', 'gpubox', 'ls', '/made-here']));
      assert.match(upper, /made-here/, 'the writable layer kept the file');
      const leftovers = lines(execFileSync('find', [join(sandbox, 'upper'), '-name', '*nvidia*', '-o', '-name', '*cuda*'], { encoding: 'utf8' }));
      assert.deepEqual(leftovers, [], 'no driver file was copied into the sandbox');
      assert.deepEqual((await readdir(join(env.store, 'layers', 'sha256'))).sort(), layersBefore);
      ok(await run(['remove', 'gpubox']));
    });

    if (identity.user) {
      it('does not offer a GPU whose device node the user may not open', async () => {
        const restricted = await userTempDir(null, 'gantry-fake-restricted');
        try {
          const tree = await makeFakeDriver(join(restricted.path, 'root'));
          await chmod(join(tree.root, 'dev', 'nvidia0'), 0o600);
          const extra = { GANTRY_DRIVER_ROOT: tree.root };
          assert.deepEqual(nvidiaDevices(ok(await gantry(env, ['start', '--gpus', 'all', 'bb', 'ls', '/dev'], { extraEnv: extra }))), ['nvidia1', 'nvidiactl']);
          const r = await gantry(env, ['start', '--gpus', '0', 'bb', 'true'], { extraEnv: extra });
          assert.equal(r.code, 2);
          assert.match(r.stderr, /GPU 0 is not available to you here \(.*dev\/nvidia0 is not readable and writable by you\)/);
        } finally {
          await restricted.cleanup();
        }
      });

      it('injects into images of a shared store the user cannot write (owned by root)', async () => {
        const shared = await makeEnv({ label: 'root', user: null }, 'gantry-gpu-shared');
        try {
          ok(await gantry(shared, ['import', `${registry.host}/${seed.images['debian-ipykernel']}`, '--name', 'deb']));
          const r = ok(
            // /opt is root's in the image: the launcher stacks a read-only helper overlay there for the mount point.
            await gantry(env, ['start', '--gpus', '1', '-e', 'NVIDIA_DRIVER_CAPABILITIES=compute,utility', '-m', `${fake.cudaCheck}:/opt/gantry/cuda-check:ro`, 'deb', '/opt/gantry/cuda-check'], {
              extraEnv: { GANTRY_DRIVER_ROOT: fake.root, GANTRY_STORE: shared.store },
            }),
          );
          assert.deepEqual(JSON.parse(r), { init: 0, version: 12040, devices: 1 });
        } finally {
          await shared.cleanup();
        }
      });
    }

    it('a GPU kernelspec whose driver files went away (a driver upgrade) says so and what to do', async () => {
      const own = await userTempDir(null, 'gantry-fake-upgrade');
      try {
        const tree = await makeFakeDriver(join(own.path, 'root'));
        const prefix = join(env.dir, 'upgrade-prefix');
        ok(await gantry(env, ['kernel', 'install', 'deb', '--name', 'gpu-upgrade', '--gpus', 'all', '--prefix', prefix], { extraEnv: { GANTRY_DRIVER_ROOT: tree.root } }));
        const spec = JSON.parse(await readFile(join(prefix, 'share', 'jupyter', 'kernels', 'gpu-upgrade', 'kernel.json'), 'utf8')) as { argv: string[] };
        const [launcher, , , plan] = spec.argv as [string, string, string, string];
        const start = (): { status: number | null; stderr: string } => {
          const argv = [launcher, plan, '--', 'nvidia-smi', '-L'];
          const r = identity.user ? spawnSync('runuser', ['-u', identity.user.name, '--', ...argv], { cwd: '/', encoding: 'utf8' }) : spawnSync(argv[0]!, argv.slice(1), { cwd: '/', encoding: 'utf8' });
          return { status: r.status, stderr: r.stderr };
        };
        assert.equal(start().status, 0, 'the kernel plan runs with the driver it was made for');
        await rm(join(tree.root, 'usr', 'lib', 'x86_64-linux-gnu', 'libnvidia-ml.so.550.54.15'));
        const stale = start();
        assert.equal(stale.status, 125);
        assert.match(stale.stderr, /the sandbox's plan is stale: .*libnvidia-ml\.so\.550\.54\.15 is missing \(the NVIDIA driver changed since this plan was made: .*install the kernel again/);
      } finally {
        await own.cleanup();
      }
    });

    it('injects into a flattened sandbox (kernels without overlayfs in user namespaces)', async () => {
      const flat = { GANTRY_OVERLAY: '0' };
      ok(await run(['create', '--name', 'flatgpu', 'deb'], flat));
      const out = ok(await run(['start', '--gpus', '1', '-e', 'NVIDIA_DRIVER_CAPABILITIES=compute,utility', '-m', `${fake.cudaCheck}:/opt/cuda-check:ro`, 'flatgpu', '/opt/cuda-check'], flat));
      assert.deepEqual(JSON.parse(out), { init: 0, version: 12040, devices: 1 });
      ok(await run(['remove', 'flatgpu'], flat));
    });
  });
}
