import assert from 'node:assert/strict';
import { readdir, readFile, lstat, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { busyboxEdge, busyboxEdgeGzip, debianIpykernel, multiArch } from '../fixtures/images.js';
import { seedStorage, startRegistry, type Registry, type SeededStorage } from '../fixtures/registry.js';
import { diffTrees, gantry, identities, makeEnv, ok, snapshot, umociRootfs, type Env, type TreeEntry } from './helpers.js';

/**
 * Importing real images from a real registry (no auth), as root and as an unprivileged user, and
 * checking the unpacked result against umoci's unpack of the same image.
 */
let seed: SeededStorage;
let registry: Registry;

before(async () => {
  seed = await seedStorage();
  registry = await startRegistry({ auth: 'none', storageDir: seed.dir });
});
after(async () => registry?.stop());

const ref = (key: string): string => `${registry.host}/${seed.images[key]}`;

for (const identity of await identities()) {
  describe(`import and unpack as ${identity.label}`, () => {
    let env: Env;
    before(async () => {
      env = await makeEnv(identity);
    });
    after(async () => env?.cleanup());

    it('imports the busybox edge-case image (OCI, zstd layer) and unpacks exactly what umoci unpacks', async () => {
      const out = ok(await gantry(env, ['import', ref('busybox-edge-oci'), '--name', 'edge', '--json']));
      const summary = JSON.parse(out) as { name: string; layers: number; digest: string; platform: string };
      assert.equal(summary.name, 'edge');
      assert.equal(summary.layers, 3);
      assert.equal(summary.digest, seed.digests['busybox-edge-oci']);
      assert.equal(summary.platform, 'linux/amd64');

      const dest = join(env.dir, 'edge-rootfs');
      ok(await gantry(env, ['unpack', 'edge', dest]));
      const fixture = await busyboxEdge();
      // umoci cannot read zstd layers: compare with its unpack of the same image with layer 3 in gzip.
      const gzip = await busyboxEdgeGzip();
      const expected = await umociReference(gzip.dir, gzip.ref);
      const got = await snapshot(dest);
      // The one file that says which compression layer 3 used.
      assert.equal(await readFile(join(dest, 'etc', 'gantry-layer3'), 'utf8'), 'layer 3 (zstd)\n');
      expected.set('etc/gantry-layer3', got.get('etc/gantry-layer3')!);
      // umoci keeps setuid/setgid bits; Gantry drops them by design (checked separately below).
      assert.deepEqual(diffTrees(got, expected, 0o1777), []);
      for (const [path, entry] of got) assert.equal(entry.mode & 0o6000, 0, `${path} kept a setuid/setgid bit`);
      for (const path of BUSYBOX_SPECIAL) assert.equal(got.has(path), false, `${path} (a device or FIFO) was skipped`);
      // What the layers did: a whiteout, an opaque dir, a long name, the symlinked applets.
      assert.equal((await readFile(join(dest, 'etc', 'os-release'), 'utf8')).includes('ID=gantry-busybox'), true);
      assert.ok(got.has(fixture.longNamePath), 'the PAX long name is unpacked');
      assert.ok(got.has(fixture.gnuLongNamePath), 'the GNU long name is unpacked');
      assert.ok(got.has(fixture.unicodePath), 'the unicode name is unpacked');
      for (const applet of fixture.symlinkApplets) assert.equal(got.get(`bin/${applet}`)?.type, 'symlink');
      const busybox = await stat(join(dest, 'bin', 'busybox'));
      for (const applet of fixture.hardlinkApplets) assert.equal((await stat(join(dest, 'bin', applet))).ino, busybox.ino, `${applet} is a hardlink`);
      // Files belong to whoever unpacked them.
      assert.equal(busybox.uid, identity.user?.uid ?? 0);
    });

    it('imports the same image pushed as Docker v2s2 (gzip) and unpacks the same tree', async () => {
      ok(await gantry(env, ['import', ref('busybox-edge'), '--name', 'edge-docker']));
      const dest = join(env.dir, 'edge-docker-rootfs');
      ok(await gantry(env, ['unpack', 'edge-docker', dest]));
      const fixture = await busyboxEdgeGzip();
      assert.deepEqual(diffTrees(await snapshot(dest), await umociReference(fixture.dir, fixture.ref), 0o1777), []);
    });

    it('shares layers: a second image with the same layers downloads nothing', async () => {
      const before = (await readdir(join(env.store, 'layers', 'sha256'))).length;
      const r = await gantry(env, ['import', ref('busybox-edge-gzip-oci'), '--name', 'edge-again']);
      ok(r);
      assert.match(r.stderr, /exists/);
      assert.doesNotMatch(r.stderr, /downloading/);
      assert.equal((await readdir(join(env.store, 'layers', 'sha256'))).length, before);
    });

    it('lists images with --json and as a table', async () => {
      const list = JSON.parse(ok(await gantry(env, ['images', '--json']))) as { name: string; reference: string; size: number }[];
      assert.deepEqual(list.map((i) => i.name).sort(), ['edge', 'edge-again', 'edge-docker']);
      assert.equal(list.find((i) => i.name === 'edge')!.reference, ref('busybox-edge-oci'));
      assert.ok(list.every((i) => i.size > 1_000_000));
      const table = ok(await gantry(env, ['images']));
      assert.match(table, /^NAME\s+REFERENCE\s+DIGEST\s+PLATFORM\s+SIZE\s+CREATED/);
      assert.match(table, /edge-docker\s+127\.0\.0\.1:\d+\/busybox:edge\s+sha256:/);
    });

    it('picks the host platform from a multi-arch index, or the one --arch names', async () => {
      const fixture = await multiArch();
      for (const [key, arch, name] of [['multi', undefined, 'multi-host'], ['multi', 'arm64', 'multi-arm'], ['multi-docker', 'arm64', 'multi-docker-arm']] as const) {
        if (!seed.images[key]) continue; // multi-docker is optional when skopeo cannot write it
        const args = ['import', ref(key), '--name', name, '--json', ...(arch ? ['--arch', arch] : [])];
        const summary = JSON.parse(ok(await gantry(env, args))) as { digest: string; platform: string };
        const want = arch === 'arm64' ? fixture.platforms.arm64 : fixture.platforms.amd64;
        if (key === 'multi') assert.equal(summary.digest, want.manifestDigest);
        assert.equal(summary.platform, arch === 'arm64' ? 'linux/arm64/v8' : 'linux/amd64');
        const dest = join(env.dir, `${name}-rootfs`);
        ok(await gantry(env, ['unpack', name, dest]));
        assert.equal((await readFile(join(dest, 'etc', 'arch'), 'utf8')).trim(), arch === 'arm64' ? 'arm64' : 'amd64');
      }
      const r = await gantry(env, ['import', ref('multi'), '--arch', 's390x']);
      assert.equal(r.code, 6);
      assert.match(r.stderr, /no variant for linux\/s390x; it offers linux\/amd64, linux\/arm64\/v8/);
      assert.match(r.stderr, /hint: pick one with --arch/);
    });

    it('prints the digest the registry serves now', async () => {
      assert.equal(ok(await gantry(env, ['digest', ref('busybox-edge-oci')])).trim(), seed.digests['busybox-edge-oci']);
      assert.equal(ok(await gantry(env, ['digest', ref('multi')])).trim(), (await multiArch()).indexDigest);
    });

    it('removes images and prunes only unreferenced layers', async () => {
      const layers = async (): Promise<number> => (await readdir(join(env.store, 'layers', 'sha256'))).length;
      const start = await layers();
      ok(await gantry(env, ['rmi', 'edge', 'edge-again']));
      // edge-docker still holds the gzip variant's layers; only the zstd layer of 'edge' goes.
      const pruned = ok(await gantry(env, ['prune']));
      assert.match(pruned, /removed layer sha256:[a-f0-9]{64}/);
      assert.match(pruned, /freed \d/);
      assert.equal(await layers(), start - 1);
      const r = await gantry(env, ['unpack', 'edge-docker', join(env.dir, 'still-works')]);
      ok(r);
      ok(await gantry(env, ['rmi', 'edge-docker', 'multi-host', 'multi-arm', ...(seed.images['multi-docker'] ? ['multi-docker-arm'] : [])]));
      const json = JSON.parse(ok(await gantry(env, ['prune', '--json']))) as { layers: string[]; freedBytes: number };
      assert.ok(json.freedBytes > 1_000_000);
      assert.equal(await layers(), 0);
      const again = await gantry(env, ['rmi', 'edge']);
      assert.equal(again.code, 3);
      assert.match(again.stderr, /no image named "edge"/);
    });

    it('imports the Debian image with python3 and ipykernel (Docker v2s2 and OCI) and unpacks it like umoci', async () => {
      ok(await gantry(env, ['import', ref('debian-ipykernel'), '--name', 'debian']));
      const second = await gantry(env, ['import', ref('debian-ipykernel-oci'), '--name', 'debian-oci']);
      ok(second);
      const dest = join(env.dir, 'debian-rootfs');
      ok(await gantry(env, ['unpack', 'debian-oci', dest]));
      assert.ok((await lstat(join(dest, 'usr', 'bin', 'python3'))).isSymbolicLink() || (await lstat(join(dest, 'usr', 'bin', 'python3'))).isFile());
      assert.equal((await readFile(join(dest, 'etc', 'gantry-fixture'), 'utf8')).trim(), 'debian-ipykernel');
      const fixture = await debianIpykernel();
      assert.deepEqual(diffTrees(await snapshot(dest), await umociReference(fixture.dir, fixture.ref, []), 0o1777), []);
    });
  });
}

/** The busybox fixture's device node and FIFO (layer 1). */
const BUSYBOX_SPECIAL = ['dev/null', 'run/fifo'];

/**
 * umoci's unpack as the reference tree, less the device nodes and FIFOs of the layers: umoci
 * --rootless turns those into plain files and FIFOs, while Gantry skips them by design (a sandbox
 * gets its /dev from the launcher). The tests check that they are absent from Gantry's unpack.
 */
async function umociReference(dir: string, ref: string, special = BUSYBOX_SPECIAL): Promise<Map<string, TreeEntry>> {
  const tree = await snapshot(await umociRootfs(dir, ref));
  for (const path of special) {
    assert.ok(tree.has(path), `the fixture has the special entry ${path}`);
    tree.delete(path);
  }
  return tree;
}
