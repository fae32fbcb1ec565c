import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startFaultyProxy } from '../fixtures/faulty-proxy.js';
import { seedStorage, startRegistry, type Registry, type SeededStorage } from '../fixtures/registry.js';
import { gantry, identities, makeEnv, ok, writeCredentials, type Env, type GantryResult } from './helpers.js';

/**
 * The registry's auth schemes against a real registry: htpasswd (Basic) and token (Bearer, with
 * a token service written in the fixtures that the registry verifies), credentials from the
 * netrc file, and the promise that no secret ever shows up in Gantry's output.
 */
const PASSWORD = 'wonderland-s3cret';
const NGC_KEY = 'nvapi-0123456789abcdef';
const users = { alice: PASSWORD, $oauthtoken: NGC_KEY };

let seed: SeededStorage;
before(async () => {
  seed = await seedStorage();
});

function noSecrets(r: GantryResult): GantryResult {
  for (const secret of [PASSWORD, NGC_KEY, Buffer.from(`alice:${PASSWORD}`).toString('base64')]) {
    assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), `a secret leaked into the output:\n${r.stdout}\n${r.stderr}`);
  }
  return r;
}

for (const identity of await identities()) {
  for (const kind of ['htpasswd', 'token'] as const) {
    describe(`${kind} registry as ${identity.label}`, () => {
      let registry: Registry;
      let env: Env;
      const image = (): string => `${registry.host}/${seed.images['busybox-edge']}`;
      before(async () => {
        registry = await startRegistry({ auth: kind, users, storageDir: seed.dir });
        env = await makeEnv(identity, `gantry-auth-${kind}`);
      });
      after(async () => {
        await registry?.stop();
        await env?.cleanup();
      });

      it('without credentials: a clear refusal that says where credentials go', async () => {
        const r = noSecrets(await gantry(env, ['import', image()]));
        assert.equal(r.code, 4);
        assert.match(r.stderr, new RegExp(`registry ${registry.host.replace(/\./g, '\\.')} requires authentication for busybox`));
        assert.match(r.stderr, /hint: check the image name, and add "machine 127\.0\.0\.1 login USER password PASSWORD" to .*credentials \(mode 0600\)/);
      });

      it('with wrong credentials: names the user, never the password', async () => {
        await writeCredentials(env, `machine ${registry.host} login alice password wrong-${PASSWORD}\n`);
        const r = noSecrets(await gantry(env, ['import', image()]));
        assert.equal(r.code, 4);
        assert.match(r.stderr, /refused the credentials for user alice/);
        assert.doesNotMatch(r.stderr + r.stdout, /wrong-/);
      });

      it('refuses a credentials file readable by others', async () => {
        await writeCredentials(env, `machine ${registry.host} login alice password ${PASSWORD}\n`, 0o644);
        const r = noSecrets(await gantry(env, ['import', image()]));
        assert.equal(r.code, 4);
        assert.match(r.stderr, /has mode 0644/);
        assert.match(r.stderr, /chmod 600/);
      });

      it('imports with the right credentials (host:port entry)', async () => {
        await writeCredentials(env, `machine ${registry.host} login alice password ${PASSWORD}\n`);
        const r = noSecrets(await gantry(env, ['import', image(), '--name', 'private']));
        ok(r);
        if (kind === 'token') assert.ok(registry.tokenIssuer!.issued > 0, 'tokens came from the token service');
      });

      it("imports with NGC's form: login $oauthtoken, the API key from an environment variable", async () => {
        await writeCredentials(env, 'machine 127.0.0.1 login $oauthtoken password $NGC_API_KEY\n');
        const r = noSecrets(await gantry(env, ['import', `docker://${registry.host}#${seed.images['busybox-edge-oci']}`, '--name', 'ngc'], { extraEnv: { NGC_API_KEY: NGC_KEY } }));
        ok(r);
        const unset = noSecrets(await gantry(env, ['import', image()]));
        assert.equal(unset.code, 4);
        assert.match(unset.stderr, /environment variable NGC_API_KEY, which is not set/);
      });

      it('picks the login named in docker://USER@REGISTRY#IMAGE', async () => {
        await writeCredentials(env, `machine ${registry.host} login bob password nope\nmachine ${registry.host} login alice password ${PASSWORD}\n`);
        ok(noSecrets(await gantry(env, ['import', `docker://alice@${registry.host}#${seed.images['busybox-edge']}`, '--name', 'as-alice'])));
        const bob = noSecrets(await gantry(env, ['import', `docker://bob@${registry.host}#${seed.images['busybox-edge']}`]));
        assert.match(bob.stderr, /refused the credentials for user bob/);
      });
    });
  }
}

describe('token registry specifics', () => {
  let env: Env;
  before(async () => {
    env = await makeEnv((await identities())[1]!, 'gantry-token');
  });
  after(async () => env?.cleanup());

  it('pulls public repositories anonymously and refuses private ones without credentials', async () => {
    const registry = await startRegistry({ auth: 'token', users, storageDir: seed.dir });
    try {
      ok(await gantry(env, ['import', `${registry.host}/${seed.images['public-busybox-edge']}`, '--name', 'public']));
      const r = await gantry(env, ['import', `${registry.host}/${seed.images['busybox-edge']}`]);
      assert.equal(r.code, 4);
      assert.match(r.stderr, /requires authentication for busybox and no credentials/);
    } finally {
      await registry.stop();
    }
  });

  it('gets a new token when the registry rejects an expired one in the middle of a pull', async () => {
    // Tokens die after 2 s but claim 300 s; the proxy stalls the layer download past that, so the
    // resumed request meets a 401 and must fetch a new token and continue.
    const registry = await startRegistry({ auth: 'token', users, storageDir: seed.dir, tokenTtlSeconds: 2, strictTokenExpiry: true, tokenAnnouncedTtlSeconds: 300 });
    const proxy = await startFaultyProxy(registry.url, { stallAfterBytes: 200_000, stallTimes: 1 });
    try {
      await writeCredentials(env, `machine 127.0.0.1 login alice password ${PASSWORD}\n`);
      const r = noSecrets(await gantry(env, ['import', `${proxy.host}/${seed.images['debian-ipykernel']}`, '--name', 'renewed'], { extraEnv: { GANTRY_TIMEOUT: '4', GANTRY_PARALLEL: '1' } }));
      ok(r);
      assert.equal(proxy.stats.stalled, 1);
      assert.match(r.stderr, /retry 1/);
      assert.ok(registry.tokenIssuer!.issued >= 2, `a second token was fetched (issued ${registry.tokenIssuer!.issued})`);
    } finally {
      await proxy.stop();
      await registry.stop();
    }
  });
});

describe('TLS', () => {
  let registry: Registry;
  let env: Env;
  before(async () => {
    registry = await startRegistry({ auth: 'htpasswd', users, storageDir: seed.dir, tls: true });
    env = await makeEnv((await identities())[1]!, 'gantry-tls');
    await writeCredentials(env, `machine ${registry.host} login alice password ${PASSWORD}\n`);
  });
  after(async () => {
    await registry?.stop();
    await env?.cleanup();
  });

  it('refuses a certificate it cannot verify, and says how to trust it', async () => {
    const r = noSecrets(await gantry(env, ['import', `${registry.host}/${seed.images['busybox-edge']}`]));
    assert.equal(r.code, 5);
    assert.match(r.stderr, /the TLS certificate of 127\.0\.0\.1:\d+ is not trusted/);
    assert.match(r.stderr, /SSL_CERT_FILE/);
  });

  it('speaks TLS to a loopback registry that has it, trusting SSL_CERT_FILE', async () => {
    ok(noSecrets(await gantry(env, ['import', `${registry.host}/${seed.images['busybox-edge']}`, '--name', 'over-tls'], { extraEnv: { SSL_CERT_FILE: registry.caFile! } })));
  });
});
