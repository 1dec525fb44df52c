// The playground's calls to the server: fetch with the API key, OpenAI's error object said in one
// line, and the Server-Sent Events of a streamed reply. Plain JavaScript loaded before
// playground.js, whose state (the API key, "offline") it reads when called.
"use strict";

class ApiError extends Error {}
// fetch's bare TypeError ("Failed to fetch", "network error") said plainly
class NetworkError extends ApiError {}

// A header carries printable ASCII only (the server refuses any other key at start): past Latin-1
// fetch throws a bare TypeError, which read as "cannot reach the server"
function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.apiKey) {
    const bad = state.apiKey.search(/[^\x20-\x7e]/);
    if (bad >= 0) {
      const code = state.apiKey.codePointAt(bad).toString(16).toUpperCase().padStart(4, "0");
      throw new ApiError(
        `the API key cannot be sent: it holds U+${code} (character ${bad + 1}), and a key is printable ASCII; type it again`
      );
    }
    h.Authorization = `Bearer ${state.apiKey}`;
  }
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
  const sent = headers(); // a key that cannot be sent is its own error, not a network one
  let response;
  try {
    response = await fetch(path, { ...init, headers: sent });
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

// A streamed generation: POSTs body to path with streaming and usage asked for, and calls onText
// with each piece of text, which pick(choice) takes from a choice (a chat delta's content, a
// completion's text). Returns { usage, finishReason, first }: first is when the first text came
// (performance.now()), for the stats line.
async function stream(path, body, signal, pick, onText) {
  const out = { usage: null, finishReason: null, first: null };
  const asked = { ...body, stream: true, stream_options: { include_usage: true } };
  await readStream(await post(path, asked, signal), (chunk) => {
    if (chunk.usage) out.usage = chunk.usage;
    for (const choice of chunk.choices) {
      const text = pick(choice);
      if (text) {
        if (out.first === null) out.first = performance.now();
        onText(text);
      }
      if (choice.finish_reason) out.finishReason = choice.finish_reason;
    }
  });
  return out;
}
