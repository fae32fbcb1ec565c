/**
 * `npm test`: the whole suite in one command. It checks what the tests stand on (the native build,
 * the system tools, root for the as-root-and-as-a-user tests), builds the shared fixtures once with
 * visible progress (images, a seeded registry storage), then hands over to `node --test`, whose
 * summary is the last thing printed.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, run } from './fixtures/proc.js';
import { testUser } from './fixtures/users.js';

const TOOLS: Record<string, string> = {
  'docker-registry': 'docker-registry',
  skopeo: 'skopeo',
  umoci: 'umoci',
  mmdebstrap: 'mmdebstrap',
  pigz: 'pigz',
  zstd: 'zstd',
  openssl: 'openssl',
  htpasswd: 'apache2-utils',
  runuser: 'util-linux',
  busybox: 'busybox-static',
  script: 'bsdutils',
  setpriv: 'util-linux',
};

function onPath(tool: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(join(dir, tool)));
}

function fail(message: string): never {
  process.stderr.write(`test setup: ${message}\n`);
  process.exit(1);
}

const missing = Object.entries(TOOLS).filter(([tool]) => !onPath(tool));
if (missing.length) {
  fail(`missing tools: ${missing.map(([t]) => t).join(', ')}\ninstall them: apt-get install -y ${[...new Set(missing.map(([, p]) => p))].join(' ')}`);
}
if (!existsSync(join(repoRoot, 'native', 'build', 'Release', 'gantry-untar'))) fail('the native build is missing: run npm install (or npm run build)');
const probe = await run('/usr/bin/python3', ['-c', 'import jupyter_server, notebook, ipykernel'], { allowFail: true });
if (probe.code !== 0) fail('the kernel tests need Debian\'s Jupyter: apt-get install -y python3-jupyter-server python3-ipykernel jupyter-client jupyter-notebook');
if (!existsSync('/usr/bin/chromium')) fail('the notebook UI test needs Chromium: apt-get install -y chromium');
if (process.getuid?.() !== 0) fail('the integration tests run as root and as the unprivileged user gantry-test: run them as root (sudo npm test)');

const t0 = Date.now();
const user = await testUser();
// The fixture cache must be readable by the unprivileged user: a checkout under a private home
// (CI clones into one) gets its cache in /var/tmp instead.
if (!process.env.GANTRY_TEST_CACHE) {
  const probe = await run('runuser', ['-u', user.name, '--', 'test', '-x', repoRoot], { allowFail: true });
  if (probe.code !== 0) process.env.GANTRY_TEST_CACHE = '/var/tmp/gantry-test-cache';
}
const { seedStorage } = await import('./fixtures/registry.js');
const seed = await seedStorage();
process.stdout.write(`test setup: fixtures ready in ${((Date.now() - t0) / 1000).toFixed(1)} s (${Object.keys(seed.images).length} images in the seeded registry storage)\n`);

const files = process.argv.slice(2);
const args = ['--test', `--test-concurrency=${process.env.GANTRY_TEST_CONCURRENCY ?? 2}`, ...(files.length ? files : ['unit', 'integration', 'e2e'].map((d) => join(repoRoot, 'dist', 'test', d)))];
const child = spawn(process.execPath, args, { stdio: 'inherit', cwd: repoRoot });
child.on('close', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
