import type { ImportEvent } from '../image/events.js';

/**
 * Import progress for people: on a terminal, a bar per layer and an overall line redrawn in
 * place; elsewhere (logs, CI), one plain line per layer state change. Both read the same events.
 */
export interface ProgressRenderer {
  onEvent(event: ImportEvent): void;
  finish(): void;
}

export function humanBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

const short = (digest: string): string => digest.replace(/^sha256:/, '').slice(0, 12);

export function createProgress(stream: NodeJS.WriteStream, quiet = false): ProgressRenderer {
  if (quiet) return { onEvent: () => undefined, finish: () => undefined };
  return stream.isTTY ? new TtyProgress(stream) : new PlainProgress(stream);
}

class PlainProgress implements ProgressRenderer {
  private readonly last = new Map<string, string>();
  constructor(private readonly out: NodeJS.WritableStream) {}

  onEvent(e: ImportEvent): void {
    switch (e.type) {
      case 'resolved':
        this.out.write(`resolved ${e.reference} -> ${e.digest} (${e.platform}, ${e.layers} layers, ${humanBytes(e.totalBytes)})\n`);
        break;
      case 'layer':
        if (this.last.get(e.digest) === e.state) return;
        this.last.set(e.digest, e.state);
        this.out.write(`layer ${short(e.digest)} ${e.state}${e.state === 'waiting' ? ` for pid ${e.holder}` : ` ${humanBytes(e.size)}`}\n`);
        break;
      case 'retry':
        this.out.write(`retry ${e.attempt} for ${short(e.digest)}: ${e.reason}\n`);
        break;
      case 'done':
        this.out.write(`imported ${e.name} (${e.digest})\n`);
        break;
    }
  }

  finish(): void {}
}

class TtyProgress implements ProgressRenderer {
  private readonly layers = new Map<string, { state: string; bytes: number; size: number }>();
  private total = 0;
  private lines = 0;
  private readonly started = Date.now();
  private lastDraw = 0;
  private header = '';

  constructor(private readonly out: NodeJS.WriteStream) {}

  onEvent(e: ImportEvent): void {
    if (e.type === 'resolved') {
      this.total = e.totalBytes;
      this.header = `${e.reference} (${e.platform}, ${e.layers} layers)`;
    } else if (e.type === 'layer') {
      this.layers.set(e.digest, { state: e.state, bytes: e.bytes, size: e.size });
    } else if (e.type === 'retry') {
      const l = this.layers.get(e.digest);
      if (l) l.state = `retry ${e.attempt}`;
    }
    const now = Date.now();
    if (e.type === 'layer' && e.state === 'downloading' && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    this.draw();
  }

  private bar(fraction: number, width = 24): string {
    const filled = Math.round(Math.max(0, Math.min(1, fraction)) * width);
    return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
  }

  private draw(): void {
    const rows: string[] = [this.header];
    let done = 0;
    for (const [digest, l] of this.layers) {
      done += l.state === 'downloading' ? l.bytes : l.size;
      rows.push(`${short(digest)} ${this.bar(l.size ? l.bytes / l.size : 1)} ${humanBytes(l.bytes).padStart(9)} / ${humanBytes(l.size).padEnd(9)} ${l.state}`);
    }
    const seconds = Math.max(0.001, (Date.now() - this.started) / 1000);
    rows.push(`total        ${this.bar(this.total ? done / this.total : 0)} ${humanBytes(done).padStart(9)} / ${humanBytes(this.total).padEnd(9)} ${humanBytes(done / seconds)}/s`);
    let text = this.lines > 0 ? `\x1b[${this.lines}F` : '';
    text += rows.map((r) => `\x1b[2K${r.slice(0, (this.out.columns || 100) - 1)}`).join('\n') + '\n';
    this.out.write(text);
    this.lines = rows.length;
  }

  finish(): void {
    if (this.lines) this.draw();
  }
}
