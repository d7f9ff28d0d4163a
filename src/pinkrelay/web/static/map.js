// The site map: every registered button drawn from its registry coordinates
// as SVG, with no map tiles (the control room may have no internet). An
// equirectangular projection scaled by cos(latitude) keeps a city's shape;
// buttons at one address are spread on a small ring so each can be clicked.

const NS = "http://www.w3.org/2000/svg";
const MARGIN = 56;
const MARKER_RADIUS = 8;
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

// Push overlapping markers apart (a few rounds of pairwise separation), inside the frame.
function relax(points, minDistance, W, H) {
  for (let round = 0; round < 80; round += 1) {
    let moved = false;
    for (let i = 0; i < points.length; i += 1) {
      for (let j = i + 1; j < points.length; j += 1) {
        const a = points[i];
        const b = points[j];
        let dx = b.x - a.x;
        let dy = b.y - a.y;
        let d = Math.hypot(dx, dy);
        if (d >= minDistance) continue;
        if (d < 0.01) {
          dx = Math.cos(i + j);
          dy = Math.sin(i + j);
          d = 1;
        }
        const push = (minDistance - d) / 2 + 0.01;
        a.x -= (dx / d) * push;
        a.y -= (dy / d) * push;
        b.x += (dx / d) * push;
        b.y += (dy / d) * push;
        moved = true;
      }
    }
    for (const p of points) {
      p.x = Math.min(W - 12, Math.max(12, p.x));
      p.y = Math.min(H - 12, Math.max(12, p.y));
    }
    if (!moved) break;
  }
}

function niceStep(span, target) {
  const steps = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10];
  for (const step of steps) if (span / step <= target) return step;
  return 20;
}

export class SiteMap {
  constructor(svgNode, { onSelect, stateOf, counts, modeOf = () => "live" }) {
    this.modeOf = modeOf; // "test": a button in test mode for maintenance (its presses page nobody)
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
    // Buttons at one address start on a small ring; then every marker is pushed
    // away from its neighbours until none covers another, so each can be clicked.
    const points = [];
    for (const members of groups.values()) {
      const [x, y] = project(members[0].site.latitude, members[0].site.longitude);
      const n = members.length;
      const ring = n > 1 ? 9 + 1.6 * n : 0;
      members.forEach((member, i) => {
        const angle = (2 * Math.PI * i) / n - Math.PI / 2;
        points.push({ member, tx: x, ty: y, x: x + ring * Math.cos(angle), y: y + ring * Math.sin(angle) });
      });
    }
    relax(points, 2 * MARKER_RADIUS + 3, W, H);
    const leaders = svg("g", { class: "leaders" });
    const labels = svg("g", { class: "labels" });
    const placedLabels = points.map((p) => ({
      left: p.x - MARKER_RADIUS, right: p.x + MARKER_RADIUS, top: p.y - MARKER_RADIUS, bottom: p.y + MARKER_RADIUS,
    }));
    this.markerBoxes = placedLabels.slice();
    const markers = svg("g", { class: "markers" });
    this.markersGroup = markers;
    this.groupLabels = [];
    for (const p of points) {
      if (Math.hypot(p.x - p.tx, p.y - p.ty) > 4) {
        leaders.append(svg("line", { x1: p.tx, y1: p.ty, x2: p.x, y2: p.y }));
        leaders.append(svg("circle", { cx: p.tx, cy: p.ty, r: 2 }));
      }
      markers.append(this.marker(p.member, p.x, p.y));
    }
    for (const members of groups.values()) {
      const mine = points.filter((p) => members.includes(p.member));
      const x = mine.reduce((sum, p) => sum + p.x, 0) / mine.length;
      const top = Math.min(...mine.map((p) => p.y)) - MARKER_RADIUS;
      const bottom = Math.max(...mine.map((p) => p.y)) + MARKER_RADIUS;
      const name = commonName(members.map((m) => m.site.name || m.button));
      const label = this.label(members.length > 1 ? `${name} (${members.length})` : name, x, top, bottom, placedLabels);
      if (label) {
        labels.append(label);
        this.groupLabels.push({ node: label, box: label.box, buttons: members.map((m) => m.button) });
      }
    }
    this.svg.append(leaders);
    this.alertLabels = svg("g", { class: "alert-labels" });
    this.svg.append(labels, markers, this.alertLabels);
    this.refresh();
  }

  // A group's label above its markers, else below; left out rather than drawn over
  // another label or marker (hovering a marker names its site).
  label(text, x, top, bottom, placed) {
    const { W } = this;
    const width = text.length * 6.6;
    const anchor = x - width / 2 < 6 ? "start" : x + width / 2 > W - 6 ? "end" : "middle";
    const lx = anchor === "start" ? Math.max(6, x - 12) : anchor === "end" ? Math.min(W - 6, x + 12) : x;
    const left = anchor === "start" ? lx : anchor === "end" ? lx - width : lx - width / 2;
    for (const baseline of [top - 5, bottom + 14]) {
      const box = { left, right: left + width, top: baseline - 11, bottom: baseline + 3 };
      const hit = placed.some((b) => box.left < b.right && b.left < box.right && box.top < b.bottom && b.top < box.bottom);
      if (!hit) {
        placed.push(box);
        const node = svg("text", { x: lx, y: baseline, "text-anchor": anchor, class: "group-label" }, text);
        node.box = box;
        return node;
      }
    }
    return null;
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
    g.append(svg("circle", { class: "halo", r: MARKER_RADIUS }), svg("circle", { class: "dotc", r: MARKER_RADIUS }));
    const title = svg("title");
    g.append(title);
    g.addEventListener("click", () => this.onSelect(member.button));
    g.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        this.onSelect(member.button);
      }
    });
    this.markers.set(member.button, { g, title, member, x, y });
    return g;
  }

  // Right of the marker, else left of it; left out (its marker's tooltip and the
  // board name it) rather than drawn over another label or marker.
  alertLabel(text, { x, y }, taken) {
    const width = text.length * 7.6;
    const sides = x < this.W - 220 ? ["start", "end"] : ["end", "start"];
    for (const anchor of sides) {
      const lx = anchor === "start" ? x + 13 : x - 13;
      const left = anchor === "start" ? lx : lx - width;
      const box = { left, right: left + width, top: y - 9, bottom: y + 8 };
      if (box.left < 0 || box.right > this.W) continue;
      if (taken.some((b) => box.left < b.right && b.left < box.right && box.top < b.bottom && b.top < box.bottom)) continue;
      taken.push(box);
      return svg("text", { x: lx, y: y + 4, "text-anchor": anchor, class: "alert-label" }, text);
    }
    return null;
  }

  refresh() {
    const counts = { alerting: 0, online: 0, offline: 0 };
    const alertLabels = [];
    // An alerting site is named beside its marker, where that covers no marker and no other label.
    const taken = [...(this.markerBoxes || [])];
    for (const { node, box, buttons } of this.groupLabels || []) {
      const hide = buttons.some((b) => this.stateOf(b) === "alerting");
      node.style.display = hide ? "none" : "";
      if (!hide) taken.push(box);
    }
    for (const [button, { g, title, member }] of this.markers) {
      const state = this.stateOf(button);
      counts[state] = (counts[state] || 0) + 1;
      const testing = this.modeOf(button) === "test";
      g.setAttribute("class", `site ${state}${this.watching.has(button) ? " watching" : ""}${testing ? " testmode" : ""}`);
      g.dataset.state = state;
      const site = member.site;
      title.textContent = `${site.name} (${button}): ${state}${testing ? " · TEST MODE: presses page nobody" : ""}`
        + `${site.address ? ` · ${site.address}` : ""} · click to watch`;
      if (state === "alerting") {
        if (this.markersGroup && g !== this.markersGroup.lastChild) this.markersGroup.append(g); // on top
        const label = this.alertLabel(site.name || button, this.markers.get(button), taken);
        if (label) alertLabels.push(label);
      }
    }
    if (this.alertLabels) this.alertLabels.replaceChildren(...alertLabels);
    this.counts(counts, this.markers.size);
  }
}
