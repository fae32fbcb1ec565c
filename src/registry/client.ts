import { createHash } from 'node:crypto';
import { GantryError } from '../errors.js';
import { RegistryAuth } from './auth.js';
import type { Credentials } from './credentials.js';
import { MANIFEST_ACCEPT } from './manifest.js';
import { RetryableStatus, retryableStatus, Transport, withRetries, type HttpResponse } from './transport.js';

/**
 * The OCI distribution API for one repository: manifests and blobs, with authentication and
 * retries. It knows HTTP and the registry's error format, not what a manifest means.
 */
export interface FetchedManifest {
  body: Buffer;
  /** The Content-Type the registry declared. */
  contentType: string;
  /** sha256 of the exact bytes served. */
  digest: string;
}

export interface BlobResponse {
  body: HttpResponse['body'];
  /** Where this response starts in the blob: the requested offset when Range was honoured, else 0. */
  offset: number;
}

export class RegistryClient {
  private readonly auth: RegistryAuth;

  constructor(
    readonly transport: Transport,
    readonly registry: string,
    readonly repository: string,
    credentials: Credentials,
    user?: string,
    private readonly onRetry?: (what: string, attempt: number, err: unknown) => void,
  ) {
    this.auth = new RegistryAuth(transport, registry, repository, credentials, user);
  }

  /** GET (or HEAD) a manifest by tag or digest, with the full Accept list. */
  async manifest(reference: string): Promise<FetchedManifest> {
    return withRetries(
      this.transport.options.retries,
      async () => {
        const res = await this.send(`/manifests/${reference}`, { accept: MANIFEST_ACCEPT });
        if (res.statusCode !== 200) await this.fail(res, `manifest ${reference}`);
        const body = Buffer.from(await res.body.arrayBuffer());
        const contentType = String(res.headers['content-type'] ?? '').split(';')[0]!.trim();
        return { body, contentType, digest: `sha256:${createHash('sha256').update(body).digest('hex')}` };
      },
      (n, err) => this.onRetry?.(`manifest ${reference}`, n, err),
    );
  }

  /** The digest the registry serves for a tag now (HEAD; falls back to GET when the header is missing). */
  async manifestDigest(reference: string): Promise<string> {
    const head = await withRetries(this.transport.options.retries, async () => {
      const res = await this.send(`/manifests/${reference}`, { accept: MANIFEST_ACCEPT }, 'HEAD');
      await res.body.dump();
      if (res.statusCode !== 200) await this.fail(res, `manifest ${reference}`);
      return res;
    });
    const digest = head.headers['docker-content-digest'];
    if (typeof digest === 'string' && /^sha256:[a-f0-9]{64}$/.test(digest)) return digest;
    return (await this.manifest(reference)).digest;
  }

  /** A small blob (the image config), read whole and verified against its digest. */
  async smallBlob(digest: string, maxBytes = 16 * 1024 * 1024): Promise<Buffer> {
    return withRetries(
      this.transport.options.retries,
      async () => {
        const { body } = await this.blob(digest, 0);
        const chunks: Buffer[] = [];
        let total = 0;
        for await (const chunk of body) {
          total += (chunk as Buffer).length;
          if (total > maxBytes) {
            body.destroy();
            throw new GantryError('CONFIG', `blob ${digest} is larger than ${maxBytes} bytes, too large for an image config`, 'the manifest is malformed');
          }
          chunks.push(chunk as Buffer);
        }
        const data = Buffer.concat(chunks);
        const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
        if (actual !== digest) throw digestMismatch(digest, actual, this.registry);
        return data;
      },
      (n, err) => this.onRetry?.(`blob ${digest}`, n, err),
    );
  }

  /** Opens a blob for streaming from `offset` (Range), following redirects to blob storage. */
  async blob(digest: string, offset: number): Promise<BlobResponse> {
    const headers: Record<string, string> = {};
    if (offset > 0) headers.range = `bytes=${offset}-`;
    const res = await this.send(`/blobs/${digest}`, headers);
    if (res.statusCode === 206) {
      const range = /bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''));
      if (range && Number(range[1]) === offset) return { body: res.body, offset };
      await res.body.dump();
      throw new RetryableStatus(206, `blob ${digest} (an unexpected Content-Range)`);
    }
    if (res.statusCode !== 200) await this.fail(res, `blob ${digest}`);
    return { body: res.body, offset: 0 };
  }

  /** Sends a request with authorization, answering one 401 challenge (or a stale token) per call. */
  private async send(path: string, headers: Record<string, string>, method: 'GET' | 'HEAD' = 'GET'): Promise<HttpResponse> {
    const url = new URL(`${await this.transport.baseUrl(this.registry)}/v2/${this.repository}${path}`);
    for (let attempt = 0; ; attempt++) {
      const authorization = await this.auth.authorization();
      const res = await this.transport.fetch(url, {
        method,
        headers: { ...headers, ...(authorization ? { authorization } : {}) },
      });
      if (res.statusCode !== 401) return res;
      await res.body.dump();
      if (attempt > 0) throw this.auth.refusedError();
      await this.auth.onUnauthorized(res.headers['www-authenticate']);
    }
  }

  /** Turns a non-success answer into the right error (retryable for 5xx). */
  private async fail(res: HttpResponse, what: string): Promise<never> {
    const text = res.statusCode === 404 || res.statusCode === 403 || res.statusCode === 400 ? await res.body.text().catch(() => '') : '';
    if (!text) await res.body.dump().catch(() => undefined);
    if (retryableStatus(res.statusCode)) throw new RetryableStatus(res.statusCode, `${this.registry} (${what})`);
    const codes = registryErrorCodes(text);
    const image = `${this.registry}/${this.repository}`;
    if (res.statusCode === 404 || codes.some((c) => /UNKNOWN$/.test(c))) {
      throw new GantryError('NOT_FOUND', `${image}: ${what} not found (${codes.join(', ') || 'HTTP 404'})`, 'check the image name and tag, e.g. with the registry\'s web page or `skopeo list-tags`');
    }
    if (res.statusCode === 403 || codes.includes('DENIED')) throw this.auth.refusedError();
    throw new GantryError('NETWORK', `${image}: ${what}: the registry answered HTTP ${res.statusCode}${codes.length ? ` (${codes.join(', ')})` : ''}`, 'check the reference; if it is right, the registry may be misconfigured');
  }
}

function registryErrorCodes(text: string): string[] {
  try {
    const json = JSON.parse(text) as { errors?: { code?: unknown }[] };
    return (json.errors ?? []).map((e) => String(e.code ?? '')).filter(Boolean);
  } catch {
    return [];
  }
}

export function digestMismatch(expected: string, actual: string, registry: string): GantryError {
  return new GantryError(
    'DIGEST',
    `content from ${registry} does not match its digest: expected ${expected}, got ${actual}`,
    'the registry served corrupt or tampered data; nothing was stored. Try again; if it persists, tell the registry\'s administrator',
  );
}
