// Try it: a model, an image (dropped or picked) or a text, and POST /predict's top-k as
// bars, with the version that answered.
import { api } from "./api.js";
import { h, percent, problem, shortId } from "./dom.js";
import { updateParams } from "./view.js";

export async function render(root, params, signal) {
  let names = [];
  try {
    names = [...new Set((await api("/models?limit=200", { signal })).items.map((m) => `${m.name}|${m.task}`))];
  } catch {
    // a predict key may not list models: it types the name instead
  }
  const model = h("input", { type: "text", name: "model", list: "model-choices", value: params.get("model") || (names[0]?.split("|")[0] ?? ""), "aria-label": "model", placeholder: "name, name@alias or version id" });
  const choices = h("datalist", { id: "model-choices" }, ...names.map((n) => h("option", { value: n.split("|")[0] }, n.split("|")[1])));
  const topK = h("input", { type: "number", name: "top_k", min: 1, max: 100, value: params.get("top_k") || 3, "aria-label": "top k" });
  const file = h("input", { type: "file", name: "file", accept: "image/*", onchange: () => file.files[0] && predictImage(file.files[0]) });
  const drop = h("div", { class: "drop", id: "image-drop" }, "Drop an image here, or ", file);
  const text = h("textarea", { name: "text", rows: 3, cols: 50, placeholder: "or type a text", "aria-label": "text" });
  const answer = h("div", { id: "answer" });
  const preview = h("div", { class: "preview" });
  const explanation = h("div", { id: "explanation" });
  let lastImage = null; // the image last predicted: Explain explains it, else the text
  root.append(
    h("h1", {}, "Try it"),
    h("div", { class: "filters" }, h("label", {}, "model ", model, choices), h("label", {}, "top k ", topK)),
    drop,
    h("div", { class: "filters" }, text, h("button", { id: "predict-text", onclick: predictText }, "Predict text"),
      h("button", { id: "explain", class: "quiet", onclick: explain }, "Explain")),
    preview, answer, explanation,
  );
  const keep = () => updateParams({ model: model.value, top_k: topK.value === "3" ? "" : topK.value });
  model.addEventListener("change", keep);
  topK.addEventListener("change", keep);
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files[0]) predictImage(event.dataTransfer.files[0]);
  });

  async function predictImage(image) {
    lastImage = image;
    explanation.replaceChildren();
    const form = new FormData();
    form.append("file", image);
    if (model.value) form.append("model", model.value);
    form.append("top_k", topK.value);
    const url = URL.createObjectURL(image);
    preview.replaceChildren(h("img", { src: url, alt: image.name, class: "thumb", onload: () => URL.revokeObjectURL(url) }));
    await show(() => api("/predict", { method: "POST", body: form, signal }));
  }

  async function predictText() {
    lastImage = null;
    explanation.replaceChildren();
    preview.replaceChildren();
    await show(() => api("/predict", { method: "POST", json: { text: text.value, model: model.value || undefined, top_k: Number(topK.value) }, signal }));
  }

  // POST /explain for the image last predicted, or else the text: the overlay (red: for the
  // answer, blue: against) or each word shaded by its score.
  async function explain() {
    explanation.replaceChildren(h("p", { class: "muted" }, "explaining…"));
    try {
      let body;
      if (lastImage) {
        const form = new FormData();
        form.append("file", lastImage);
        if (model.value) form.append("model", model.value);
        body = { method: "POST", body: form, signal };
      } else {
        body = { method: "POST", json: { text: text.value, model: model.value || undefined }, signal };
      }
      const found = await api("/explain", body);
      explanation.replaceChildren(h("h3", {}, `Why ${found.label} (${found.method.replace("_", " ")})`), found.overlay_png
        ? h("img", { class: "attribution", src: `data:image/png;base64,${found.overlay_png}`, alt: `attribution for ${found.label}` })
        : tokenScores(found.tokens));
    } catch (error) {
      explanation.replaceChildren(problem(error));
    }
  }

  async function show(call) {
    answer.replaceChildren(h("p", { class: "muted" }, "…"));
    try {
      const prediction = await call();
      answer.replaceChildren(
        h("p", {}, "Answered by ", h("b", {}, prediction.model_name), ` version ${shortId(prediction.model_id)} (job ${shortId(prediction.job_id)})`),
        h("div", { class: "bars", id: "top-k" }, prediction.top_k.flatMap(({ label, probability }) => [
          h("span", { class: "label" }, label),
          h("div", {}, h("div", { class: "bar", style: `width: ${(100 * probability).toFixed(1)}%` })),
          h("span", {}, percent(probability)),
        ])),
      );
      answer.dataset.label = prediction.label;
      answer.dataset.version = prediction.model_id;
    } catch (error) {
      answer.replaceChildren(problem(error));
    }
  }
}

function tokenScores(tokens) {
  const most = Math.max(1e-9, ...tokens.map((t) => Math.abs(t.score)));
  return h("p", { class: "tokens" }, tokens.flatMap(({ token, score }) => [h("span", {
    title: score.toFixed(4),
    style: `background: color-mix(in srgb, ${score >= 0 ? "var(--danger)" : "var(--accent)"} ${(60 * Math.abs(score) / most).toFixed(0)}%, transparent)`,
  }, token), " "]));
}
