// nebula-live demo player: plain JS over the REST API (admin token), the public websocket
// events and the public HLS playlists, played with the vendored hls.js.
"use strict";

const TOKEN_KEY = "nebula.token";
const RETRY_MS = 2000;
const $ = (id) => document.getElementById(id);
const video = $("video");

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  streams: new Map(), // id -> stream as the REST API returns it
  sockets: new Map(), // id -> WebSocket
  statuses: new Map(), // id -> the last status its websocket told
  selected: null,
  status: null, // the selected stream's status, from its websocket
  wasLive: false, // the selected stream was live while this page watched it
  mode: null, // "live" | "recording"
  hls: null,
  retry: null,
};
window.nebulaPlayer = state; // for the browser console and the end-to-end tests

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
  });
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error(body?.detail ? JSON.stringify(body.detail) : response.statusText);
  return body;
}

// ---- streams list, kept live by one websocket per stream ------------------------------

async function loadStreams() {
  const note = $("streams-note");
  if (!state.token) {
    note.textContent = "Enter the admin token to list and create streams.";
    return;
  }
  try {
    const page = await api("/api/v1/streams?limit=50");
    state.streams = new Map(page.items.map((s) => [s.id, s]));
    note.textContent = page.items.length ? "" : "No streams yet: create one below.";
  } catch (error) {
    note.textContent = `Could not list streams: ${error.message}`;
  }
  for (const id of state.streams.keys()) watch(id);
  renderStreams();
}

function renderStreams() {
  const list = $("streams");
  list.replaceChildren(
    ...[...state.streams.values()].map((stream) => {
      const item = document.createElement("li");
      item.dataset.id = stream.id;
      item.classList.toggle("selected", stream.id === state.selected);
      const name = document.createElement("span");
      name.textContent = stream.name;
      item.append(name, badge(stream.status));
      item.addEventListener("click", () => select(stream.id));
      return item;
    }),
  );
}

function badge(text) {
  const span = document.createElement("span");
  span.className = `badge ${text}`;
  span.textContent = text;
  return span;
}

function watch(id) {
  if (state.sockets.has(id)) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws/streams/${id}`);
  state.sockets.set(id, socket);
  socket.addEventListener("message", (event) => onEvent(id, JSON.parse(event.data)));
  socket.addEventListener("close", (event) => {
    state.sockets.delete(id);
    if (event.code === 4404) return; // the stream is gone
    // Messages are hints: after a reconnect, resync from REST.
    setTimeout(() => {
      watch(id);
      loadStreams();
    }, RETRY_MS);
  });
}

function onEvent(id, message) {
  if (message.type !== "status") return;
  state.statuses.set(id, message.status);
  const stream = state.streams.get(id);
  if (stream) {
    stream.status = message.status;
    renderStreams();
  }
  if (id === state.selected) onSelectedStatus(message.status);
}

// ---- the selected stream -----------------------------------------------------------------

function select(id) {
  if (state.selected !== id) {
    state.selected = id;
    state.status = null;
    state.wasLive = false;
    stop();
    history.replaceState(null, "", `?stream=${encodeURIComponent(id)}`);
  }
  $("title").textContent = state.streams.get(id)?.name || id;
  renderStreams();
  loadSessions();
  if (state.statuses.has(id)) onSelectedStatus(state.statuses.get(id));
  watch(id); // a new socket starts with a status message
}

function onSelectedStatus(status) {
  const before = state.status;
  state.status = status;
  const shown = status === "live" ? "live" : state.wasLive ? "ended" : "offline";
  $("status").replaceWith(Object.assign(badge(shown), { id: "status" }));
  if (status === "live") {
    state.wasLive = true;
    const playing = state.mode === "recording" || (state.mode === "live" && before === "live");
    if (!playing) playLive();
    return;
  }
  if (state.mode === "recording") return;
  if (state.wasLive) {
    showMessage("The stream has ended. It resumes here when it goes live again.");
    loadSessions();
  } else if (status === "disabled") {
    showMessage("This stream is disabled.");
  } else {
    showMessage("This stream is offline. It starts playing here when it goes live.");
  }
}

function playLive() {
  showMessage(null);
  play(`/hls/${state.selected}/master.m3u8`, "live");
}

// ---- playback ----------------------------------------------------------------------------

function stop() {
  clearTimeout(state.retry);
  if (state.hls) state.hls.destroy();
  state.hls = null;
  state.mode = null;
  video.removeAttribute("src");
  video.load();
  renderQuality();
}

function play(url, mode) {
  stop();
  state.mode = mode;
  if (!window.Hls?.isSupported()) {
    video.src = url; // Safari plays HLS natively
    video.play().catch(() => {});
    return;
  }
  const hls = new Hls({ liveDurationInfinity: true });
  state.hls = hls;
  hls.on(Hls.Events.MANIFEST_PARSED, () => {
    renderQuality();
    video.play().catch(() => {});
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, renderQuality);
  hls.on(Hls.Events.ERROR, (_event, data) => {
    if (!data.fatal) return;
    if (mode === "live" && state.status === "live") {
      // The first segment of a new session may not be out yet: try again shortly.
      state.retry = setTimeout(() => state.hls === hls && playLive(), RETRY_MS);
    } else {
      showMessage(`Playback failed: ${data.details}`);
    }
  });
  hls.loadSource(url);
  hls.attachMedia(video);
}

video.addEventListener("ended", () => {
  if (state.mode === "recording") showMessage("End of the recording.");
});

function levelName(level) {
  return level.name || (level.height ? `${level.height}p` : `${Math.round(level.bitrate / 1000)} kbps`);
}

function renderQuality() {
  const box = $("quality");
  const hls = state.hls;
  if (!hls || !hls.levels.length) {
    box.replaceChildren();
    return;
  }
  const button = (label, level, pressed, current) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.dataset.level = String(level);
    b.setAttribute("aria-pressed", String(pressed));
    b.classList.toggle("current", current);
    b.addEventListener("click", () => {
      hls.currentLevel = level;
      renderQuality();
    });
    return b;
  };
  const playing = hls.currentLevel;
  const auto = hls.autoLevelEnabled;
  const autoLabel = auto && playing >= 0 ? `Auto (${levelName(hls.levels[playing])})` : "Auto";
  box.replaceChildren(
    button(autoLabel, -1, auto, false),
    ...hls.levels.map((level, i) => button(levelName(level), i, !auto && playing === i, playing === i)),
  );
}

function showMessage(text) {
  const box = $("message");
  box.hidden = !text;
  box.textContent = text || "";
}

function updateStats() {
  const hls = state.hls;
  const level = hls && hls.currentLevel >= 0 ? hls.levels[hls.currentLevel] : null;
  const buffered = video.buffered;
  let buffer = 0;
  for (let i = 0; i < buffered.length; i++) {
    if (buffered.start(i) <= video.currentTime && video.currentTime <= buffered.end(i)) {
      buffer = buffered.end(i) - video.currentTime;
    }
  }
  const latency = state.mode === "live" && hls && Number.isFinite(hls.latency) ? hls.latency : null;
  $("stat-latency").textContent = latency === null ? "–" : `${latency.toFixed(1)} s`;
  $("stat-buffer").textContent = state.mode ? `${buffer.toFixed(1)} s` : "–";
  $("stat-bitrate").textContent = level ? `${(level.bitrate / 1e6).toFixed(2)} Mbps` : "–";
  $("stat-resolution").textContent = video.videoWidth ? `${video.videoWidth}×${video.videoHeight}` : "–";
}
setInterval(updateStats, 500);

// ---- past sessions -----------------------------------------------------------------------

async function loadSessions() {
  const list = $("sessions");
  const id = state.selected;
  if (!state.token || !id) {
    list.replaceChildren();
    return;
  }
  let page;
  try {
    page = await api(`/api/v1/streams/${id}/sessions`);
  } catch {
    return;
  }
  if (id !== state.selected) return;
  list.replaceChildren(
    ...page.items.map((session) => {
      const item = document.createElement("li");
      item.dataset.id = session.id;
      const text = document.createElement("span");
      const started = new Date(session.started_at).toLocaleString();
      text.innerHTML = `${started} <span class="meta">${formatDuration(session.duration_seconds)}</span>`;
      item.append(text, badge(session.status));
      item.addEventListener("click", () => {
        if (session.status === "live") {
          playLive();
          return;
        }
        showMessage(null);
        // Played from this server whichever public host the API reports.
        play(new URL(session.playback_url, location.href).pathname, "recording");
        $("status").replaceWith(Object.assign(badge("recording"), { id: "status" }));
      });
      return item;
    }),
  );
}

function formatDuration(seconds) {
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// ---- operator panel ----------------------------------------------------------------------

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  loadStreams();
  loadSessions();
});

$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const stream = await api("/api/v1/streams", {
      method: "POST",
      body: JSON.stringify({ name: $("create-name").value.trim() }),
    });
    $("obs-server").value = stream.rtmp_url.slice(0, -(stream.stream_key.length + 1));
    $("obs-key").value = stream.stream_key;
    $("obs").hidden = false;
    $("create-name").value = "";
    await loadStreams();
    select(stream.id);
  } catch (error) {
    $("streams-note").textContent = `Could not create the stream: ${error.message}`;
  }
});

document.querySelectorAll("[data-copy]").forEach((button) => {
  button.addEventListener("click", async () => {
    const input = $(button.dataset.copy);
    try {
      await navigator.clipboard.writeText(input.value);
    } catch {
      input.select();
      document.execCommand("copy");
    }
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy"), 1500);
  });
});

$("refresh").addEventListener("click", loadStreams);

$("token").value = state.token;
const requested = new URLSearchParams(location.search).get("stream");
loadStreams().then(() => requested && select(requested));
