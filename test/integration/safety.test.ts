import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { lstat, readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { malicious, REFUSED_KINDS } from '../fixtures/images.js';
import { seedStorage, startRegistry, type Registry, type SeededStorage } from '../fixtures/registry.js';
import { gantry, identities, makeEnv, ok, snapshot, type Env } from './helpers.js';

/**
 * Layers crafted to escape: each is refused with an error naming the entry, nothing of it is
 * registered, and nothing is written outside the store. Device nodes are skipped and
 * setuid/setgid bits dropped.
 */
let seed: SeededStorage;
let registry: Registry;
const passwdBefore = await readFile('/etc/passwd', 'utf8');

before(async () => {
  seed = await seedStorage();
  registry = await startRegistry({ auth: 'none', storageDir: seed.dir });
});
after(async () => registry?.stop());

/** Where each kind would have written, had it escaped. */
function escapes(env: Env): string[] {
  return [
    '/tmp/gantry-evil',
    '/etc/gantry-evil',
    '/tmp/evil',
    join(dirname(env.store), 'escape'),
    join(env.store, 'escape'),
    join(env.store, 'layers', 'escape'),
    join(env.store, 'tmp', 'escape'),
    join(env.store, 'layers', 'sha256', 'escape'),
  ];
}

for (const identity of await identities()) {
  describe(`malicious layers as ${identity.label}`, () => {
    let env: Env;
    before(async () => {
      env = await makeEnv(identity, 'gantry-evil');
    });
    after(async () => env?.cleanup());

    for (const kind of REFUSED_KINDS) {
      it(`refuses ${kind}, naming the entry, and stores nothing`, async () => {
        const fixture = await malicious(kind);
        const r = await gantry(env, ['import', `${registry.host}/${seed.images[`evil-${kind}`]}`, '--name', `evil-${kind}`]);
        assert.equal(r.code, 6, r.stderr);
        // The refused entry is named (for symlink-lower, the first entry beneath the symlink).
        const named = kind === 'symlink-lower' ? 'up/tmp' : fixture.evilEntry;
        assert.ok(r.stderr.includes(named), `the error names ${named}: ${r.stderr}`);
        assert.match(r.stderr, /hint: /);
        assert.equal(existsSync(join(env.store, 'images', `evil-${kind}.json`)), false);
        for (const path of escapes(env)) assert.equal(existsSync(path), false, `${path} was written`);
        assert.equal(await readFile('/etc/passwd', 'utf8'), passwdBefore);
        // Work in progress is gone: tmp/ holds nothing but what a live import would.
        assert.deepEqual((await readdir(join(env.store, 'tmp'))).filter((n) => !n.endsWith('.pending.json')), []);
      });
    }

    it('skips device nodes and FIFOs', async () => {
      const fixture = await malicious('device');
      ok(await gantry(env, ['import', `${registry.host}/${seed.images['evil-device']}`, '--name', 'devices']));
      const dest = join(env.dir, 'devices');
      ok(await gantry(env, ['unpack', 'devices', dest]));
      for (const entry of fixture.specialEntries ?? []) assert.equal(existsSync(join(dest, entry)), false, `${entry} was created`);
      assert.equal(await readFile(join(dest, 'etc', 'ok'), 'utf8'), 'harmless entry before the bad one\n');
    });

    it('drops setuid and setgid bits', async () => {
      const fixture = await malicious('setuid');
      ok(await gantry(env, ['import', `${registry.host}/${seed.images['evil-setuid']}`, '--name', 'setuid']));
      const dest = join(env.dir, 'setuid');
      ok(await gantry(env, ['unpack', 'setuid', dest]));
      assert.ok((fixture.specialEntries ?? []).length >= 2);
      for (const entry of fixture.specialEntries ?? []) {
        const st = await lstat(join(dest, entry));
        assert.equal(st.mode & 0o6000, 0, `${entry} kept mode ${(st.mode & 0o7777).toString(8)}`);
        assert.equal(st.mode & 0o755, 0o755);
      }
      // Nor in the shared store, where the bits would matter most.
      for (const [path, e] of await snapshot(join(env.store, 'layers'))) assert.equal(e.mode & 0o6000, 0, path);
    });

    it('refuses to unpack into a non-empty directory and leaves it as it was', async () => {
      const dest = join(env.dir, 'setuid'); // filled by the previous test
      const before = await snapshot(dest);
      const r = await gantry(env, ['unpack', 'devices', dest]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /is not empty/);
      assert.deepEqual(await snapshot(dest), before);
    });
  });
}
