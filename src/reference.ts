import { GantryError } from './errors.js';

/**
 * Image references, in the two spellings users already type:
 *
 *   enroot:  docker://[USER@][REGISTRY#]IMAGE[:TAG][@DIGEST]
 *   Docker:  [REGISTRY/]IMAGE[:TAG][@DIGEST]
 *
 * In the Docker spelling (and after `docker://` when there is no `#`), a first path segment is a
 * registry when it contains `.` or `:` or is `localhost`, as Docker decides. Docker Hub names are
 * normalised the way the Docker client does: `docker.io`/`index.docker.io` become
 * `registry-1.docker.io`, and a bare name gets `library/`.
 */
export interface ImageReference {
  /** Registry host, with `:port` when one was given; already normalised. */
  registry: string;
  /** Repository path inside the registry, e.g. `nvidia/pytorch` or `library/ubuntu`. */
  repository: string;
  /** The tag; `latest` when neither a tag nor a digest was given. */
  tag?: string;
  /** `sha256:<hex>` when the reference pins a digest. */
  digest?: string;
  /** enroot's `USER@`: the login to use from the credentials file for this registry. */
  user?: string;
}

export const DOCKER_HUB = 'registry-1.docker.io';

// From the distribution spec's grammar (reference/regexp.go), restated.
const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;
const USER = /^[A-Za-z0-9$._-]{1,128}$/;

function bad(input: string, why: string): GantryError {
  return new GantryError(
    'BAD_REFERENCE',
    `invalid image reference "${input}": ${why}`,
    'write it as [REGISTRY/]IMAGE[:TAG][@sha256:DIGEST] (e.g. ubuntu:24.04, nvcr.io/nvidia/pytorch:24.05-py3) or docker://[USER@][REGISTRY#]IMAGE[:TAG]',
  );
}

function looksLikeRegistry(segment: string): boolean {
  return segment.includes('.') || segment.includes(':') || segment === 'localhost';
}

export function parseReference(input: string): ImageReference {
  let rest = input.trim();
  if (rest === '') throw bad(input, 'it is empty');
  let user: string | undefined;
  let registry: string | undefined;
  let explicitRegistry = false;

  if (rest.startsWith('docker://')) {
    rest = rest.slice('docker://'.length);
    const at = rest.indexOf('@');
    const hash = rest.indexOf('#');
    // USER@ comes first and before any '#'; an '@' after the image is the digest separator.
    if (at >= 0 && (hash < 0 || at < hash) && !rest.slice(0, at).includes('/') && !rest.slice(at + 1).startsWith('sha256:')) {
      user = rest.slice(0, at);
      rest = rest.slice(at + 1);
      if (!USER.test(user)) throw bad(input, `"${user}" is not a valid user name`);
    }
    const hashAt = rest.indexOf('#');
    if (hashAt >= 0) {
      registry = rest.slice(0, hashAt);
      rest = rest.slice(hashAt + 1);
      explicitRegistry = true;
      if (!HOST.test(registry)) throw bad(input, `"${registry}" is not a valid registry host`);
    }
  } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(rest)) {
    throw bad(input, `the transport "${rest.split('://')[0]}://" is not supported (only docker://)`);
  }

  let digest: string | undefined;
  const digestAt = rest.indexOf('@');
  if (digestAt >= 0) {
    digest = rest.slice(digestAt + 1);
    rest = rest.slice(0, digestAt);
    if (!digest.startsWith('sha256:')) throw bad(input, `the digest "${digest}" is not a sha256 digest`);
    if (!DIGEST.test(digest)) throw bad(input, `the digest "${digest}" is not sha256: followed by 64 lowercase hex digits`);
  }

  if (!explicitRegistry) {
    const slash = rest.indexOf('/');
    if (slash > 0 && looksLikeRegistry(rest.slice(0, slash))) {
      registry = rest.slice(0, slash);
      rest = rest.slice(slash + 1);
      if (!HOST.test(registry)) throw bad(input, `"${registry}" is not a valid registry host`);
    }
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.indexOf(':', lastSlash + 1);
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(input, `the tag "${tag}" is not valid (letters, digits, _ . -, at most 128)`);
  }

  if (rest === '') throw bad(input, 'the image name is missing');
  const components = rest.split('/');
  for (const c of components) {
    if (!COMPONENT.test(c)) {
      const why = c !== c.toLowerCase() ? 'repository names must be lowercase' : 'use lowercase letters, digits and separators . _ -';
      throw bad(input, `"${c}" is not a valid repository path component (${why})`);
    }
  }
  if (rest.length > 255) throw bad(input, 'the repository name is longer than 255 characters');

  let host = registry ?? DOCKER_HUB;
  if (host === 'docker.io' || host === 'index.docker.io') host = DOCKER_HUB;
  let repository = rest;
  if (host === DOCKER_HUB && components.length === 1) repository = `library/${rest}`;
  if (!tag && !digest) tag = 'latest';

  return { registry: host, repository, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}), ...(user ? { user } : {}) };
}

/** The canonical spelling: `REGISTRY/REPOSITORY[:TAG][@DIGEST]`. Never includes the user. */
export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/**
 * The default name of an imported image, after enroot: the repository path with `/` turned into
 * `+`, Docker Hub's `library/` dropped, and `+TAG` appended (`nvidia+pytorch+24.05-py3`,
 * `ubuntu+24.04`). A reference by digest only ends in `+` and the digest's first 12 hex digits.
 * The registry is not part of the name; pass --name to tell apart two registries' images.
 */
export function defaultImageName(ref: ImageReference): string {
  const path = ref.registry === DOCKER_HUB && ref.repository.startsWith('library/') ? ref.repository.slice(8) : ref.repository;
  let name = path.split('/').join('+');
  if (ref.tag) name += `+${ref.tag}`;
  else if (ref.digest) name += `+${ref.digest.slice(7, 19)}`;
  name = name.toLowerCase().replace(/[^a-z0-9._+-]/g, '-');
  return name.length > 128 ? name.slice(0, 128) : name;
}

const NAME = /^[a-z0-9][a-z0-9._+-]{0,127}$/;

/** Image names become file names in the store, so they are checked before any use. */
export function validateImageName(name: string): string {
  if (!NAME.test(name) || name.includes('..')) {
    throw new GantryError(
      'BAD_NAME',
      `invalid image name "${name}"`,
      'a name starts with a lowercase letter or digit and has at most 128 of a-z 0-9 . _ + - (no "..")',
    );
  }
  return name;
}
