import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseChallenges } from '../../src/registry/challenge.js';

describe('parseChallenges', () => {
  it('reads a Docker Hub style Bearer challenge', () => {
    const [c] = parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull"');
    assert.deepEqual(c, {
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/ubuntu:pull' },
    });
  });
  it('reads Basic', () => {
    assert.deepEqual(parseChallenges('Basic realm="Registry Realm"'), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
  });
  it('handles several challenges, spaces, escapes, commas in quotes and token values', () => {
    const got = parseChallenges('Basic realm="a, b", Bearer realm="https://x/t" , service=reg,scope="repository:a:pull,push" ,error="invalid_token"');
    assert.equal(got.length, 2);
    assert.deepEqual(got[0], { scheme: 'basic', params: { realm: 'a, b' } });
    assert.deepEqual(got[1]!.params, { realm: 'https://x/t', service: 'reg', scope: 'repository:a:pull,push', error: 'invalid_token' });
    assert.deepEqual(parseChallenges('Bearer realm="q\\"x"')[0]!.params.realm, 'q"x');
  });
  it('returns nothing for an empty or missing header', () => {
    assert.deepEqual(parseChallenges(undefined), []);
    assert.deepEqual(parseChallenges(''), []);
  });
  it('accepts header arrays', () => {
    assert.equal(parseChallenges(['Basic realm="r"', 'Bearer realm="t"']).length, 2);
  });
});
