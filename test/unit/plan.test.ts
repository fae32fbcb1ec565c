import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseStartArgs } from '../../src/cli/sandbox-commands.js';
import { GantryError } from '../../src/errors.js';
import { hostVariables, parseEnvFile, parseFstab, parseMountOption } from '../../src/sandbox/config.js';
import { buildPlan, compilePlan, encodeField, type Op, type PlanInput } from '../../src/sandbox/plan.js';
import { identityFiles } from '../../src/sandbox/sandboxes.js';
import { overlayInUserns } from '../../src/sandbox/launch.js';

const base: PlanInput = {
  layers: ['/s/layers/sha256/aa/root', '/s/layers/sha256/bb/root'],
  writable: { kind: 'named', upper: '/d/sb/x/upper', work: '/d/sb/x/work', root: '/d/sb/x/root' },
  user: { uid: 1000, gid: 1000, name: 'ada', home: '/home/ada' },
  identityFiles: { passwd: '/d/identity/p', group: '/d/identity/g' },
  hostFiles: ['/etc/hosts', '/etc/resolv.conf', '/etc/hostname'],
  image: { Env: ['PATH=/opt/bin:/bin', 'LANG=C.UTF-8', 'X=image'], WorkingDir: '/work', Cmd: ['python3'] },
  root: false,
  rw: false,
  pid: false,
  net: false,
  environ: [['X', 'environ.d'], ['Y', '${host:HOME}']],
  env: ['X=cli', 'TOKEN'],
  mounts: [],
  hooks: [],
  mountHome: false,
  hostCwd: '/somewhere',
};

const find = <K extends Op['op']>(ops: Op[], op: K): Extract<Op, { op: K }>[] => ops.filter((o): o is Extract<Op, { op: K }> => o.op === op);
const envOf = (ops: Op[]): Record<string, string> => Object.fromEntries(find(ops, 'env').map((e) => [e.key, e.value]));

describe('buildPlan', () => {
  it('stacks the layers top-most first under the sandbox writable layer, read-only by default', () => {
    const ops = buildPlan(base);
    assert.deepEqual(find(ops, 'overlay'), [{ op: 'overlay', target: '/d/sb/x/root', upper: '/d/sb/x/upper', work: '/d/sb/x/work', lowers: ['/s/layers/sha256/bb/root', '/s/layers/sha256/aa/root'] }]);
    assert.deepEqual(find(ops, 'check').map((c) => c.path), base.layers);
    assert.ok(ops.findIndex((o) => o.op === 'remount-ro') > ops.findIndex((o) => o.op === 'pivot'));
    assert.equal(find(buildPlan({ ...base, rw: true }), 'remount-ro').length, 0);
    assert.deepEqual(ops.at(-1), { op: 'exec' });
  });

  it('maps the user to themselves, or to root with --root (and fakes chown)', () => {
    assert.deepEqual(find(buildPlan(base), 'userns'), [{ op: 'userns', uid: 1000, gid: 1000 }]);
    const root = buildPlan({ ...base, root: true });
    assert.deepEqual(find(root, 'userns'), [{ op: 'userns', uid: 0, gid: 0 }]);
    assert.equal(find(root, 'fakeroot').length, 1);
    assert.equal(envOf(root).HOME, '/root');
    assert.equal(envOf(root).USER, 'root');
    assert.equal(find(buildPlan(base), 'fakeroot').length, 0);
  });

  it('orders the environment: image, environ.d, --env; HOME, USER, TERM, PATH set', () => {
    const env = envOf(buildPlan(base));
    assert.equal(env.X, 'cli');
    assert.equal(env.Y, '${host:HOME}');
    assert.equal(env.TOKEN, undefined);
    assert.deepEqual(find(buildPlan(base), 'env-pass').map((e) => e.key), ['TERM', 'TOKEN'], '-e KEY passes the host value only when set');
    assert.equal(env.PATH, '/opt/bin:/bin');
    assert.equal(env.LANG, 'C.UTF-8');
    assert.equal(env.HOME, '/home/ada');
    assert.equal(env.USER, 'ada');
    assert.ok(find(buildPlan(base), 'env-pass').some((e) => e.key === 'TERM'), 'TERM comes from whoever starts it');
    assert.match(envOf(buildPlan({ ...base, image: {} })).PATH!, /\/usr\/bin/);
  });

  it('uses a tmpfs writable layer for an image started directly', () => {
    const ops = buildPlan({ ...base, writable: { kind: 'ephemeral', scratch: '/d/scratch' } });
    assert.deepEqual(find(ops, 'tmpfs'), [{ op: 'tmpfs', hostDir: '/d/scratch', options: 'mode=0755' }]);
    assert.equal(find(ops, 'overlay')[0]!.upper, '/d/scratch/upper');
    assert.deepEqual(find(ops, 'rootfs'), [{ op: 'rootfs', hostDir: '/d/scratch/root' }]);
  });

  it('mounts the system paths, identity files, home and the user mounts in order', () => {
    const ops = buildPlan({ ...base, mountHome: true, mounts: [{ kind: 'bind', src: '/data', dst: '/data', flags: ['ro'] }, { kind: 'tmpfs', dst: '/scratch', options: 'size=1g' }] });
    const binds = find(ops, 'bind').map((b) => `${b.src}>${b.dst}:${b.flags.join(',')}`);
    assert.deepEqual(binds, [
      '/etc/hosts>/etc/hosts:ro,nofail,create=file',
      '/etc/resolv.conf>/etc/resolv.conf:ro,nofail,create=file',
      '/etc/hostname>/etc/hostname:ro,nofail,create=file',
      '/d/identity/p>/etc/passwd:ro,create=file',
      '/d/identity/g>/etc/group:ro,create=file',
      '/home/ada>/home/ada:rbind,create=dir',
      '/data>/data:ro',
    ]);
    assert.deepEqual(find(ops, 'tmpfs-in').map((t) => t.dst), ['/tmp', '/scratch']);
    assert.deepEqual(['proc', 'sys', 'dev'].map((o) => ops.some((x) => x.op === o)), [true, true, true]);
  });

  it('runs hooks.d scripts after the mounts, before pivot', () => {
    const ops = buildPlan({ ...base, hooks: ['/etc/gantry/hooks.d/10-a.sh', '/c/hooks.d/20-b.sh'] });
    const at = (o: string): number => ops.findIndex((x) => x.op === o);
    assert.deepEqual(find(ops, 'hook').map((h) => h.script), ['/etc/gantry/hooks.d/10-a.sh', '/c/hooks.d/20-b.sh']);
    assert.ok(at('hook') > ops.map((x) => x.op).lastIndexOf('bind') && at('hook') < at('pivot'));
  });

  it('chooses the working directory: the host cwd when mounted, else the image WorkingDir, else /', () => {
    assert.deepEqual(find(buildPlan(base), 'cwd'), [{ op: 'cwd', dir: '/work' }]);
    assert.deepEqual(find(buildPlan({ ...base, image: {} }), 'cwd'), [{ op: 'cwd', dir: '/' }]);
    assert.deepEqual(find(buildPlan({ ...base, mountHome: true, hostCwd: '/home/ada/project' }), 'cwd'), [{ op: 'cwd', dir: '/home/ada/project' }]);
    assert.deepEqual(find(buildPlan({ ...base, mountHome: true, hostCwd: '/home/adam' }), 'cwd'), [{ op: 'cwd', dir: '/work' }]);
  });

  it('runs Entrypoint + Cmd by default, the given command otherwise, /bin/sh as a last resort', () => {
    assert.deepEqual(find(buildPlan({ ...base, image: { Entrypoint: ['/init'], Cmd: ['-v'] } }), 'argv')[0]!.args, ['/init', '-v']);
    assert.deepEqual(find(buildPlan({ ...base, command: ['ls', '-l'] }), 'argv')[0]!.args, ['ls', '-l']);
    assert.deepEqual(find(buildPlan({ ...base, image: {} }), 'argv')[0]!.args, ['/bin/sh']);
  });

  it('runs a flattened copy where overlayfs is unavailable', () => {
    const ops = buildPlan({ ...base, writable: { kind: 'flat', root: '/d/sb/x/rootfs' } });
    assert.equal(find(ops, 'overlay').length, 0);
    assert.deepEqual(find(ops, 'check').map((c) => c.path), ['/d/sb/x/rootfs']);
    assert.deepEqual(find(ops, 'bind')[0], { op: 'bind', src: '/d/sb/x/rootfs', dst: '/', flags: [] });
    assert.equal(overlayInUserns({}, '5.10.0-28-amd64'), false);
    assert.equal(overlayInUserns({}, '5.11.0'), true);
    assert.equal(overlayInUserns({}, '6.18.44-fc'), true);
    assert.equal(overlayInUserns({ GANTRY_OVERLAY: '0' }, '6.18.44'), false);
  });

  it('makes one plan for every user when the user is whoever launches it (system kernels)', () => {
    const ops = buildPlan({ ...base, user: 'launcher', mountHome: true, launchCwd: true, passEnv: ['JPY_PARENT_PID'] });
    assert.deepEqual(find(ops, 'userns'), [{ op: 'userns', uid: 'self', gid: 'self' }]);
    assert.deepEqual(find(ops, 'env-pass').map((e) => e.key).sort(), ['HOME', 'JPY_PARENT_PID', 'LOGNAME', 'TERM', 'TOKEN', 'USER']);
    const binds = find(ops, 'bind').map((b) => `${b.src}>${b.dst}`);
    assert.ok(binds.includes('${host:HOME}>${host:HOME}') && binds.includes('${cwd}>${cwd}'), binds.join(' '));
    assert.deepEqual(find(ops, 'cwd'), [{ op: 'cwd', dir: '${cwd}' }]);
    assert.match(compilePlan(ops), /^userns self self$/m);
  });

  it('adds pid and network namespaces on request', () => {
    const ops = buildPlan({ ...base, pid: true, net: true });
    assert.deepEqual(ops.slice(2, 6).map((o) => o.op), ['userns', 'mountns', 'netns', 'pidns']);
  });
});

describe('compilePlan', () => {
  it('writes one percent-encoded op per line', () => {
    const text = compilePlan([{ op: 'env', key: 'A', value: 'x y%z\n' }, { op: 'argv', args: ['sh', '-c', ''] }, { op: 'exec' }]);
    assert.equal(text, 'gantry-plan 1\nenv A x%20y%25z%0A\nargv sh -c ""\nexec\n');
    assert.equal(encodeField('ü'), '%C3%BC');
    assert.equal(encodeField('/a/b-c_d.e:f=g+h,i@j~k^l'), '/a/b-c_d.e:f=g+h,i@j~k^l');
    assert.match(compilePlan(buildPlan(base)), /^gantry-plan 1\ncheck \/s\/layers/);
  });
});

describe('sandbox configuration', () => {
  it('parses environ.d files', () => {
    assert.deepEqual(parseEnvFile('# c\nA=1\nB="two words"\nC=${HOME}/x\nD\n', 'f'), [['A', '1'], ['B', 'two words'], ['C', '${host:HOME}/x'], ['D', '${host:D}']]);
    assert.throws(() => parseEnvFile('1BAD=x', 'f.env'), (e: unknown) => e instanceof GantryError && /f\.env:1/.test(e.message));
    assert.equal(hostVariables('$A-${B}'), '${host:A}-${host:B}');
  });

  it('parses mounts.d fstab lines with enroot extensions', () => {
    assert.deepEqual(parseFstab('/data /data none x-create=dir,bind,ro,nofail\n/s /m rbind\ntmpfs /scratch tmpfs size=1g,x-create=dir\n$D /d none\n', 'f', { D: '/from-env' }), [
      { kind: 'bind', src: '/data', dst: '/data', flags: ['create=dir', 'ro', 'nofail'] },
      { kind: 'bind', src: '/s', dst: '/m', flags: ['rbind'] },
      { kind: 'tmpfs', dst: '/scratch', options: 'size=1g' },
      { kind: 'bind', src: '/from-env', dst: '/d', flags: [] },
    ]);
    for (const bad of ['/a', '/a relative', '/a /b nfs', '/a /b none bogus', 'rel /b', '/a /../b']) {
      assert.throws(() => parseFstab(bad, 'm.fstab', {}), (e: unknown) => e instanceof GantryError && /m\.fstab:1/.test(e.message), bad);
    }
  });

  it('parses --mount SRC[:DST[:OPTS]]', () => {
    assert.deepEqual(parseMountOption('/data:/mnt:ro,x-create=dir'), { kind: 'bind', src: '/data', dst: '/mnt', flags: ['ro', 'create=dir'] });
    assert.deepEqual(parseMountOption('rel', '/here'), { kind: 'bind', src: '/here/rel', dst: '/here/rel', flags: ['create=auto'] }, 'the mount point is created when missing');
    for (const bad of ['/a:b', '/a:/b:wat', '/a:/b:ro:x', ':/b']) assert.throws(() => parseMountOption(bad), GantryError, bad);
  });

  it('parses start arguments, stopping at the command', () => {
    const req = parseStartArgs(['--root', '--rw', '-e', 'A=1', '--env=B', '-m', '/d:/d', 'img', 'ls', '-la', '--root'], '/');
    assert.deepEqual({ ...req, mounts: req.mounts.length }, { target: 'img', root: true, rw: true, pid: false, net: false, env: ['A=1', 'B'], mounts: 1, command: ['ls', '-la', '--root'] });
    assert.throws(() => parseStartArgs(['--bogus', 'img']), /unknown option "--bogus"/);
    assert.throws(() => parseStartArgs(['-e']), /needs a value/);
    assert.throws(() => parseStartArgs(['-e', '=x', 'img']), /invalid --env/);
    assert.throws(() => parseStartArgs([]), /missing the sandbox or image/);
  });

  it('gives the user an identity inside', () => {
    const who = { uid: 1000, gid: 1000, name: 'ada', group: 'ada', home: '/home/ada' };
    const files = identityFiles('root:x:0:0:root:/root:/bin/sh\nold:x:1000:1000::/:/bin/false\n', 'root:x:0:\n', who, false);
    assert.equal(files.passwd, 'root:x:0:0:root:/root:/bin/sh\nada:x:1000:1000:ada:/home/ada:/bin/sh\n');
    assert.equal(files.group, 'root:x:0:\nada:x:1000:\n');
    assert.equal(identityFiles(undefined, undefined, who, true).passwd, 'root:x:0:0:root:/root:/bin/sh\n');
  });
});
