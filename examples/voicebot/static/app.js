// The voice bot's browser client: plain JS, no build step.
// POST /chat answers with server-sent events (read from the fetch body, since EventSource can
// neither POST nor send an Authorization header): "token" events are appended as they arrive,
// "audio" events (one WAV per sentence, in order) are decoded and scheduled back to back on one
// Web Audio clock so the sentences play without gaps, "citations" turns the [n] markers into
// links to the passages, "done" carries the server's timings.
"use strict";

const $ = (id) => document.getElementById(id);
const state = (window.voicebot = {
  tokens: 0, audioReceived: 0, audioStarted: 0, audioEnded: 0, citations: 0,
  done: false, error: null, timings: null, client: {},
});
const session = sessionStorage.getItem("voicebot-session") ||
  (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2));
sessionStorage.setItem("voicebot-session", session);

$("key").value = localStorage.getItem("voicebot-key") || "";
$("key").addEventListener("change", () => localStorage.setItem("voicebot-key", $("key").value.trim()));

let audio = null;      // AudioContext, created on the first click (a user gesture)
let playhead = 0;      // when the next sentence starts, on audio.currentTime's clock

function status(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function b64ToBuffer(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out.buffer;
}

// Decoding is asynchronous and may finish out of order: chain it so sentences keep their order.
let decodeChain = Promise.resolve();
function playAudio(ev) {
  state.audioReceived++;
  if (state.client.firstAudio === undefined) state.client.firstAudio = performance.now() - state.client.t0;
  const chip = document.createElement("span");
  chip.textContent = "▶ " + (ev.seq + 1);
  chip.title = ev.text;
  $("speech").appendChild(chip);
  decodeChain = decodeChain.then(async () => {
    const buffer = await audio.decodeAudioData(b64ToBuffer(ev.audio));
    const src = audio.createBufferSource();
    src.buffer = buffer;
    src.connect(audio.destination);
    const at = Math.max(playhead, audio.currentTime + 0.05);
    playhead = at + buffer.duration;
    src.onended = () => { state.audioEnded++; chip.className = "played"; };
    src.start(at);
    state.audioStarted++;
    setTimeout(() => { if (chip.className !== "played") chip.className = "playing"; },
               Math.max(0, (at - audio.currentTime) * 1000));
  }).catch((err) => { state.error = "audio: " + err; });
}

function linkMarkers(text) {
  const esc = text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  return esc.replace(/\[(\d+)\]/g, '<a class="cite" href="#cite-$1">[$1]</a>');
}

function showCitations(list) {
  const ol = $("citations");
  ol.innerHTML = "";
  for (const c of list) {
    const li = document.createElement("li");
    li.id = "cite-" + c.n;
    li.value = c.n;
    if (c.cited) li.className = "cited";
    const title = document.createElement("b");
    title.textContent = c.title + " (" + c.doc_id + ")";
    const passage = document.createElement("div");
    passage.className = "passage";
    passage.textContent = c.text;
    li.append(title, passage);
    ol.appendChild(li);
  }
  state.citations = list.length;
}

function parseEvents(buffer, onEvent) {
  // Splits complete events off the buffer; returns what is left (an event not finished yet).
  buffer = buffer.replace(/\r\n?/g, "\n");
  let end;
  while ((end = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) onEvent(event, data.join("\n"));
  }
  return buffer;
}

async function ask(question) {
  const key = $("key").value.trim();
  if (!key) { status("Enter an API key first (make demo prints one).", true); return; }
  localStorage.setItem("voicebot-key", key);
  if (!audio) audio = new (window.AudioContext || window.webkitAudioContext)();
  if (audio.state === "suspended") await audio.resume();
  Object.assign(state, { tokens: 0, audioReceived: 0, audioStarted: 0, audioEnded: 0,
                         citations: 0, done: false, error: null, timings: null,
                         client: { t0: performance.now() } });
  $("answer").textContent = "";
  $("speech").innerHTML = "";
  $("citations").innerHTML = "";
  $("timings").textContent = "";
  $("send").disabled = true;
  status("Thinking…");
  let answer = "";
  try {
    const resp = await fetch("/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + key,
                 "Accept": "text/event-stream" },
      body: JSON.stringify({ question, session }),
    });
    const remaining = resp.headers.get("RateLimit-Remaining") || resp.headers.get("X-RateLimit-Remaining");
    if (!resp.ok) {
      let detail = resp.statusText;
      try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error("HTTP " + resp.status + ": " + detail);
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = parseEvents(buffer + value, (event, data) => {
        const ev = JSON.parse(data);
        if (event === "token") {
          if (!state.tokens) state.client.firstToken = performance.now() - state.client.t0;
          state.tokens++;
          answer += ev.text;
          $("answer").textContent = answer;
        } else if (event === "audio") {
          playAudio(ev);
        } else if (event === "citations") {
          state.client.fullAnswer = performance.now() - state.client.t0;
          $("answer").innerHTML = linkMarkers(answer);
          showCitations(ev.citations);
        } else if (event === "done") {
          state.timings = ev.timings;
          const t = ev.timings;
          $("timings").textContent = `first token ${t.first_token_ms} ms · first audio ${t.first_audio_ms ?? "–"} ms · full answer ${t.full_answer_ms} ms (server, ${ev.responder})`;
        } else if (event === "error") {
          throw new Error(ev.detail);
        }
      });
    }
    const p = document.createElement("p");
    p.innerHTML = "<b>You:</b> " + linkMarkers(question) + "<br><b>Bot:</b> " + linkMarkers(answer);
    $("log").prepend(p);
    status(remaining !== null ? `Done. Requests left in this window: ${remaining}.` : "Done.");
    state.done = true;
  } catch (err) {
    state.error = String(err.message || err);
    status(state.error, true);
  } finally {
    $("send").disabled = false;
  }
}

$("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("question").value.trim();
  if (q) ask(q);
});

// Optional: ask by voice where the browser offers speech recognition.
const Recognition = window.SpeechRecognition || window.webkitSpeechRecognition;
if (Recognition) {
  $("mic").hidden = false;
  $("mic").addEventListener("click", () => {
    const rec = new Recognition();
    rec.lang = "en-US";
    rec.onresult = (e) => { $("question").value = e.results[0][0].transcript; ask($("question").value); };
    rec.onerror = (e) => status("Microphone: " + e.error, true);
    rec.start();
    status("Listening…");
  });
}
