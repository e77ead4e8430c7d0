// Small charts from the formations' history (GET /api/v1/formations/{id}/history and
// /api/v1/history): SVG paths drawn by hand, no library. Loaded before app.js, which calls
// these from its template helpers. Pure functions of the samples: nothing here fetches.
"use strict";

// The fleet's sparklines: the last 5 minutes (60 samples of 5 s). The formation page's
// charts: what is kept (up to the hour, 720), never narrower than those 5 minutes, drawn in a
// viewBox of this size.
const SPARK_POINTS = 60;
const CHART_W = 240;
const CHART_H = 48;

// An SVG path through `values` (null: no figure then, the line breaks), the last value at the
// right edge, `slots` samples across the width, 0 at the bottom and `top` at the top.
function linePath(values, slots, width, height, top) {
  const n = values.length;
  const span = Math.max(slots, n) - 1 || 1;
  const first = Math.max(slots, n) - n;
  const pad = 1; // the stroke's half-width: a flat line at 0 or at `top` stays visible
  let d = "";
  let pen = false;
  values.forEach((value, i) => {
    if (typeof value !== "number") {
      pen = false;
      return;
    }
    const x = ((first + i) / span) * width;
    const y = height - pad - (Math.min(value, top) / (top || 1)) * (height - 2 * pad);
    d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
    pen = true;
  });
  return d;
}

// The top of a chart's scale: the largest value, at least `floor` (a flat 0 is drawn low).
function scaleTop(values, floor) {
  return values.reduce((top, v) => (typeof v === "number" && v > top ? v : top), floor);
}

function lastNumber(values) {
  for (let i = values.length - 1; i >= 0; i--) if (typeof values[i] === "number") return values[i];
  return null;
}

// The four charts of a formation's page, each with its path, last value and scale as text
// (`format` turns a figure into words: the page's own percent and bytes).
function formationCharts(samples, format) {
  const specs = [
    { key: "cpu_percent", label: "CPU", floor: 1, text: format.percent },
    { key: "rss_bytes", label: "Memory", floor: 1024 * 1024, text: format.bytes },
    { key: "requests_per_s", label: "Requests/s", floor: 1, text: (v) => perSecond(v) },
    { key: "restarts", label: "Restarts", floor: 1, text: (v) => (v === null ? "—" : String(v)) },
  ];
  return specs.map((spec) => {
    const values = samples.map((s) => s[spec.key]);
    const top = scaleTop(values, spec.floor);
    return {
      key: spec.key,
      label: spec.label,
      last: spec.text(lastNumber(values)),
      scale: "0–" + spec.text(top),
      d: linePath(values, SPARK_POINTS, CHART_W, CHART_H, top),
    };
  });
}

function perSecond(value) {
  if (typeof value !== "number") return "—";
  return (value >= 10 ? value.toFixed(0) : value.toFixed(value >= 1 ? 1 : 2)) + "/s";
}

// How long the samples span, in words ("12 min", "1 h").
function spanText(samples) {
  if (samples.length < 2) return "";
  const s = samples[samples.length - 1].t - samples[0].t;
  if (s < 60) return Math.round(s) + " s";
  return s < 3600 ? Math.round(s / 60) + " min" : Math.round(s / 3600) + " h";
}
