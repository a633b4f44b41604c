// Two real players on one live stream, and what a viewer would notice: how long the picture
// stood still while playing (a stall: currentTime not advancing while not paused), the
// longest such stall, fatal errors, and whether anything loaded the stream a second time;
// plus the wall-clock date of what is on screen (EXT-X-PROGRAM-DATE-TIME), which tells the
// tests whether a player got to media made after a fault. The tests read
// window.playerStats(); nothing here retries or reloads.
"use strict";

const SAMPLE_MS = 100;
const KEPT_ERRORS = 20;
const src = new URLSearchParams(location.search).get("src");
const pageLoads = Number(sessionStorage.getItem("pageLoads") || 0) + 1;
sessionStorage.setItem("pageLoads", String(pageLoads));

function track(name, video, playingDate) {
  const stats = {
    name,
    started: false,
    position: 0,
    playingDateMs: null,
    stallMs: 0,
    longestStallMs: 0,
    stalls: 0,
    waitingEvents: 0,
    ended: false,
    manifestLoads: 0,
    fatalErrors: [],
    errors: [],
  };
  let lastTime = 0;
  let lastSample = performance.now();
  let currentStallMs = 0;
  video.addEventListener("waiting", () => stats.waitingEvents++);
  video.addEventListener("ended", () => (stats.ended = true));
  setInterval(() => {
    const now = performance.now();
    const elapsed = now - lastSample;
    lastSample = now;
    const time = video.currentTime;
    if (!stats.started) {
      stats.started = time > 0 && !video.paused;
    } else if (!video.paused && !video.ended && time <= lastTime) {
      if (currentStallMs === 0) stats.stalls++;
      currentStallMs += elapsed;
      stats.stallMs += elapsed;
      stats.longestStallMs = Math.max(stats.longestStallMs, currentStallMs);
    } else {
      currentStallMs = 0;
    }
    lastTime = time;
    stats.position = time;
    stats.playingDateMs = playingDate()?.getTime() ?? null;
  }, SAMPLE_MS);
  return stats;
}

// Shaka's error data: the request URI, HTTP status and the error beneath, as far as it goes.
function describe(data) {
  try {
    return JSON.stringify(data, (key, value) => (value instanceof ArrayBuffer ? "<bytes>" : value)).slice(0, 600);
  } catch (_error) {
    return String(data);
  }
}

function keep(list, text) {
  if (list.length < KEPT_ERRORS) list.push(text);
}

function playHlsJs(video) {
  const hls = new Hls();
  const stats = track("hls.js", video, () => hls.playingDate);
  hls.on(Hls.Events.MANIFEST_LOADING, () => stats.manifestLoads++);
  hls.on(Hls.Events.ERROR, (_event, data) => {
    keep(data.fatal ? stats.fatalErrors : stats.errors, `${data.type}: ${data.details}`);
  });
  hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
  hls.attachMedia(video);
  hls.loadSource(src);
  window.hlsjs = hls;
  return stats;
}

function playShaka(video) {
  shaka.polyfill.installAll();
  const player = new shaka.Player();
  const stats = track("shaka", video, () => (stats.started ? player.getPlayheadTimeAsDate() : null));
  if (!shaka.Player.isBrowserSupported()) {
    stats.fatalErrors.push("this browser does not support Shaka Player");
    return stats;
  }
  player.addEventListener("loading", () => stats.manifestLoads++);
  player.addEventListener("error", (event) => {
    const error = event.detail;
    const critical = error.severity === shaka.util.Error.Severity.CRITICAL;
    keep(critical ? stats.fatalErrors : stats.errors, `code ${error.code}: ${describe(error.data)}`);
  });
  player
    .attach(video)
    .then(() => player.load(src))
    .then(() => video.play().catch(() => {}))
    .catch((error) => keep(stats.fatalErrors, `load failed, code ${error.code}`));
  window.shakaPlayer = player;
  return stats;
}

const players = [
  playHlsJs(document.getElementById("hlsjs")),
  playShaka(document.getElementById("shaka")),
];
window.playerStats = () => ({ pageLoads, players });
