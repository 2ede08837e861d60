/**
 * Grouped bar charts as standalone SVG files, for the evaluation report (no plotting dependency:
 * the figures are simple and must regenerate anywhere the benchmarks run).
 */
export interface BarChart {
  title: string;
  yLabel: string;
  /** One group per category on the x axis. */
  groups: string[];
  /** One series per bar within a group; values[i] belongs to groups[i]. */
  series: Array<{ name: string; values: number[] }>;
  /** Log scale on y (for quantities spanning orders of magnitude). */
  logY?: boolean;
}

const COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"];

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function niceMax(value: number): number {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

export function barChartSvg(chart: BarChart): string {
  const width = 760;
  const height = 360;
  const left = 70;
  const right = 20 + 150; // legend on the right
  const top = 40;
  const bottom = 60;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const all = chart.series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const maxValue = Math.max(...all, 0);
  const minPositive = Math.min(...all.filter((v) => v > 0), maxValue || 1);
  const logMin = chart.logY ? 10 ** Math.floor(Math.log10(minPositive)) : 0;
  const yMax = chart.logY ? 10 ** Math.ceil(Math.log10(maxValue || 1)) : niceMax(maxValue);
  const y = (v: number): number => {
    if (chart.logY) {
      const clamped = Math.max(v, logMin);
      return (
        top + plotH - (plotH * (Math.log10(clamped) - Math.log10(logMin))) / (Math.log10(yMax) - Math.log10(logMin))
      );
    }
    return top + plotH - (plotH * v) / yMax;
  };
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2 - right / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(chart.title)}</text>`,
  );
  // Y grid and labels.
  const ticks = chart.logY
    ? Array.from({ length: Math.round(Math.log10(yMax / logMin)) + 1 }, (_, i) => logMin * 10 ** i)
    : Array.from({ length: 6 }, (_, i) => (yMax * i) / 5);
  for (const t of ticks) {
    const ty = y(t);
    out.push(
      `<line x1="${left}" y1="${ty.toFixed(1)}" x2="${left + plotW}" y2="${ty.toFixed(1)}" stroke="#ddd"/>`,
      `<text x="${left - 6}" y="${(ty + 4).toFixed(1)}" text-anchor="end">${formatTick(t)}</text>`,
    );
  }
  out.push(
    `<text transform="translate(16 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(chart.yLabel)}</text>`,
  );
  // Bars.
  const groupW = plotW / Math.max(1, chart.groups.length);
  const barW = (groupW * 0.8) / Math.max(1, chart.series.length);
  chart.groups.forEach((g, gi) => {
    const gx = left + gi * groupW + groupW * 0.1;
    chart.series.forEach((s, si) => {
      const v = s.values[gi] ?? 0;
      if (!Number.isFinite(v)) return;
      const bx = gx + si * barW;
      const by = y(v);
      out.push(
        `<rect x="${bx.toFixed(1)}" y="${by.toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(top + plotH - by).toFixed(1)}" fill="${COLORS[si % COLORS.length]}"><title>${escapeXml(`${s.name}, ${g}: ${formatTick(v)}`)}</title></rect>`,
      );
    });
    out.push(
      `<text x="${(left + gi * groupW + groupW / 2).toFixed(1)}" y="${top + plotH + 18}" text-anchor="middle">${escapeXml(g)}</text>`,
    );
  });
  out.push(`<line x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" stroke="#333"/>`);
  // Legend.
  chart.series.forEach((s, si) => {
    const ly = top + 10 + si * 20;
    out.push(
      `<rect x="${left + plotW + 16}" y="${ly - 10}" width="12" height="12" fill="${COLORS[si % COLORS.length]}"/>`,
      `<text x="${left + plotW + 34}" y="${ly}">${escapeXml(s.name)}</text>`,
    );
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

function formatTick(v: number): string {
  if (v === 0) return "0";
  if (Math.abs(v) >= 1000) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1).replace(/\.0$/, "");
  if (Math.abs(v) >= 1) return v.toFixed(2).replace(/\.?0+$/, "");
  return v.toPrecision(2);
}
