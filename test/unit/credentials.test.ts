import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GantryError } from '../../src/errors.js';
import { Credentials, parseNetrc } from '../../src/registry/credentials.js';

describe('credentials file', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gantry-cred-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  const write = async (text: string, mode: number): Promise<void> => {
    await writeFile(join(dir, 'credentials'), text);
    await chmod(join(dir, 'credentials'), mode);
  };

  it('matches host:port first, then the bare host, and honours USER@', async () => {
    await write('machine 127.0.0.1:5000 login alice password wonderland\nmachine 127.0.0.1 login bob password builder\n# comment\nmachine nvcr.io login $oauthtoken password KEY\n', 0o600);
    const creds = await Credentials.load(dir, {});
    assert.equal(creds.find('127.0.0.1:5000')?.login, 'alice');
    assert.equal(creds.find('127.0.0.1:6000')?.login, 'bob');
    assert.equal(creds.find('127.0.0.1:5000', 'bob')?.login, 'bob');
    assert.equal(creds.find('nvcr.io')?.login, '$oauthtoken', 'NGC login $oauthtoken is literal');
    assert.equal(creds.find('nvcr.io')?.password, 'KEY');
    assert.equal(creds.find('example.com'), undefined);
  });

  it('takes a $VARIABLE password from the environment, without a shell', async () => {
    await write('machine nvcr.io login $oauthtoken password $NGC_API_KEY\nmachine b login u password ${B_PASS}\n', 0o600);
    const creds = await Credentials.load(dir, { NGC_API_KEY: 'nvapi-secret', B_PASS: '$(touch /tmp/x)' });
    assert.equal(creds.find('nvcr.io')?.password, 'nvapi-secret');
    assert.equal(creds.find('b')?.password, '$(touch /tmp/x)');
  });

  it('refuses a file that others can read, naming the mode and the fix', async () => {
    await write('machine a login u password p\n', 0o644);
    await assert.rejects(Credentials.load(dir, {}), (e: unknown) => e instanceof GantryError && e.code === 'CREDENTIALS' && /mode 0644/.test(e.message) && /chmod 600/.test(e.hint ?? ''));
  });

  it('names a missing environment variable without leaking anything', async () => {
    await write('machine a login u password $MISSING_VAR\n', 0o600);
    await assert.rejects(Credentials.load(dir, {}), (e: unknown) => e instanceof GantryError && /MISSING_VAR, which is not set/.test(e.message));
  });

  it('is empty when the file does not exist', async () => {
    await rm(join(dir, 'credentials'), { force: true });
    const creds = await Credentials.load(dir, {});
    assert.equal(creds.find('a'), undefined);
    assert.equal(creds.file, undefined);
  });

  it('rejects malformed files without echoing passwords', () => {
    assert.throws(() => parseNetrc('machine a login u', 'F', {}), /incomplete entry for machine a/);
    assert.throws(
      () => parseNetrc('login u password hunter2', 'F', {}),
      (e: unknown) => e instanceof GantryError && !e.message.includes('hunter2'),
    );
    assert.throws(
      () => parseNetrc('machine a login u bogus hunter2', 'F', {}),
      (e: unknown) => e instanceof GantryError && !e.message.includes('hunter2'),
    );
  });
});
