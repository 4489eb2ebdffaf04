// Datasets: the list, one dataset's classes with its per-split counts as bars and a few
// examples of each (thumbnails or texts), and an upload by drag and drop (or a file
// picker) with a progress bar and the server's error.
import { api, upload } from "./api.js";
import { h, problem, shortId, when } from "./dom.js";
import { checksView } from "./evaluation.js";
import { link, updateParams } from "./view.js";

const EXAMPLES_PER_CLASS = 6;

export async function render(root, params, signal) {
  const table = h("tbody");
  const detail = h("div", { id: "dataset-detail" });
  const files = h("input", { type: "file", name: "file", multiple: true, onchange: () => send([...files.files]) });
  const name = h("input", { type: "text", name: "name", placeholder: "name (optional)", "aria-label": "dataset name" });
  const progress = h("progress", { max: 1, value: 0, hidden: true, id: "upload-progress" });
  const outcome = h("div", { id: "upload-outcome", role: "status" });
  const drop = h("div", { class: "drop", id: "dataset-drop" },
    "Drop an image zip, IDX files or a CSV/TSV/JSONL table here, or ", files);
  root.append(
    h("h1", {}, "Datasets"),
    h("div", { class: "card" }, h("div", { class: "filters" }, name), drop, progress, outcome),
    h("div", { class: "table-wrap" }, h("table", { id: "datasets" },
      h("thead", {}, h("tr", {}, ...["name", "id", "task", "format", "classes", "examples", "size", "created"].map((t) => h("th", {}, t)))),
      table)),
    detail,
  );
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    send([...event.dataTransfer.files]);
  });

  async function send(chosen) {
    if (!chosen.length) return;
    const form = new FormData();
    for (const file of chosen) form.append("file", file);
    if (name.value.trim()) form.append("name", name.value.trim());
    progress.hidden = false;
    progress.value = 0;
    outcome.replaceChildren(h("span", { class: "muted" }, `sending ${chosen.map((f) => f.name).join(", ")}…`));
    try {
      const dataset = await upload("/datasets", form, (share) => { progress.value = share; });
      progress.value = 1;
      outcome.replaceChildren(h("p", {}, "Stored ", h("a", { href: link("datasets", { id: dataset.id }) }, dataset.name), ` (${dataset.id})`));
      await list();
      showDataset(dataset.id);
    } catch (error) {
      outcome.replaceChildren(problem(error));
    } finally {
      files.value = "";
    }
  }

  async function list() {
    const page = await api("/datasets?limit=200", { signal });
    table.replaceChildren(...page.items.map((d) => h("tr", { dataset: { dataset: d.id } },
      h("td", {}, h("a", { href: link("datasets", { id: d.id }), onclick: (event) => { event.preventDefault(); showDataset(d.id); } }, d.name)),
      h("td", { title: d.id }, shortId(d.id)),
      h("td", {}, d.task), h("td", {}, d.format), h("td", {}, d.classes.length),
      h("td", {}, total(d.counts).toLocaleString()),
      h("td", {}, `${(d.size_bytes / 1e6).toFixed(1)} MB`),
      h("td", {}, when(d.created_at)))));
  }

  async function showDataset(id) {
    updateParams({ id });
    const dataset = await api(`/datasets/${id}`, { signal });
    const { hidden, not_an_image: notImages } = dataset.skipped;
    const shown = await api(`/datasets/${id}/examples?per_class=${EXAMPLES_PER_CLASS}`, { signal });
    detail.replaceChildren(
      h("h2", {}, `${dataset.name}: examples per class`),
      ...Object.entries(dataset.counts).map(([split, counts]) => splitBars(split, dataset.classes, counts)),
      h("p", { class: "muted" }, `skipped files: ${hidden} hidden, ${notImages} not images`),
      h("h2", {}, "Examples"),
      h("div", { class: "examples", id: "dataset-examples" }, shown.classes.map(classExamples)),
      checksView(dataset.checks),
    );
  }

  // A thumbnail needs the key, which an <img src> cannot send: fetched, then shown as a blob.
  function classExamples({ name, examples }) {
    const items = examples.map((e) => {
      if (e.text !== null) return h("li", { class: "example-text" }, e.text);
      const image = h("img", { class: "thumbnail", alt: `${name} #${e.index}`, width: 48, height: 48 });
      api(e.thumbnail, { raw: true, signal })
        .then((response) => response.blob())
        .then((blob) => { image.src = URL.createObjectURL(blob); image.dataset.loaded = "true"; })
        .catch((error) => { if (!signal.aborted) image.replaceWith(problem(error)); });
      return h("li", {}, image);
    });
    return h("section", { class: "class-examples", dataset: { class: name } }, h("h3", {}, name), h("ul", {}, items));
  }

  await list();
  if (params.get("id")) await showDataset(params.get("id"));
}

function total(counts) {
  return Object.values(counts).reduce((sum, split) => sum + Object.values(split).reduce((a, b) => a + b, 0), 0);
}

function splitBars(split, classes, counts) {
  const most = Math.max(1, ...Object.values(counts));
  return h("section", { class: "split-counts", dataset: { split } },
    h("h3", {}, `${split} (${Object.values(counts).reduce((a, b) => a + b, 0).toLocaleString()})`),
    h("div", { class: "bars" }, classes.flatMap((label) => [
      h("span", { class: "label" }, label),
      h("div", {}, h("div", { class: "bar", style: `width: ${(100 * (counts[label] ?? 0) / most).toFixed(1)}%` })),
      h("span", {}, (counts[label] ?? 0).toLocaleString()),
    ])));
}
