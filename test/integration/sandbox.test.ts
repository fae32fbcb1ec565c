import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { repoRoot } from '../fixtures/proc.js';
import { after, before, describe, it } from 'node:test';
import { seedStorage, startRegistry, type Registry, type SeededStorage } from '../fixtures/registry.js';
import { gantry, identities, makeEnv, ok, type Env, type Identity } from './helpers.js';

/**
 * Sandboxes in real namespaces, started through the installed `gantry` wrapper and the native
 * launcher, as root and as an unprivileged user.
 */
let seed: SeededStorage;
let registry: Registry;
before(async () => {
  seed = await seedStorage();
  registry = await startRegistry({ auth: 'none', storageDir: seed.dir });
});
after(async () => registry?.stop());

/** A fresh environment for one identity with the busybox fixture imported as `bb`. */
async function envWithBusybox(identity: Identity, prefix: string): Promise<Env> {
  const env = await makeEnv(identity, prefix);
  try {
    ok(await gantry(env, ['import', `${registry.host}/${seed.images['busybox-edge']}`, '--name', 'bb']));
    return env;
  } catch (err) {
    await env.cleanup();
    throw err;
  }
}

/** Pids whose mount namespace has something under `dir` mounted (other tests run beside us). */
async function processesUsing(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if ((await readFile(`/proc/${entry}/mountinfo`, 'utf8')).includes(dir)) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

/** Host mount points that involve Gantry's test directories (other programs may mount meanwhile). */
const mounts = async (): Promise<string[]> =>
  (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .filter((l) => l.includes('gantry'))
    .map((l) => l.split(' ').slice(4, 5).join(''))
    .sort();

for (const identity of await identities()) {
  describe(`sandboxes as ${identity.label}`, () => {
    let env: Env;
    let uid: number;
    const own = async (path: string): Promise<void> => {
      if (identity.user) await chown(path, identity.user.uid, identity.user.gid);
    };
    before(async () => {
      env = await envWithBusybox(identity, 'gantry-sandbox');
      uid = identity.user?.uid ?? 0;
    });
    after(async () => env?.cleanup());

    it('creates a sandbox instantly and lists it', async () => {
      assert.equal(ok(await gantry(env, ['create', '--name', 'box', 'bb'])).trim(), 'box');
      const list = JSON.parse(ok(await gantry(env, ['list', '--json']))) as { name: string; image: string; pids: number[] }[];
      assert.deepEqual(list.map((s) => [s.name, s.image, s.pids.length]), [['box', 'bb', 0]]);
      const again = await gantry(env, ['create', '--name', 'box', 'bb']);
      assert.equal(again.code, 2);
      assert.match(again.stderr, /already exists/);
    });

    it('starts a created sandbox without Node when nothing changed since create (the compiled plan)', async () => {
      // A Node that cannot start proves the wrapper went straight to the launcher.
      const noNode = { extraEnv: { NODE_OPTIONS: '--require=/nonexistent/gantry-no-node.js' } };
      assert.match(ok(await gantry(env, ['start', 'box', 'cat', '/etc/os-release'], noNode)), /ID=gantry-busybox/);
      assert.equal((await gantry(env, ['start', 'box', 'sh', '-c', 'exit 4'], noNode)).code, 4);
      // With an option, Node computes the plan (and here cannot start).
      assert.notEqual((await gantry(env, ['start', '--rw', 'box', 'true'], noNode)).code, 0);
    });

    it("shows the image's filesystem and the user's identity", async () => {
      assert.match(ok(await gantry(env, ['start', 'box', 'cat', '/etc/os-release'])), /ID=gantry-busybox/);
      assert.equal(ok(await gantry(env, ['start', 'box', 'id', '-u'])).trim(), String(uid));
      assert.equal(ok(await gantry(env, ['start', '--root', 'box', 'id', '-u'])).trim(), '0');
      const who = ok(await gantry(env, ['start', 'box', 'id', '-un'])).trim();
      assert.equal(who, identity.user?.name ?? 'root');
    });

    it('keeps the root read-only unless --rw; --rw writes persist in the sandbox, never in the store', async () => {
      const ro = await gantry(env, ['start', 'box', 'touch', '/ro-file']);
      assert.notEqual(ro.code, 0);
      assert.match(ro.stderr, /Read-only file system/);
      ok(await gantry(env, ['start', '--rw', 'box', 'sh', '-c', 'echo persisted > /etc/gantry-note']));
      assert.equal(ok(await gantry(env, ['start', 'box', 'cat', '/etc/gantry-note'])).trim(), 'persisted');
      for (const hex of await readdir(join(env.store, 'layers', 'sha256'))) {
        assert.equal(existsSync(join(env.store, 'layers', 'sha256', hex, 'root', 'etc', 'gantry-note')), false, 'the store is untouched');
      }
      const list = JSON.parse(ok(await gantry(env, ['list', '--json']))) as { upperSize: number }[];
      assert.ok(list[0]!.upperSize > 0);
    });

    it('starts an image directly on a throwaway layer', async () => {
      ok(await gantry(env, ['start', '--rw', 'bb', 'sh', '-c', 'echo x > /thrown-away && cat /thrown-away']));
      const r = await gantry(env, ['start', 'bb', 'cat', '/thrown-away']);
      assert.notEqual(r.code, 0);
    });

    it('lets --root --rw do what package managers do (chown as fake root)', async () => {
      ok(await gantry(env, ['start', '--root', '--rw', 'box', 'sh', '-c', 'touch /owned && chown 123:456 /owned && chown -R 7:7 /etc/gantry-note && mkdir -p /opt/pkg && echo ok']));
      assert.equal(ok(await gantry(env, ['start', 'box', 'ls', '/owned'])).trim(), '/owned');
    });

    it('sets the environment: image Env, then environ.d, then --env', async () => {
      await mkdir(join(env.config, 'environ.d'), { recursive: true });
      await writeFile(join(env.config, 'environ.d', '50-test.env'), 'GANTRY_FIXTURE=from-environ\nFROM_ENVIRON=yes\nHOST_HOME=${HOME}\n');
      await own(join(env.config, 'environ.d'));
      await own(join(env.config, 'environ.d', '50-test.env'));
      const out = ok(await gantry(env, ['start', '-e', 'FROM_CLI=1', '-e', 'FROM_ENVIRON=overridden', 'box', 'env']));
      const vars = Object.fromEntries(out.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
      assert.equal(vars.GANTRY_FIXTURE, 'from-environ');
      assert.equal(vars.FROM_ENVIRON, 'overridden');
      assert.equal(vars.FROM_CLI, '1');
      assert.equal(vars.HOST_HOME, env.home);
      assert.equal(vars.PATH, '/bin');
      assert.equal(vars.USER, identity.user?.name ?? 'root');
      assert.equal(ok(await gantry(env, ['start', '-e', 'PASSED', 'box', 'sh', '-c', 'echo $PASSED'], { extraEnv: { PASSED: 'from-host' } })).trim(), 'from-host');
    });

    it('mounts what the user asks: --mount, mounts.d, x-create, nofail, ro', async () => {
      const data = join(env.dir, 'data');
      await mkdir(data, { recursive: true });
      await writeFile(join(data, 'input.txt'), 'mounted data\n');
      await own(data);
      await own(join(data, 'input.txt'));
      assert.equal(ok(await gantry(env, ['start', '-m', `${data}:/mnt/data:ro,x-create=dir`, 'box', 'cat', '/mnt/data/input.txt'])).trim(), 'mounted data');
      const ro = await gantry(env, ['start', '-m', `${data}:/mnt/data:ro,x-create=dir`, 'box', 'touch', '/mnt/data/new']);
      assert.notEqual(ro.code, 0);
      ok(await gantry(env, ['start', '-m', `${data}:/mnt/data:x-create=dir`, 'box', 'touch', '/mnt/data/new']));
      assert.ok(existsSync(join(data, 'new')), 'a rw mount writes through to the host');
      await mkdir(join(env.config, 'mounts.d'), { recursive: true });
      await writeFile(join(env.config, 'mounts.d', '10-test.fstab'), `${data} /srv/data none x-create=dir,bind\n/nonexistent/gantry /srv/missing none x-create=dir,nofail\n`);
      await own(join(env.config, 'mounts.d'));
      await own(join(env.config, 'mounts.d', '10-test.fstab'));
      assert.equal(ok(await gantry(env, ['start', 'box', 'cat', '/srv/data/input.txt'])).trim(), 'mounted data');
      const missing = await gantry(env, ['start', '-m', '/nonexistent/gantry:/x:x-create=dir', 'box', 'true']);
      assert.equal(missing.code, 125);
      assert.match(missing.stderr, /\/nonexistent\/gantry.*does not exist/);
    });

    it('works in the current directory when it is mounted', async () => {
      const here = join(env.dir, 'data');
      assert.equal(ok(await gantry(env, ['start', '-m', `${here}:${here}`, 'box', 'pwd'], { cwd: here })).trim(), here);
      assert.equal(ok(await gantry(env, ['start', 'box', 'pwd'], { cwd: here })).trim(), '/');
    });

    it('passes exit codes, stdin and stdout through; names a missing command', async () => {
      assert.equal((await gantry(env, ['start', 'box', 'sh', '-c', 'exit 3'])).code, 3);
      assert.equal(ok(await gantry(env, ['start', 'box', 'sh', '-c', 'read line; echo "got $line"; cat'], { input: 'piped text\nmore\n' })), 'got piped text\nmore\n');
      const r = await gantry(env, ['start', 'box', 'no-such-command']);
      assert.equal(r.code, 127);
      assert.match(r.stderr, /no-such-command.*not found in the image/);
    });

    it('gives /proc, /dev, /tmp and the host files', async () => {
      const out = ok(await gantry(env, ['start', 'box', 'sh', '-c', 'ls /proc/self/fd >/dev/null && echo x > /dev/null && ls -d /dev/pts /dev/shm && touch /tmp/t && cat /etc/hosts >/dev/null && echo fine']));
      assert.match(out, /\/dev\/pts\n\/dev\/shm\nfine/);
    });

    it('leaves no mounts or processes after 50 starts, and runs 20 at once', async () => {
      const before = await mounts();
      for (let i = 0; i < 50; i++) ok(await gantry(env, ['start', 'box', 'true']));
      const parallel = await Promise.all(Array.from({ length: 20 }, () => gantry(env, ['start', 'bb', 'cat', '/etc/os-release'])));
      for (const r of parallel) assert.match(ok(r), /gantry-busybox/);
      assert.deepEqual(await mounts(), before);
      assert.deepEqual(await processesUsing(env.dir), [], 'no process still has a mount from this store');
    });

    it('runs with its own pid namespace and network namespace on request', async () => {
      assert.equal(ok(await gantry(env, ['start', '--pid', 'box', 'sh', '-c', 'echo $$'])).trim(), '2');
      const links = ok(await gantry(env, ['start', '--net', 'box', 'ls', '/sys/class/net']));
      assert.ok(links.split(/\s+/).includes('lo'));
    });

    it('refuses bad input clearly', async () => {
      const unknown = await gantry(env, ['start', 'nosuch', 'true']);
      assert.equal(unknown.code, 3);
      assert.match(unknown.stderr, /no sandbox or image named "nosuch"/);
      const badMount = await gantry(env, ['start', '-m', '/a:relative', 'box', 'true']);
      assert.equal(badMount.code, 2);
      const badEnv = await gantry(env, ['start', '-e', '1X=2', 'box', 'true']);
      assert.equal(badEnv.code, 2);
      await mkdir(join(env.config, 'environ.d', 'broken.env'), { recursive: true });
      const badConfig = await gantry(env, ['start', 'box', 'true']);
      assert.equal(badConfig.code, 6);
      assert.match(badConfig.stderr, /cannot read the configuration .*broken\.env/);
      await chmod(join(env.config, 'environ.d', 'broken.env'), 0o755);
      await rm(join(env.config, 'environ.d', 'broken.env'), { recursive: true });
    });

    it('removes sandboxes, refusing a running one unless forced', async () => {
      ok(await gantry(env, ['create', '--name', 'busy', 'bb']));
      const running = gantry(env, ['start', 'busy', 'sleep', '47']);
      let pids: number[] = [];
      for (let i = 0; i < 100 && !pids.length; i++) {
        await new Promise((r) => setTimeout(r, 100));
        pids = (JSON.parse(ok(await gantry(env, ['list', '--json']))) as { name: string; pids: number[] }[]).find((s) => s.name === 'busy')!.pids;
      }
      assert.ok(pids.length > 0, 'list shows the running pid');
      assert.match(ok(await gantry(env, ['exec', String(pids[0]), 'cat', '/etc/os-release'])), /gantry-busybox/);
      const refused = await gantry(env, ['remove', 'busy']);
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, /is running/);
      ok(await gantry(env, ['remove', '-f', 'busy']));
      assert.notEqual((await running).code, 0);
      ok(await gantry(env, ['remove', 'box']));
      assert.deepEqual(JSON.parse(ok(await gantry(env, ['list', '--json']))), []);
    });
  });
}

describe('terminal and signals', () => {
  it('gives the command the terminal', async () => {
    const env = await envWithBusybox((await identities())[0]!, 'gantry-tty');
    try {
      // util-linux script(1) runs the command on a new pseudo-terminal.
      const r = await new Promise<{ code: number; out: string }>((resolve) => {
        const child = spawn('script', ['-qec', `${join(repoRoot, 'bin', 'gantry')} start bb sh -c 'test -t 0 && test -t 1 && echo stdin-and-stdout-are-terminals'`, '/dev/null'], {
          env: { PATH: `${dirname(process.execPath)}:${process.env.PATH}`, GANTRY_STORE: env.store, GANTRY_DATA: join(env.dir, 'data'), GANTRY_CONFIG: env.config, HOME: env.home, TERM: 'xterm' },
          stdio: ['pipe', 'pipe', 'inherit'],
        });
        let out = '';
        child.stdout.on('data', (c: Buffer) => (out += c.toString()));
        child.stdin.end();
        child.on('close', (code) => resolve({ code: code ?? 1, out }));
      });
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /stdin-and-stdout-are-terminals/);
    } finally {
      await env.cleanup();
    }
  });

  it('leaves nothing behind after a kill -9 of the command', async () => {
    const env = await envWithBusybox((await identities())[1]!, 'gantry-kill9');
    try {
      ok(await gantry(env, ['create', '--name', 'victim', 'bb']));
      const before = await mounts();
      const running = gantry(env, ['start', 'victim', 'sleep', '47']);
      let pids: number[] = [];
      for (let i = 0; i < 100 && !pids.length; i++) {
        await new Promise((r) => setTimeout(r, 100));
        pids = (JSON.parse(ok(await gantry(env, ['list', '--json']))) as { pids: number[] }[])[0]!.pids;
      }
      assert.equal(pids.length, 1);
      process.kill(pids[0]!, 'SIGKILL');
      assert.notEqual((await running).code, 0);
      assert.deepEqual((JSON.parse(ok(await gantry(env, ['list', '--json']))) as { pids: number[] }[])[0]!.pids, []);
      assert.deepEqual(await mounts(), before);
      ok(await gantry(env, ['remove', 'victim']));
    } finally {
      await env.cleanup();
    }
  });

  it('SIGTERM and SIGINT reach the command (the launcher execs into it)', async () => {
    const env = await envWithBusybox((await identities())[0]!, 'gantry-signals');
    try {
      for (const sig of ['SIGTERM', 'SIGINT'] as const) {
        const r = await gantry(env, ['start', 'bb', 'sh', '-c', `trap 'echo got ${sig.slice(3)}; exit 7' ${sig.slice(3)}; echo ready; while :; do sleep 0.1; done`], {
          onSpawn: (pid, stdout) => {
            void stdout;
            setTimeout(() => process.kill(pid, sig), 1500);
          },
        });
        assert.equal(r.code, 7, r.stderr);
        assert.match(r.stdout, new RegExp(`got ${sig.slice(3)}`));
      }
    } finally {
      await env.cleanup();
    }
  });
});

describe('kernels without overlayfs in a user namespace (forced with GANTRY_OVERLAY=0)', () => {
  it('creates a flattened copy, says so, and runs it like any sandbox', async () => {
    const env = await envWithBusybox((await identities())[1]!, 'gantry-flat');
    const flat = { extraEnv: { GANTRY_OVERLAY: '0' } };
    try {
      const created = await gantry(env, ['create', '--name', 'flat', 'bb'], flat);
      ok(created);
      assert.match(created.stderr, /cannot mount overlayfs in a user namespace: sandboxes get a flattened copy/);
      assert.match(ok(await gantry(env, ['start', 'flat', 'cat', '/etc/os-release'], flat)), /ID=gantry-busybox/);
      assert.notEqual((await gantry(env, ['start', 'flat', 'touch', '/x'], flat)).code, 0, 'read-only without --rw');
      ok(await gantry(env, ['start', '--rw', 'flat', 'sh', '-c', 'echo kept > /etc/kept'], flat));
      assert.equal(ok(await gantry(env, ['start', 'flat', 'cat', '/etc/kept'], flat)).trim(), 'kept');
      const direct = await gantry(env, ['start', 'bb', 'true'], flat);
      assert.equal(direct.code, 8);
      assert.match(direct.stderr, /create a sandbox \(a flattened copy\)/);
      ok(await gantry(env, ['remove', 'flat']));
    } finally {
      await env.cleanup();
    }
  });
});

describe('hooks.d', () => {
  it("runs hooks before the command; they add mounts and environment (enroot's contract)", async () => {
    const env = await envWithBusybox((await identities())[1]!, 'gantry-hooks');
    try {
      const shared = join(env.dir, 'shared');
      await mkdir(join(env.config, 'hooks.d'), { recursive: true });
      await mkdir(shared);
      await writeFile(join(shared, 'hello'), 'from the host\n');
      await writeFile(
        join(env.config, 'hooks.d', '10-test.sh'),
        [
          'test -d "$GANTRY_ROOTFS/etc" || exit 9',
          'kill -0 "$GANTRY_PID" || exit 10',
          'echo "HOOKED=yes" >> "$GANTRY_ENVIRON"',
          `echo "${shared} /mnt/shared none x-create=dir,ro" >> "$GANTRY_MOUNTS"`,
          '',
        ].join('\n'),
      );
      for (const p of [join(env.config, 'hooks.d'), join(env.config, 'hooks.d', '10-test.sh'), shared, join(shared, 'hello')]) {
        await chown(p, (await identities())[1]!.user!.uid, (await identities())[1]!.user!.gid);
      }
      const out = ok(await gantry(env, ['start', 'bb', 'sh', '-c', 'echo $HOOKED; cat /mnt/shared/hello']));
      assert.equal(out, 'yes\nfrom the host\n');
      await writeFile(join(env.config, 'hooks.d', '20-fail.sh'), 'exit 3\n');
      const failed = await gantry(env, ['start', 'bb', 'true']);
      assert.equal(failed.code, 125);
      assert.match(failed.stderr, /hook .*20-fail\.sh: exited with status 3/);
    } finally {
      await env.cleanup();
    }
  });
});
