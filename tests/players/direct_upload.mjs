// A web app's upload page in headless Chromium: it uploads a file with
// tus-js-client (tests/clients/node_modules) through a Cascade direct
// upload URL, from its own origin (this script's static server on a
// loopback port of its own), so every request is cross-origin and goes
// through real CORS preflights.
//
//   node direct_upload.mjs --file <video>
//
// Prints `ORIGIN <the page's origin>`, reads the direct upload URL (made
// for that origin) from stdin, runs the upload, then tries a second upload
// through the same URL with fetch, and prints `RESULT <json>`:
// {ok, error, uploadUrl, chunks, origin, again: {status, body}}.
// Used by the integration tests (tests/integration/ingest/direct.rs).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);

const files = {
  '/tus.js': [path.join(here, '../clients/node_modules/tus-js-client/dist/tus.min.js'), 'text/javascript'],
  '/video.mp4': [args.file, 'video/mp4'],
};

const page = `<!doctype html><html><body>
<script src="/tus.js"></script>
<script>
window.run = async (endpoint) => {
  const blob = await (await fetch('/video.mp4')).blob();
  const file = new File([blob], 'from-the-browser.mp4', { type: 'video/mp4' });
  let chunks = 0;
  const result = await new Promise((resolve) => {
    const upload = new tus.Upload(file, {
      endpoint,
      chunkSize: 32 * 1024,
      retryDelays: [],
      storeFingerprintForResuming: false,
      metadata: { filename: file.name, filetype: file.type },
      onChunkComplete: () => { chunks += 1; },
      onError: (error) => resolve({ ok: false, error: String(error) }),
      onSuccess: () => resolve({ ok: true, uploadUrl: upload.url }),
    });
    upload.start();
  });
  result.chunks = chunks;
  result.origin = location.origin;
  // The URL is one-time: a second creation is refused, in a form the page can read.
  try {
    const again = await fetch(endpoint, {
      method: 'POST',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(file.size) },
    });
    result.again = { status: again.status, body: await again.json() };
  } catch (error) {
    result.again = { error: String(error) };
  }
  return result;
};
</script></body></html>`;

const server = http.createServer((req, res) => {
  const served = files[req.url];
  if (served) {
    res.writeHead(200, { 'content-type': served[1] });
    fs.createReadStream(served[0]).pipe(res);
  } else {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(page);
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const origin = `http://127.0.0.1:${server.address().port}`;
console.log(`ORIGIN ${origin}`);

const input = readline.createInterface({ input: process.stdin });
const url = (await input[Symbol.asyncIterator]().next()).value?.trim();
input.close();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
let result = { ok: false, error: 'did not run' };
try {
  const tab = await browser.newPage();
  tab.on('console', (message) => console.error(`page: ${message.text()}`));
  await tab.goto(`${origin}/`);
  result = await tab.evaluate((endpoint) => window.run(endpoint), url);
} catch (error) {
  result = { ok: false, error: String(error) };
} finally {
  await browser.close();
  server.close();
}
console.log(`RESULT ${JSON.stringify(result)}`);
