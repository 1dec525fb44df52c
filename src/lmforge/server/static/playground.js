// The lmforge playground: plain JavaScript, no build step. This file: the API, settings, completion
// and the tabs; chat.js: the chat tab; tasks.js: the translation, classification and
// question-answering tabs. It talks only to the server's own OpenAI-compatible API (/v1/...).
// Model text is only ever written with textContent, never as HTML.
"use strict";

const TASKS = {
  chat: { accepts: (m) => m.task === "text-generation" && m.chat, none: "no served model has a chat template" },
  completion: { accepts: (m) => m.task === "text-generation", none: "no served text-generation model" },
  translation: { accepts: (m) => m.task === "translation", none: "no served translation model" },
  classification: { accepts: (m) => m.task === "text-classification", none: "no served classifier" },
  qa: { accepts: (m) => m.task === "question-answering", none: "no served question-answering model" },
};

const state = {
  task: "chat",
  models: [],
  apiKey: "",
  history: [], // the conversation sent to /v1/chat/completions: [{role, content}]
  conversation: 0, // counts Clears: a reply in flight for a cleared conversation changes nothing
  busy: null, // the AbortController of the request in flight
  offline: false, // the last request could not reach the server
};

const $ = (id) => document.getElementById(id);

// --- talking to the server --------------------------------------------------------------------

class ApiError extends Error {}
// fetch's bare TypeError ("Failed to fetch", "network error") said plainly
class NetworkError extends ApiError {}

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.apiKey) h.Authorization = `Bearer ${state.apiKey}`;
  return h;
}

// OpenAI's error object -> one line; anything else -> the status line.
async function errorOf(response) {
  let text = "";
  try {
    text = await response.text();
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) return new ApiError(`${response.status}: ${body.error.message}`);
  } catch (_) {
    // not JSON: fall through
  }
  return new ApiError(`${response.status} ${response.statusText}${text ? `: ${text.slice(0, 200)}` : ""}`);
}

async function reach(path, init) {
  let response;
  try {
    response = await fetch(path, { ...init, headers: headers() });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new NetworkError("cannot reach the server (is it running?)");
  }
  if (state.offline) showConnected(); // back
  return response;
}

async function post(path, body, signal) {
  const response = await reach(path, { method: "POST", body: JSON.stringify(body), signal });
  if (!response.ok) throw await errorOf(response);
  return response;
}

// Server-Sent Events as OpenAI sends them: `data: {json}` blocks, then `data: [DONE]`.
// onEvent gets each parsed payload as it arrives; an error event is thrown.
async function readStream(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    let read;
    try {
      read = await reader.read();
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new NetworkError("the connection to the server was lost");
    }
    const { value, done } = read;
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const payload = JSON.parse(data);
      if (payload.error) throw new ApiError(payload.error.message || "the stream failed");
      onEvent(payload);
    }
  }
  throw new ApiError("the stream ended before [DONE]");
}

// --- errors and status ------------------------------------------------------------------------

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").textContent = "";
  $("error").hidden = true;
}

async function guarded(work) {
  clearError();
  try {
    await work();
  } catch (e) {
    if (e.name === "AbortError") return; // the Stop button
    if (e instanceof NetworkError) {
      state.offline = true;
      $("connection").textContent = "cannot reach the server";
    }
    showError(e instanceof ApiError || e instanceof SettingError ? e.message : `${e.name}: ${e.message}`);
  }
}

// --- models -------------------------------------------------------------------------------------

async function loadModels() {
  clearError();
  const response = await reach("v1/models", {});
  if (response.status === 401) {
    $("key-form").hidden = false;
    $("connection").textContent = "this server needs an API key";
    if (state.apiKey) showError((await errorOf(response)).message);
    $("api-key").focus();
    return;
  }
  if (!response.ok) throw await errorOf(response);
  state.models = (await response.json()).data;
  $("key-form").hidden = !state.apiKey;
  showConnected();
  fillModels();
}

function showConnected() {
  state.offline = false;
  const n = state.models.length;
  $("connection").textContent = `connected: ${n} model${n === 1 ? "" : "s"}`;
}

function fillModels() {
  const select = $("model");
  const previous = select.value;
  const task = TASKS[state.task];
  const usable = state.models.filter(task.accepts);
  select.replaceChildren(
    ...usable.map((m) => {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = `${m.id} (context ${m.context_length})`;
      return option;
    })
  );
  if (usable.some((m) => m.id === previous)) select.value = previous;
  select.disabled = usable.length === 0;
  $("model-note").textContent = usable.length === 0 ? task.none : "";
  for (const button of document.querySelectorAll("main form button[type=submit]")) {
    button.disabled = usable.length === 0 || state.busy !== null;
  }
}

// --- settings -----------------------------------------------------------------------------------

class SettingError extends Error {}

// A number field: empty -> undefined (the server's default); not a number -> a clear error.
function numberSetting(id, name, integer) {
  const input = $(id);
  if (input.value.trim() === "") {
    if (input.validity.badInput) throw new SettingError(`${name}: not a number`);
    return undefined;
  }
  const value = Number(input.value);
  if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    throw new SettingError(`${name}: ${input.value} is not ${integer ? "an integer" : "a number"}`);
  }
  return value;
}

function sampling() {
  const body = {
    temperature: numberSetting("temperature", "Temperature", false),
    top_p: numberSetting("top-p", "Top p", false),
    max_tokens: numberSetting("max-tokens", "Max tokens", true),
    seed: numberSetting("seed", "Seed", true),
  };
  for (const key of Object.keys(body)) if (body[key] === undefined) delete body[key];
  return body;
}

function requireModel() {
  const model = $("model").value;
  if (!model) throw new SettingError(TASKS[state.task].none);
  return model;
}

function lines(id) {
  const texts = $(id)
    .value.split("\n")
    .map((t) => t.trim())
    .filter((t) => t);
  if (texts.length === 0) throw new SettingError("type some text first");
  return texts;
}

// --- busy state: one request at a time ------------------------------------------------------------

function begin(stopId) {
  const focused = document.activeElement;
  state.busy = new AbortController();
  if (stopId) $(stopId).disabled = false;
  fillModels();
  refocus(focused);
  return state.busy.signal;
}

function finish(stopId) {
  const focused = document.activeElement;
  state.busy = null;
  if (stopId) $(stopId).disabled = true;
  fillModels();
  refocus(focused);
}

// A focused button that got disabled (Send, Stop) would leave the focus on <body>: it goes to the
// tab's first field (the message, the prompt, ...) instead.
function refocus(focused) {
  if (focused && focused.disabled) $(`panel-${state.task}`).querySelector("textarea, input").focus();
}

// The rate counts the tokens after the first over the time after the first: the wait for the
// first token is the prompt's processing (and any queue), not generation.
function stats(id, usage, finishReason, started, first) {
  const parts = [];
  if (usage) {
    const now = performance.now();
    const n = usage.completion_tokens;
    parts.push(`${n} tokens in ${((now - started) / 1000).toFixed(1)} s`);
    if (first !== null) parts.push(`first after ${((first - started) / 1000).toFixed(1)} s`);
    if (first !== null && n > 1 && now > first) {
      parts.push(`${((n - 1) / ((now - first) / 1000)).toFixed(1)} tokens/s after the first`);
    }
    parts.push(`prompt ${usage.prompt_tokens} tokens`);
  }
  if (finishReason) parts.push(`finish: ${finishReason}`);
  $(id).textContent = parts.join(" · ");
}

// --- completion -----------------------------------------------------------------------------------

async function sendCompletion() {
  const prompt = $("prompt").value;
  if (!prompt.trim()) throw new SettingError("type a prompt first");
  const model = requireModel();
  const settings = sampling();
  const signal = begin("stop-completion");
  const out = $("completion-output");
  out.querySelector(".prompt-echo").textContent = prompt;
  const generated = out.querySelector(".generated");
  generated.textContent = "";
  out.setAttribute("aria-busy", "true"); // a screen reader reads the completion once, when done
  $("completion-stats").textContent = "";
  let text = "";
  let finishReason = null;
  let usage = null;
  let first = null;
  const started = performance.now();
  try {
    const body = { model, prompt, stream: true, stream_options: { include_usage: true }, ...settings };
    const response = await post("v1/completions", body, signal);
    await readStream(response, (chunk) => {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        if (choice.text && first === null) first = performance.now();
        text += choice.text || "";
        generated.textContent = text;
        if (choice.finish_reason) finishReason = choice.finish_reason;
      }
    });
    stats("completion-stats", usage, finishReason, started, first);
  } catch (e) {
    if (e.name === "AbortError") $("completion-stats").textContent = "stopped"; // what came stays
    else if (text) $("completion-stats").textContent = "interrupted";
    throw e;
  } finally {
    out.removeAttribute("aria-busy");
    finish("stop-completion");
  }
}

// --- tabs and wiring ----------------------------------------------------------------------------------

function selectTab(task) {
  state.task = task;
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const selected = tab.dataset.task === task;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !selected;
  }
  $("sampling").hidden = task !== "chat" && task !== "completion";
  $("system-box").hidden = task !== "chat";
  clearError();
  fillModels();
}

function onSubmit(id, work) {
  $(id).addEventListener("submit", (event) => {
    event.preventDefault();
    if (!state.busy) guarded(work);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab.dataset.task));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
      selectTab(next.dataset.task);
      next.focus();
    });
  }
  onSubmit("chat-form", sendChat); // chat.js
  onSubmit("completion-form", sendCompletion);
  onSubmit("translation-form", sendTranslation);
  onSubmit("classification-form", sendClassification);
  onSubmit("qa-form", sendQuestion); // tasks.js
  // an Enter that ends an IME composition belongs to the IME (keyCode 229: some browsers' way to say so)
  const composing = (event) => event.isComposing || event.keyCode === 229;
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !composing(event)) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !composing(event)) {
      event.preventDefault();
      $("completion-form").requestSubmit();
    }
  });
  document.addEventListener("keydown", (event) => {
    const stop = document.querySelector("button.stop:not(:disabled)");
    if (event.key === "Escape" && !composing(event) && stop) stop.click(); // stops what streams
  });
  $("clear").addEventListener("click", clearChat);
  for (const id of ["stop-chat", "stop-completion"]) {
    $(id).addEventListener("click", () => state.busy && state.busy.abort());
  }
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.apiKey = $("api-key").value.trim();
    guarded(loadModels);
  });
  selectTab("chat");
  guarded(loadModels);
});
