// The playground's one-shot task tabs: translation, classification and question answering. Plain
// JavaScript loaded after playground.js, whose helpers ($, post, begin, finish, ...) it uses. Model
// and user text are only ever written with textContent, never as HTML.
"use strict";

async function sendTranslation() {
  const numbers = lineNumbers("translation-input");
  const body = {
    model: requireModel(),
    input: lines("translation-input"),
    num_beams: numberSetting("num-beams", "Beams", true),
    max_new_tokens: numberSetting("translation-max", "Max new tokens", true),
  };
  const signal = begin(null);
  $("translation-output").replaceChildren();
  delete state.shown.translation; // cleared: a reload does not bring the old result back
  try {
    const { results } = await (await post("v1/translations", body, signal)).json();
    state.shown.translation = { texts: results.map((r) => r.translation_text) };
    showTranslations(state.shown.translation);
  } catch (e) {
    throw e instanceof ApiError ? inTheBox(e, numbers) : e;
  } finally {
    finish(null);
  }
}

// The box's line number (from 1) of each sentence sent: blank lines are not sent.
function lineNumbers(id) {
  return $(id)
    .value.split("\n")
    .flatMap((t, i) => (t.trim() ? [i + 1] : []));
}

// The server's "sentence N is ... tokens, longer than the model's limit ...: shorten it, or
// "truncation": true cuts such sentences" counts the sentences sent, and names an option the page does
// not have: said with the box's line, and what can be done here.
function inTheBox(error, numbers) {
  const long = /sentence (\d+) (is \d+ tokens, longer than the model's limit of \d+ .*?): shorten it, or "truncation": true cuts such sentences/;
  const found = error.message.match(long);
  if (!found) return error;
  const line = numbers[Number(found[1]) - 1];
  return new ApiError(error.message.replace(long, `line ${line} $2: shorten it, or split it over several lines`));
}

function showTranslations({ texts }) {
  $("translation-output").replaceChildren(
    ...texts.map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    })
  );
}

async function sendClassification() {
  const texts = lines("classification-input");
  const topK = numberSetting("top-k", "Labels shown", true);
  const body = { model: requireModel(), input: texts, top_k: topK === undefined ? null : topK };
  const signal = begin(null);
  $("classification-output").replaceChildren();
  delete state.shown.classification; // cleared: a reload does not bring the old result back
  try {
    const { results } = await (await post("v1/classifications", body, signal)).json();
    state.shown.classification = { texts, results: results.map((r) => (Array.isArray(r) ? r : [r])) };
    showClassifications(state.shown.classification);
  } finally {
    finish(null);
  }
}

// Each text with its labels, best first: results[i] is text i's [{label, score}].
function showClassifications({ texts, results }) {
  $("classification-output").replaceChildren(
    ...results.map((ranked, i) => {
      const item = document.createElement("li");
      const quote = document.createElement("q");
      quote.textContent = texts[i];
      const labels = document.createElement("ul");
      labels.className = "labels";
      for (const { label, score } of ranked) {
        const row = document.createElement("li");
        const name = document.createElement("span");
        name.className = "label";
        name.textContent = label;
        const bar = document.createElement("meter");
        bar.min = 0;
        bar.max = 1;
        bar.value = score;
        bar.setAttribute("aria-label", `${label} score`);
        const value = document.createElement("span");
        value.className = "score";
        value.textContent = score.toFixed(3);
        row.append(name, bar, value);
        labels.append(row);
      }
      item.append(quote, labels);
      return item;
    })
  );
}

// --- question answering --------------------------------------------------------------------------

// The context with the answer's characters [start, end) marked: three text nodes, no HTML. The
// server's offsets count Python's characters (code points), where a JavaScript string counts
// UTF-16 units (an emoji is two): the context is sliced as its code points (Array.from).
function showInContext(context, best) {
  const view = $("qa-context-view");
  if (!best || best.end <= best.start) {
    view.textContent = best ? "(no answer in this context)" : "";
    return;
  }
  const chars = Array.from(context);
  const mark = document.createElement("mark");
  mark.textContent = chars.slice(best.start, best.end).join("");
  view.replaceChildren(chars.slice(0, best.start).join(""), mark, chars.slice(best.end).join(""));
}

async function sendQuestion() {
  const question = $("qa-question").value.trim();
  const context = $("qa-context").value;
  if (!question) throw new SettingError("type a question first");
  if (!context.trim()) throw new SettingError("paste a context that holds the answer");
  const body = {
    model: requireModel(),
    question,
    context,
    top_k: numberSetting("qa-top-k", "Answers shown", true),
    max_answer_len: numberSetting("qa-max-len", "Max answer tokens", true),
    handle_impossible_answer: $("qa-impossible").checked,
  };
  const signal = begin(null);
  $("qa-output").replaceChildren();
  delete state.shown.qa; // cleared: a reload does not bring the old result back
  showInContext(context, null);
  try {
    const { results } = await (await post("v1/answers", body, signal)).json();
    state.shown.qa = { context, answers: Array.isArray(results) ? results : [results] };
    showAnswers(state.shown.qa);
  } finally {
    finish(null);
  }
}

// The answers, best first, and the best one marked in its context.
function showAnswers({ context, answers }) {
  $("qa-output").replaceChildren(
    ...answers.map(({ answer, score }) => {
      const item = document.createElement("li");
      const text = document.createElement("span");
      text.className = "answer";
      text.textContent = answer === "" ? "(no answer)" : answer;
      const value = document.createElement("span");
      value.className = "score";
      value.textContent = score.toFixed(3);
      item.append(text, value);
      return item;
    })
  );
  showInContext(context, answers[0]);
}
