/**
 * What an import reports while it runs. The CLI draws progress bars from these; the service
 * (a later issue) streams them to the admin page. Plain data, so they serialise as JSON.
 */
export type LayerState = 'exists' | 'waiting' | 'downloading' | 'unpacking' | 'done';

export type ImportEvent =
  | { type: 'resolved'; reference: string; digest: string; platform: string; layers: number; totalBytes: number }
  | { type: 'layer'; digest: string; state: LayerState; bytes: number; size: number; holder?: number }
  | { type: 'retry'; digest: string; attempt: number; reason: string; offset: number }
  | { type: 'done'; name: string; digest: string };
