// A model's evaluation report (the confusion matrix as a heat map, per-class F1 bars with
// precision and recall) and a dataset's data checks: shared by the run, model and
// dataset pages.
import { fixed, h, percent } from "./dom.js";

export function evaluationView(report, title = "Evaluation at the served epoch") {
  if (!report) return h("p", { class: "muted" }, "No evaluation report for this version.");
  return h("section", { class: "evaluation" },
    h("h2", {}, title),
    h("p", {},
      `${report.examples.toLocaleString()} examples · accuracy ${percent(report.accuracy)} · `,
      `top-${report.top_k} ${percent(report.top_k_accuracy)} · macro F1 ${fixed(report.macro_f1)} · `,
      `weighted F1 ${fixed(report.weighted_f1)} · ECE ${fixed(report.calibration.expected_calibration_error)}`),
    h("h3", {}, "Per class: F1 (precision / recall, support)"),
    perClassBars(report.per_class),
    h("h3", {}, "Confusion matrix (rows: true class, columns: predicted)"),
    confusionHeatMap(report.confusion_matrix),
  );
}

function perClassBars(rows) {
  return h("div", { class: "bars per-class" }, rows.flatMap((row) => [
    h("span", { class: "label" }, row.class),
    h("div", {}, h("div", { class: "bar", style: `width: ${(100 * row.f1).toFixed(1)}%` })),
    h("span", {}, `${fixed(row.f1, 3)} (${fixed(row.precision, 3)} / ${fixed(row.recall, 3)}, ${row.support})`),
  ]));
}

// Each cell's shade is its share of its row (the true class's examples), so a class with few
// examples shows its confusions as clearly as a large one.
function confusionHeatMap({ classes, counts }) {
  const head = h("tr", {}, h("th", {}, ""), ...classes.map((name) => h("th", { scope: "col" }, name)));
  const rows = counts.map((row, i) => {
    const total = Math.max(1, row.reduce((a, b) => a + b, 0));
    return h("tr", {}, h("th", { scope: "row" }, classes[i]), ...row.map((count, j) => h("td", {
      class: i === j ? "diagonal" : null,
      style: `--share: ${(count / total).toFixed(3)}`,
      title: `${classes[i]} → ${classes[j]}: ${count}`,
    }, String(count))));
  });
  return h("div", { class: "table-wrap" }, h("table", { class: "confusion", id: "confusion-matrix" },
    h("thead", {}, head), h("tbody", {}, rows)));
}

export function checksView(checks) {
  if (!checks) return h("p", { class: "muted" }, "No data checks: stored before they existed.");
  const items = Object.entries(checks.imbalance).map(([split, found]) => h("li", {},
    `${split}: largest class ${found.largest.class} (${found.largest.count.toLocaleString()}), `,
    `smallest ${found.smallest.class} (${found.smallest.count.toLocaleString()}), ratio ${found.ratio ?? "∞"}`));
  items.push(...Object.entries(checks.duplicates).map(([split, found]) => h("li", { class: found.count ? "warn" : null },
    `${split}: ${found.count.toLocaleString()} exact duplicates`)));
  items.push(h("li", { class: checks.leakage.count ? "warn" : null },
    `${checks.leakage.count.toLocaleString()} test examples also in the training split`));
  return h("section", { class: "checks", id: "data-checks" }, h("h3", {}, "Data checks"), h("ul", {}, items));
}
