import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GantryError } from '../../src/errors.js';
import { defaultImageName, formatReference, parseReference, validateImageName } from '../../src/reference.js';

const H = 'a'.repeat(64);

describe('parseReference', () => {
  const cases: [string, ReturnType<typeof parseReference>][] = [
    ['ubuntu', { registry: 'registry-1.docker.io', repository: 'library/ubuntu', tag: 'latest' }],
    ['ubuntu:24.04', { registry: 'registry-1.docker.io', repository: 'library/ubuntu', tag: '24.04' }],
    ['docker.io/ubuntu', { registry: 'registry-1.docker.io', repository: 'library/ubuntu', tag: 'latest' }],
    ['index.docker.io/jupyter/base-notebook:x', { registry: 'registry-1.docker.io', repository: 'jupyter/base-notebook', tag: 'x' }],
    ['jupyter/base-notebook', { registry: 'registry-1.docker.io', repository: 'jupyter/base-notebook', tag: 'latest' }],
    ['nvcr.io/nvidia/pytorch:24.05-py3', { registry: 'nvcr.io', repository: 'nvidia/pytorch', tag: '24.05-py3' }],
    [`ghcr.io/org/img@sha256:${H}`, { registry: 'ghcr.io', repository: 'org/img', digest: `sha256:${H}` }],
    [`ghcr.io/org/img:v1@sha256:${H}`, { registry: 'ghcr.io', repository: 'org/img', tag: 'v1', digest: `sha256:${H}` }],
    ['localhost/app', { registry: 'localhost', repository: 'app', tag: 'latest' }],
    ['127.0.0.1:5000/a/b/c:t', { registry: '127.0.0.1:5000', repository: 'a/b/c', tag: 't' }],
    ['localhost:5000/app:1.0', { registry: 'localhost:5000', repository: 'app', tag: '1.0' }],
    ['docker://nvcr.io#nvidia/pytorch:24.05-py3', { registry: 'nvcr.io', repository: 'nvidia/pytorch', tag: '24.05-py3' }],
    ['docker://$oauthtoken@nvcr.io#nvidia/pytorch:24.05-py3', { registry: 'nvcr.io', repository: 'nvidia/pytorch', tag: '24.05-py3', user: '$oauthtoken' }],
    ['docker://ubuntu', { registry: 'registry-1.docker.io', repository: 'library/ubuntu', tag: 'latest' }],
    ['docker://alice@127.0.0.1:5000#team/img', { registry: '127.0.0.1:5000', repository: 'team/img', tag: 'latest', user: 'alice' }],
    [`docker://ubuntu@sha256:${H}`, { registry: 'registry-1.docker.io', repository: 'library/ubuntu', digest: `sha256:${H}` }],
    ['docker://ghcr.io/org/img:1', { registry: 'ghcr.io', repository: 'org/img', tag: '1' }],
  ];
  for (const [input, expected] of cases) {
    it(`parses ${input}`, () => assert.deepEqual(parseReference(input), expected));
  }

  const bad: [string, RegExp][] = [
    ['', /empty/],
    ['Ubuntu', /lowercase/],
    ['ubuntu:', /tag "" is not valid/],
    ['ubuntu:bad tag', /tag/],
    [`ubuntu@sha256:${'A'.repeat(64)}`, /64 lowercase hex/],
    ['ubuntu@md5:abc', /not a sha256 digest/],
    ['ubuntu@sha256:abc', /64 lowercase hex/],
    ['ghcr.io/', /image name is missing/],
    ['a//b', /not a valid repository path component/],
    ['oci-archive://x.tar', /transport "oci-archive:\/\/" is not supported/],
    ['docker://bad host#img', /not a valid registry host/],
    ['-leading', /not a valid repository path component/],
    [`x:${'t'.repeat(129)}`, /tag/],
  ];
  for (const [input, why] of bad) {
    it(`rejects ${JSON.stringify(input)} with a clear error`, () => {
      assert.throws(
        () => parseReference(input),
        (err: unknown) => err instanceof GantryError && err.code === 'BAD_REFERENCE' && why.test(err.message) && !!err.hint?.includes('REGISTRY'),
      );
    });
  }

  it('formats canonically and round-trips', () => {
    const ref = parseReference('docker://alice@nvcr.io#nvidia/pytorch:24.05-py3');
    assert.equal(formatReference(ref), 'nvcr.io/nvidia/pytorch:24.05-py3');
    assert.deepEqual(parseReference(formatReference(ref)), { registry: 'nvcr.io', repository: 'nvidia/pytorch', tag: '24.05-py3' });
  });
});

describe('defaultImageName', () => {
  it('follows enroot: path with + and the tag', () => {
    assert.equal(defaultImageName(parseReference('nvcr.io/nvidia/pytorch:24.05-py3')), 'nvidia+pytorch+24.05-py3');
    assert.equal(defaultImageName(parseReference('ubuntu:24.04')), 'ubuntu+24.04');
    assert.equal(defaultImageName(parseReference('ubuntu')), 'ubuntu+latest');
    assert.equal(defaultImageName(parseReference(`ghcr.io/org/img@sha256:${'0123456789ab'}${'c'.repeat(52)}`)), 'org+img+0123456789ab');
    assert.equal(defaultImageName(parseReference('127.0.0.1:5000/Team_x/IMG'.toLowerCase() + ':V1.0')), 'team_x+img+v1.0');
  });
  it('always yields a valid name', () => {
    for (const r of ['a/b/c/d:e', 'x:_y', 'library/ubuntu:22.04']) validateImageName(defaultImageName(parseReference(r)));
  });
});

describe('validateImageName', () => {
  for (const name of ['../etc', 'a/b', '', '.hidden', 'UPPER', 'a..b', 'x'.repeat(129), 'sp ace']) {
    it(`rejects ${JSON.stringify(name)}`, () => assert.throws(() => validateImageName(name), (e: unknown) => e instanceof GantryError && e.code === 'BAD_NAME'));
  }
  it('accepts enroot-style names', () => assert.equal(validateImageName('nvidia+pytorch+24.05-py3'), 'nvidia+pytorch+24.05-py3'));
});
