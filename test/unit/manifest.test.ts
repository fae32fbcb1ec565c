import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GantryError } from '../../src/errors.js';
import {
  choosePlatform,
  MEDIA,
  parseImageConfig,
  parseManifest,
  parsePlatform,
  type ImageIndex,
} from '../../src/registry/manifest.js';

const d = (c: string): string => `sha256:${c.repeat(64)}`;
const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
const layer = (mediaType: string, c = 'b'): Record<string, unknown> => ({ mediaType, digest: d(c), size: 10 });
const manifest = (layers: Record<string, unknown>[], extra: Record<string, unknown> = {}): Buffer =>
  json({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config: { mediaType: MEDIA.ociConfig, digest: d('a'), size: 5 }, layers, ...extra });

const isCode = (code: string, re?: RegExp) => (e: unknown) => e instanceof GantryError && e.code === code && (!re || re.test(e.message)) && !!e.hint;

describe('parseManifest', () => {
  it('reads an OCI manifest with gzip, zstd and plain layers', () => {
    const m = parseManifest(manifest([layer('application/vnd.oci.image.layer.v1.tar+gzip'), layer('application/vnd.oci.image.layer.v1.tar+zstd', 'c'), layer('application/vnd.oci.image.layer.v1.tar', 'd')]), '');
    assert.equal(m.kind, 'manifest');
    assert.deepEqual(m.kind === 'manifest' && m.layers.map((l) => l.compression), ['gzip', 'zstd', 'tar']);
  });
  it('reads a Docker v2 schema 2 manifest (media type from Content-Type)', () => {
    const body = json({ schemaVersion: 2, config: { mediaType: MEDIA.dockerConfig, digest: d('a'), size: 1 }, layers: [layer('application/vnd.docker.image.rootfs.diff.tar.gzip')] });
    const m = parseManifest(body, MEDIA.dockerManifest);
    assert.equal(m.mediaType, MEDIA.dockerManifest);
  });
  it('reads indexes and manifest lists', () => {
    for (const mediaType of [MEDIA.ociIndex, MEDIA.dockerList]) {
      const m = parseManifest(json({ schemaVersion: 2, mediaType, manifests: [{ mediaType: MEDIA.ociManifest, digest: d('e'), size: 3, platform: { os: 'linux', architecture: 'amd64' } }] }), '');
      assert.equal(m.kind, 'index');
    }
  });
  it('refuses schema 1 with the reason and the fix', () => {
    assert.throws(() => parseManifest(json({ schemaVersion: 1, name: 'x', fsLayers: [] }), MEDIA.dockerSchema1Signed), isCode('MANIFEST', /schema 1/));
  });
  it('refuses unknown manifest and layer media types', () => {
    assert.throws(() => parseManifest(manifest([], { mediaType: 'application/vnd.cncf.helm.chart' }), ''), isCode('MANIFEST', /unknown media type/));
    assert.throws(() => parseManifest(manifest([layer('application/x-whatever')]), ''), isCode('LAYER', /unknown media type/));
    assert.throws(
      () => parseManifest(json({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config: { mediaType: 'application/vnd.cncf.helm.config.v1+json', digest: d('a'), size: 1 }, layers: [] }), ''),
      isCode('MANIFEST', /not an image config/),
    );
  });
  it('refuses foreign / non-distributable layers', () => {
    assert.throws(
      () => parseManifest(manifest([{ ...layer('application/vnd.docker.image.rootfs.foreign.diff.tar.gzip'), urls: ['https://mcr.microsoft.com/x'] }]), ''),
      isCode('LAYER', /foreign \(non-distributable\).*mcr\.microsoft\.com/),
    );
    assert.throws(() => parseManifest(manifest([layer('application/vnd.oci.image.layer.nondistributable.v1.tar+gzip')]), ''), isCode('LAYER'));
  });
  it('refuses malformed documents', () => {
    assert.throws(() => parseManifest(Buffer.from('{nope'), ''), isCode('MANIFEST', /not JSON/));
    assert.throws(() => parseManifest(json([1]), ''), isCode('MANIFEST', /not a JSON object/));
    assert.throws(() => parseManifest(json({ schemaVersion: 3 }), ''), isCode('MANIFEST', /schemaVersion/));
    assert.throws(() => parseManifest(manifest([{ ...layer('application/vnd.oci.image.layer.v1.tar'), digest: 'sha256:xyz' }]), ''), isCode('MANIFEST', /digest/));
    assert.throws(() => parseManifest(manifest([{ ...layer('application/vnd.oci.image.layer.v1.tar'), size: -1 }]), ''), isCode('MANIFEST', /size/));
    assert.throws(() => parseManifest(json({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config: {}, layers: [] }), ''), isCode('MANIFEST'));
    assert.throws(() => parseManifest(json({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config: { mediaType: MEDIA.ociConfig, digest: d('a'), size: 1 } }), ''), isCode('MANIFEST', /no layers/));
  });
});

describe('platforms', () => {
  const index: ImageIndex = {
    kind: 'index',
    mediaType: MEDIA.ociIndex,
    manifests: [
      { mediaType: MEDIA.ociManifest, digest: d('1'), size: 1, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: MEDIA.ociManifest, digest: d('2'), size: 1, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { mediaType: MEDIA.ociManifest, digest: d('3'), size: 1, platform: { os: 'linux', architecture: 'arm', variant: 'v6' } },
      { mediaType: MEDIA.ociManifest, digest: d('4'), size: 1, platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
      { mediaType: MEDIA.ociManifest, digest: d('5'), size: 1 },
    ],
  };
  it('chooses by os, architecture and variant', () => {
    assert.equal(choosePlatform(index, parsePlatform('amd64')).digest, d('1'));
    assert.equal(choosePlatform(index, parsePlatform('arm64')).digest, d('2'));
    assert.equal(choosePlatform(index, parsePlatform('aarch64')).digest, d('2'));
    assert.equal(choosePlatform(index, parsePlatform('linux/arm/v7')).digest, d('4'));
    assert.equal(choosePlatform(index, parsePlatform('arm/v6')).digest, d('3'));
  });
  it('says what the image offers when the platform is missing', () => {
    assert.throws(() => choosePlatform(index, parsePlatform('s390x')), isCode('PLATFORM', /no variant for linux\/s390x; it offers linux\/amd64, linux\/arm64\/v8/));
  });
  it('rejects malformed --arch values', () => {
    assert.throws(() => parsePlatform('arm/7'), isCode('USAGE'));
    assert.throws(() => parsePlatform('a/b/c/d'), isCode('USAGE'));
  });
});

describe('parseImageConfig', () => {
  const config = (over: Record<string, unknown> = {}): Buffer =>
    json({
      architecture: 'amd64',
      os: 'linux',
      created: '2024-05-01T00:00:00Z',
      config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'], WorkingDir: '/w', Labels: { a: 'b' }, User: '1000', Entrypoint: null },
      rootfs: { type: 'layers', diff_ids: [d('f')] },
      ...over,
    });
  it('keeps what later stages need', () => {
    const c = parseImageConfig(config(), 1);
    assert.deepEqual(c.config, { Env: ['PATH=/bin'], Cmd: ['/bin/sh'], WorkingDir: '/w', Labels: { a: 'b' }, User: '1000' });
    assert.deepEqual(c.diffIds, [d('f')]);
    assert.equal(c.created, '2024-05-01T00:00:00Z');
  });
  it('refuses configs that disagree with the manifest or are malformed', () => {
    assert.throws(() => parseImageConfig(config(), 2), isCode('CONFIG', /1 layer diff_ids but the manifest has 2/));
    assert.throws(() => parseImageConfig(config({ rootfs: { type: 'x' } }), 0), isCode('CONFIG', /rootfs.type/));
    assert.throws(() => parseImageConfig(config({ rootfs: { type: 'layers', diff_ids: ['md5:x'] } }), 1), isCode('CONFIG', /diff_ids/));
    assert.throws(() => parseImageConfig(config({ config: { Env: 'PATH=/bin' } }), 1), isCode('CONFIG', /Env is not a list/));
    assert.throws(() => parseImageConfig(config({ os: undefined }), 1), isCode('CONFIG', /architecture or os/));
    assert.throws(() => parseImageConfig(Buffer.from('garbage'), 1), isCode('CONFIG', /not JSON/));
  });
});
