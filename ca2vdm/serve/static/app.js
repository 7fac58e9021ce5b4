// The live demo page: one WebSocket to the server (protocol: ca2vdm/serve/protocol.py). Chunks arrive as binary
// messages (4-byte header length, JSON header, RGB bytes) and are played at the video's frame rate on a canvas.
"use strict";

const $ = (id) => document.getElementById(id);
const screen = $("screen");
const screenCtx = screen.getContext("2d");
const frameCanvas = document.createElement("canvas");  // one frame at its own size, scaled up onto the screen
const frameCtx = frameCanvas.getContext("2d");

let socket = null;
let hello = null;
let frames = [];          // ImageData waiting to be shown
let shown = 0;            // frames drawn so far in this generation
let player = null;        // setInterval handle of the playback
let phase = "idle";       // idle | starting (start sent) | generating (started: an error there ends with done)
let finished = null;      // the server's "done" message, once it came
let startedAt = null;     // performance.now() when the generation started on the server
let chunkSeconds = [];
let playFps = null;        // the frame rate of the video being shown
let pendingUpload = null; // resolves with the server's reply to an upload

function setStatus(text) { $("status").textContent = text; }

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.binaryType = "arraybuffer";
  socket.onmessage = (event) => {
    if (event.data instanceof ArrayBuffer) onChunk(event.data);
    else onMessage(JSON.parse(event.data));
  };
  socket.onclose = () => {
    setStatus("disconnected from the server; reload the page");
    $("generate").disabled = true;
    $("stop").disabled = true;
  };
}

function onMessage(msg) {
  switch (msg.type) {
    case "hello": return onHello(msg);
    case "upload": if (pendingUpload) pendingUpload(msg); return;
    case "queued": return setStatus(`queued: position ${msg.position} (another tab is generating)`);
    case "started": return onStarted(msg);
    case "switched": return setStatus(`switching from the next chunk on (chunk ${msg.at})`);
    case "done": return onDone(msg);
    case "error":
      showError(msg.message);
      if (pendingUpload) pendingUpload(msg);
      else if (phase === "starting") ended("ready");  // the start was refused
      return;
  }
}

function onHello(msg) {
  hello = msg;
  $("model").replaceChildren(...msg.models.map((m) => new Option(`${m.name} (${m.size[0]}x${m.size[1]})`, m.name)));
  $("step-cache").replaceChildren(...msg.policies.map((p) => new Option(p.name, p.name)));
  fillStepCacheOptions();
  $("upload-limit").textContent = (msg.max_upload_bytes / 2 ** 20).toFixed(0);
  if (msg.max_chunks) $("chunks").max = msg.max_chunks;
  fillLabels();
  $("generate").disabled = false;
  $("device").textContent = `${msg.device}, ${msg.threads} thread${msg.threads === 1 ? "" : "s"}`;
  setStatus("ready");
}

function currentModel() { return hello.models.find((m) => m.name === $("model").value); }

function fillLabels() {
  const prompts = Boolean(currentModel().prompts);
  $("prompt-row").hidden = !prompts;
  $("label-row").hidden = prompts;
  const labels = currentModel().labels;
  const options = [new Option(labels.length ? "none (unguided)" : "none (unconditional model)", "")];
  labels.forEach((name, i) => options.push(new Option(name === String(i) ? name : `${i}: ${name}`, String(i))));
  $("label").replaceChildren(...options);
}

function fillStepCacheOptions() {
  // one input per setting of the chosen policy, at its default, with its declared type and range
  const settings = hello.policies.find((p) => p.name === $("step-cache").value).settings;
  $("step-cache-options").replaceChildren(...settings.map((s) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.id = `opt-${s.name}`;
    input.title = `${s.help} (${s.accepts})`;
    if (s.type === "bool") {
      Object.assign(input, { type: "checkbox", checked: s.default });
    } else {
      Object.assign(input, { type: "number", value: String(s.default), step: s.type === "int" ? "1" : "0.05" });
      if (s.min !== null) input.min = String(s.min);
      if (s.max !== null) input.max = String(s.max);
    }
    input.dataset.key = s.name;
    label.append(s.name.replaceAll("_", " "), input);
    return label;
  }));
}

function stepCacheOptions() {
  const options = {};
  for (const input of $("step-cache-options").querySelectorAll("input")) {
    options[input.dataset.key] = input.type === "checkbox" ? input.checked : Number(input.value);
  }
  return options;
}

async function generate() {
  showError("");
  const file = $("upload").files[0];
  if (file && file.size > hello.max_upload_bytes) {
    showError(`the upload is ${(file.size / 2 ** 20).toFixed(1)} MiB, over the limit of ` +
              `${(hello.max_upload_bytes / 2 ** 20).toFixed(0)} MiB; choose a smaller image or a shorter video`);
    return;
  }
  phase = "starting";
  $("generate").disabled = true;
  $("stop").disabled = false;
  if (file) {
    setStatus("uploading the first frames\u2026");
    const reply = await new Promise((resolve) => { pendingUpload = resolve; socket.send(file); });
    pendingUpload = null;
    if (reply.type === "error") return ended("ready");
  }
  const chunks = $("until-stopped").checked ? null : $("chunks").value;
  socket.send(JSON.stringify({
    type: "start", model: $("model").value, ...condition(), switch_mode: $("switch-mode").value,
    seed: $("seed").value.trim(), chunks: chunks === null ? null : (Number.isInteger(+chunks) ? +chunks : chunks),
    step_cache: $("step-cache").value, step_cache_options: stepCacheOptions(), first_frame: Boolean(file),
  }));
  setStatus("waiting for the device\u2026");
}

function condition() {
  // a text model's prompt (null when the box is empty), or a label model's label
  if (currentModel().prompts) return { prompt: $("prompt").value.trim() || null };
  const label = $("label").value;
  return { label: label === "" ? null : Number(label) };
}

function ended(status) {
  phase = "idle";
  $("generate").disabled = false;
  $("stop").disabled = true;
  $("switch").disabled = true;
  setStatus(status);
}

function onStarted(msg) {
  phase = "generating";
  frames = []; shown = 0; finished = null; chunkSeconds = [];
  startedAt = performance.now();
  $("download").hidden = true;
  $("frame-count").textContent = "0";
  for (const id of ["chunks-done", "chunk-seconds", "evals", "fps", "first-frame"]) $(id).textContent = "\u2013";
  const until = msg.until_stopped ? (msg.chunks ? ` (until stopped, at most ${msg.chunks} chunks)` : " (until stopped)")
                                  : ` (${msg.chunks} chunks)`;
  setStatus(`generating with ${msg.model}${until}\u2026`);
  clearInterval(player);
  playFps = msg.fps;
  $("switch").disabled = false;
  player = setInterval(playOne, 1000 / msg.fps);
}

function onChunk(buffer) {
  const headerLength = new DataView(buffer).getUint32(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, headerLength)));
  const rgb = new Uint8Array(buffer, 4 + headerLength);
  const size = header.height * header.width;
  for (let f = 0; f < header.frames; f++) {
    const image = new ImageData(header.width, header.height);
    for (let p = 0, src = f * size * 3; p < size; p++, src += 3) {
      image.data[4 * p] = rgb[src];
      image.data[4 * p + 1] = rgb[src + 1];
      image.data[4 * p + 2] = rgb[src + 2];
      image.data[4 * p + 3] = 255;
    }
    frames.push(image);
  }
  if (header.kind !== "given") chunkSeconds.push(header.seconds);
  const mean = chunkSeconds.reduce((a, b) => a + b, 0) / Math.max(1, chunkSeconds.length);
  $("chunks-done").textContent = header.chunks_done;
  if (chunkSeconds.length) $("chunk-seconds").textContent = `${header.seconds.toFixed(2)} s / ${mean.toFixed(2)} s`;
  $("evals").textContent = `${header.computed_total} / ${header.skipped_total}`;
  if (header.fps) $("fps").textContent = `${header.fps.toFixed(1)} (plays at ${playFps})`;
}

function playOne() {
  if (frames.length) {
    const image = frames.shift();
    frameCanvas.width = image.width;
    frameCanvas.height = image.height;
    frameCtx.putImageData(image, 0, 0);
    screenCtx.imageSmoothingEnabled = true;
    screenCtx.imageSmoothingQuality = "high";
    screenCtx.drawImage(frameCanvas, 0, 0, screen.width, screen.height);
    shown += 1;
    $("frame-count").textContent = String(shown);
    if (shown === 1) $("first-frame").textContent = `${((performance.now() - startedAt) / 1000).toFixed(2)} s`;
    acknowledge();
  }
  if (finished && !frames.length) finish();
}

function acknowledge() {
  // a hidden tab acknowledges nothing: the server ends a generation nobody watches after its --ack-timeout
  if (!document.hidden && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: "shown", frames: shown }));
  }
}

function onDone(msg) {
  finished = msg;
  if (!player) finish();
}

function finish() {
  clearInterval(player);
  player = null;
  const msg = finished;
  if (msg.download) {
    $("download").href = msg.download;
    $("download").download = msg.filename;
    $("download").hidden = false;
  }
  const what = { finished: "finished", stopped: "stopped", limit: "reached the server's chunk limit", error: "failed",
                 stalled: "ended by the server: this tab showed no new frame for too long" };
  ended(`${what[msg.reason] || msg.reason}: ${msg.frames} frames, ${msg.chunks} chunks`);
}

$("model").addEventListener("change", fillLabels);
$("step-cache").addEventListener("change", fillStepCacheOptions);
$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => {
  socket.send(JSON.stringify({ type: "stop" }));
  $("stop").disabled = true;
  setStatus("stopping\u2026");
});
$("switch").addEventListener("click", () => {
  showError("");
  socket.send(JSON.stringify({ type: "switch", ...condition() }));
  setStatus("switching from the next chunk on\u2026");
});
document.addEventListener("visibilitychange", () => { if (phase === "generating") acknowledge(); });
$("until-stopped").addEventListener("change", () => { $("chunks").disabled = $("until-stopped").checked; });
connect();
