#!/usr/bin/env node
// serve-oci.mjs: a tiny read-only registry for an OCI image layout (Node, no dependencies).
//
//   node serve-oci.mjs LAYOUT_DIR [--port N] [--host 127.0.0.1] [--port-file FILE]
//
// Serves LAYOUT_DIR (oci-layout, index.json, blobs/sha256/...) over the Docker Registry HTTP
// API v2, for any repository name:
//   GET /v2/                                 200 {}
//   HEAD|GET /v2/<name>/manifests/<tag>      the manifest index.json names with
//                                            org.opencontainers.image.ref.name=<tag>
//   HEAD|GET /v2/<name>/manifests/<digest>   any manifest or index blob
//   HEAD|GET /v2/<name>/blobs/<digest>       any blob (Range: bytes=N- and N-M honoured)
// with Content-Type (the manifest's mediaType), Content-Length and Docker-Content-Digest.
// Anything else: 404/405 with a registry-style JSON error. The port (0 by default: a free one)
// is printed on stdout as `listening 127.0.0.1:PORT` and written to --port-file.
// Every request is logged on stderr. SIGTERM/SIGINT end it.
import { createServer } from 'node:http';
import { createReadStream, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const args = process.argv.slice(2);
let dir;
let port = 0;
let host = '127.0.0.1';
let portFile;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--port') port = Number(args[++i]);
  else if (a === '--host') host = args[++i];
  else if (a === '--port-file') portFile = args[++i];
  else if (!dir && !a.startsWith('-')) dir = a;
  else {
    process.stderr.write(`serve-oci: unexpected argument ${a}\nusage: node serve-oci.mjs LAYOUT_DIR [--port N] [--host H] [--port-file FILE]\n`);
    process.exit(2);
  }
}
if (!dir) {
  process.stderr.write('usage: node serve-oci.mjs LAYOUT_DIR [--port N] [--host H] [--port-file FILE]\n');
  process.exit(2);
}

const MT_INDEX = 'application/vnd.oci.image.index.v1+json';
const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8'));
const tags = new Map();   // tag -> descriptor
for (const m of index.manifests ?? []) {
  const tag = m.annotations?.['org.opencontainers.image.ref.name'];
  if (tag) tags.set(tag, m);
}

function blobPath(digest) {
  const m = /^sha256:([a-f0-9]{64})$/.exec(digest);
  return m ? join(dir, 'blobs', 'sha256', m[1]) : undefined;
}

function fail(res, status, code, message) {
  const body = JSON.stringify({ errors: [{ code, message, detail: null }] });
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function manifest(req, res, ref) {
  let digest = ref;
  let mediaType;
  if (!ref.startsWith('sha256:')) {
    const desc = tags.get(ref);
    if (!desc) return fail(res, 404, 'MANIFEST_UNKNOWN', `manifest unknown: tag ${ref}`);
    digest = desc.digest;
    mediaType = desc.mediaType;
  }
  const path = blobPath(digest);
  let data;
  try {
    data = readFileSync(path ?? '');
  } catch {
    return fail(res, 404, 'MANIFEST_UNKNOWN', `manifest unknown: ${ref}`);
  }
  let parsed;
  try {
    parsed = JSON.parse(data.toString('utf8'));
  } catch {
    return fail(res, 404, 'MANIFEST_UNKNOWN', `${ref} is not a manifest`);
  }
  mediaType = parsed.mediaType ?? mediaType ?? (parsed.manifests ? MT_INDEX : 'application/vnd.oci.image.manifest.v1+json');
  res.writeHead(200, {
    'Content-Type': mediaType,
    'Content-Length': data.length,
    'Docker-Content-Digest': digest,
    'Docker-Distribution-API-Version': 'registry/2.0',
  });
  res.end(req.method === 'HEAD' ? undefined : data);
}

function blob(req, res, digest) {
  const path = blobPath(digest);
  let size;
  try {
    size = statSync(path ?? '').size;
  } catch {
    return fail(res, 404, 'BLOB_UNKNOWN', `blob unknown: ${digest}`);
  }
  const headers = {
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': digest,
    'Docker-Distribution-API-Version': 'registry/2.0',
    'Accept-Ranges': 'bytes',
  };
  let start = 0;
  let end = size - 1;
  let status = 200;
  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  if (range) {
    start = Number(range[1]);
    if (range[2]) end = Math.min(Number(range[2]), size - 1);
    if (start >= size || start > end) {
      res.writeHead(416, { 'Content-Range': `bytes */${size}` });
      return res.end();
    }
    status = 206;
    headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
  }
  headers['Content-Length'] = end - start + 1;
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || size === 0) return res.end();
  createReadStream(path, { start, end }).on('error', () => res.destroy()).pipe(res);
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://x');
  res.on('finish', () => process.stderr.write(`serve-oci: ${req.method} ${url.pathname} ${res.statusCode}\n`));
  if (req.method !== 'GET' && req.method !== 'HEAD') return fail(res, 405, 'UNSUPPORTED', 'read-only registry');
  if (url.pathname === '/v2/' || url.pathname === '/v2') {
    const body = '{}';
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 2, 'Docker-Distribution-API-Version': 'registry/2.0' });
    return res.end(req.method === 'HEAD' ? undefined : body);
  }
  const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
  if (!m) return fail(res, 404, 'NAME_UNKNOWN', `no route for ${url.pathname}`);
  const ref = decodeURIComponent(m[3]);
  return m[2] === 'manifests' ? manifest(req, res, ref) : blob(req, res, ref);
});
// A TLS probe (the client tries https first on loopback) must not take the server down.
server.on('clientError', (_err, socket) => socket.destroy());
server.listen(port, host, () => {
  const addr = server.address();
  const line = `${addr.address}:${addr.port}`;
  if (portFile) writeFileSync(portFile, `${addr.port}\n`);
  process.stdout.write(`listening ${line}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
