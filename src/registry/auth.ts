import { GantryError } from '../errors.js';
import { parseChallenges, type Challenge } from './challenge.js';
import type { Credential, Credentials } from './credentials.js';
import { Transport } from './transport.js';

/**
 * Authorization for one registry and one repository: anonymous until the registry asks, then
 * the scheme its WWW-Authenticate challenge names. Bearer tokens are fetched from the realm with
 * the matching credentials (registry host first, then the realm's host), cached until shortly
 * before they expire, and fetched again when the registry answers 401 in the middle of a pull.
 */
export class RegistryAuth {
  private header: string | undefined;
  private expiresAt = Infinity;
  private challenge: Challenge | undefined;

  constructor(
    private readonly transport: Transport,
    private readonly registry: string,
    private readonly repository: string,
    private readonly credentials: Credentials,
    private readonly user?: string,
  ) {}

  /** The Authorization header to send now (refreshing an expired token first). */
  async authorization(): Promise<string | undefined> {
    if (this.header && Date.now() >= this.expiresAt && this.challenge) await this.respond(this.challenge);
    return this.header;
  }

  /** Whether we already answered a challenge (so a new 401 means the credentials are bad). */
  get authenticated(): boolean {
    return this.header !== undefined;
  }

  /** Handles a 401: parses the challenge and obtains a new Authorization header. */
  async onUnauthorized(wwwAuthenticate: string | string[] | undefined): Promise<void> {
    const challenges = parseChallenges(wwwAuthenticate);
    const usable = challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic');
    if (!usable) {
      throw new GantryError(
        'AUTH',
        `registry ${this.registry} asked for authentication with an unsupported scheme (${challenges.map((c) => c.scheme).join(', ') || 'none given'})`,
        'Gantry supports the Bearer token and Basic schemes',
      );
    }
    this.challenge = usable;
    await this.respond(usable);
  }

  private credential(realmHost?: string): Credential | undefined {
    return this.credentials.find(this.registry, this.user) ?? (realmHost ? this.credentials.find(realmHost, this.user) : undefined);
  }

  private async respond(challenge: Challenge): Promise<void> {
    if (challenge.scheme === 'basic') {
      const cred = this.credential();
      if (!cred) throw this.needCredentials();
      this.header = basic(cred);
      this.expiresAt = Infinity;
      return;
    }
    const realm = challenge.params.realm;
    if (!realm) throw new GantryError('AUTH', `registry ${this.registry} sent a Bearer challenge without a realm`, 'the registry is misconfigured');
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new GantryError('AUTH', `registry ${this.registry} named an invalid token realm`, 'the registry is misconfigured');
    }
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    const scope = challenge.params.scope ?? `repository:${this.repository}:pull`;
    for (const s of scope.split(' ').filter(Boolean)) url.searchParams.append('scope', s);
    const cred = this.credential(url.host);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (cred) {
      // Credentials go to the token service only over TLS or loopback.
      this.transport.checkScheme(url);
      headers.authorization = basic(cred);
    }
    const res = await this.transport.fetch(url, { headers });
    const text = await res.body.text();
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw cred ? this.refused(cred, url.host) : this.needCredentials();
    }
    if (res.statusCode !== 200) {
      throw new GantryError('AUTH', `the token service ${url.host} for registry ${this.registry} answered HTTP ${res.statusCode}`, 'try again later; if it persists the registry is misconfigured');
    }
    let json: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      json = JSON.parse(text);
    } catch {
      throw new GantryError('AUTH', `the token service ${url.host} answered with something that is not JSON`, 'the registry is misconfigured');
    }
    const token = typeof json.token === 'string' && json.token ? json.token : json.access_token;
    if (typeof token !== 'string' || !token) {
      throw new GantryError('AUTH', `the token service ${url.host} answered without a token`, 'the registry is misconfigured');
    }
    // The spec's default lifetime is 60 s; renew 10% (at least 5 s) early.
    const lifetime = typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : 60;
    this.header = `Bearer ${token}`;
    this.expiresAt = Date.now() + Math.max(1, lifetime - Math.max(5, lifetime / 10)) * 1000;
  }

  /** The error for a registry that refuses us although we answered its challenge. */
  refusedError(): GantryError {
    const cred = this.credential(this.challenge?.params.realm ? safeHost(this.challenge.params.realm) : undefined);
    if (cred) return this.refused(cred, this.registry);
    return this.needCredentials();
  }

  private refused(cred: Credential, host: string): GantryError {
    return new GantryError(
      'AUTH',
      `${host === this.registry ? 'registry' : 'the token service'} ${host} refused the credentials for user ${cred.login} (repository ${this.repository})`,
      `check the login and password for ${cred.machine} in ${this.credentialsFile()}`,
    );
  }

  private needCredentials(): GantryError {
    return new GantryError(
      'AUTH',
      `registry ${this.registry} requires authentication for ${this.repository} and no credentials for it were found${this.user ? ` for user ${this.user}` : ''} (registries say the same of a repository that does not exist)`,
      `check the image name, and add "machine ${this.registry.replace(/:\d+$/, '')} login USER password PASSWORD" to ${this.credentialsFile()} (mode 0600)`,
    );
  }

  private credentialsFile(): string {
    return this.credentials.file ?? '$GANTRY_CONFIG/credentials';
  }
}

function basic(cred: Credential): string {
  return `Basic ${Buffer.from(`${cred.login}:${cred.password}`).toString('base64')}`;
}

function safeHost(url: string): string | undefined {
  try {
    return new URL(url).host;
  } catch {
    return undefined;
  }
}
