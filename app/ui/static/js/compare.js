// Compare: up to 10 runs on one chart, each in the colour of its place in the URL's list,
// and their specs side by side with the values that differ marked.
import { api } from "./api.js";
import { Curves, loadCharts } from "./chart.js";
import { h, PALETTE, statusBadge } from "./dom.js";
import { flatten } from "./run.js";
import { link, updateParams } from "./view.js";

const METRICS = ["val_accuracy", "val_loss", "train_loss", "train_accuracy"];
const MAX_RUNS = 10;

export async function render(root, params, signal) {
  const ids = (params.get("ids") || "").split(",").filter(Boolean).slice(0, MAX_RUNS);
  let metric = METRICS.includes(params.get("metric")) ? params.get("metric") : METRICS[0];
  root.append(h("h1", {}, "Compare runs"));
  if (!ids.length) {
    root.append(h("p", { class: "muted" }, "Tick up to 10 runs on the ", h("a", { href: link("runs") }, "Runs"), " page, then Compare selected."));
    return;
  }
  const [jobs] = await Promise.all([Promise.all(ids.map((id) => api(`/jobs/${id}`, { signal }))), loadCharts()]);
  const select = h("select", { name: "metric", "aria-label": "metric", onchange: (e) => { metric = e.target.value; updateParams({ metric }); chart.setOptions({ title: `${metric} per epoch` }); draw(); } },
    ...METRICS.map((m) => h("option", { value: m, selected: m === metric }, m)));
  const box = h("div", { class: "chart", id: "chart-compare" });
  root.append(
    h("div", { class: "filters" }, select, ...jobs.map((job, i) => h("span", { class: "chip" },
      h("span", { style: `color: ${PALETTE[i]}` }, "●"), h("a", { href: link("run", { id: job.id }) }, job.name), statusBadge(job.status)))),
    box, h("h2", {}, "Specs"), specs(jobs),
  );
  const chart = new Curves(box, {
    title: `${metric} per epoch`, xLabel: "epoch", smoothing: null,
    lines: jobs.map((job, i) => ({ label: `${job.name} ${job.id.slice(0, 6)}`, color: PALETTE[i] })),
  });

  function draw() {
    const epochs = Math.max(0, ...jobs.map((job) => job.history.length));
    const x = Array.from({ length: epochs }, (_, i) => i + 1);
    chart.update(x, jobs.map((job) => ({ values: x.map((_, i) => job.history[i]?.[metric] ?? null), min: [], max: [] })));
  }
  draw();
}

function specs(jobs) {
  const flat = jobs.map((job) => new Map(flatten(job.spec)));
  const keys = [...new Set(flat.flatMap((spec) => [...spec.keys()]))];
  const rows = keys.map((key) => {
    const values = flat.map((spec) => JSON.stringify(spec.get(key)));
    const differs = new Set(values).size > 1;
    return h("tr", { class: differs ? "differs" : null },
      h("td", {}, key), ...values.map((v) => h("td", { class: differs ? "differs" : null }, v ?? "–")));
  });
  return h("div", { class: "table-wrap" }, h("table", { class: "spec", id: "compare-specs" },
    h("thead", {}, h("tr", {}, h("th", {}, "field"), ...jobs.map((job, i) => h("th", { style: `color: ${PALETTE[i]}` }, job.name)))),
    h("tbody", {}, rows)));
}
