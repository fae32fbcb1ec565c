import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { Agent, buildConnector, EnvHttpProxyAgent, request, type Dispatcher } from 'undici';
import { GantryError } from '../errors.js';

/**
 * HTTP for registries: TLS with the system's CAs, proxies from the environment, plain HTTP only
 * where it is safe (loopback) or allowed, manual redirects that never carry credentials to another
 * origin, and retries with backoff for the failures a long pull meets (5xx, resets, timeouts).
 */
export interface TransportOptions {
  /** Seconds without progress before a request is abandoned (GANTRY_TIMEOUT, default 60). */
  timeoutSeconds: number;
  /** How many times a failed request is retried (GANTRY_RETRIES, default 5). */
  retries: number;
  /** GANTRY_ALLOW_HTTP: `1` allows plain HTTP everywhere, or a comma-separated host list. */
  allowHttp: string;
}

export function transportOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): TransportOptions {
  const timeout = Number(env.GANTRY_TIMEOUT ?? 60);
  const retries = Number(env.GANTRY_RETRIES ?? 5);
  return {
    timeoutSeconds: Number.isFinite(timeout) && timeout > 0 ? timeout : 60,
    retries: Number.isInteger(retries) && retries >= 0 ? retries : 5,
    allowHttp: env.GANTRY_ALLOW_HTTP ?? '',
  };
}

export interface HttpResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
  /** The URL that finally answered (after redirects). */
  url: URL;
}

export interface HttpRequest {
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
}

const LOOPBACK = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\]|::1)$/i;

export function isLoopback(hostname: string): boolean {
  return LOOPBACK.test(hostname);
}

/** Extra CAs named by SSL_CERT_FILE / SSL_CERT_DIR, plus the distribution's bundle. */
function systemCAs(env: NodeJS.ProcessEnv): string[] {
  const cas = [...rootCertificates];
  const files = [env.SSL_CERT_FILE, '/etc/ssl/certs/ca-certificates.crt'].filter((f): f is string => !!f);
  for (const file of files) if (existsSync(file)) cas.push(readFileSync(file, 'utf8'));
  if (env.SSL_CERT_DIR) {
    for (const dir of env.SSL_CERT_DIR.split(':')) {
      if (!existsSync(dir)) continue;
      for (const name of readdirSync(dir)) {
        if (/\.(pem|crt)$/.test(name)) cas.push(readFileSync(join(dir, name), 'utf8'));
      }
    }
  }
  return cas;
}

export class Transport {
  readonly dispatcher: Dispatcher;
  /** Only tells whether a host speaks TLS at all (no verification, no CA list to load). */
  private readonly prober: Dispatcher;

  constructor(
    readonly options: TransportOptions = transportOptionsFromEnv(),
    env: NodeJS.ProcessEnv = process.env,
  ) {
    const timeout = options.timeoutSeconds * 1000;
    // Loading the CA list costs ~150 ms: do it on the first TLS connection, not for plain HTTP.
    let tlsContext: SecureContext | undefined;
    const context = (): SecureContext => (tlsContext ??= createSecureContext({ ca: systemCAs(env) }));
    const plain = buildConnector({ timeout });
    let verified: buildConnector.connector | undefined;
    const connect: buildConnector.connector = (opts, callback) => {
      if (opts.protocol !== 'https:') return plain(opts, callback);
      verified ??= buildConnector({ timeout, secureContext: context() });
      return verified(opts, callback);
    };
    const proxied = !!(env.https_proxy || env.HTTPS_PROXY || env.http_proxy || env.HTTP_PROXY);
    this.dispatcher = new EnvHttpProxyAgent({
      connect,
      ...(proxied ? { requestTls: { secureContext: context() } } : {}),
      headersTimeout: timeout,
      bodyTimeout: timeout,
      connections: 16,
    });
    this.prober = new Agent({ connect: { timeout: 5000, rejectUnauthorized: false } });
  }

  private readonly schemes = new Map<string, Promise<string>>();

  /**
   * The base URL of a registry host: https; for a host where plain HTTP is allowed (loopback, or
   * named by GANTRY_ALLOW_HTTP) https is tried first and http used when the host does not speak
   * TLS, as Docker does for insecure registries. The answer is remembered per host.
   */
  baseUrl(host: string): Promise<string> {
    let base = this.schemes.get(host);
    if (!base) {
      base = this.httpAllowed(host) ? this.probeTls(host) : Promise.resolve(`https://${host}`);
      this.schemes.set(host, base);
    }
    return base;
  }

  private async probeTls(host: string): Promise<string> {
    try {
      const res = await request(`https://${host}/v2/`, { method: 'GET', dispatcher: this.prober, headersTimeout: 5000, bodyTimeout: 5000 });
      await res.body.dump();
      return `https://${host}`;
    } catch {
      // Not TLS (or not answering): plain HTTP, which is allowed for this host.
      return `http://${host}`;
    }
  }

  private httpAllowed(host: string): boolean {
    const hostname = host.replace(/:\d+$/, '');
    if (isLoopback(hostname)) return true;
    const allow = this.options.allowHttp.trim();
    if (allow === '1' || allow === 'true') return true;
    return allow.split(',').map((h) => h.trim()).filter(Boolean).some((h) => h === host || h === hostname);
  }

  /** Refuses plain HTTP to a host that is neither loopback nor allowed (e.g. a redirect target). */
  checkScheme(url: URL): void {
    if (url.protocol === 'https:') return;
    if (url.protocol === 'http:' && this.httpAllowed(url.host)) return;
    throw new GantryError(
      'INSECURE',
      `refusing plain ${url.protocol.replace(':', '').toUpperCase()} to ${url.host}: only loopback registries are reached without TLS`,
      `if ${url.host} really serves plain HTTP on a trusted network, set GANTRY_ALLOW_HTTP=${url.host}`,
    );
  }

  /**
   * One request, following up to 5 redirects by hand. Authorization is sent only to the origin
   * it was meant for: a redirect to blob storage on another host goes without it.
   */
  async fetch(url: URL, req: HttpRequest = {}): Promise<HttpResponse> {
    let current = url;
    const headers = { ...(req.headers ?? {}) };
    const origin = url.origin;
    for (let hop = 0; hop <= 5; hop++) {
      this.checkScheme(current);
      const sent = current.origin === origin ? headers : withoutAuthorization(headers);
      let res;
      try {
        res = await request(current, { method: req.method ?? 'GET', headers: sent, dispatcher: this.dispatcher });
      } catch (err) {
        if (certificateProblem(err)) throw tlsError(current.host, err);
        throw err;
      }
      if (res.statusCode >= 300 && res.statusCode < 400 && res.headers.location) {
        await res.body.dump();
        current = new URL(String(res.headers.location), current);
        continue;
      }
      return { statusCode: res.statusCode, headers: res.headers, body: res.body, url: current };
    }
    throw new GantryError('NETWORK', `too many redirects fetching ${url.host}${url.pathname}`, 'the registry or a proxy is misconfigured');
  }

  async close(): Promise<void> {
    await Promise.all([this.dispatcher.close(), this.prober.close()]);
  }
}

const CERT_CODES = /^(ERR_TLS_CERT|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|CERT_|ERR_TLS_CERT_ALTNAME_INVALID|HOSTNAME_MISMATCH)/;

/** An error that says the server's certificate is not trusted (not a network failure). */
export function certificateProblem(err: unknown): boolean {
  for (let e: unknown = err; e; e = (e as { cause?: unknown }).cause) {
    if (CERT_CODES.test(String((e as { code?: unknown }).code ?? ''))) return true;
  }
  return false;
}

function tlsError(host: string, err: unknown): GantryError {
  let reason = (err as Error).message;
  for (let e: unknown = err; e; e = (e as { cause?: unknown }).cause) if ((e as { code?: unknown }).code) reason = (e as Error).message;
  return new GantryError(
    'NETWORK',
    `the TLS certificate of ${host} is not trusted: ${reason}`,
    `if ${host} uses a private CA, point SSL_CERT_FILE (a PEM bundle) or SSL_CERT_DIR at its certificate`,
    { cause: err },
  );
}

function withoutAuthorization(headers: Record<string, string>): Record<string, string> {
  const copy: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() !== 'authorization') copy[k] = v;
  return copy;
}

/** Failures worth another try: resets, refused/aborted connections, timeouts, 5xx and 429. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof RetryableStatus) return true;
  if (err instanceof GantryError) return false;
  const code = (err as { code?: string })?.code ?? '';
  return (
    /^(ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|EAI_AGAIN|ENETUNREACH|EHOSTUNREACH|ECONNABORTED)$/.test(code) ||
    code.startsWith('UND_ERR') ||
    (err as Error)?.name === 'SocketError' ||
    /terminated|other side closed|socket hang up|premature close/i.test((err as Error)?.message ?? '')
  );
}

/** The error for a request that kept failing: what failed, how often, and what to do. */
export function gaveUp(err: unknown, attempts: number): GantryError {
  return new GantryError(
    'NETWORK',
    `${(err as Error).message} (gave up after ${attempts} attempt${attempts === 1 ? '' : 's'})`,
    'check the network and the registry, then try again (GANTRY_RETRIES and GANTRY_TIMEOUT tune the patience); finished layers are kept',
    { cause: err },
  );
}

export class RetryableStatus extends Error {
  constructor(
    readonly statusCode: number,
    what: string,
  ) {
    super(`${what} answered HTTP ${statusCode}`);
  }
}

export function retryableStatus(status: number): boolean {
  return status >= 500 || status === 429 || status === 408;
}

/**
 * Runs `attempt` until it succeeds or the retries are spent, sleeping 0.25 s, 0.5 s, 1 s, ...
 * (at most 8 s) between tries. `onRetry` hears about each failure that will be retried.
 */
export async function withRetries<T>(
  retries: number,
  attempt: (n: number) => Promise<T>,
  onRetry?: (n: number, err: unknown) => void,
): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      return await attempt(n);
    } catch (err) {
      if (!isRetryable(err)) throw err;
      if (n >= retries) throw gaveUp(err, n + 1);
      onRetry?.(n + 1, err);
      await new Promise((resolve) => setTimeout(resolve, Math.min(8000, 250 * 2 ** n)));
    }
  }
}
