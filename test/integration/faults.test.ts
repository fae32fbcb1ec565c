import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { open, readdir, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startFaultyProxy, type FaultyProxy } from '../fixtures/faulty-proxy.js';
import { startForwardProxy } from '../fixtures/forward-proxy.js';
import { busyboxEdgeGzip, debianIpykernel } from '../fixtures/images.js';
import { blobPath, copyStorage, seedStorage, startRegistry, type Registry, type SeededStorage } from '../fixtures/registry.js';
import { gantry, identities, makeEnv, ok, writeCredentials, type Env } from './helpers.js';

/**
 * A registry that fails: 5xx, dropped and stalled connections, servers that ignore Range,
 * redirects to another host, tampered and truncated blobs, a kill -9 in the middle, two imports
 * at once. Each either recovers or fails with a clear error, and the store never holds half an image.
 */
let seed: SeededStorage;
let registry: Registry;
let env: Env;

before(async () => {
  seed = await seedStorage();
  registry = await startRegistry({ auth: 'none', storageDir: seed.dir });
  env = await makeEnv((await identities())[1]!, 'gantry-faults');
});
after(async () => {
  await registry?.stop();
  await env?.cleanup();
});

async function withProxy<T>(target: string, opts: Parameters<typeof startFaultyProxy>[1], fn: (p: FaultyProxy) => Promise<T>): Promise<T> {
  const proxy = await startFaultyProxy(target, opts);
  try {
    return await fn(proxy);
  } finally {
    await proxy.stop();
  }
}

async function storeIsClean(e: Env, image?: string): Promise<void> {
  if (image) assert.equal(existsSync(join(e.store, 'images', `${image}.json`)), false, `${image} was registered`);
  const tmp = await readdir(join(e.store, 'tmp')).catch(() => [] as string[]);
  assert.deepEqual(tmp, [], 'tmp/ is empty after the import ended');
  for (const hex of await readdir(join(e.store, 'layers', 'sha256')).catch(() => [] as string[])) {
    assert.ok(existsSync(join(e.store, 'layers', 'sha256', hex, 'layer.json')), `layer ${hex} is complete`);
  }
}

const busybox = (): string => seed.images['busybox-edge']!;

describe('network faults', () => {
  it('retries 5xx answers', async () => {
    await withProxy(registry.url, { fail500: 2 }, async (proxy) => {
      const r = await gantry(env, ['import', `${proxy.host}/${busybox()}`, '--name', 'after-500']);
      ok(r);
      assert.equal(proxy.stats.served500, 2);
      assert.match(r.stderr, /retry 1/);
    });
  });

  it('resumes a dropped download with Range', async () => {
    await withProxy(registry.url, { dropAfterBytes: 300_000, dropTimes: 2 }, async (proxy) => {
      const r = await gantry(env, ['import', `${proxy.host}/${seed.images['debian-ipykernel']}`, '--name', 'resumed']);
      ok(r);
      assert.equal(proxy.stats.dropped, 2);
      assert.ok(proxy.stats.rangeRequests >= 2, `resumed with Range (${proxy.stats.rangeRequests})`);
    });
  });

  it('recovers from a drop when the server ignores Range', async () => {
    await withProxy(registry.url, { dropAfterBytes: 300_000, dropTimes: 1, stripRange: true }, async (proxy) => {
      ok(await gantry(env, ['rmi', 'resumed']));
      ok(await gantry(env, ['prune']));
      ok(await gantry(env, ['import', `${proxy.host}/${seed.images['debian-ipykernel']}`, '--name', 'no-range']));
      assert.equal(proxy.stats.dropped, 1);
    });
  });

  it('gives up on a stalled connection after GANTRY_TIMEOUT and resumes', async () => {
    await withProxy(registry.url, { stallAfterBytes: 100_000, stallTimes: 1 }, async (proxy) => {
      ok(await gantry(env, ['rmi', 'no-range']));
      ok(await gantry(env, ['prune']));
      const r = await gantry(env, ['import', `${proxy.host}/${seed.images['debian-ipykernel']}`, '--name', 'stalled'], { extraEnv: { GANTRY_TIMEOUT: '2' } });
      ok(r);
      assert.equal(proxy.stats.stalled, 1);
      assert.match(r.stderr, /retry 1/);
    });
  });

  it('fails clearly when retries run out, leaving the store as it was', async () => {
    await withProxy(registry.url, { fail500: 1000 }, async (proxy) => {
      const fresh = await makeEnv((await identities())[1]!, 'gantry-giveup');
      try {
        const r = await gantry(fresh, ['import', `${proxy.host}/${busybox()}`, '--name', 'never'], { extraEnv: { GANTRY_RETRIES: '1' } });
        assert.equal(r.code, 5);
        assert.match(r.stderr, /answered HTTP 500/);
        await storeIsClean(fresh, 'never');
      } finally {
        await fresh.cleanup();
      }
    });
  });

  it('never sends Authorization to another host after a redirect', async () => {
    const secured = await startRegistry({ auth: 'htpasswd', storageDir: seed.dir });
    try {
      await withProxy(secured.url, { redirectBlobsTo: 'localhost' }, async (proxy) => {
        await writeCredentials(env, `machine ${proxy.host} login alice password ${secured.users.alice}\n`);
        ok(await gantry(env, ['import', `${proxy.host}/${seed.images['busybox-edge-oci']}`, '--name', 'redirected']));
        assert.ok(proxy.stats.redirected > 0, 'blobs were redirected');
        assert.equal(proxy.stats.authOnRedirected, 0);
      });
    } finally {
      await secured.stop();
    }
  });
});

describe('bad content', () => {
  let storage: string;
  let own: Registry;
  before(async () => {
    storage = await copyStorage(seed.dir);
    own = await startRegistry({ auth: 'none', storageDir: storage });
  });
  after(async () => own?.stop());

  it('refuses a tampered blob and stores nothing of it', async () => {
    const layer = (await busyboxEdgeGzip()).layers[0]!;
    const fh = await open(blobPath(storage, layer.digest), 'r+');
    await fh.write(Buffer.from('tampered!'), 0, 9, Math.floor(layer.size / 2));
    await fh.close();
    const fresh = await makeEnv((await identities())[0]!, 'gantry-tampered');
    try {
      const r = await gantry(fresh, ['import', `${own.host}/${busybox()}`, '--name', 'tampered']);
      assert.equal(r.code, 6);
      assert.match(r.stderr, new RegExp(`does not match its digest: expected ${layer.digest}`));
      await storeIsClean(fresh, 'tampered');
      assert.equal(existsSync(join(fresh.store, 'layers', 'sha256', layer.diffId.slice(7))), false);
    } finally {
      await fresh.cleanup();
    }
  });

  it('refuses a truncated blob after retrying', async () => {
    const layer = (await debianIpykernel()).layers[1]!;
    await truncate(blobPath(storage, layer.digest), Math.floor(layer.size / 2));
    const fresh = await makeEnv((await identities())[1]!, 'gantry-truncated');
    try {
      const r = await gantry(fresh, ['import', `${own.host}/${seed.images['debian-ipykernel']}`], { extraEnv: { GANTRY_RETRIES: '1' } });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(layer.digest));
      await storeIsClean(fresh, 'debian+ipykernel');
    } finally {
      await fresh.cleanup();
    }
  });

  it('reports a digest the registry does not have', async () => {
    const r = await gantry(env, ['import', `${own.host}/busybox@sha256:${'0'.repeat(64)}`]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /not found \(MANIFEST_UNKNOWN\)/);
  });

  it('reports unknown repositories and tags', async () => {
    const r = await gantry(env, ['import', `${own.host}/nosuch/image:1`]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /nosuch\/image: manifest 1 not found/);
    const t = await gantry(env, ['import', `${own.host}/busybox:nosuchtag`]);
    assert.equal(t.code, 3);
  });

  it('rejects bad references before any network', async () => {
    for (const bad of ['UPPER/case', 'busybox:bad tag', `x@sha256:${'z'.repeat(64)}`]) {
      const r = await gantry(env, ['import', bad]);
      assert.equal(r.code, 2, bad);
      assert.match(r.stderr, /invalid image reference/);
    }
  });
});

describe('crashes and concurrency', () => {
  it('kill -9 in the middle of an import leaves nothing registered; the next import completes', async () => {
    const rootEnv = await makeEnv((await identities())[0]!, 'gantry-kill');
    try {
      await withProxy(registry.url, { stallAfterBytes: 2_000_000, stallTimes: 100 }, async (proxy) => {
        const r = await gantry(rootEnv, ['import', `${proxy.host}/${seed.images['debian-ipykernel']}`, '--name', 'killed'], {
          extraEnv: { GANTRY_TIMEOUT: '600' },
          onSpawn: (pid) => {
            const timer = setInterval(() => {
              if (proxy.stats.stalled > 0) {
                clearInterval(timer);
                setTimeout(() => process.kill(pid, 'SIGKILL'), 300);
              }
            }, 50);
          },
        });
        assert.notEqual(r.code, 0);
      });
      assert.equal(existsSync(join(rootEnv.store, 'images', 'killed.json')), false);
      for (const hex of await readdir(join(rootEnv.store, 'layers', 'sha256'))) {
        assert.ok(existsSync(join(rootEnv.store, 'layers', 'sha256', hex, 'layer.json')), 'only complete layers');
      }
      assert.ok((await readdir(join(rootEnv.store, 'tmp'))).length > 0, 'the killed import left work in progress');
      ok(await gantry(rootEnv, ['import', `${registry.host}/${seed.images['debian-ipykernel']}`, '--name', 'killed']));
      const pruned = ok(await gantry(rootEnv, ['prune']));
      assert.match(pruned, /removed tmp\//);
      assert.deepEqual(await readdir(join(rootEnv.store, 'tmp')), []);
      ok(await gantry(rootEnv, ['unpack', 'killed', join(rootEnv.dir, 'after-kill')]));
      assert.ok((await stat(join(rootEnv.dir, 'after-kill', 'etc', 'gantry-fixture'))).isFile());
    } finally {
      await rootEnv.cleanup();
    }
  });

  it('two imports of the same image at once both succeed and download each blob once', async () => {
    const shared = await makeEnv((await identities())[1]!, 'gantry-concurrent');
    try {
      await withProxy(registry.url, {}, async (proxy) => {
        const ref = `${proxy.host}/${seed.images['debian-ipykernel']}`;
        const [a, b] = await Promise.all([gantry(shared, ['import', ref, '--name', 'one']), gantry(shared, ['import', ref, '--name', 'two'])]);
        ok(a, 'first import');
        ok(b, 'second import');
        const layers = (await debianIpykernel()).layers;
        for (const l of layers) {
          const gets = proxy.stats.requests.filter((q) => q.startsWith('GET') && q.includes(`/blobs/${l.digest}`));
          assert.equal(gets.length, 1, `layer ${l.digest} was downloaded ${gets.length} times`);
        }
        assert.equal((await readdir(join(shared.store, 'layers', 'sha256'))).length, layers.length);
      });
    } finally {
      await shared.cleanup();
    }
  });
});

describe('proxies', () => {
  it('goes through http_proxy, and around it for no_proxy hosts', async () => {
    const proxy = await startForwardProxy();
    try {
      const fresh = await makeEnv((await identities())[1]!, 'gantry-proxy');
      try {
        const ref = `${registry.host}/${seed.images['busybox-edge']}`;
        ok(await gantry(fresh, ['import', ref, '--name', 'proxied'], { extraEnv: { http_proxy: proxy.url, https_proxy: proxy.url, no_proxy: '' } }));
        // undici tunnels through the proxy (CONNECT) for plain HTTP targets too.
        assert.ok(proxy.seen.some((s) => s === `CONNECT ${registry.host}` || s.startsWith(`GET http://${registry.host}/v2/`)), proxy.seen.join('\n'));
        const before = proxy.seen.length;
        ok(await gantry(fresh, ['import', ref, '--name', 'direct'], { extraEnv: { http_proxy: proxy.url, no_proxy: '127.0.0.1' } }));
        assert.equal(proxy.seen.length, before, 'no_proxy hosts are reached directly');
      } finally {
        await fresh.cleanup();
      }
    } finally {
      await proxy.stop();
    }
  });
});
