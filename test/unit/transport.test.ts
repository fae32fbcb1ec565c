import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GantryError } from '../../src/errors.js';
import { certificateProblem, gaveUp, isLoopback, isRetryable, RetryableStatus, Transport, transportOptionsFromEnv, withRetries } from '../../src/registry/transport.js';

describe('transport policy', () => {
  it('knows loopback hosts', () => {
    for (const h of ['localhost', '127.0.0.1', '127.1.2.3', '[::1]', '::1']) assert.ok(isLoopback(h), h);
    for (const h of ['example.com', '10.0.0.1', '127.0.0.1.nip.io', 'localhost.evil.com']) assert.ok(!isLoopback(h), h);
  });

  it('uses https for remote registries and refuses plain HTTP to them unless allowed', async () => {
    const t = new Transport(transportOptionsFromEnv({}), {});
    try {
      assert.equal(await t.baseUrl('nvcr.io'), 'https://nvcr.io');
      assert.throws(() => t.checkScheme(new URL('http://nvcr.io/v2/')), (e: unknown) => e instanceof GantryError && e.code === 'INSECURE' && /GANTRY_ALLOW_HTTP=nvcr.io/.test(e.hint ?? ''));
      t.checkScheme(new URL('http://127.0.0.1:5000/v2/'));
      t.checkScheme(new URL('https://nvcr.io/v2/'));
    } finally {
      await t.close();
    }
    const allowed = new Transport(transportOptionsFromEnv({ GANTRY_ALLOW_HTTP: 'reg.lan:5000, other' }), {});
    try {
      allowed.checkScheme(new URL('http://reg.lan:5000/v2/'));
      allowed.checkScheme(new URL('http://other/v2/'));
      assert.throws(() => allowed.checkScheme(new URL('http://third/v2/')));
    } finally {
      await allowed.close();
    }
  });

  it('reads its settings from the environment, ignoring nonsense', () => {
    assert.deepEqual(transportOptionsFromEnv({ GANTRY_TIMEOUT: '7', GANTRY_RETRIES: '2' }), { timeoutSeconds: 7, retries: 2, allowHttp: '' });
    assert.deepEqual(transportOptionsFromEnv({ GANTRY_TIMEOUT: 'x', GANTRY_RETRIES: '-1' }), { timeoutSeconds: 60, retries: 5, allowHttp: '' });
  });
});

describe('retries', () => {
  it('retries what is worth retrying, then gives up with a network error', async () => {
    let calls = 0;
    const seen: number[] = [];
    await assert.rejects(
      withRetries(2, async () => {
        calls++;
        throw new RetryableStatus(503, 'registry');
      }, (n) => seen.push(n)),
      (e: unknown) => e instanceof GantryError && e.code === 'NETWORK' && /answered HTTP 503 \(gave up after 3 attempts\)/.test(e.message),
    );
    assert.equal(calls, 3);
    assert.deepEqual(seen, [1, 2]);
  });

  it('does not retry our own errors', async () => {
    let calls = 0;
    await assert.rejects(withRetries(5, async () => {
      calls++;
      throw new GantryError('AUTH', 'no');
    }));
    assert.equal(calls, 1);
  });

  it('classifies failures', () => {
    assert.ok(isRetryable(Object.assign(new Error('x'), { code: 'ECONNRESET' })));
    assert.ok(isRetryable(Object.assign(new Error('x'), { code: 'UND_ERR_BODY_TIMEOUT' })));
    assert.ok(!isRetryable(new Error('plain')));
    assert.ok(certificateProblem(Object.assign(new Error('x'), { cause: { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' } })));
    assert.ok(!certificateProblem(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })));
    assert.equal(gaveUp(new Error('boom'), 1).message, 'boom (gave up after 1 attempt)');
  });
});
