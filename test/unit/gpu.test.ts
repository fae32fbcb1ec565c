import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GantryError } from '../../src/errors.js';
import { parseCapabilities } from '../../src/gpu/capabilities.js';
import { cudaVisibleLimit, parseVisibleDevices, selectGpus } from '../../src/gpu/devices.js';
import { parseDriverVersion, parseInformation, type DriverInfo, type GpuInfo } from '../../src/gpu/driver.js';
import { gpuRequest } from '../../src/gpu/inject.js';
import { parseLdconfigOutput } from '../../src/gpu/ldcache.js';
import { placeInImage } from '../../src/gpu/place.js';
import { checkRequirements, compareVersions, cudaVersionText } from '../../src/gpu/require.js';
import { resolveInTree, type EntryType, type Lookup } from '../../src/gpu/resolve.js';
import type { DriverSelection } from '../../src/gpu/select.js';
import { buildPlan, compilePlan, type Op, type PlanInput } from '../../src/sandbox/plan.js';

const gpus: GpuInfo[] = [
  { index: 0, minor: 0, busId: '0000:17:00.0', uuid: 'GPU-11111111-2222-3333-4444-555555555555', model: 'NVIDIA H100 80GB HBM3' },
  { index: 1, minor: 1, busId: '0000:65:00.0', uuid: 'GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', model: 'NVIDIA H100 80GB HBM3' },
];

/** A tree given as path -> type or symlink target ('->target'). */
function treeLookup(tree: Record<string, string>): Lookup {
  return async (path) => {
    const v = tree[path];
    if (v === undefined) return undefined;
    return v.startsWith('->') ? { type: 'symlink', target: v.slice(2) } : { type: v as EntryType };
  };
}

const rejects = async (p: Promise<unknown>, re: RegExp): Promise<void> => {
  await assert.rejects(p, (err: unknown) => err instanceof GantryError && re.test(`${err.message} | ${err.hint}`));
};

describe('NVIDIA_VISIBLE_DEVICES', () => {
  it('reads the toolkit forms', () => {
    assert.deepEqual(parseVisibleDevices(undefined), { kind: 'void' });
    assert.deepEqual(parseVisibleDevices(''), { kind: 'void' });
    assert.deepEqual(parseVisibleDevices('void'), { kind: 'void' });
    assert.deepEqual(parseVisibleDevices('none'), { kind: 'none' });
    assert.deepEqual(parseVisibleDevices('all'), { kind: 'all' });
    assert.deepEqual(parseVisibleDevices('0, 1'), { kind: 'list', ids: ['0', '1'] });
    assert.deepEqual(parseVisibleDevices('GPU-aaaa'), { kind: 'list', ids: ['GPU-aaaa'] });
    assert.throws(() => parseVisibleDevices('MIG-1234'), /MIG devices/);
    assert.throws(() => parseVisibleDevices('gpu0'), /neither a GPU index nor a GPU UUID/);
  });

  it('selects by index, UUID or unique UUID prefix, and names the GPUs there are', () => {
    assert.deepEqual(selectGpus({ kind: 'all' }, gpus, [], 'x').map((g) => g.index), [0, 1]);
    assert.deepEqual(selectGpus({ kind: 'none' }, gpus, [], 'x'), []);
    assert.deepEqual(selectGpus({ kind: 'list', ids: ['1'] }, gpus, [], 'x').map((g) => g.index), [1]);
    assert.deepEqual(selectGpus({ kind: 'list', ids: ['GPU-aaaa', '0', '0'] }, gpus, [], 'x').map((g) => g.index), [1, 0]);
    assert.throws(() => selectGpus({ kind: 'list', ids: ['2'] }, gpus, [], 'NVIDIA_VISIBLE_DEVICES=2'), /NVIDIA_VISIBLE_DEVICES=2: there is no GPU 2 on this host \(its GPUs: 0 \(GPU-1111/);
  });

  it('offers only the GPUs a scheduler gave the caller', () => {
    const limit = cudaVisibleLimit('1', gpus)!;
    assert.deepEqual(selectGpus({ kind: 'all' }, gpus, [limit], 'x').map((g) => g.index), [1]);
    assert.throws(() => selectGpus({ kind: 'list', ids: ['0'] }, gpus, [limit], 'x'), /GPU 0 is not available to you here \(CUDA_VISIBLE_DEVICES=1\)/);
    assert.deepEqual([...cudaVisibleLimit('GPU-1111', gpus)!.allowed], [0]);
    assert.deepEqual([...cudaVisibleLimit('', gpus)!.allowed], []);
    assert.deepEqual([...cudaVisibleLimit('NoDevFiles', gpus)!.allowed], []);
    assert.deepEqual([...cudaVisibleLimit('1,7,0', gpus)!.allowed], [1], 'CUDA stops at the first id it cannot use');
    assert.equal(cudaVisibleLimit(undefined, gpus), undefined);
  });
});

describe('NVIDIA_DRIVER_CAPABILITIES', () => {
  it('defaults to utility, expands all, refuses what it does not know', () => {
    assert.deepEqual([...parseCapabilities(undefined)], ['utility']);
    assert.deepEqual([...parseCapabilities(' ')], ['utility']);
    assert.deepEqual([...parseCapabilities('compute,utility')].sort(), ['compute', 'utility']);
    assert.equal(parseCapabilities('all').size, 7);
    assert.throws(() => parseCapabilities('compute,gpu'), (e: unknown) => e instanceof GantryError && /unknown NVIDIA driver capability "gpu"/.test(e.message) && /compute, compat32/.test(e.hint ?? ''));
  });
});

describe('NVIDIA_REQUIRE_*', () => {
  const facts = (driver: string, cuda: string) => ({ driver, cuda: async () => cuda });
  const env = (o: Record<string, string>) => new Map(Object.entries(o));

  it('compares versions numerically', () => {
    assert.equal(compareVersions('550.54.15', '550'), 1);
    assert.equal(compareVersions('12.4', '12.10'), -1);
    assert.equal(compareVersions('470', '470.0.0'), 0);
    assert.equal(cudaVersionText(12040), '12.4');
    assert.equal(cudaVersionText(11080), '11.8');
  });

  it('ORs space-separated alternatives and ANDs comma-separated conditions', async () => {
    const ngc = 'cuda>=12.4 brand=tesla,driver>=470,driver<471 brand=tesla,driver>=535,driver<536';
    await checkRequirements(env({ NVIDIA_REQUIRE_CUDA: ngc }), facts('550.54.15', '12.4'), 'image x');
    await checkRequirements(env({ NVIDIA_REQUIRE_CUDA: ngc }), facts('535.104.05', '12.2'), 'image x'); // the compat alternative
    await rejects(checkRequirements(env({ NVIDIA_REQUIRE_CUDA: ngc }), facts('545.23.08', '12.3'), 'image x'), /image x requires NVIDIA_REQUIRE_CUDA=cuda>=12.4 .*driver is 545.23.08, which supports CUDA 12.3 \| .*NVIDIA_DISABLE_REQUIRE=1/);
  });

  it('ANDs the variables, and NVIDIA_DISABLE_REQUIRE skips them', async () => {
    const both = { NVIDIA_REQUIRE_CUDA: 'cuda>=12.0', NVIDIA_REQUIRE_DRIVER: 'driver>=555' };
    await rejects(checkRequirements(env(both), facts('550.54.15', '12.4'), 'image x'), /NVIDIA_REQUIRE_DRIVER=driver>=555, but this host's NVIDIA driver is 550.54.15/);
    await checkRequirements(env({ ...both, NVIDIA_DISABLE_REQUIRE: '1' }), facts('550.54.15', '12.4'), 'image x');
    await rejects(checkRequirements(env({ ...both, NVIDIA_DISABLE_REQUIRE: 'false' }), facts('550.54.15', '12.4'), 'image x'), /driver>=555/);
    await rejects(checkRequirements(env({ NVIDIA_REQUIRE_CUDA: 'cuda~12' }), facts('550.54.15', '12.4'), 'image x'), /cannot read the condition "cuda~12"/);
  });

  it('asks libcuda only when a condition is about CUDA', async () => {
    let asked = 0;
    await checkRequirements(env({ NVIDIA_REQUIRE_DRIVER: 'driver>=500' }), { driver: '550.1', cuda: async () => `${++asked}` }, 'x');
    assert.equal(asked, 0);
  });
});

describe('the driver as /proc and ldconfig show it', () => {
  it('reads the version and GPU information files', () => {
    assert.equal(parseDriverVersion('NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\nGCC version:  gcc version 12.2.0\n'), '550.54.15');
    assert.equal(parseDriverVersion('NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  560.35.03  Release Build\n'), '560.35.03');
    assert.equal(parseDriverVersion('garbage'), undefined);
    const info = parseInformation('Model: \t\t NVIDIA H100 80GB HBM3\nGPU UUID: \t GPU-1111\nBus Location: \t 0000:17:00.0\nDevice Minor: \t 3\n');
    assert.equal(info.get('Model'), 'NVIDIA H100 80GB HBM3');
    assert.equal(info.get('Device Minor'), '3');
    assert.equal(info.get('Bus Location'), '0000:17:00.0');
  });

  it('reads ldconfig -p', () => {
    const entries = parseLdconfigOutput(
      [
        '4 libs found in cache `/etc/ld.so.cache\'',
        '\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1',
        '\tlibcuda.so.1 (libc6) => /usr/lib/i386-linux-gnu/libcuda.so.1',
        '\tlibcuda.so.1 (libc6,AArch64) => /usr/lib/aarch64-linux-gnu/libcuda.so.1',
        '\tlibz.so.1 (libc6,x86-64, hwcap: "x86-64-v3") => /usr/lib/glibc-hwcaps/x86-64-v3/libz.so.1',
      ].join('\n'),
    );
    assert.deepEqual(entries.map((e) => e.arch), ['x86-64', 'i386', 'aarch64', 'x86-64']);
    assert.equal(entries[0]!.path, '/usr/lib/x86_64-linux-gnu/libcuda.so.1');
  });

  it('resolves paths through symlinks without leaving the tree', async () => {
    const lookup = treeLookup({ '/lib': '->usr/lib', '/usr': 'dir', '/usr/lib': 'dir', '/usr/lib/x': 'file', '/up': '->../../..', '/abs': '->/usr/lib' });
    assert.deepEqual(await resolveInTree(lookup, '/lib/x'), { path: '/usr/lib/x', type: 'file' });
    assert.deepEqual(await resolveInTree(lookup, '/lib/firmware/nvidia'), { path: '/usr/lib/firmware/nvidia' });
    assert.deepEqual(await resolveInTree(lookup, '/up/usr/lib/x'), { path: '/usr/lib/x', type: 'file' });
    assert.deepEqual(await resolveInTree(lookup, '/abs/x'), { path: '/usr/lib/x', type: 'file' });
    assert.deepEqual(await resolveInTree(lookup, '/usr/lib/x/y'), { path: '/usr/lib/x/y' });
  });
});

describe('the GPU request', () => {
  const req = (over: Partial<Parameters<typeof gpuRequest>[0]>) => gpuRequest({ image: ['NVIDIA_VISIBLE_DEVICES=all', 'NVIDIA_DRIVER_CAPABILITIES=compute,utility', 'PATH=/bin'], environ: [], cli: [], env: {}, ...over });

  it('takes the image default, then environ.d, the host, -e, --gpus', () => {
    assert.deepEqual([...req({}).vars], [['NVIDIA_VISIBLE_DEVICES', 'all'], ['NVIDIA_DRIVER_CAPABILITIES', 'compute,utility']]);
    assert.equal(req({}).visibleFrom, 'image');
    assert.equal(req({ environ: [['NVIDIA_VISIBLE_DEVICES', '${host:GPUS}']], env: { GPUS: '1' } }).vars.get('NVIDIA_VISIBLE_DEVICES'), '1');
    const host = req({ host: { NVIDIA_VISIBLE_DEVICES: '0', HOME: '/h' } });
    assert.equal(host.vars.get('NVIDIA_VISIBLE_DEVICES'), '0');
    assert.equal(host.visibleFrom, 'host');
    assert.equal(host.vars.has('HOME'), false);
    assert.equal(req({ host: { NVIDIA_VISIBLE_DEVICES: '0' }, cli: ['NVIDIA_VISIBLE_DEVICES=none'] }).vars.get('NVIDIA_VISIBLE_DEVICES'), 'none');
    const gpusFlag = req({ host: { NVIDIA_VISIBLE_DEVICES: '0' }, cli: ['NVIDIA_VISIBLE_DEVICES=none'], gpus: '1' });
    assert.equal(gpusFlag.vars.get('NVIDIA_VISIBLE_DEVICES'), '1');
    assert.equal(gpusFlag.visibleFrom, 'option');
    assert.equal(req({ cli: ['NVIDIA_VISIBLE_DEVICES'], env: {} }).vars.has('NVIDIA_VISIBLE_DEVICES'), false, '-e KEY passes the host value: unset here');
  });
});

const driver: DriverInfo = { root: '/fake', version: '550.54.15', gpus, uvmLoaded: true };
const selection: DriverSelection = {
  driver,
  gpus: [gpus[1]!],
  capabilities: ['compute', 'utility'],
  devices: ['/dev/nvidiactl', '/dev/nvidia-uvm', '/dev/nvidia1'],
  libraries: [
    { path: '/usr/lib64/libcuda.so.550.54.15', links: ['libcuda.so.1', 'libcuda.so'], arch: 'x86-64' },
    { path: '/usr/lib/i386-linux-gnu/libcuda.so.550.54.15', links: ['libcuda.so.1'], arch: 'i386' },
  ],
  binaries: ['/usr/bin/nvidia-smi'],
  files: ['/run/nvidia-persistenced/socket'],
  dirs: ['/lib/firmware/nvidia/550.54.15'],
  warnings: [],
};

describe('placing the driver in an image', () => {
  it('puts libraries next to the image libc, through its merged-/usr links', async () => {
    const debian = treeLookup({ '/lib': '->usr/lib', '/usr': 'dir', '/usr/lib': 'dir', '/usr/lib/x86_64-linux-gnu': 'dir', '/usr/lib/x86_64-linux-gnu/libc.so.6': 'file', '/etc': 'dir', '/etc/ld.so.cache': 'file', '/usr/bin': 'dir' });
    const m = await placeInImage(selection, debian);
    assert.deepEqual(m.ldconfigDirs, ['/usr/lib/x86_64-linux-gnu', '/usr/lib/i386-linux-gnu']);
    const dst = (src: string) => m.binds.find((b) => b.src === src)?.dst;
    assert.equal(dst('/fake/usr/lib64/libcuda.so.550.54.15'), '/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15');
    assert.equal(dst('/fake/lib/firmware/nvidia/550.54.15'), '/usr/lib/firmware/nvidia/550.54.15', 'through /lib -> usr/lib');
    assert.equal(dst('/fake/dev/nvidia1'), '/dev/nvidia1');
    assert.deepEqual(m.links.filter((l) => l.path.startsWith('/usr/lib/x86_64')), [
      { target: 'libcuda.so.550.54.15', path: '/usr/lib/x86_64-linux-gnu/libcuda.so.1' },
      { target: 'libcuda.so.550.54.15', path: '/usr/lib/x86_64-linux-gnu/libcuda.so' },
    ]);
    assert.ok(m.binds.every((b) => b.flags.includes('nosuid')));
    assert.ok(m.binds.filter((b) => b.src.includes('/lib')).every((b) => b.flags.includes('ro')));
    assert.ok(!m.skeletonEntries.some((e) => e.path === '/etc/ld.so.cache'), 'the image has one');
    assert.ok(m.checks.includes('/fake/usr/lib64/libcuda.so.550.54.15'));
  });

  it('uses /usr/lib64 where the image does (RHEL), the host directory where it has no libc (busybox)', async () => {
    const rhel = treeLookup({ '/lib64': '->usr/lib64', '/usr': 'dir', '/usr/lib64': 'dir', '/usr/lib64/libc.so.6': 'file' });
    assert.equal((await placeInImage(selection, rhel)).ldconfigDirs[0], '/usr/lib64');
    const busybox = treeLookup({ '/bin': 'dir', '/etc': 'dir' });
    const m = await placeInImage(selection, busybox);
    assert.deepEqual(m.ldconfigDirs, ['/usr/lib64', '/usr/lib/i386-linux-gnu']);
    assert.ok(m.skeletonEntries.some((e) => e.path === '/etc/ld.so.cache' && e.kind === 'file'), 'a mount point for the new cache');
  });
});

describe('GPU ops in the plan', () => {
  const base: PlanInput = {
    layers: ['/s/a', '/s/b'],
    writable: { kind: 'ephemeral', scratch: '/k/scratch' },
    user: 'launcher',
    hostFiles: [],
    image: { Env: ['NVIDIA_VISIBLE_DEVICES=all'] },
    root: false,
    rw: true,
    pid: false,
    net: false,
    environ: [],
    env: ['NVIDIA_VISIBLE_DEVICES=0'],
    passEnv: ['NVIDIA_DRIVER_CAPABILITIES'],
    mounts: [{ kind: 'bind', src: '/data', dst: '/data', flags: [] }],
    hooks: ['/etc/gantry/hooks.d/10-x.sh'],
    mountHome: false,
    hostCwd: '/',
    gpu: {
      skeleton: '/k/gpu/abc',
      binds: [{ src: '/dev/nvidia0', dst: '/dev/nvidia0', flags: ['nosuid', 'create=file'] }],
      links: [{ target: 'libcuda.so.550.54.15', path: '/usr/lib/x86_64-linux-gnu/libcuda.so.1' }],
      ldconfig: '/sbin/ldconfig',
      ldconfigDirs: ['/usr/lib/x86_64-linux-gnu'],
      checks: ['/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15'],
      env: [['NVIDIA_VISIBLE_DEVICES', '1'], ['NVIDIA_DRIVER_CAPABILITIES', 'compute,utility']],
    },
  };
  const ops = buildPlan(base);
  const index = (pred: (o: Op) => boolean) => ops.findIndex(pred);

  it('lays the skeleton over the image and checks it and the driver files first', () => {
    const overlay = ops.find((o) => o.op === 'overlay') as Extract<Op, { op: 'overlay' }>;
    assert.deepEqual(overlay.lowers, ['/k/gpu/abc', '/s/b', '/s/a']);
    assert.deepEqual(ops.filter((o) => o.op === 'check').map((o) => (o as { path: string }).path), ['/s/a', '/s/b', '/k/gpu/abc', '/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15']);
    assert.match(compilePlan(ops), /\ncheck \/usr\/lib\/x86_64-linux-gnu\/libcuda.so.550.54.15 the%20NVIDIA%20driver%20changed/, 'a stale driver file says what to do');
  });

  it('binds, links and refreshes the cache after the user mounts and before the hooks', () => {
    const userMount = index((o) => o.op === 'bind' && o.src === '/data');
    const device = index((o) => o.op === 'bind' && o.src === '/dev/nvidia0');
    const link = index((o) => o.op === 'symlink');
    const ldconfig = index((o) => o.op === 'ldconfig-rw');
    const hook = index((o) => o.op === 'hook');
    assert.ok(userMount < device && device < link && link < ldconfig && ldconfig < hook && hook < index((o) => o.op === 'pivot'));
    assert.match(compilePlan(ops), /\nsymlink libcuda.so.550.54.15 \/usr\/lib\/x86_64-linux-gnu\/libcuda.so.1\n/);
    assert.match(compilePlan(ops), /\nldconfig-rw \/sbin\/ldconfig \/usr\/lib\/x86_64-linux-gnu\n/, 'a writable root keeps its own cache file');
    assert.match(compilePlan(buildPlan({ ...base, rw: false })), /\nldconfig \/sbin\/ldconfig \/usr\/lib\/x86_64-linux-gnu\n/);
  });

  it('tells the command what it got, over the image, -e and passed variables', () => {
    const env = Object.fromEntries(ops.filter((o) => o.op === 'env').map((o) => [(o as { key: string }).key, (o as { value: string }).value]));
    assert.equal(env.NVIDIA_VISIBLE_DEVICES, '1');
    assert.equal(env.NVIDIA_DRIVER_CAPABILITIES, 'compute,utility');
    assert.ok(!ops.some((o) => o.op === 'env-pass' && o.key === 'NVIDIA_DRIVER_CAPABILITIES'));
  });

  it('adds nothing without GPUs', () => {
    const plain = buildPlan({ ...base, gpu: undefined });
    assert.ok(!plain.some((o) => o.op === 'symlink' || o.op === 'ldconfig' || o.op === 'ldconfig-rw'));
    assert.deepEqual((plain.find((o) => o.op === 'overlay') as Extract<Op, { op: 'overlay' }>).lowers, ['/s/b', '/s/a']);
  });
});

describe('the ld cache file', () => {
  it('reads the cache glibc writes exactly as ldconfig -p does', async () => {
    const { execFileSync } = await import('node:child_process');
    const { readFileSync, existsSync } = await import('node:fs');
    const { parseLdCache, findLdconfig } = await import('../../src/gpu/ldcache.js');
    assert.ok(existsSync('/etc/ld.so.cache'), 'this test reads the host cache (/etc/ld.so.cache): run ldconfig');
    const mine = parseLdCache(readFileSync('/etc/ld.so.cache'));
    assert.ok(mine && mine.length > 10, 'the host cache is in the glibc 2.32+ format');
    const theirs = parseLdconfigOutput(execFileSync(await findLdconfig(), ['-p'], { encoding: 'utf8' }));
    const key = (e: { soname: string; arch: string; path: string }): string => `${e.soname} ${e.arch} ${e.path}`;
    // Entries of plain ELF libraries (not glibc's: ld-linux.so.2 of old loaders) are left out.
    assert.deepEqual(mine.map(key).sort(), theirs.filter((e) => e.arch !== 'elf').map(key).sort());
    assert.equal(parseLdCache(Buffer.from('not a cache')), undefined);
    assert.equal(parseLdCache(Buffer.from('glibc-ld.so.cache1.1')), undefined, 'truncated');
  });
});

describe('GPU command lines', () => {
  it('reads --gpus on start, and refuses bad gantry gpu arguments with the usage', async () => {
    const { parseStartArgs } = await import('../../src/cli/sandbox-commands.js');
    const { gpuCommand } = await import('../../src/cli/gpu-commands.js');
    assert.equal(parseStartArgs(['--gpus', '1', 'bb', 'true']).gpus, '1');
    assert.equal(parseStartArgs(['--gpus=all', 'bb']).gpus, 'all');
    assert.equal(parseStartArgs(['bb', '--gpus', '1']).gpus, undefined, 'after the target it belongs to the command');
    assert.throws(() => parseStartArgs(['--gpus']), (e: unknown) => e instanceof GantryError && e.code === 'USAGE' && /--gpus needs a value/.test(e.message));
    await rejects(gpuCommand(['--gpus']), /--gpus needs a value \| usage: gantry gpu/);
    await rejects(gpuCommand(['--bogus']), /unexpected argument "--bogus" \| usage: gantry gpu/);
    await rejects(gpuCommand(['--caps', 'compute,gpu']), /unknown NVIDIA driver capability "gpu"/);
    await rejects(gpuCommand(['--gpus', 'MIG-1'], { GANTRY_DRIVER_ROOT: '/nonexistent' }), /MIG devices/);
  });
});
