// Runs: GET /jobs as a table, filtered by the API (status, task, name) and paged by its
// cursor, sorted here within the page; polled so new jobs and status changes show
// without a reload, each row with a sparkline of its loss.
import { api, query } from "./api.js";
import { duration, fixed, h, percent, shortId, statusBadge, when } from "./dom.js";
import { link, updateParams } from "./view.js";

const STATUSES = ["queued", "running", "cancelling", "cancelled", "succeeded", "failed"];
const TASKS = ["image_classification", "text_sentiment"];
const POLL_MS = 2000;
const LIVE = new Set(["queued", "running", "cancelling"]);
const SPARK_POINTS = 40;
const SPARK_WIDTH = 100;
const SPARK_HEIGHT = 24;

// Each column: its header, the value it sorts by, and its cell.
const COLUMNS = [
  ["status", (j) => j.status, (j) => statusBadge(j.status)],
  ["name", (j) => j.name, (j) => h("a", { href: link("run", { id: j.id }) }, j.name)],
  ["task", (j) => j.task, (j) => j.task],
  ["network", (j) => j.arch, (j) => j.arch],
  ["dataset", (j) => j.dataset_id, (j) => h("a", { href: link("datasets", { id: j.dataset_id }) }, shortId(j.dataset_id))],
  ["best val acc", (j) => j.best_val_accuracy, (j) => percent(j.best_val_accuracy)],
  ["last val acc", (j) => j.last_val_accuracy, (j) => percent(j.last_val_accuracy)],
  ["val loss", (j) => j.last_val_loss, (j) => fixed(j.last_val_loss)],
  ["epochs", (j) => j.progress, (j) => `${j.epoch} / ${j.epochs}`],
  ["duration", (j) => elapsed(j), (j) => duration(elapsed(j))],
  ["created", (j) => j.created_at, (j) => when(j.created_at)],
];

export async function render(root, params, signal) {
  const state = {
    status: (params.get("status") || "").split(",").filter(Boolean),
    task: params.get("task") || "",
    name: params.get("name") || "",
    sort: params.get("sort") || "-created",
    cursor: params.get("cursor") || "",
    limit: Number(params.get("limit")) || 50,
  };
  const earlier = []; // cursors of the pages before this one, for "Previous"
  const sparks = new Map(); // job id -> {points, at status}
  const selected = new Set((params.get("compare") || "").split(",").filter(Boolean));
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const compareLink = h("a", { class: "button", href: "#" }, "Compare selected");
  const count = h("span", { class: "muted", id: "runs-count" });
  let page = { items: [], next_cursor: null };

  root.append(
    h("h1", {}, "Runs"),
    filters(state, () => {
      state.cursor = "";
      earlier.length = 0;
      refresh();
    }),
    h("div", { class: "table-wrap" }, h("table", { class: "runs" }, header(state, () => draw()), body)),
    h("div", { class: "row" }, pager, count, compareLink),
  );

  async function refresh() {
    updateParams({
      status: state.status.join(","), task: state.task, name: state.name,
      sort: state.sort === "-created" ? "" : state.sort, cursor: state.cursor,
    });
    page = await api(
      `/jobs${query({ status: state.status, task: state.task, name: state.name, cursor: state.cursor, limit: state.limit })}`,
      { signal },
    );
    draw();
  }

  function draw() {
    const [, keyOf] = COLUMNS.find(([title]) => sortName(title) === state.sort.replace("-", "")) ?? COLUMNS[10];
    const direction = state.sort.startsWith("-") ? -1 : 1;
    const rows = [...page.items].sort((a, b) => direction * compare(keyOf(a), keyOf(b)));
    body.replaceChildren(...rows.map((job) => row(job)));
    count.textContent = `${page.items.length} on this page`;
    compareLink.href = link("compare", { ids: [...selected].join(",") });
    compareLink.classList.toggle("disabled", selected.size < 1);
    drawPager();
    if (!performance.getEntriesByName("runs:data").length && page.items.length) performance.mark("runs:data");
    sparklines(rows);
  }

  function row(job) {
    const box = h("input", {
      type: "checkbox", "aria-label": `compare ${job.name}`, checked: selected.has(job.id),
      onchange: (event) => {
        if (event.target.checked && selected.size < 10) selected.add(job.id);
        else selected.delete(job.id);
        event.target.checked = selected.has(job.id);
        updateParams({ compare: [...selected].join(",") });
        compareLink.href = link("compare", { ids: [...selected].join(",") });
        compareLink.classList.toggle("disabled", selected.size < 1);
      },
    });
    const spark = h("td", { class: "spark" }, sparks.get(job.id)?.svg ?? null);
    return h(
      "tr", { dataset: { job: job.id, status: job.status } },
      h("td", {}, box),
      ...COLUMNS.map(([title, , cell]) => h("td", { class: `col-${sortName(title)}` }, cell(job))),
      spark,
    );
  }

  // The loss of every row whose sparkline is missing or stale, in one request.
  async function sparklines(jobs) {
    const stale = jobs.filter((job) => {
      const known = sparks.get(job.id);
      return !known || (LIVE.has(job.status) && Date.now() - known.at > POLL_MS) || known.status !== job.status;
    });
    if (!stale.length) return;
    for (const job of stale) sparks.set(job.id, { ...sparks.get(job.id), at: Date.now(), status: job.status });
    const series = await api(
      `/series${query({ job_id: stale.map((job) => job.id), name: "loss", max_points: SPARK_POINTS })}`,
      { signal },
    );
    for (const { job_id: id, points } of series.items) {
      const svg = sparkSvg(points.map((p) => p.value));
      sparks.set(id, { ...sparks.get(id), svg });
      body.querySelector(`tr[data-job="${id}"] td.spark`)?.replaceChildren(svg);
    }
  }

  function drawPager() {
    const previous = h("button", {
      disabled: !state.cursor,
      onclick: () => { state.cursor = earlier.pop() || ""; refresh(); },
    }, "Newer");
    const next = h("button", {
      disabled: !page.next_cursor,
      onclick: () => { earlier.push(state.cursor); state.cursor = page.next_cursor; refresh(); },
    }, "Older");
    pager.replaceChildren(previous, next);
  }

  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), POLL_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}

// A running job's duration so far; an ended one's as the API gives it.
function elapsed(job) {
  if (job.duration_seconds !== null || !job.started_at) return job.duration_seconds;
  return (Date.now() - Date.parse(job.started_at)) / 1000;
}

function sortName(title) {
  return title.replaceAll(" ", "_");
}

function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return -1;
  if (b === null || b === undefined) return 1;
  return a < b ? -1 : 1;
}

function header(state, onSort) {
  const cells = COLUMNS.map(([title]) => {
    const name = sortName(title);
    const th = h("th", { "aria-sort": "none" }, h("button", {
      class: "sort",
      onclick: () => {
        state.sort = state.sort === `-${name}` ? name : `-${name}`;
        updateParams({ sort: state.sort === "-created" ? "" : state.sort });
        mark();
        onSort();
      },
    }, title));
    th.dataset.sort = name;
    return th;
  });
  const mark = () => {
    for (const th of cells) {
      const name = th.dataset.sort;
      th.setAttribute("aria-sort", state.sort === name ? "ascending" : state.sort === `-${name}` ? "descending" : "none");
    }
  };
  mark();
  return h("thead", {}, h("tr", {}, h("th", {}, ""), ...cells, h("th", {}, "loss")));
}

function filters(state, onChange) {
  const statusBoxes = STATUSES.map((status) =>
    h("label", { class: "chip" },
      h("input", {
        type: "checkbox", name: "status", value: status, checked: state.status.includes(status),
        onchange: () => {
          state.status = statusBoxes.map((l) => l.firstChild).filter((b) => b.checked).map((b) => b.value);
          onChange();
        },
      }),
      status),
  );
  const task = h("select", {
    name: "task", "aria-label": "task",
    onchange: (event) => { state.task = event.target.value; onChange(); },
  }, h("option", { value: "" }, "any task"), ...TASKS.map((t) => h("option", { value: t, selected: state.task === t }, t)));
  const name = h("input", {
    name: "name", type: "search", placeholder: "model name", value: state.name, "aria-label": "model name",
    onchange: (event) => { state.name = event.target.value.trim(); onChange(); },
  });
  return h("div", { class: "filters" }, ...statusBoxes, task, name);
}

function sparkSvg(values) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${SPARK_WIDTH} ${SPARK_HEIGHT}`);
  svg.setAttribute("class", "sparkline");
  svg.dataset.points = values.length;
  if (values.length < 2) return svg;
  const low = Math.min(...values);
  const span = Math.max(...values) - low || 1;
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", values.map((v, i) =>
    `${((i / (values.length - 1)) * SPARK_WIDTH).toFixed(1)},${(SPARK_HEIGHT - 1 - ((v - low) / span) * (SPARK_HEIGHT - 2)).toFixed(1)}`,
  ).join(" "));
  svg.append(line);
  return svg;
}
