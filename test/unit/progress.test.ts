import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { createProgress, humanBytes } from '../../src/cli/progress.js';

describe('progress', () => {
  it('prints one plain line per layer state when not on a terminal', () => {
    const out = new PassThrough();
    const text: string[] = [];
    out.on('data', (c: Buffer) => text.push(c.toString()));
    const p = createProgress(out as unknown as NodeJS.WriteStream);
    const d = `sha256:${'ab'.repeat(32)}`;
    p.onEvent({ type: 'resolved', reference: 'r/x:1', digest: d, platform: 'linux/amd64', layers: 1, totalBytes: 2_500_000 });
    for (let b = 0; b <= 2_500_000; b += 500_000) p.onEvent({ type: 'layer', digest: d, state: 'downloading', bytes: b, size: 2_500_000 });
    p.onEvent({ type: 'layer', digest: d, state: 'unpacking', bytes: 2_500_000, size: 2_500_000 });
    p.onEvent({ type: 'retry', digest: d, attempt: 1, reason: 'reset', offset: 5 });
    p.onEvent({ type: 'layer', digest: d, state: 'done', bytes: 2_500_000, size: 2_500_000 });
    p.onEvent({ type: 'done', name: 'x+1', digest: d });
    p.finish();
    assert.deepEqual(text.join('').trim().split('\n'), [
      `resolved r/x:1 -> ${d} (linux/amd64, 1 layers, 2.5 MB)`,
      'layer abababababab downloading 2.5 MB',
      'layer abababababab unpacking 2.5 MB',
      'retry 1 for abababababab: reset',
      'layer abababababab done 2.5 MB',
      `imported x+1 (${d})`,
    ]);
  });

  it('draws bars in place on a terminal', () => {
    const out = Object.assign(new PassThrough(), { isTTY: true, columns: 120 });
    const text: string[] = [];
    out.on('data', (c: Buffer) => text.push(c.toString()));
    const p = createProgress(out as unknown as NodeJS.WriteStream);
    const d = `sha256:${'cd'.repeat(32)}`;
    p.onEvent({ type: 'resolved', reference: 'r/x:1', digest: d, platform: 'linux/amd64', layers: 1, totalBytes: 1000 });
    p.onEvent({ type: 'layer', digest: d, state: 'done', bytes: 1000, size: 1000 });
    p.finish();
    const all = text.join('');
    assert.match(all, /cdcdcdcdcdcd \[#{24}\]\s+1\.0 kB \/ 1\.0 kB\s+done/);
    assert.match(all, /\x1b\[\d+F/, 'moves the cursor up to redraw');
  });

  it('formats sizes', () => {
    assert.equal(humanBytes(0), '0 B');
    assert.equal(humanBytes(999), '999 B');
    assert.equal(humanBytes(1_500_000_000), '1.5 GB');
  });
});
