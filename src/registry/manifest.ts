import { GantryError } from '../errors.js';

/**
 * Manifests, indexes and image configs: media types, validation and platform choice. Pure
 * functions over parsed JSON, so every malformed case is a unit test.
 */
export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

/** Registry 2.8 serves OCI types only when asked, and down-converts to schema 1 when v2 is missing. */
export const MANIFEST_ACCEPT = [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest].join(', ');

const LAYER_TYPES: Record<string, 'gzip' | 'zstd' | 'tar'> = {
  'application/vnd.oci.image.layer.v1.tar': 'tar',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.diff.tar': 'tar',
};

const FOREIGN_TYPES = [
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
];

const DIGEST = /^sha256:[a-f0-9]{64}$/;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  urls?: string[];
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface LayerDescriptor extends Descriptor {
  compression: 'gzip' | 'zstd' | 'tar';
}

export interface ImageManifest {
  kind: 'manifest';
  mediaType: string;
  config: Descriptor;
  layers: LayerDescriptor[];
}

export interface ImageIndex {
  kind: 'index';
  mediaType: string;
  manifests: Descriptor[];
}

function malformed(what: string, why: string): GantryError {
  return new GantryError('MANIFEST', `the ${what} is malformed: ${why}`, 'the registry serves an invalid image; ask its publisher, or pick another tag');
}

function descriptor(value: unknown, what: string): Descriptor {
  if (typeof value !== 'object' || value === null) throw malformed(what, 'a descriptor is not an object');
  const d = value as Record<string, unknown>;
  if (typeof d.digest !== 'string' || !DIGEST.test(d.digest)) {
    throw malformed(what, `a descriptor has the digest ${JSON.stringify(d.digest)}, not sha256:<64 hex digits>`);
  }
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw malformed(what, `descriptor ${d.digest} has an invalid size ${JSON.stringify(d.size)}`);
  }
  if (typeof d.mediaType !== 'string' || d.mediaType === '') throw malformed(what, `descriptor ${d.digest} has no mediaType`);
  const out: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.platform && typeof d.platform === 'object') {
    const p = d.platform as Record<string, unknown>;
    if (typeof p.os === 'string' && typeof p.architecture === 'string') {
      out.platform = { os: p.os, architecture: p.architecture, ...(typeof p.variant === 'string' ? { variant: p.variant } : {}) };
    }
  }
  if (Array.isArray(d.urls)) out.urls = d.urls.filter((u): u is string => typeof u === 'string');
  return out;
}

/**
 * Parses what the registry served for a manifest request. `contentType` is the response's
 * Content-Type; the document's own mediaType wins when present.
 */
export function parseManifest(body: Buffer, contentType: string): ImageManifest | ImageIndex {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    throw malformed('manifest', 'it is not JSON');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw malformed('manifest', 'it is not a JSON object');
  const mediaType = typeof json.mediaType === 'string' ? json.mediaType : contentType;
  if (json.schemaVersion === 1 || mediaType === MEDIA.dockerSchema1 || mediaType === MEDIA.dockerSchema1Signed) {
    throw new GantryError(
      'MANIFEST',
      'the registry served a Docker schema 1 manifest, a format deprecated since 2017 that Gantry does not read',
      'push the image again with a current Docker, podman or skopeo (they write schema 2 or OCI)',
    );
  }
  if (json.schemaVersion !== 2) throw malformed('manifest', `schemaVersion is ${JSON.stringify(json.schemaVersion)}, not 2`);

  const isIndex = mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList || (!json.config && Array.isArray(json.manifests));
  if (isIndex) {
    if (!Array.isArray(json.manifests)) throw malformed('image index', 'it has no manifests list');
    return { kind: 'index', mediaType: mediaType || MEDIA.ociIndex, manifests: json.manifests.map((m) => descriptor(m, 'image index')) };
  }
  if (mediaType && mediaType !== MEDIA.ociManifest && mediaType !== MEDIA.dockerManifest) {
    throw new GantryError('MANIFEST', `the registry served a manifest of unknown media type "${mediaType}"`, 'Gantry reads Docker v2 schema 2 and OCI image manifests and indexes; is this reference an image (not a Helm chart or other artifact)?');
  }
  if (!Array.isArray(json.layers)) throw malformed('manifest', 'it has no layers list');
  const config = descriptor(json.config, 'manifest');
  if (config.mediaType !== MEDIA.ociConfig && config.mediaType !== MEDIA.dockerConfig) {
    throw new GantryError('MANIFEST', `the manifest's config has media type "${config.mediaType}", not an image config`, 'this reference is an OCI artifact, not a container image');
  }
  const layers = json.layers.map((l): LayerDescriptor => {
    const d = descriptor(l, 'manifest');
    if (FOREIGN_TYPES.includes(d.mediaType)) {
      throw new GantryError(
        'LAYER',
        `layer ${d.digest} is a foreign (non-distributable) layer of type ${d.mediaType}${d.urls?.length ? ` served from ${d.urls.map((u) => safeOrigin(u)).join(', ')}` : ''}`,
        'such layers (e.g. Windows base layers) are not in the registry; Gantry only runs Linux images with distributable layers',
      );
    }
    const compression = LAYER_TYPES[d.mediaType];
    if (!compression) {
      throw new GantryError('LAYER', `layer ${d.digest} has the unknown media type "${d.mediaType}"`, 'Gantry reads tar layers compressed with gzip or zstd, or uncompressed');
    }
    return { ...d, compression };
  });
  return { kind: 'manifest', mediaType: mediaType || MEDIA.ociManifest, config, layers };
}

function safeOrigin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return '(invalid URL)';
  }
}

/** The platform of this machine, in OCI terms. */
export function hostPlatform(arch: string = process.arch): Platform {
  switch (arch) {
    case 'x64':
      return { os: 'linux', architecture: 'amd64' };
    case 'arm64':
      return { os: 'linux', architecture: 'arm64', variant: 'v8' };
    case 'arm':
      return { os: 'linux', architecture: 'arm', variant: 'v7' };
    case 'ia32':
      return { os: 'linux', architecture: '386' };
    default:
      return { os: 'linux', architecture: arch };
  }
}

/** Parses `--arch`: `amd64`, `arm64`, `arm/v7`, `linux/arm64/v8`, and Node/uname spellings. */
export function parsePlatform(spec: string): Platform {
  const parts = spec.trim().toLowerCase().split('/');
  let os = 'linux';
  if (parts.length === 3 || (parts.length === 2 && parts[0] === 'linux')) os = parts.shift()!;
  const alias: Record<string, string> = { x86_64: 'amd64', x64: 'amd64', aarch64: 'arm64', armhf: 'arm', i386: '386', i686: '386' };
  const architecture = alias[parts[0]!] ?? parts[0]!;
  const variant = parts[1];
  if (!/^[a-z0-9_]+$/.test(architecture) || (variant !== undefined && !/^v[0-9]+$/.test(variant)) || parts.length > 2) {
    throw new GantryError('USAGE', `invalid platform "${spec}"`, 'use an architecture like amd64, arm64, arm/v7 or linux/arm64/v8');
  }
  return { os, architecture, ...(variant ? { variant } : architecture === 'arm64' ? { variant: 'v8' } : {}) };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** Picks the index entry for a platform: same os and architecture, the variant when both name one. */
export function choosePlatform(index: ImageIndex, want: Platform): Descriptor {
  const candidates = index.manifests.filter(
    (m) => m.platform && m.platform.os === want.os && m.platform.architecture === want.architecture,
  );
  // arm64's variant is v8 when absent; other architectures compare variants only when both name one.
  const norm = (p: Platform): string | undefined => p.variant ?? (p.architecture === 'arm64' ? 'v8' : undefined);
  const exact = candidates.find((m) => norm(m.platform!) === norm(want));
  const chosen = exact ?? candidates.find((m) => norm(m.platform!) === undefined || norm(want) === undefined);
  if (!chosen) {
    const offered = index.manifests.filter((m) => m.platform).map((m) => formatPlatform(m.platform!));
    throw new GantryError(
      'PLATFORM',
      `the image has no variant for ${formatPlatform(want)}; it offers ${offered.join(', ') || 'no platforms'}`,
      offered.length ? `pick one with --arch (e.g. --arch ${offered[0]!.replace(/^linux\//, '')})` : 'the image index is empty',
    );
  }
  return chosen;
}

/** What Gantry keeps from an image config: what later stages (sandbox, kernels) need. */
export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  created?: string;
  diffIds: string[];
  config: {
    Env?: string[];
    WorkingDir?: string;
    Entrypoint?: string[];
    Cmd?: string[];
    Labels?: Record<string, string>;
    User?: string;
    ExposedPorts?: Record<string, unknown>;
    Volumes?: Record<string, unknown>;
    StopSignal?: string;
  };
}

function badConfig(why: string): GantryError {
  return new GantryError('CONFIG', `the image config is malformed: ${why}`, 'the registry serves an invalid image; ask its publisher, or pick another tag');
}

function stringArray(v: unknown, field: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw badConfig(`${field} is not a list of strings`);
  return v as string[];
}

export function parseImageConfig(data: Buffer, layerCount: number): ImageConfig {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(data.toString('utf8'));
  } catch {
    throw badConfig('it is not JSON');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw badConfig('it is not a JSON object');
  const rootfs = json.rootfs as { type?: unknown; diff_ids?: unknown } | undefined;
  if (!rootfs || rootfs.type !== 'layers') throw badConfig('rootfs.type is not "layers"');
  const diffIds = stringArray(rootfs.diff_ids, 'rootfs.diff_ids') ?? [];
  for (const id of diffIds) if (!DIGEST.test(id)) throw badConfig(`rootfs.diff_ids has "${id}", not sha256:<64 hex digits>`);
  if (diffIds.length !== layerCount) {
    throw badConfig(`it lists ${diffIds.length} layer diff_ids but the manifest has ${layerCount} layers`);
  }
  if (typeof json.architecture !== 'string' || typeof json.os !== 'string') throw badConfig('architecture or os is missing');
  const c = (json.config ?? {}) as Record<string, unknown>;
  if (typeof c !== 'object' || Array.isArray(c)) throw badConfig('config is not an object');
  const labels = c.Labels;
  if (labels !== undefined && labels !== null && (typeof labels !== 'object' || Array.isArray(labels))) throw badConfig('config.Labels is not an object');
  const str = (v: unknown, field: string): string | undefined => {
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') throw badConfig(`config.${field} is not a string`);
    return v;
  };
  const config: ImageConfig['config'] = {};
  const env = stringArray(c.Env, 'config.Env');
  if (env) config.Env = env;
  const entrypoint = stringArray(c.Entrypoint, 'config.Entrypoint');
  if (entrypoint) config.Entrypoint = entrypoint;
  const cmd = stringArray(c.Cmd, 'config.Cmd');
  if (cmd) config.Cmd = cmd;
  const workingDir = str(c.WorkingDir, 'WorkingDir');
  if (workingDir) config.WorkingDir = workingDir;
  const user = str(c.User, 'User');
  if (user) config.User = user;
  const stopSignal = str(c.StopSignal, 'StopSignal');
  if (stopSignal) config.StopSignal = stopSignal;
  if (labels) config.Labels = Object.fromEntries(Object.entries(labels as Record<string, unknown>).map(([k, v]) => [k, String(v)]));
  if (c.ExposedPorts && typeof c.ExposedPorts === 'object') config.ExposedPorts = c.ExposedPorts as Record<string, unknown>;
  if (c.Volumes && typeof c.Volumes === 'object') config.Volumes = c.Volumes as Record<string, unknown>;
  return {
    architecture: json.architecture,
    os: json.os,
    ...(typeof json.variant === 'string' ? { variant: json.variant } : {}),
    ...(typeof json.created === 'string' ? { created: json.created } : {}),
    diffIds,
    config,
  };
}
