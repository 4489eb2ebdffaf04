// Sweeps: the list, and one sweep: its trials (pruned ones marked), the objective against
// each searched field, and the best objective so far over time. Polled while it runs.
import { api, query } from "./api.js";
import { fixed, h, problem, shortId, statusBadge, when } from "./dom.js";
import { link } from "./view.js";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 360;
const HEIGHT = 200;
const PAD = 34;

export async function render(root, params, signal) {
  const id = params.get("id");
  if (id) return renderSweep(root, id, signal);
  root.append(h("h1", {}, "Sweeps"));
  const page = await api(`/sweeps${query({ limit: 100 })}`, { signal });
  if (!page.items.length) {
    root.append(h("p", { class: "muted" }, "No sweep yet: POST /sweeps, or trainserve sweeps submit."));
    return;
  }
  root.append(h("div", { class: "table-wrap" }, h("table", { id: "sweeps" },
    h("thead", {}, h("tr", {}, ...["sweep", "name", "status", "created", "finished"].map((c) => h("th", {}, c)))),
    h("tbody", {}, page.items.map((sweep) => h("tr", { dataset: { sweep: sweep.id } },
      h("td", {}, h("a", { href: link("sweeps", { id: sweep.id }) }, shortId(sweep.id))),
      h("td", {}, sweep.name), h("td", {}, statusBadge(sweep.status)),
      h("td", {}, when(sweep.created_at)), h("td", {}, when(sweep.finished_at))))))));
}

async function renderSweep(root, id, signal) {
  const title = h("h1", {}, `Sweep ${shortId(id)}`);
  const facts = h("dl", { class: "facts" });
  const charts = h("div", { class: "charts", id: "sweep-charts" });
  const table = h("div", { class: "table-wrap" });
  const cancel = h("button", { class: "danger", onclick: () => cancelSweep() }, "Cancel sweep");
  const error = h("div");
  root.append(h("div", { class: "row" }, title, cancel), error, facts, charts, h("h2", {}, "Trials"), table);

  async function cancelSweep() {
    if (!confirm("Cancel this sweep and its queued and running trials?")) return;
    try {
      draw(await api(`/sweeps/${id}/cancel`, { method: "POST", signal }));
    } catch (failure) {
      error.replaceChildren(problem(failure));
    }
  }

  function draw(sweep) {
    const { metric } = sweep.spec.objective;
    title.textContent = `Sweep ${shortId(sweep.id)}: ${sweep.name}`;
    cancel.hidden = sweep.status !== "running";
    const best = sweep.best_trial;
    facts.replaceChildren(...[
      ["status", statusBadge(sweep.status)],
      ["trials", `${sweep.trials.length} of ${sweep.trials_planned}, ${sweep.spec.max_parallel} at once`],
      ["sampler, rule", `${sweep.spec.sampler}, ${sweep.spec.pruner.rule}`],
      ["epochs trained", shown(sweep.epochs_trained)],
      ["best", best ? `trial ${best.number}: ${metric} ${fixed(best.objective)}` : "–"],
      ["best model", best ? h("a", { href: link("models", { name: sweep.name }) }, `${sweep.name}@best`) : "–"],
      ["error", sweep.error || "–"],
    ].flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
    const ended = sweep.trials.filter((t) => t.objective !== null);
    charts.replaceChildren(
      ...Object.keys(sweep.spec.space).map((path) => h("div", { class: "chart" },
        h("h2", {}, `${metric} against ${path}`), scatter(ended, path, sweep.spec.space[path]))),
      h("div", { class: "chart" }, h("h2", {}, `best ${metric} so far`), bestSoFar(ended, sweep.spec.objective)),
    );
    table.replaceChildren(trialsTable(sweep));
  }

  let sweep = await api(`/sweeps/${id}`, { signal });
  draw(sweep);
  const timer = setInterval(async () => {
    if (sweep.status !== "running") return clearInterval(timer);
    sweep = await api(`/sweeps/${id}`, { signal });
    draw(sweep);
  }, POLL_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}

function trialsTable(sweep) {
  const paths = Object.keys(sweep.spec.space);
  const columns = ["trial", "job", "status", "end", "epochs", "objective", ...paths];
  return h("table", { id: "trials" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, sweep.trials.map((trial) => h("tr", {
      class: trial.end_reason === "pruned" ? "pruned" : null,
      dataset: { trial: trial.number },
    },
    h("td", {}, String(trial.number), sweep.best_trial?.number === trial.number ? " ★" : ""),
    h("td", {}, h("a", { href: link("run", { id: trial.job_id }) }, shortId(trial.job_id))),
    h("td", {}, statusBadge(trial.status)),
    h("td", {}, trial.pruned_at_epoch !== null ? `pruned after ${shown(trial.pruned_at_epoch)} epochs` : trial.end_reason ?? "–"),
    h("td", {}, shown(trial.epochs_trained)),
    h("td", {}, fixed(trial.objective)),
    ...paths.map((path) => h("td", {}, shown(trial.params[path])))))));
}

function shown(value) {
  return typeof value === "number" && !Number.isInteger(value) ? value.toPrecision(3) : String(value);
}

// One point per trial that has an objective; a pruned trial is a hollow point.
function scatter(trials, path, param) {
  const categorical = param.type === "categorical";
  const choices = categorical ? param.choices.map(String) : [];
  const x = (value) => (categorical ? choices.indexOf(String(value)) : param.log ? Math.log(value) : value);
  const xRange = categorical ? [-0.5, choices.length - 0.5] : [x(param.low), x(param.high)];
  const svg = frame(xRange, yRange(trials.map((t) => t.objective)));
  for (const trial of trials) {
    const point = svg.place(x(trial.params[path]), trial.objective);
    const pruned = trial.end_reason === "pruned";
    svg.add("circle", { cx: point.x, cy: point.y, r: 4, class: pruned ? "pruned" : "trial" },
      `trial ${trial.number}: ${shown(trial.params[path])} → ${fixed(trial.objective)}${pruned ? " (pruned)" : ""}`);
  }
  svg.labels(categorical ? choices : [shown(param.low), shown(param.high)], categorical);
  return svg.element;
}

// The best objective among the trials ended so far, in the order they ended.
function bestSoFar(trials, objective) {
  const maximize = objective.direction ? objective.direction === "maximize" : objective.metric.endsWith("accuracy");
  const ended = trials.filter((t) => t.finished_at).sort((a, b) => a.finished_at.localeCompare(b.finished_at));
  const svg = frame([0, Math.max(1, ended.length - 1)], yRange(ended.map((t) => t.objective)));
  let best = null;
  const points = ended.map((trial, i) => {
    if (best === null || (maximize ? trial.objective > best : trial.objective < best)) best = trial.objective;
    const point = svg.place(i, best);
    return `${point.x},${point.y}`;
  });
  svg.add("polyline", { points: points.join(" "), class: "best" });
  svg.labels(["first ended", "last ended"], false);
  return svg.element;
}

function yRange(values) {
  const finite = values.filter((v) => v !== null);
  if (!finite.length) return [0, 1];
  const low = Math.min(...finite);
  const high = Math.max(...finite);
  const margin = (high - low) * 0.1 || 0.01;
  return [low - margin, high + margin];
}

// An SVG chart of fixed size, its data ranges mapped onto the area inside the axes.
function frame([x0, x1], [y0, y1]) {
  const element = document.createElementNS(SVG, "svg");
  element.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  element.setAttribute("class", "sweep-chart");
  const add = (tag, attributes, title) => {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (title) node.append(Object.assign(document.createElementNS(SVG, "title"), { textContent: title }));
    element.append(node);
    return node;
  };
  const place = (x, y) => ({
    x: PAD + ((x - x0) / (x1 - x0 || 1)) * (WIDTH - 2 * PAD),
    y: HEIGHT - PAD - ((y - y0) / (y1 - y0 || 1)) * (HEIGHT - 2 * PAD),
  });
  add("rect", { x: PAD, y: PAD / 2, width: WIDTH - 2 * PAD, height: HEIGHT - 1.5 * PAD, class: "area" });
  const text = (x, y, words, anchor = "middle") => {
    add("text", { x, y, "text-anchor": anchor }).textContent = words;
  };
  text(PAD - 4, PAD / 2 + 10, fixed(y1, 3), "end");
  text(PAD - 4, HEIGHT - PAD, fixed(y0, 3), "end");
  const labels = (names, spread) => {
    names.forEach((name, i) => {
      const at = spread ? place(i, y0).x : i ? WIDTH - PAD : PAD;
      text(at, HEIGHT - PAD + 16, name, spread ? "middle" : i ? "end" : "start");
    });
  };
  return { element, add, place, labels };
}
