import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { cp, chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { repoRoot, run } from '../fixtures/proc.js';
import { identities } from './helpers.js';

/**
 * The native programs' own rule-by-rule tests, run as root and as the unprivileged user:
 * gantry-untar (native/test/untar_test.py, apply_test.py: tars in every format, long names, bad
 * checksums, truncation, every escape attempt, whiteouts, --apply against overlayfs and umoci) and
 * gantry-exec (native/test/exec_test.py: every plan op in real namespaces, also on the code paths
 * for kernels without openat2 and the new mount API).
 */
let copy: string;
before(async () => {
  // A world-readable copy: the unprivileged user may not be able to read the checkout.
  copy = await mkdtemp(join(tmpdir(), 'gantry-native-tests-'));
  await cp(join(repoRoot, 'native', 'test'), join(copy, 'test'), { recursive: true });
  for (const bin of ['gantry-untar', 'gantry-exec', 'gantry-cuda-version']) await cp(join(repoRoot, 'native', 'build', 'Release', bin), join(copy, bin));
  await run('chmod', ['-R', 'a+rX', copy]);
  await chmod(copy, 0o755);
});
after(async () => rm(copy, { recursive: true, force: true }));

for (const identity of await identities()) {
  describe(`native programs as ${identity.label}`, () => {
    const python = async (script: string, extra: string[], bin = 'gantry-untar'): Promise<string> => {
      // A short base path: the old-kernel overlay path must fit 47 long lowerdirs in one page.
      const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
      const argv = ['/usr/bin/python3', join(copy, 'test', script), '--bin', join(copy, bin), '--base', base, ...extra];
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

    for (const legacy of [false, true]) {
      it(`gantry-exec runs every plan op${legacy ? ' (old-kernel code paths)' : ''}`, async () => {
        const out = await python('exec_test.py', legacy ? ['--legacy'] : [], 'gantry-exec');
        assert.match(out, /^\d+ tests \(uid \d+(, legacy)?\): all passed/m);
        // Only the tests that need root to prepare files for another user may not run, and only as
        // that user: the root run covers them (it drives the launcher as gantry-test).
        const skipped = /^skipped: (.*)$/m.exec(out)?.[1];
        assert.equal(skipped, identity.user ? 'unwritable_image_dirs, join_other_user' : 'none', out);
      });
    }
  });
}
