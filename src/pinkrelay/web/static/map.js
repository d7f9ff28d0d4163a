// The site map: every registered button drawn from its registry coordinates
// as SVG, with no map tiles (the control room may have no internet). An
// equirectangular projection scaled by cos(latitude) keeps a city's shape;
// buttons at one address are spread on a small ring so each can be clicked.

const NS = "http://www.w3.org/2000/svg";
const MARGIN = 56;
const KM_PER_DEGREE = 111.32;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function commonName(names) {
  if (names.length === 1) return names[0];
  let prefix = names[0];
  for (const name of names) {
    while (!name.startsWith(prefix)) prefix = prefix.slice(0, -1);
  }
  prefix = prefix.replace(/[\s#,\-–(]+$/, "");
  return prefix.length >= 3 ? prefix : names[0];
}

function niceStep(span, target) {
  const steps = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10];
  for (const step of steps) if (span / step <= target) return step;
  return 20;
}

export class SiteMap {
  constructor(svgNode, { onSelect, stateOf, counts }) {
    this.svg = svgNode;
    this.onSelect = onSelect;
    this.stateOf = stateOf;
    this.counts = counts;
    this.markers = new Map();
    this.watching = new Set();
    this.sites = [];
    this.size = "";
    // Drawn in CSS pixels, so text stays legible whatever the panel's shape.
    new ResizeObserver(() => {
      const size = `${this.svg.clientWidth}x${this.svg.clientHeight}`;
      if (size !== this.size && this.sites.length) this.draw(this.sites);
    }).observe(this.svg);
  }

  draw(sites) {
    this.sites = sites;
    const W = Math.max(200, this.svg.clientWidth || 1000);
    const H = Math.max(200, this.svg.clientHeight || 800);
    this.size = `${this.svg.clientWidth}x${this.svg.clientHeight}`;
    this.W = W;
    this.H = H;
    this.svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    this.svg.replaceChildren();
    this.markers.clear();
    const placed = sites.filter((s) => s.site && (s.site.latitude || s.site.longitude));
    if (!placed.length) {
      this.svg.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "group-label" },
        "No button in the registry has coordinates"));
      this.refresh();
      return;
    }
    const lats = placed.map((s) => s.site.latitude);
    const lons = placed.map((s) => s.site.longitude);
    const midLat = (Math.min(...lats) + Math.max(...lats)) / 2;
    const kx = Math.cos((midLat * Math.PI) / 180);
    let minX = Math.min(...lons) * kx;
    let maxX = Math.max(...lons) * kx;
    let minY = -Math.max(...lats);
    let maxY = -Math.min(...lats);
    const pad = 0.004;
    if (maxX - minX < pad) { minX -= pad; maxX += pad; }
    if (maxY - minY < pad) { minY -= pad; maxY += pad; }
    const scale = Math.min((W - 2 * MARGIN) / (maxX - minX), (H - 2 * MARGIN) / (maxY - minY));
    const cx = (minX + maxX) / 2;
    const cy = (minY + maxY) / 2;
    const project = (lat, lon) => [W / 2 + (lon * kx - cx) * scale, H / 2 + (-lat - cy) * scale];
    const unproject = (x, y) => [-((y - H / 2) / scale + cy), ((x - W / 2) / scale + cx) / kx];
    this.drawGrid(project, unproject);
    this.drawScale(scale);

    const groups = new Map();
    for (const site of placed) {
      const key = `${site.site.latitude.toFixed(4)},${site.site.longitude.toFixed(4)}`;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(site);
    }
    const labels = svg("g", { class: "labels" });
    const placedLabels = [];
    const markers = svg("g", { class: "markers" });
    for (const members of groups.values()) {
      const [x, y] = project(members[0].site.latitude, members[0].site.longitude);
      const n = members.length;
      const ring = n > 1 ? 11 + 2.2 * n : 0;
      members.forEach((member, i) => {
        const angle = (2 * Math.PI * i) / n - Math.PI / 2;
        const mx = x + ring * Math.cos(angle);
        const my = y + ring * Math.sin(angle);
        markers.append(this.marker(member, mx, my));
      });
      const name = commonName(members.map((m) => m.site.name || m.button));
      const label = n > 1 ? `${name} (${n})` : name;
      labels.append(this.label(label, x, y, ring, placedLabels));
    }
    this.svg.append(markers, labels);
    this.refresh();
  }

  // A group's label above its markers, else below, else further out: never on another label.
  label(text, x, y, ring, placed) {
    const { W } = this;
    const width = text.length * 7;
    const anchor = x - width / 2 < 6 ? "start" : x + width / 2 > W - 6 ? "end" : "middle";
    const lx = anchor === "start" ? Math.max(6, x - 12) : anchor === "end" ? Math.min(W - 6, x + 12) : x;
    const left = anchor === "start" ? lx : anchor === "end" ? lx - width : lx - width / 2;
    const candidates = [y - ring - 14, y + ring + 24, y - ring - 30, y + ring + 40, y - ring - 46];
    let ly = candidates[0];
    for (const candidate of candidates) {
      const box = { left, right: left + width, top: candidate - 12, bottom: candidate + 3 };
      const hit = placed.some((b) => box.left < b.right && b.left < box.right && box.top < b.bottom && b.top < box.bottom);
      if (!hit) {
        ly = candidate;
        placed.push(box);
        break;
      }
    }
    return svg("text", { x: lx, y: ly, "text-anchor": anchor, class: "group-label" }, text);
  }

  drawGrid(project, unproject) {
    const { W, H } = this;
    const grid = svg("g", { class: "grid" });
    const [north, west] = unproject(0, 0);
    const [south, east] = unproject(W, H);
    const step = niceStep(Math.max(north - south, east - west), 6);
    const digits = Math.max(0, -Math.floor(Math.log10(step)));
    for (let lat = Math.ceil(south / step) * step; lat <= north; lat += step) {
      const [, y] = project(lat, west);
      grid.append(svg("line", { x1: 0, y1: y, x2: W, y2: y }));
      grid.append(svg("text", { x: 6, y: y - 4 }, `${lat.toFixed(digits)}°${lat >= 0 ? "N" : "S"}`));
    }
    for (let lon = Math.ceil(west / step) * step; lon <= east; lon += step) {
      const [x] = project(south, lon);
      grid.append(svg("line", { x1: x, y1: 0, x2: x, y2: H }));
      grid.append(svg("text", { x: x + 4, y: H - 8 }, `${lon.toFixed(digits)}°${lon >= 0 ? "E" : "W"}`));
    }
    this.svg.append(grid);
  }

  drawScale(scale) {
    const { W, H } = this;
    const unitsPerKm = scale / KM_PER_DEGREE;
    let km = 0.1;
    for (const candidate of [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500]) {
      if (candidate * unitsPerKm <= W / 4) km = candidate;
    }
    const length = km * unitsPerKm;
    const g = svg("g", { class: "scale" });
    const x = W - 20 - length;
    const y = H - 30;
    g.append(svg("line", { x1: x, y1: y, x2: x + length, y2: y }));
    g.append(svg("line", { x1: x, y1: y - 6, x2: x, y2: y + 6 }));
    g.append(svg("line", { x1: x + length, y1: y - 6, x2: x + length, y2: y + 6 }));
    g.append(svg("text", { x: x + length / 2, y: y - 10, "text-anchor": "middle" }, km >= 1 ? `${km} km` : `${km * 1000} m`));
    this.svg.append(g);
  }

  marker(member, x, y) {
    const g = svg("g", { class: "site", tabindex: 0, role: "button", "data-button": member.button,
      transform: `translate(${x.toFixed(1)} ${y.toFixed(1)})` });
    g.append(svg("circle", { class: "halo", r: 8 }), svg("circle", { class: "dotc", r: 8 }));
    const title = svg("title");
    g.append(title);
    g.addEventListener("click", () => this.onSelect(member.button));
    g.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        this.onSelect(member.button);
      }
    });
    this.markers.set(member.button, { g, title, member });
    return g;
  }

  refresh() {
    const counts = { alerting: 0, online: 0, offline: 0 };
    for (const [button, { g, title, member }] of this.markers) {
      const state = this.stateOf(button);
      counts[state] = (counts[state] || 0) + 1;
      g.setAttribute("class", `site ${state}${this.watching.has(button) ? " watching" : ""}`);
      g.dataset.state = state;
      const site = member.site;
      title.textContent = `${site.name} (${button}): ${state}${site.address ? ` · ${site.address}` : ""} · click to watch`;
    }
    this.counts(counts, this.markers.size);
  }
}
