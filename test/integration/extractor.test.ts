import assert from 'node:assert/strict';
import { cp, chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { repoRoot, run } from '../fixtures/proc.js';
import { identities } from './helpers.js';

/**
 * The native extractor's own rule-by-rule tests (native/test/*.py craft tars in every format:
 * ustar, GNU, PAX, v7; long names, bad checksums, truncation, every escape attempt, whiteouts,
 * --apply against overlayfs and umoci), run as root and as the unprivileged user.
 */
let copy: string;
before(async () => {
  // A world-readable copy: the unprivileged user may not be able to read the checkout.
  copy = await mkdtemp(join(tmpdir(), 'gantry-native-tests-'));
  await cp(join(repoRoot, 'native', 'test'), join(copy, 'test'), { recursive: true });
  await cp(join(repoRoot, 'native', 'build', 'Release', 'gantry-untar'), join(copy, 'gantry-untar'));
  await run('chmod', ['-R', 'a+rX', copy]);
  await chmod(copy, 0o755);
});
after(async () => rm(copy, { recursive: true, force: true }));

for (const identity of await identities()) {
  describe(`gantry-untar rules as ${identity.label}`, () => {
    const python = async (script: string, extra: string[]): Promise<string> => {
      const argv = ['/usr/bin/python3', join(copy, 'test', script), '--bin', join(copy, 'gantry-untar'), '--base', tmpdir(), ...extra];
      const r = identity.user ? await run('runuser', ['-u', identity.user.name, '--', ...argv], { allowFail: true }) : await run(argv[0]!, argv.slice(1), { allowFail: true });
      assert.equal(r.code, 0, `${script} failed:\n${r.stdout}\n${r.stderr}`);
      return r.stdout;
    };
    const userns = identity.user ? ['--userns'] : [];

    it('extracts every tar format and refuses every unsafe entry', async () => {
      const out = await python('untar_test.py', userns);
      const m = /(\d+)\/(\d+) passed/.exec(out);
      assert.ok(m && m[1] === m[2] && Number(m[2]) >= 20, out);
    });

    it('applies layers exactly as overlayfs merges them', async () => {
      const out = await python('apply_test.py', identity.user ? userns : ['--umoci', '--overlay']);
      assert.match(out, /^PASS/m);
    });
  });
}
