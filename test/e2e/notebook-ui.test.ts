import assert from 'node:assert/strict';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { artifactsDir, launchChromium, requireChromium } from '../fixtures/browser.js';
import { startJupyterServer, type JupyterServer } from '../fixtures/jupyter.js';
import { python3, run } from '../fixtures/proc.js';
import { seedStorage, startRegistry, type Registry } from '../fixtures/registry.js';
import { gantry, identities, makeEnv, ok, type Env } from '../integration/helpers.js';

/**
 * A container kernel in the classic Notebook 6.4 UI (Debian's jupyter-notebook, NotebookApp) in
 * headless Chromium (Debian's, driven by playwright-core), as root: the New menu lists the kernel,
 * and a notebook created from it runs a cell inside the image. Leaves a screenshot of the notebook
 * in $GANTRY_TEST_ARTIFACTS (default <repo>/.cache/test-artifacts)/notebook-ui.png.
 *
 * Needs: apt-get install -y --no-install-recommends jupyter-notebook chromium (fails, never skips,
 * when they are missing).
 */
const KERNEL = 'gantry-deb';
const DISPLAY_NAME = 'Python 3 (debian ipykernel)';
const CODE = "import os; print(open('/etc/gantry-fixture').read().strip(), os.getuid())";
const WAIT = 60_000;

describe('classic Notebook 6.4 UI in headless Chromium', () => {
  let registry: Registry | undefined;
  let env: Env | undefined;
  let server: JupyterServer | undefined;
  let browser: Browser | undefined;
  let context: BrowserContext | undefined;
  let tree: Page;

  before(async () => {
    // What the test stands on: fail with what to install, never skip.
    requireChromium();
    const probe = await run(python3(), ['-c', 'import notebook, ipykernel; print(notebook.__version__)'], { allowFail: true });
    if (probe.code !== 0) {
      throw new Error(`the classic notebook server is missing (${probe.stderr.trim().split('\n').pop()}): apt-get install -y --no-install-recommends jupyter-notebook`);
    }

    const seed = await seedStorage();
    registry = await startRegistry({ auth: 'none', storageDir: seed.dir });
    env = await makeEnv((await identities())[0]!, 'gantry-notebook-ui');
    const notebooks = join(env.home, 'notebooks');
    await mkdir(notebooks, { recursive: true });
    ok(await gantry(env, ['import', `${registry.host}/${seed.images['debian-ipykernel']}`, '--name', 'deb']));
    ok(await gantry(env, ['kernel', 'install', 'deb', '--prefix', join(env.dir, 'jupyter-prefix')]));
    server = await startJupyterServer({
      app: 'notebook',
      kernelspecDirs: [join(env.dir, 'jupyter-prefix', 'share', 'jupyter')],
      rootDir: notebooks,
      env: { HOME: env.home },
    });
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    context.setDefaultTimeout(WAIT);
    tree = await context.newPage();
  });

  after(async () => {
    // Everything, even when a step failed: the browser, the server with its kernels, the store.
    await context?.close().catch(() => undefined);
    await browser?.close().catch(() => undefined);
    await server?.stop();
    await registry?.stop();
    await env?.cleanup();
    if (server) assert.deepEqual(server.leftovers, [], 'the server stopped its kernels itself');
  });

  const withLog = async (what: string): Promise<string> => `${what}\n--- notebook server log ---\n${(await server?.log())?.split('\n').slice(-40).join('\n')}`;

  it('lists the kernel in the New menu', async () => {
    await tree.goto(`${server!.url}/tree?token=${server!.token}`);
    await tree.locator('#new-dropdown-button').click();
    const entry = tree.locator(`#new-menu li#kernel-${KERNEL} a`);
    await entry.waitFor({ state: 'visible' });
    assert.equal((await entry.textContent())?.trim(), DISPLAY_NAME);
    const names = await tree.locator('#new-menu li[id^="kernel-"] a').allTextContents();
    assert.ok(names.map((n) => n.trim()).includes(DISPLAY_NAME), `New menu: ${names.join(', ')}`);
  });

  it('runs a cell of a new notebook in the image', { timeout: 4 * WAIT }, async () => {
    // The entry opens a new tab, then points it at the new notebook.
    const [page] = await Promise.all([
      context!.waitForEvent('page', { timeout: WAIT }),
      tree.locator(`#new-menu li#kernel-${KERNEL} a`).click(),
    ]);

    await page.waitForURL(/\/notebooks\/.*\.ipynb\?kernel_name=gantry-deb/, { timeout: WAIT });
    // Ready: the kernel's websocket is connected and its kernel_info_reply has arrived, and the
    // indicator says idle (it turns busy while the kernel starts and answers kernel_info).
    await page.waitForFunction(
      (name) => {
        type K = { name?: string; is_connected?: () => boolean; info_reply?: { status?: string } };
        const k = (window as unknown as { Jupyter?: { notebook?: { kernel?: K } } }).Jupyter?.notebook?.kernel;
        return !!k && k.name === name && !!k.is_connected?.() && k.info_reply?.status === 'ok';
      },
      KERNEL,
      { timeout: WAIT, polling: 100 },
    ).catch(async (e: Error) => assert.fail(await withLog(`the kernel did not become ready: ${e.message}`)));
    await page.locator('#kernel_indicator_icon.kernel_idle_icon').waitFor({ state: 'attached', timeout: WAIT });

    const cell = page.locator('.cell.code_cell').first();
    await cell.locator('.CodeMirror').click();
    await page.keyboard.type(CODE);
    const text = await page.evaluate(() => (window as unknown as { Jupyter: { notebook: { get_cell(i: number): { get_text(): string } } } }).Jupyter.notebook.get_cell(0).get_text());
    assert.equal(text, CODE, 'the cell holds what was typed (no auto-closed brackets left over)');
    await page.keyboard.press('Shift+Enter');

    const output = cell.locator('.output_area .output_subarea');
    await output.first().waitFor({ state: 'visible', timeout: WAIT }).catch(async (e: Error) => assert.fail(await withLog(`no output: ${e.message}`)));
    // Done: the prompt turns from In [*] to In [1] on the execute_reply (after the output).
    const prompt = cell.locator('.input_prompt');
    await page.waitForFunction((el) => /In\s*\[1\]/.test(el?.textContent ?? ''), await prompt.elementHandle(), { timeout: WAIT, polling: 100 });
    await page.locator('#kernel_indicator_icon.kernel_idle_icon').waitFor({ state: 'attached', timeout: WAIT });
    assert.equal((await output.allInnerTexts()).join('').trim(), 'debian-ipykernel 0');

    const png = join(await artifactsDir(), 'notebook-ui.png');
    await rm(png, { force: true });
    await page.screenshot({ path: png, fullPage: true });
    const size = (await stat(png)).size;
    assert.ok(size > 10_000, `${png} is ${size} bytes`);
    assert.deepEqual([...(await readFile(png)).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `${png} is a PNG`);

    // The kernel the UI started is the server's, running the Gantry spec.
    const kernels = await server!.kernels();
    assert.deepEqual(kernels.map((k) => k.name), [KERNEL]);
  });
});
