import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultDisplayName, defaultKernelName, kernelSpec, validKernelName } from '../../src/kernels/kernelspec.js';
import { kernelsDir, searchedKernelDirs } from '../../src/kernels/locations.js';
import type { ImageRecord } from '../../src/store/store.js';

const image = {
  name: 'nvidia+pytorch+24.05-py3',
  reference: 'nvcr.io/nvidia/pytorch:24.05-py3',
  repository: 'nvidia/pytorch',
  tag: '24.05-py3',
  digest: `sha256:${'a'.repeat(64)}`,
} as ImageRecord;

describe('kernelspecs', () => {
  it('derives names a user recognises', () => {
    assert.equal(defaultKernelName(image), 'gantry-nvidia-pytorch-24.05-py3');
    assert.ok(validKernelName(defaultKernelName(image)));
    assert.equal(defaultDisplayName(image), 'Python 3 (pytorch 24.05-py3)');
    assert.equal(defaultDisplayName(image, 'all'), 'Python 3 (pytorch 24.05-py3, all GPUs)');
    assert.equal(defaultDisplayName(image, '0'), 'Python 3 (pytorch 24.05-py3, GPU 0)');
    assert.equal(defaultDisplayName(image, '0,1'), 'Python 3 (pytorch 24.05-py3, GPUs 0,1)');
    assert.equal(defaultDisplayName(image, 'none'), 'Python 3 (pytorch 24.05-py3, no GPU)');
    assert.equal(defaultDisplayName(image, 'void'), 'Python 3 (pytorch 24.05-py3)');
    for (const bad of ['', 'Upper', 'a/b', '.x', 'x'.repeat(65)]) assert.ok(!validKernelName(bad), bad);
  });

  it('starts the native launcher with the plan and the connection file, and holds no secrets', () => {
    const spec = kernelSpec({ launcher: '/opt/gantry-exec', plan: '/k/plan', python: 'python3', image, displayName: 'X', debugger: true });
    assert.deepEqual(spec.argv, ['/opt/gantry-exec', '--bind-parent', '{connection_file}', '/k/plan', '--', 'python3', '-m', 'ipykernel_launcher', '-f', '{connection_file}']);
    assert.equal(spec.interrupt_mode, 'signal');
    assert.equal(spec.language, 'python');
    assert.deepEqual(spec.metadata, { gantry: { image: image.name, reference: image.reference, digest: image.digest }, debugger: true });
    assert.deepEqual(spec.env, {});
  });

  it('puts kernels where jupyter kernelspec install would', () => {
    const env = { HOME: '/home/ada' };
    assert.equal(kernelsDir({ kind: 'user' }, env), '/home/ada/.local/share/jupyter/kernels');
    assert.equal(kernelsDir({ kind: 'user' }, { ...env, JUPYTER_DATA_DIR: '/j' }), '/j/kernels');
    assert.equal(kernelsDir({ kind: 'system' }, env), '/usr/local/share/jupyter/kernels');
    assert.equal(kernelsDir({ kind: 'sys-prefix' }, env), '/usr/share/jupyter/kernels');
    assert.equal(kernelsDir({ kind: 'prefix', dir: '/opt/env' }, env), '/opt/env/share/jupyter/kernels');
    assert.equal(searchedKernelDirs({ ...env, JUPYTER_PATH: '/a:/b' })[0], '/a/kernels');
  });
});
