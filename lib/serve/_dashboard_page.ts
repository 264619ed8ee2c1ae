/**
 * The dashboard's page: one self-contained HTML document (no external
 * scripts, styles or fonts), served by `dashboard.ts`. It takes the token
 * from its URL's fragment (`#token=…`) or a field, answers the server's
 * challenge with WebCrypto's HMAC (browsers offer it on https and on
 * localhost), and draws the run's events as they come. An elastic run's
 * page also offers to join it: the Join button starts the member bundle
 * (`/member.js`, see `workers/browser_member.ts`) as a Web Worker, which
 * computes shards on the tab's WebGPU adapter until the run ends or Leave is
 * pressed.
 *
 * @module
 */

/** The page, as served. */
export const DASHBOARD_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>deno-ddp run</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; max-width: 980px; }
  h1 { font-size: 18px; margin: 0 0 4px; }
  #status { color: #666; margin-bottom: 12px; }
  .charts { display: flex; gap: 16px; flex-wrap: wrap; }
  canvas { border: 1px solid #ddd; background: #fff; }
  table { border-collapse: collapse; margin-top: 12px; }
  td, th { border-bottom: 1px solid #eee; padding: 4px 10px; text-align: left; }
  .legend span { margin-right: 14px; }
  form { margin: 12px 0; }
</style>
</head>
<body>
<h1 id="title">deno-ddp</h1>
<div id="status">connecting…</div>
<form id="ask" hidden><label>Job token <input id="token" type="password" size="40"></label>
<button>Show the run</button></form>
<div id="now"></div>
<div class="charts">
  <div><div class="legend"><span style="color:#1f77b4">■ train loss (mean over the epoch so far)</span></div>
  <canvas id="loss" width="460" height="260"></canvas></div>
  <div><div class="legend"><span style="color:#ff7f0e">■ train acc (the same)</span>
  <span style="color:#2ca02c">■ test acc</span></div>
  <canvas id="acc" width="460" height="260"></canvas></div>
</div>
<div id="join" hidden><button id="joinButton">Join the run with this tab's GPU</button>
<button id="leaveButton" hidden>Leave</button> <span id="joinStatus"></span></div>
<table id="members"><thead><tr><th>member</th><th>device</th><th>shards</th></tr></thead>
<tbody></tbody></table>
<table id="epochs"><thead><tr><th>epoch</th><th>loss</th><th>train acc</th><th>test acc</th>
<th>examples/s</th><th>s</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
const state = { stepsPerEpoch: 1, epochs: 1, steps: [], epochs_: [] };
const $ = (id) => document.getElementById(id);
const hex = (bytes) => [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");

// This tab as a member of the run (an elastic run's page offers it): what it has done.
window.member = { device: "", shards: 0, ended: "" };
function showMember(text) {
  const m = window.member;
  $("joinStatus").textContent = text ?? (m.device + ": " + m.shards + " shard(s) computed" +
    (m.lastShardMs ? ", " + Math.round(m.lastShardMs) + " ms each" : ""));
}
// The member computes in a Web Worker (workers/browser_member.ts): the page stays responsive.
async function join() {
  $("joinButton").disabled = true;
  showMember("loading the member code and building the model…");
  const worker = new Worker("/member.js", { type: "module" });
  const ended = new Promise((resolve) => {
    worker.onmessage = (e) => {
      const m = e.data;
      if (m.type === "ready") window.member.device = m.device;
      if (m.type === "activity") {
        window.member.shards = m.shards;
        window.member.lastShardMs = m.lastShardMs;
      }
      if (m.type === "ended") resolve(m.reason);
      else showMember();
    };
    worker.onerror = (e) => {
      e.preventDefault();
      resolve("failed: " + (e.message || "the member code did not load"));
    };
  });
  worker.postMessage({ type: "join", token: state.token });
  $("leaveButton").hidden = false;
  $("leaveButton").onclick = () => worker.postMessage({ type: "leave" });
  window.member.ended = await ended;
  worker.terminate();
  showMember("this tab's membership ended (" + window.member.ended + ") after " +
    window.member.shards + " shard(s)");
  $("leaveButton").hidden = true;
  $("joinButton").disabled = false;
}
$("joinButton").onclick = join;

function connect(token) {
  state.token = token;
  const socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  socket.onmessage = async (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "challenge") {
      const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(token),
        { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
      const mac = await crypto.subtle.sign("HMAC", key,
        new TextEncoder().encode("ddp-dashboard:" + event.challenge));
      socket.send(JSON.stringify({ type: "answer", mac: hex(mac) }));
      return;
    }
    if (event.type === "history") { event.events.forEach(apply); $("status").textContent = "live"; }
    else apply(event);
    draw();
  };
  socket.onclose = (e) => {
    $("status").textContent = e.reason ? "closed: " + e.reason : "disconnected";
    if (e.code === 4003) $("ask").hidden = false;
  };
}

function apply(event) {
  if (event.type === "start") {
    $("title").textContent = event.title;
    state.stepsPerEpoch = event.stepsPerEpoch;
    state.epochs = event.epochs;
    $("join").hidden = !event.joinable;
    listMembers(event.members);
  } else if (event.type === "members") {
    listMembers(event.members);
  } else if (event.type === "step") {
    state.steps.push(event);
    $("now").textContent = "epoch " + event.epoch + ", step " + event.step + "/" + event.steps +
      ": loss " + event.loss.toFixed(3) + ", train acc " + event.trainAcc.toFixed(3) + ", " +
      event.examplesPerSec.toFixed(1) + " examples/s";
  } else if (event.type === "epoch") {
    state.epochs_.push(event);
    const row = $("epochs").tBodies[0].insertRow();
    for (const text of [event.epoch, event.loss.toFixed(3), event.trainAcc.toFixed(3),
      event.testAcc.toFixed(3), event.examplesPerSec.toFixed(1), event.seconds.toFixed(1)]) {
      row.insertCell().textContent = text;
    }
  } else if (event.type === "end") {
    $("status").textContent = event.message;
  }
}

function listMembers(members) {
  $("members").tBodies[0].innerHTML = "";
  for (const m of members) {
    const row = $("members").tBodies[0].insertRow();
    for (const text of [m.name, m.device, m.shards]) row.insertCell().textContent = text;
  }
}

function plot(canvas, series, yMax) {
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 30;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#ccc"; g.strokeRect(pad, 8, w - pad - 8, h - pad - 8);
  g.fillStyle = "#666"; g.font = "11px sans-serif";
  g.fillText(yMax.toFixed(2), 2, 16); g.fillText("0", 2, h - pad);
  g.fillText("epoch " + state.epochs, w - 60, h - 8);
  for (const { points, color } of series) {
    g.strokeStyle = color; g.beginPath();
    points.forEach(([x, y], i) => {
      const px = pad + (w - pad - 8) * Math.min(1, x / state.epochs);
      const py = 8 + (h - pad - 8) * (1 - Math.min(1, y / yMax));
      if (i === 0) g.moveTo(px, py); else g.lineTo(px, py);
    });
    g.stroke();
  }
}

function draw() {
  const x = (s) => s.epoch - 1 + s.step / s.steps;
  const losses = state.steps.map((s) => [x(s), s.loss]);
  const yMax = Math.max(0.5, ...losses.map(([, y]) => y));
  plot($("loss"), [{ points: losses, color: "#1f77b4" }], yMax);
  plot($("acc"), [
    { points: state.steps.map((s) => [x(s), s.trainAcc]), color: "#ff7f0e" },
    { points: state.epochs_.map((e) => [e.epoch, e.testAcc]), color: "#2ca02c" },
  ], 1);
}

const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token");
$("ask").onsubmit = (e) => { e.preventDefault(); $("ask").hidden = true; connect($("token").value); };
if (fromUrl) connect(fromUrl); else { $("ask").hidden = false; $("status").textContent = "the job's token is needed"; }
draw();
</script>
</body>
</html>
`;
