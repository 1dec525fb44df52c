// The playground's one-shot task tabs: translation, classification and question answering. Plain
// JavaScript loaded after playground.js, whose helpers ($, post, begin, finish, ...) it uses. Model
// and user text are only ever written with textContent, never as HTML.
"use strict";

async function sendTranslation() {
  const body = {
    model: requireModel(),
    input: lines("translation-input"),
    num_beams: numberSetting("num-beams", "Beams", true),
    max_new_tokens: numberSetting("translation-max", "Max new tokens", true),
  };
  const signal = begin(null);
  const out = $("translation-output");
  out.replaceChildren();
  try {
    const { results } = await (await post("v1/translations", body, signal)).json();
    out.replaceChildren(
      ...results.map((r) => {
        const item = document.createElement("li");
        item.textContent = r.translation_text;
        return item;
      })
    );
  } finally {
    finish(null);
  }
}

async function sendClassification() {
  const texts = lines("classification-input");
  const topK = numberSetting("top-k", "Labels shown", true);
  const body = { model: requireModel(), input: texts, top_k: topK === undefined ? null : topK };
  const signal = begin(null);
  const out = $("classification-output");
  out.replaceChildren();
  try {
    const { results } = await (await post("v1/classifications", body, signal)).json();
    out.replaceChildren(
      ...results.map((result, i) => {
        const item = document.createElement("li");
        const quote = document.createElement("q");
        quote.textContent = texts[i];
        const labels = document.createElement("ul");
        labels.className = "labels";
        for (const { label, score } of Array.isArray(result) ? result : [result]) {
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
  } finally {
    finish(null);
  }
}

// --- question answering --------------------------------------------------------------------------

// The context with the answer's characters [start, end) marked: three text nodes, no HTML.
function showInContext(context, best) {
  const view = $("qa-context-view");
  if (!best || best.end <= best.start) {
    view.textContent = best ? "(no answer in this context)" : "";
    return;
  }
  const mark = document.createElement("mark");
  mark.textContent = context.slice(best.start, best.end);
  view.replaceChildren(context.slice(0, best.start), mark, context.slice(best.end));
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
  const out = $("qa-output");
  out.replaceChildren();
  showInContext(context, null);
  try {
    const { results } = await (await post("v1/answers", body, signal)).json();
    const answers = Array.isArray(results) ? results : [results];
    out.replaceChildren(
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
  } finally {
    finish(null);
  }
}
