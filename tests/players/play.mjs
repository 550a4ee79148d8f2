// Plays a stream with a real player (hls.js or dash.js) in headless
// Chromium and prints what happened as one JSON line: seconds played, the
// renditions whose segments the browser fetched, any fatal error, the
// longest stall after the first frame, and whether the manifests
// grew while it played (a live playlist that later gained EXT-X-ENDLIST, a
// dynamic MPD that turned static).
//
//   node play.mjs --player hls|dash --url <master.m3u8|manifest.mpd> [--seconds 8] [--live 1] [--samples 1] [--poll 1] [--abr 1]
//
// The player starts on the lowest rung and is switched to the highest after
// two seconds of playback, so at least two rungs are fetched (dash.js with
// --abr 1: its own ABR switches). PLAYER_DEBUG=1 in the environment prints
// the page's console and requests on stderr. With --live,
// playback starts at the live edge and "seconds played" counts from the
// first frame shown, not from the presentation's start; the report adds
// the latency (wall clock minus the program date-time of the frame on
// screen, hls.js) and whether hls.js read LL-HLS parts; --samples adds
// every latency reading after the first 5 s. With --poll, the page asks for
// the URL every 50 ms until it answers 200 and only then starts the player
// (an asset that is not playable yet); node prints "ready" once the page
// polls, and the report adds the wall clock (ms since the epoch) of that
// first 200 and of the first frame presented (time to playable, cascade
// bench ttp). Used by the integration tests
// (tests/integration/origin.rs, tests/integration/live.rs).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const player = args.player;
const url = args.url;
const seconds = Number(args.seconds ?? 8);
const live = Boolean(Number(args.live ?? 0));
const samples = Boolean(Number(args.samples ?? 0));
const poll = Boolean(Number(args.poll ?? 0));
// dash.js only: its ABR picks the rungs, as in the field, instead of the
// switch by hand (dash.js with ABR off stalls at a Period boundary: when it
// preloads the next Period it replaces the current one's video buffer with
// its lowest rung and, locked, never fetches it back).
const abr = Boolean(Number(args.abr ?? 0));

const scripts = {
  '/hls.js': path.join(here, 'node_modules/hls.js/dist/hls.min.js'),
  '/dash.js': path.join(here, 'node_modules/dashjs/dist/modern/umd/dash.all.min.js'),
};

const page = `<!doctype html><html><body>
<video id="v" muted playsinline width="640" height="360"></video>
<script src="/${player}.js"></script>
<script>
const video = document.getElementById('v');
if (${JSON.stringify(!!process.env.PLAYER_DEBUG)}) {
  setInterval(() => {
    const ranges = [];
    for (let i = 0; i < video.buffered.length; i++) ranges.push([video.buffered.start(i).toFixed(3), video.buffered.end(i).toFixed(3)]);
    console.log('at ' + video.currentTime.toFixed(3) + ' buffered ' + JSON.stringify(ranges) + ' paused ' + video.paused);
  }, 1000);
}
window.report = { fatal: null, errors: [], start: null, latency: null, lowLatency: false, latencies: [],
  longestStall: 0, stalls: [], grew: false, endedList: false };
// Stalls after the first frame: 'waiting' until 'playing' again.
let stalledAt = null;
let stalledFrom = 0;
video.addEventListener('waiting', () => {
  if (window.report.start !== null) { stalledAt = performance.now(); stalledFrom = video.currentTime; }
});
video.addEventListener('playing', () => {
  if (stalledAt !== null) {
    const seconds = (performance.now() - stalledAt) / 1000;
    window.report.longestStall = Math.max(window.report.longestStall, seconds);
    window.report.stalls.push([stalledFrom, seconds]);
    stalledAt = null;
  }
});
window.stall = () => stalledAt === null ? 0 : (performance.now() - stalledAt) / 1000;
const url = ${JSON.stringify(url)};
// Seconds shown since the first frame (live starts at the edge, not at 0).
const played = () => {
  if (window.report.start === null && video.currentTime > 0) window.report.start = video.currentTime;
  return window.report.start === null ? 0 : video.currentTime - window.report.start;
};
window.played = played;
video.requestVideoFrameCallback(() => { window.report.firstFrameEpochMs = Date.now(); });
const start = () => {
if (${JSON.stringify(player)} === 'hls') {
  // Live: speed up to 1.5x to get back to the target latency after a stall
  // (hls.js's default is never to catch up), as low-latency players are set.
  const hls = new Hls({ capLevelToPlayerSize: false, startLevel: 0,
    ...(${JSON.stringify(live)} ? { maxLiveSyncPlaybackRate: 1.5 } : {}) });
  hls.on(Hls.Events.ERROR, (_, d) => {
    window.report.errors.push(d.details);
    if (d.fatal) window.report.fatal = d.type + ': ' + d.details;
  });
  hls.on(Hls.Events.MANIFEST_PARSED, () => { hls.currentLevel = 0; video.play(); });
  // LL-HLS: the playlist lists parts (hls.js then loads parts and blocks on reloads).
  hls.on(Hls.Events.LEVEL_LOADED, (_, d) => {
    if (d.details.partList && d.details.partList.length) window.report.lowLatency = true;
    // A growing presentation (progressive publish): live until EXT-X-ENDLIST.
    if (d.details.live) window.report.grew = true;
    else if (window.report.grew) window.report.endedList = true;
  });
  video.addEventListener('timeupdate', () => {
    // On demand, nextLevel: from the next segment on, as ABR switches
    // (currentLevel flushes the buffer and stalls by design). Live keeps
    // currentLevel: the flush reloads at the live edge.
    if (played() > 2 && !window.switched) {
      window.switched = true;
      if (${JSON.stringify(live)}) hls.currentLevel = hls.levels.length - 1;
      else hls.nextLevel = hls.levels.length - 1;
    }
    if (hls.playingDate) {
      window.report.latency = (Date.now() - hls.playingDate.getTime()) / 1000;
      // Samples after the first 5 s of playback (the start settles first).
      if (played() > 5) window.report.latencies.push(window.report.latency);
    }
  });
  hls.loadSource(url);
  hls.attachMedia(video);
} else {
  const p = dashjs.MediaPlayer().create();
  if (!${JSON.stringify(abr)}) p.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: false } } } });
  if (${JSON.stringify(!!process.env.PLAYER_DEBUG)}) p.updateSettings({ debug: { logLevel: dashjs.Debug.LOG_LEVEL_INFO } });
  p.on(dashjs.MediaPlayer.events.ERROR, (e) => { window.report.fatal = JSON.stringify(e.error || e); });
  p.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, () => {
    // A growing presentation (progressive publish) or live: a dynamic MPD,
    // until one turns static.
    if (p.isDynamic()) window.report.grew = true;
    p.setRepresentationForTypeByIndex('video', 0, true);
    video.play();
  });
  p.on(dashjs.MediaPlayer.events.DYNAMIC_TO_STATIC, () => {
    if (window.report.grew) window.report.endedList = true;
  });
  video.addEventListener('timeupdate', () => {
    // dash.js's live latency, against the clock UTCTiming gave it.
    const latency = p.getCurrentLiveLatency ? p.getCurrentLiveLatency() : NaN;
    if (${JSON.stringify(live)} && Number.isFinite(latency) && latency > 0) {
      window.report.latency = latency;
      if (played() > 5) window.report.latencies.push(latency);
    }
    if (played() > 2 && !window.switched && !${JSON.stringify(abr)}) {
      window.switched = true;
      const reps = p.getRepresentationsByType('video');
      p.setRepresentationForTypeByIndex('video', reps.length - 1, true);
    }
  });
  p.initialize(video, url, false);
}
};
if (${JSON.stringify(poll)}) {
  (async () => {
    // Until it answers 200, within the run's deadline (node's own is longer).
    const deadline = Date.now() + 300000;
    let playable = false;
    while (!playable && Date.now() < deadline) {
      try {
        playable = (await fetch(url, { cache: 'no-store' })).ok;
      } catch (e) { /* not up yet */ }
      if (!playable) await new Promise((r) => setTimeout(r, 50));
    }
    if (!playable) {
      window.report.fatal = 'never playable: ' + url;
      return;
    }
    window.report.manifestEpochMs = Date.now();
    start();
  })();
} else {
  start();
}
</script></body></html>`;

const server = http.createServer((req, res) => {
  if (scripts[req.url]) {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    fs.createReadStream(scripts[req.url]).pipe(res);
  } else {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(page);
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
const renditions = new Set();
let played = 0;
let report = { fatal: 'did not start', errors: [] };
try {
  const tab = await browser.newPage();
  // PLAYER_DEBUG=1: the page's console and its requests on stderr, to see
  // what a player did.
  if (process.env.PLAYER_DEBUG) {
    tab.on('console', (m) => process.stderr.write(`console.${m.type()}: ${m.text()}\n`));
    tab.on('requestfinished', async (r) => process.stderr.write(`${(await r.response())?.status()} ${r.url()}\n`));
  }
  tab.on('request', (r) => {
    const m = r.url().match(/\/play\/[^/]+\/(?:[vs]\d+\/)?([^/?]+)\/\d+(?:\.\d+)?\.m4s/);
    if (m) renditions.add(m[1]);
  });
  await tab.goto(pageUrl);
  if (poll) console.log('ready');
  // Polling waits for the asset to be playable first.
  const deadline = Date.now() + (seconds * 4 + (poll ? 300 : 30)) * 1000;
  while (Date.now() < deadline) {
    [played, report] = await tab.evaluate(() => [window.played(), window.report]);
    // A stall still under way counts too.
    report.longestStall = Math.max(report.longestStall ?? 0, await tab.evaluate(() => window.stall()));
    if (report.fatal || played >= seconds) break;
    await new Promise((r) => setTimeout(r, 250));
  }
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify({ player, live, played, renditions: [...renditions].sort(), fatal: report.fatal,
  errors: report.errors, latency: report.latency, low_latency: report.lowLatency ?? false,
  first_frame_at: report.start, longest_stall: report.longestStall ?? 0, stalls: report.stalls ?? [],
  grew: report.grew ?? false, manifest_epoch_ms: report.manifestEpochMs ?? null,
  first_frame_epoch_ms: report.firstFrameEpochMs ?? null,
  ended_list: report.endedList ?? false,
  ...(samples ? { latencies: report.latencies } : {}) }));
