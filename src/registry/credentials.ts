import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { GantryError } from '../errors.js';

/**
 * Registry credentials, in enroot's format: a netrc file at `$GANTRY_CONFIG/credentials`.
 *
 *   machine nvcr.io login $oauthtoken password $NGC_API_KEY
 *   machine 127.0.0.1:5000 login alice password wonderland
 *
 * A password that starts with `$` names an environment variable holding the secret (looked up,
 * never evaluated by a shell), so the file itself can stay free of secrets. The file must not be
 * readable by others (0600), like ssh keys, or Gantry refuses to use it.
 */
export interface Credential {
  machine: string;
  login: string;
  password: string;
}

export class Credentials {
  private constructor(
    readonly file: string | undefined,
    private readonly entries: Credential[],
  ) {}

  static none(): Credentials {
    return new Credentials(undefined, []);
  }

  static async load(configDir: string, env: NodeJS.ProcessEnv = process.env): Promise<Credentials> {
    const file = join(configDir, 'credentials');
    let info;
    try {
      info = await stat(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Credentials(undefined, []);
      throw new GantryError('CREDENTIALS', `cannot read the credentials file ${file}: ${(err as Error).message}`, 'check its permissions');
    }
    if ((info.mode & 0o077) !== 0) {
      const mode = (info.mode & 0o777).toString(8).padStart(4, '0');
      throw new GantryError(
        'CREDENTIALS',
        `the credentials file ${file} has mode ${mode}: other users could read your registry passwords, so Gantry will not use it`,
        `make it private: chmod 600 ${file}`,
      );
    }
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new GantryError('CREDENTIALS', `cannot read the credentials file ${file}: ${(err as Error).message}`, 'check its permissions');
    }
    return new Credentials(file, parseNetrc(text, file, env));
  }

  /**
   * The credential for a host (`host:port` first, then the bare host name), optionally for a given
   * login (enroot's `docker://USER@REGISTRY#...`).
   */
  find(host: string, login?: string): Credential | undefined {
    const bare = host.replace(/:\d+$/, '');
    for (const candidate of [host, bare]) {
      const match = this.entries.find((e) => e.machine === candidate && (login === undefined || e.login === login));
      if (match) return match;
    }
    return undefined;
  }
}

/** Parses netrc text: whitespace-separated `machine`/`login`/`password` tokens, `#` comments. */
export function parseNetrc(text: string, file: string, env: NodeJS.ProcessEnv): Credential[] {
  const tokens = text
    .split('\n')
    .map((line) => (line.trimStart().startsWith('#') ? '' : line))
    .join('\n')
    .split(/\s+/)
    .filter(Boolean);
  const entries: Credential[] = [];
  let current: Partial<Credential> | undefined;
  const finish = (): void => {
    if (!current) return;
    if (!current.machine || current.login === undefined || current.password === undefined) {
      throw new GantryError(
        'CREDENTIALS',
        `the credentials file ${file} has an incomplete entry${current.machine ? ` for machine ${current.machine}` : ''}`,
        'each entry needs: machine HOST login USER password PASSWORD',
      );
    }
    entries.push(current as Credential);
    current = undefined;
  };
  for (let i = 0; i < tokens.length; i++) {
    const key = tokens[i]!;
    if (key === 'machine' || key === 'default') {
      finish();
      current = { machine: key === 'default' ? '*default*' : tokens[++i] };
      if (current.machine === undefined) break;
      continue;
    }
    const value = tokens[++i];
    if (!current || value === undefined || !['login', 'password', 'account', 'macdef'].includes(key)) {
      throw new GantryError(
        'CREDENTIALS',
        `the credentials file ${file} is not in netrc format near "${key === 'password' ? 'password ...' : key}"`,
        'each entry needs: machine HOST login USER password PASSWORD',
      );
    }
    if (key === 'login') current.login = value;
    else if (key === 'password') current.password = expandSecret(value, current.machine ?? '?', file, env);
  }
  finish();
  return entries;
}

function expandSecret(value: string, machine: string, file: string, env: NodeJS.ProcessEnv): string {
  if (!value.startsWith('$')) return value;
  const name = value.slice(1).replace(/^\{(.*)\}$/, '$1');
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
    throw new GantryError('CREDENTIALS', `the password for ${machine} in ${file} names "${value}", which is not an environment variable name`, 'write password $VARIABLE_NAME, or the password itself');
  }
  const secret = env[name];
  if (secret === undefined || secret === '') {
    throw new GantryError(
      'CREDENTIALS',
      `the password for ${machine} in ${file} comes from the environment variable ${name}, which is not set`,
      `export ${name}=... before running Gantry`,
    );
  }
  return secret;
}
