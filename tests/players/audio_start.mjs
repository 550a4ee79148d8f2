// Where Chromium's Media Source Extensions place an audio rendition's first
// sample: the CMAF header and first media segment are appended to an MSE
// SourceBuffer at timestampOffset 1 s, and the buffered range is printed
// as one JSON line ({"start": s, "end": s, "codecs": "..."}). A header whose
// edit list skips the AAC encoder's priming starts the range that many
// samples before 1 s (the input's first sample presented at 1 s); without
// one it starts at 1 s. The offset keeps the priming after 0, where the
// append window would otherwise trim it out of sight.
//
//   node audio_start.mjs --init <init.mp4 URL> --segment <media segment URL> [--codecs mp4a.40.2]
//
// Used by tests/integration/origin.rs. Node fetches both objects and serves
// them beside the page, so the page needs no CORS from the origin.
import http from 'node:http';
import { chromium } from 'playwright-core';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const codecs = args.codecs ?? 'mp4a.40.2';
const fetched = async (url) => {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return Buffer.from(await response.arrayBuffer());
};
const objects = { '/init.mp4': await fetched(args.init), '/segment.m4s': await fetched(args.segment) };

const page = `<!doctype html><html><body><script>
window.result = (async () => {
  const source = new MediaSource();
  const audio = document.createElement('audio');
  audio.src = URL.createObjectURL(source);
  await new Promise((resolve) => source.addEventListener('sourceopen', resolve, { once: true }));
  const buffer = source.addSourceBuffer(${JSON.stringify(`audio/mp4; codecs="${codecs}"`)});
  buffer.timestampOffset = 1;
  for (const path of ['/init.mp4', '/segment.m4s']) {
    const bytes = await (await fetch(path)).arrayBuffer();
    buffer.appendBuffer(bytes);
    await new Promise((resolve, reject) => {
      buffer.addEventListener('updateend', resolve, { once: true });
      buffer.addEventListener('error', () => reject(new Error('append failed: ' + path)), { once: true });
    });
  }
  if (buffer.buffered.length === 0) throw new Error('nothing buffered');
  return { start: buffer.buffered.start(0), end: buffer.buffered.end(0), ranges: buffer.buffered.length };
})();
</script></body></html>`;

const server = http.createServer((req, res) => {
  const body = objects[req.url];
  if (body) {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.end(body);
  } else {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(page);
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
try {
  const tab = await browser.newPage();
  await tab.goto(`http://127.0.0.1:${server.address().port}/`);
  const result = await tab.evaluate(() => window.result);
  console.log(JSON.stringify({ ...result, codecs }));
} finally {
  await browser.close();
  server.close();
}
