// Curves on uPlot that keep what the user chose: a new batch of points never resets the
// zoom, the smoothing, the log axes or which series are shown.
/* global uPlot */

// Beside this module, at the same version of the files (app/ui).
const UPLOT = new URL("../vendor/uplot-1.6.32/uPlot.iife.min.js", import.meta.url).href;
const FAINT = "55"; // the raw line's alpha (hex) beside its smoothed line
const ENVELOPE = "22"; // the min/max band's

let loading = null;

// uPlot's own minified build, a classic script that defines the global uPlot, loaded by
// the first page that draws a chart (the runs page draws none: its sparklines are SVG).
export function loadCharts() {
  loading ??= new Promise((resolve, reject) => {
    const script = Object.assign(document.createElement("script"), { src: UPLOT, onload: resolve });
    script.onerror = () => reject(new Error(`could not load ${UPLOT}`));
    document.head.append(script);
  });
  return loading;
}

// TensorBoard's smoothing: an exponential moving average, debiased at the start.
export function ema(values, weight) {
  if (!weight) return values;
  let average = 0;
  let count = 0;
  return values.map((value) => {
    if (value === null || value === undefined) return null;
    count += 1;
    average = average * weight + (1 - weight) * value;
    return average / (1 - weight ** count);
  });
}

// lines: [{label, color, envelope: bool}]; each update gives, per line, {values, min, max}.
// Made once loadCharts() has resolved.
export class Curves {
  // smoothing: null for a chart that is never smoothed (it then draws no raw line).
  constructor(container, { title, lines, xLabel, logX = false, logY = false, smoothing = null, hidden = new Set(), zoom = null, onZoom = () => {}, onToggle = () => {} }) {
    Object.assign(this, { container, title, lines, xLabel, logX, logY, smoothing, hidden, zoom, onZoom, onToggle });
    this.x = [];
    this.columns = lines.map(() => ({ values: [], min: [], max: [] }));
    this.ownChange = false;
    this.build();
    new ResizeObserver(() => this.plot.setSize(this.size())).observe(container);
  }

  size() {
    return { width: Math.max(240, this.container.clientWidth), height: 240 };
  }

  series() {
    const series = [{ label: this.xLabel }];
    for (const line of this.lines) {
      const show = !this.hidden.has(line.label);
      if (this.smoothing !== null) {
        series.push({ label: `${line.label} (raw)`, stroke: line.color + FAINT, width: 1, show: show && this.smoothing > 0, points: { show: false } });
      }
      series.push({ label: line.label, stroke: line.color, width: 2, show, points: { show: false } });
      if (line.envelope) {
        series.push({ label: `${line.label} min`, stroke: "transparent", show, points: { show: false } });
        series.push({ label: `${line.label} max`, stroke: "transparent", show, points: { show: false } });
      }
    }
    return series;
  }

  bands() {
    const bands = [];
    let index = 1;
    const raw = this.smoothing === null ? 0 : 1;
    for (const line of this.lines) {
      if (line.envelope) bands.push({ series: [index + raw + 2, index + raw + 1], fill: line.color + ENVELOPE });
      index += 1 + raw + (line.envelope ? 2 : 0);
    }
    return bands;
  }

  build() {
    this.plot?.destroy();
    const options = {
      title: this.title,
      ...this.size(),
      series: this.series(),
      bands: this.bands(),
      scales: {
        x: { time: false, distr: this.logX ? 3 : 1 },
        y: { distr: this.logY ? 3 : 1 },
      },
      axes: [axis(), { ...axis(), size: 60 }],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      hooks: {
        setScale: [(plot, key) => key === "x" && this.scaleChanged(plot)],
        setSeries: [(plot, index, options) => this.seriesToggled(plot, index, options)],
      },
    };
    this.plot = new uPlot(options, this.data(), this.container);
    if (this.zoom) this.applyZoom();
    this.describe();
  }

  data() {
    const data = [this.x];
    this.lines.forEach((line, i) => {
      const { values: given, min, max } = this.columns[i];
      const values = this.logY ? positive(given) : given;
      if (this.smoothing !== null) data.push(values);
      data.push(ema(values, this.smoothing));
      if (line.envelope) data.push(min, max);
    });
    return data;
  }

  // New points: the zoom, if any, stays where the user put it.
  update(x, columns) {
    this.x = this.logX ? x.map((v) => (v > 0 ? v : null)) : x;
    this.columns = columns;
    this.ownChange = true;
    this.plot.setData(this.data(), !this.zoom);
    if (this.zoom) this.applyZoom();
    this.ownChange = false;
    this.describe();
  }

  applyZoom() {
    this.ownChange = true;
    this.plot.setScale("x", { min: this.zoom[0], max: this.zoom[1] });
    this.ownChange = false;
  }

  scaleChanged(plot) {
    if (this.ownChange) return;
    const { min, max } = plot.scales.x;
    const first = this.x.find((v) => v !== null);
    const last = this.x.at(-1);
    const whole = first === undefined || (min <= first && max >= last);
    this.zoom = whole ? null : [min, max];
    this.describe();
    this.onZoom(this.zoom);
  }

  seriesToggled(plot, index, options) {
    if (this.ownChange || !("show" in options)) return;
    const label = plot.series[index].label.replace(/ \(raw\)| min| max/, "");
    if (options.show) this.hidden.delete(label);
    else this.hidden.add(label);
    this.onToggle(this.hidden);
  }

  setOptions(changes) {
    Object.assign(this, changes);
    this.build();
  }

  // What a test or a bench reads of the chart, on its element.
  describe() {
    const { min, max } = this.plot.scales.x;
    Object.assign(this.container.dataset, {
      points: this.x.length,
      xMin: min ?? "",
      xMax: max ?? "",
      zoomed: Boolean(this.zoom),
    });
  }
}

function axis() {
  return {
    stroke: "currentColor",
    grid: { stroke: "#8884" },
    values: (_plot, splits) => splits.map((v) => (v === null ? "" : +v.toPrecision(4))),
  };
}

function positive(values) {
  return values.map((v) => (v > 0 ? v : null));
}
