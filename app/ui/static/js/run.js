// One run: its curves (per step from GET /jobs/{id}/metrics, then live from the event
// stream), the worker's CPU and memory (and GPU) over the run, its events, spec, ETA,
// model and a Cancel button.
import { api, followEvents } from "./api.js";
import { Curves, loadCharts } from "./chart.js";
import { duration, fixed, h, percent, problem, statusBadge, when } from "./dom.js";
import { evaluationView } from "./evaluation.js";
import { link, updateParams } from "./view.js";

const COARSE_POINTS = 1000; // buckets of the whole run (more than a chart has pixels); a zoom fetches as many for its range
const LIVE = new Set(["queued", "running", "cancelling"]);
const X_MODES = { step: "step", epoch: "epoch", time: "training time (s)" };
// The worker's own use, sampled about once a second as it stores steps (workers/resources.py);
// no event carries it, so a live run's page fetches it again every few seconds.
const RESOURCES = [
  { name: "cpu_percent", title: "worker CPU (% of one core)", color: "#17becf" },
  { name: "memory_mib", title: "worker memory (RSS, MiB)", color: "#7f7f7f" },
  { name: "gpu_percent", title: "GPU utilisation (%)", color: "#bcbd22", gpu: true },
  { name: "gpu_memory_mib", title: "GPU memory reserved (MiB)", color: "#e377c2", gpu: true },
];
const RESOURCE_REFRESH_MS = 5000;

export async function render(root, params, signal) {
  const id = params.get("id");
  if (!id) throw new Error("no run chosen: open one from the Runs page");
  const view = {
    x: X_MODES[params.get("x")] ? params.get("x") : "step",
    logX: params.get("logx") === "1",
    logY: params.get("logy") === "1",
    smoothing: Number(params.get("smooth") ?? 0.6),
    hidden: new Set((params.get("hide") || "").split(",").filter(Boolean)),
    zoom: (params.get("zoom") || "").split(",").filter(Boolean).map(Number),
  };
  const charting = loadCharts(); // fetched while the API answers
  // The job before its series: the stream resumes after the job's last event, and any step
  // the series then hold as well is dropped as already drawn (none is missed).
  let job = await api(`/jobs/${id}`, { signal });
  const [loss, lr, ends] = await Promise.all(
    ["loss", "lr", "val_loss"].map((name) => api(`/jobs/${id}/metrics?name=${name}&max_points=${COARSE_POINTS}`, { signal })),
  );
  const used = await resourceSeries(id, signal);
  await charting;
  const steps = { loss: loss.points, lr: lr.points };
  const epochEnds = ends.points.map((p) => p.step); // the last step of each finished epoch
  const liveEvents = []; // the epochs ended while the page is open
  let changes = (await api(`/jobs/${id}/timeline`, { signal })).changes;

  const side = h("aside", { class: "side" });
  const charts = h("div", { class: "charts" });
  const spec = h("section", { class: "spec-section" });
  root.append(h("h1", {}, job.name, " ", statusBadge(job.status)), controls(view, rebuild), h("div", { class: "run-layout" }, charts, side), spec);

  const toX = () => xMapping(view.x, epochEnds, job.history);
  const keep = () => updateParams({
    x: view.x === "step" ? "" : view.x, logx: view.logX ? "1" : "", logy: view.logY ? "1" : "",
    smooth: view.smoothing === 0.6 ? "" : view.smoothing, hide: [...view.hidden].join(","),
    zoom: view.zoom.length ? view.zoom.map((v) => +v.toPrecision(6)).join(",") : "",
  });
  const common = () => ({
    logX: view.logX, logY: view.logY, smoothing: view.smoothing, hidden: view.hidden,
    onToggle: () => keep(),
  });
  const stepBox = h("div", { class: "chart", id: "chart-loss" });
  const lrBox = h("div", { class: "chart", id: "chart-lr" });
  const epochLossBox = h("div", { class: "chart", id: "chart-epoch-loss" });
  const accuracyBox = h("div", { class: "chart", id: "chart-accuracy" });
  charts.append(stepBox, lrBox, epochLossBox, accuracyBox);
  const lossChart = new Curves(stepBox, {
    title: "loss per step", lines: [{ label: "loss", color: "#1f77b4", envelope: true }], xLabel: X_MODES[view.x],
    ...common(), zoom: view.zoom.length === 2 ? view.zoom : null,
    onZoom: (zoom) => { view.zoom = zoom ?? []; keep(); if (zoom) finer(zoom); },
  });
  const lrChart = new Curves(lrBox, { title: "learning rate", lines: [{ label: "lr", color: "#ff7f0e" }], xLabel: X_MODES[view.x], ...common(), smoothing: null });
  const epochLossChart = new Curves(epochLossBox, {
    title: "loss per epoch", lines: [{ label: "train_loss", color: "#2ca02c" }, { label: "val_loss", color: "#d62728" }], xLabel: X_MODES[view.x], ...common(), smoothing: null,
  });
  const accuracyChart = new Curves(accuracyBox, {
    title: "accuracy per epoch", lines: [{ label: "train_accuracy", color: "#9467bd" }, { label: "val_accuracy", color: "#8c564b" }], xLabel: X_MODES[view.x], ...common(), smoothing: null,
  });
  // GPU charts only for a run that recorded GPU figures.
  const resourceCharts = RESOURCES.filter((r) => !r.gpu || used[r.name].length).map((r) => {
    const box = h("div", { class: "chart", id: `chart-${r.name.replaceAll("_", "-")}` });
    charts.append(box);
    return [r.name, new Curves(box, { title: r.title, lines: [{ label: r.name, color: r.color, envelope: true }], xLabel: X_MODES[view.x], ...common(), smoothing: null })];
  });
  const all = [lossChart, lrChart, epochLossChart, accuracyChart, ...resourceCharts.map(([, chart]) => chart)];

  function draw() {
    const x = toX();
    lossChart.update(steps.loss.map((p) => x(p.step)), [columnsOf(steps.loss)]);
    lrChart.update(steps.lr.map((p) => x(p.step)), [columnsOf(steps.lr)]);
    const epochX = job.history.map((e, i) => x(epochEnds[i] ?? e.epoch));
    const column = (name) => ({ values: job.history.map((e) => e[name]), min: [], max: [] });
    epochLossChart.update(epochX, [column("train_loss"), column("val_loss")]);
    accuracyChart.update(epochX, [column("train_accuracy"), column("val_accuracy")]);
    for (const [name, chart] of resourceCharts) chart.update(used[name].map((p) => x(p.step)), [columnsOf(used[name])]);
    drawSide();
    if (!performance.getEntriesByName("run:curves").length) performance.mark("run:curves");
  }

  function rebuild(changes) {
    Object.assign(view, changes);
    if ("x" in changes || "logX" in changes) view.zoom = [];
    keep();
    for (const chart of all) {
      chart.setOptions({ logX: view.logX, logY: view.logY, xLabel: X_MODES[view.x], zoom: chart === lossChart && view.zoom.length ? view.zoom : null, ...(chart === lossChart ? { smoothing: view.smoothing } : {}) });
    }
    draw();
  }

  // A zoom fetches the finer points of its range, in place of the coarse ones.
  async function finer([from, to]) {
    const [first, last] = [from, to].map(xInverse(view.x, epochEnds, job.history)).map((s) => Math.max(0, Math.round(s)));
    const range = `step_min=${first}&step_max=${last}&max_points=${COARSE_POINTS}`;
    const [fineLoss, fineLr] = await Promise.all(["loss", "lr"].map((name) => api(`/jobs/${id}/metrics?name=${name}&${range}`, { signal })));
    steps.loss = spliced(steps.loss, fineLoss.points, first, last);
    steps.lr = spliced(steps.lr, fineLr.points, first, last);
    draw();
  }

  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  };

  async function onEvent(event) {
    if (event.kind === "step") {
      const { step, loss: value, lr: rate } = event.data;
      if (step > (steps.loss.at(-1)?.step ?? 0)) {
        steps.loss.push({ step, value, min: value, max: value, count: 1 });
        steps.lr.push({ step, value: rate, min: rate, max: rate, count: 1 });
      }
      redraw();
      return;
    }
    if (event.kind === "epoch") epochEnds[event.data.epoch - 1] = steps.loss.at(-1)?.step ?? 0;
    if (event.kind === "status") changes = (await api(`/jobs/${id}/timeline`, { signal })).changes;
    else liveEvents.push(event);
    job = await api(`/jobs/${id}`, { signal });
    root.querySelector("h1 .badge")?.replaceWith(statusBadge(job.status));
    redraw();
  }

  function drawSide() {
    side.replaceChildren(summary(job), h("h2", {}, "Timeline"), timeline(job, changes, liveEvents));
    if (LIVE.has(job.status)) side.append(h("button", { class: "danger", id: "cancel", onclick: cancel }, "Cancel"));
    spec.replaceChildren(h("h2", {}, "Spec, with where each value came from"), specTable(job));
    if (job.evaluation) spec.prepend(evaluationView(job.evaluation));
  }

  async function cancel() {
    if (!confirm(`Cancel ${job.name} (${job.id})?`)) return;
    try {
      job = await api(`/jobs/${id}/cancel`, { method: "POST", signal });
      root.querySelector("h1 .badge")?.replaceWith(statusBadge(job.status));
      drawSide();
    } catch (error) {
      side.prepend(problem(error));
    }
  }

  draw();
  if (view.zoom.length === 2) finer(view.zoom); // a link's zoom gets its finer points too
  if (LIVE.has(job.status)) {
    followEvents(id, job.last_event_id, onEvent, signal);
    refreshResources();
  }

  async function refreshResources() {
    while (LIVE.has(job.status) && !signal.aborted) {
      await new Promise((resolve) => setTimeout(resolve, RESOURCE_REFRESH_MS));
      try {
        Object.assign(used, await resourceSeries(id, signal));
      } catch (error) {
        if (signal.aborted) return; // the page was left: nothing to draw
        throw error;
      }
      redraw();
    }
  }
}

async function resourceSeries(id, signal) {
  const series = await Promise.all(RESOURCES.map((r) => api(`/jobs/${id}/metrics?name=${r.name}&max_points=${COARSE_POINTS}`, { signal })));
  return Object.fromEntries(series.map((s) => [s.name, s.points]));
}

function columnsOf(points) {
  return { values: points.map((p) => p.value), min: points.map((p) => p.min), max: points.map((p) => p.max) };
}

function spliced(coarse, fine, first, last) {
  return [...coarse.filter((p) => p.step < first), ...fine, ...coarse.filter((p) => p.step > last)];
}

// Step -> x: the step itself, or the epoch or training time, interpolated between the
// ends of finished epochs and carried on past the last at its pace.
function knots(mode, epochEnds, history) {
  let seconds = 0;
  const points = [[0, 0]];
  history.forEach((epoch, i) => {
    seconds += epoch.seconds;
    if (epochEnds[i] !== undefined) points.push([epochEnds[i], mode === "epoch" ? epoch.epoch : seconds]);
  });
  return points;
}

function xMapping(mode, epochEnds, history) {
  if (mode === "step") return (step) => step;
  return piecewise(knots(mode, epochEnds, history));
}

function xInverse(mode, epochEnds, history) {
  if (mode === "step") return (x) => x;
  return piecewise(knots(mode, epochEnds, history).map(([a, b]) => [b, a]));
}

function piecewise(points) {
  if (points.length < 2) return (v) => v; // no epoch has ended: x stays the step
  return (v) => {
    let i = points.findIndex(([a]) => a >= v);
    if (i <= 0) i = i === 0 ? 1 : points.length - 1;
    const [[a0, b0], [a1, b1]] = [points[i - 1], points[i]];
    return b0 + ((v - a0) * (b1 - b0)) / (a1 - a0 || 1);
  };
}

function controls(view, rebuild) {
  const xSelect = h("select", { name: "x", "aria-label": "x axis", onchange: (e) => rebuild({ x: e.target.value }) },
    ...Object.entries(X_MODES).map(([value, label]) => h("option", { value, selected: view.x === value }, `x: ${label}`)));
  const toggle = (name, label) => h("label", { class: "chip" },
    h("input", { type: "checkbox", name, checked: view[name], onchange: (e) => rebuild({ [name]: e.target.checked }) }), label);
  const smooth = h("input", {
    type: "range", name: "smoothing", min: 0, max: 0.99, step: 0.01, value: view.smoothing, "aria-label": "smoothing",
    onchange: (e) => rebuild({ smoothing: Number(e.target.value) }),
  });
  return h("div", { class: "filters" }, xSelect, toggle("logX", "log x"), toggle("logY", "log y"),
    h("label", { class: "chip" }, "smoothing ", smooth), h("span", { class: "muted" }, "drag to zoom, double-click to reset"));
}

function summary(job) {
  const perEpoch = job.history.length ? job.history.reduce((sum, e) => sum + e.seconds, 0) / job.history.length : null;
  const left = job.epochs - job.epoch;
  const eta = LIVE.has(job.status) && perEpoch !== null ? duration(left * perEpoch) : "–";
  const rows = [
    ["status", job.end_reason ? `${job.status} (${job.end_reason})` : job.status],
    ["epochs", `${job.epoch} / ${job.epochs}`],
    ["ETA", eta],
    ["best val accuracy", percent(job.best_val_accuracy)],
    ["last val loss", fixed(job.last_val_loss)],
    ["device", job.device ?? "–"],
    ["attempt", `${job.attempt} / ${job.max_attempts}`],
    ["duration", duration(job.duration_seconds ?? (job.started_at ? (Date.now() - Date.parse(job.started_at)) / 1000 : null))],
    ["model", job.model_id ? h("a", { href: link("models", { name: job.name }) }, job.model_id.slice(0, 8)) : "–"],
    ["dataset", h("a", { href: link("datasets", { id: job.dataset_id }) }, job.dataset_id.slice(0, 8))],
  ];
  return h("dl", { class: "facts", id: "run-facts", dataset: { status: job.status } },
    ...rows.flatMap(([term, value]) => [h("dt", {}, term), h("dd", { dataset: { fact: term } }, value)]),
    job.error ? [h("dt", {}, "error"), h("dd", { class: "error" }, job.error)] : []);
}

// Every status change (GET /jobs/{id}/timeline: attempts, resumes, end reason, error),
// the cancel request, then the epochs that ended while the page was open.
function timeline(job, changes, liveEvents) {
  const items = changes.map((c) => h("li", { dataset: { status: c.status } }, h("b", {}, c.status), " ", when(c.at),
    c.attempt > 1 ? ` · attempt ${c.attempt}` : "",
    c.resumed_from_epoch !== null ? ` · resumed from epoch ${c.resumed_from_epoch}` : "",
    c.end_reason ? ` · ${c.end_reason.replaceAll("_", " ")}` : "",
    c.error ? h("div", { class: "error" }, c.error) : ""));
  if (job.cancel_requested_at) items.push(h("li", {}, h("b", {}, "cancel asked"), " ", when(job.cancel_requested_at)));
  for (const event of liveEvents) {
    items.push(h("li", { class: "live" }, `epoch ${event.data.epoch}: val accuracy ${percent(event.data.val_accuracy)}`));
  }
  return h("ol", { class: "timeline" }, items);
}

function specTable(job) {
  const sources = job.spec_sources ?? {};
  const rows = flatten(job.spec).map(([key, value]) =>
    h("tr", {}, h("td", {}, key), h("td", {}, JSON.stringify(value)), h("td", { class: "muted" }, sources[key] ?? "")));
  return h("div", { class: "table-wrap" }, h("table", { class: "spec" }, h("thead", {}, h("tr", {}, h("th", {}, "field"), h("th", {}, "value"), h("th", {}, "source"))), h("tbody", {}, rows)));
}

export function flatten(value, prefix = "") {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return [[prefix, value]];
  return Object.entries(value).flatMap(([key, inner]) => flatten(inner, prefix ? `${prefix}.${key}` : key));
}
