// The report page's script: reads the inlined data, draws each person's timeline on a canvas from
// a series decimated per pixel column (an hour of video stays as cheap as a minute), and keeps a
// cursor on every timeline in step with the video. No network, no library: browser APIs only.
'use strict';

(function () {
  const data = JSON.parse(document.getElementById('report-data').textContent);
  const video = document.getElementById('video');
  const tooltip = document.getElementById('tooltip');
  const classes = data.classes;
  const colours = data.colours;
  const NO = data.no_value;
  const PROB_H = 100, ROW_GAP = 4, TRACK_H = 16, AXIS_H = 16;
  const GAP_COLOUR = '#e4e4e4';
  const timings = {decode_ms: 0, draw_ms: 0, cursor_ms: 0};
  let cursorTime = 0;

  function bytes(b64) {
    const text = atob(b64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  // Seconds as '12.34 s', or as 'h:mm:ss' / 'm:ss' (with `digits` decimals) for a long video.
  function fmt(seconds, digits) {
    if (duration < 60) return seconds.toFixed(digits === undefined ? 2 : digits) + ' s';
    const whole = Math.floor(seconds), h = Math.floor(whole / 3600), m = Math.floor(whole / 60) % 60;
    const s = seconds - 60 * Math.floor(whole / 60);
    const sec = (s < 10 ? '0' : '') + s.toFixed(digits || 0);
    return h ? h + ':' + (m < 10 ? '0' : '') + m + ':' + sec : m + ':' + sec;
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function swatch(c) {
    const s = el('span', {class: 'swatch'});
    s.style.background = colours[c];
    return s;
  }

  // ------------------------------------------------------------------ page frame
  document.title = data.title;
  document.getElementById('title').textContent = data.title;
  document.getElementById('settings').textContent = data.settings +
    (data.fps_known ? ' · ' + data.fps + ' frames/s' : ' · frame rate unknown: times assume ' + data.fps + ' frames/s');

  const note = document.getElementById('video-note');
  function cannotPlay(why) {
    note.hidden = false;
    note.textContent = 'This browser cannot play ' + decodeURIComponent(data.video) + ' (' + why +
      '). The timelines below still work: click them to move the cursor, and open the video in a player.';
  }
  if (!data.video) {
    cannotPlay('no video');
  } else {
    if (video.canPlayType('video/mp4') === '' && /\.mp4$/i.test(data.video)) cannotPlay('no MP4 support');
    video.addEventListener('error', function () {
      const err = video.error;
      cannotPlay(err && err.code === 4 ? 'missing file or unsupported codec' : 'error ' + (err ? err.code : '?'));
    });
    video.src = data.video;
  }

  // ------------------------------------------------------------------ series
  const t0 = performance.now();
  const people = data.people.map(function (p) {
    return {
      info: p, frames: p.frames, probs: bytes(p.probs), labels: bytes(p.labels),
      truth: p.truth === null ? null : bytes(p.truth),
    };
  });
  timings.decode_ms = performance.now() - t0;
  const frames = people.reduce((m, p) => Math.max(m, p.frames), 0);
  const duration = frames / data.fps;

  // Per pixel column: the mean probabilities of its face frames (none: a gap), the most frequent
  // label among its face frames (else among its carried labels, drawn thin), the most frequent
  // ground truth label.
  function decimate(p, width) {
    const K = classes.length, T = p.frames;
    const mean = new Float32Array(width * K), hasFace = new Uint8Array(width);
    const label = new Uint8Array(width), truth = new Uint8Array(width).fill(NO);
    const count = new Int32Array(K), carried = new Int32Array(K), known = new Int32Array(K);
    for (let c = 0; c < width; c++) {
      const lo = Math.floor(c * T / width), hi = Math.max(lo + 1, Math.floor((c + 1) * T / width));
      count.fill(0); carried.fill(0); known.fill(0);
      let faces = 0;
      for (let f = lo; f < hi && f < T; f++) {
        const base = f * K;
        const lab = p.labels[f];
        if (p.probs[base] !== NO) {
          faces++;
          for (let k = 0; k < K; k++) mean[c * K + k] += p.probs[base + k];
          if (lab !== NO) count[lab]++;
        } else if (lab !== NO) {
          carried[lab]++;
        }
        if (p.truth && p.truth[f] !== NO) known[p.truth[f]]++;
      }
      if (faces) {
        hasFace[c] = 1;
        for (let k = 0; k < K; k++) mean[c * K + k] /= faces * data.prob_scale;
      }
      label[c] = argmax(faces ? count : carried);
      if (p.truth) { const t = argmax(known); if (known[t] > 0) truth[c] = t; }
    }
    return {mean: mean, hasFace: hasFace, label: label, truth: truth};
  }

  function argmax(a) {
    let best = 0;
    for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
    return best;
  }

  // ------------------------------------------------------------------ panels
  const timelines = document.getElementById('timelines');
  const panels = people.map(function (p, index) {
    const box = el('div', {class: 'person'});
    const who = p.info.number === null ? 'no face found' : 'Person ' + p.info.number;
    const h = el('h3', {}, who + ' ');
    h.appendChild(el('span', {class: 'text'}, p.info.summary.text));
    box.appendChild(h);
    const legend = el('div', {class: 'legend'});
    classes.forEach(function (name, c) {
      const item = el('span');
      item.appendChild(swatch(c));
      item.appendChild(document.createTextNode(name));
      legend.appendChild(item);
    });
    legend.appendChild(el('span', {}, 'hatched: no face · thin label bar: no face, label of the nearest face frame'));
    box.appendChild(legend);
    const labelY = PROB_H + ROW_GAP, truthY = labelY + TRACK_H + ROW_GAP;
    const height = (p.truth ? truthY + TRACK_H : labelY + TRACK_H) + AXIS_H;
    const track = el('div', {class: 'track', 'data-person': String(index), 'data-frames': String(p.frames),
                             'data-fps': String(data.fps), 'data-label-y': String(labelY + TRACK_H / 2),
                             'data-truth-y': p.truth ? String(truthY + TRACK_H / 2) : ''});
    track.style.height = height + 'px';
    const canvas = el('canvas', {class: 'data'}), overlay = el('canvas', {class: 'overlay'});
    track.appendChild(canvas);
    track.appendChild(overlay);
    const rows = el('div', {class: 'rows'}), names = el('div', {class: 'names'});
    const rowNames = [['probabilities', PROB_H], ['label', TRACK_H]].concat(p.truth ? [['truth', TRACK_H]] : []);
    rowNames.forEach(function ([name, h], i) {
      const n = el('div', {}, name);
      n.style.height = h + 'px';
      n.style.lineHeight = h + 'px';
      if (i) n.style.marginTop = ROW_GAP + 'px';
      names.appendChild(n);
    });
    rows.appendChild(names);
    rows.appendChild(track);
    box.appendChild(rows);
    timelines.appendChild(box);
    return {p: p, track: track, canvas: canvas, overlay: overlay, height: height, labelY: labelY,
            truthY: truthY, width: 0, dpr: 1, cols: null};
  });

  function draw(panel) {
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(panel.track.clientWidth * dpr));
    const height = Math.round(panel.height * dpr);
    panel.width = width; panel.dpr = dpr;
    for (const c of [panel.canvas, panel.overlay]) { c.width = width; c.height = height; }
    const cols = panel.cols = decimate(panel.p, width);
    const ctx = panel.canvas.getContext('2d');
    const K = classes.length, ph = Math.round(PROB_H * dpr);
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, width, height);
    // Probabilities stacked bottom up, in whole device pixels so the colours stay exact.
    ctx.fillStyle = hatch(ctx, dpr);
    runs(width, c => !cols.hasFace[c], (a, b) => ctx.fillRect(a, 0, b - a, ph));
    const top = new Int32Array(width).fill(ph);
    const cum = new Float32Array(width);
    for (let k = 0; k < K; k++) {
      ctx.fillStyle = colours[k];
      for (let c = 0; c < width; c++) {
        if (!cols.hasFace[c]) continue;
        cum[c] += cols.mean[c * K + k];
        const y = ph - Math.round(Math.min(1, cum[c]) * ph);
        if (y < top[c]) { ctx.fillRect(c, y, 1, top[c] - y); top[c] = y; }
      }
    }
    drawTrack(ctx, cols.label, cols.hasFace, Math.round(panel.labelY * dpr), Math.round(TRACK_H * dpr), dpr);
    if (panel.p.truth) drawTrack(ctx, cols.truth, null, Math.round(panel.truthY * dpr), Math.round(TRACK_H * dpr), dpr);
    drawAxis(ctx, width, height, dpr);
    drawCursor(panel);
  }

  function hatch(ctx, dpr) {
    const size = Math.round(8 * dpr), tile = document.createElement('canvas');
    tile.width = tile.height = size;
    const t = tile.getContext('2d');
    t.fillStyle = '#f2f2f2';
    t.fillRect(0, 0, size, size);
    t.strokeStyle = '#c8c8c8';
    t.lineWidth = Math.max(1, dpr);
    t.beginPath();
    t.moveTo(0, size); t.lineTo(size, 0);
    t.moveTo(-size / 2, size / 2); t.lineTo(size / 2, -size / 2);
    t.moveTo(size / 2, size * 1.5); t.lineTo(size * 1.5, size / 2);
    t.stroke();
    return ctx.createPattern(tile, 'repeat');
  }

  // Calls fn(a, b) for each run [a, b) of columns where pred holds.
  function runs(width, pred, fn) {
    let start = -1;
    for (let c = 0; c <= width; c++) {
      const on = c < width && pred(c);
      if (on && start < 0) start = c;
      if (!on && start >= 0) { fn(start, c); start = -1; }
    }
  }

  function drawTrack(ctx, values, full, y, h, dpr) {
    const width = values.length;
    const thin = Math.max(2, Math.round(4 * dpr)), thinY = y + Math.round((h - thin) / 2);
    ctx.fillStyle = GAP_COLOUR;
    ctx.fillRect(0, thinY, width, thin);
    let start = 0;
    for (let c = 1; c <= width; c++) {
      if (c < width && values[c] === values[start] && (!full || full[c] === full[start])) continue;
      if (values[start] !== NO) {
        ctx.fillStyle = colours[values[start]];
        if (!full || full[start]) ctx.fillRect(start, y, c - start, h);
        else ctx.fillRect(start, thinY, c - start, thin);
      }
      start = c;
    }
  }

  function drawAxis(ctx, width, height, dpr) {
    const y = height - Math.round(AXIS_H * dpr);
    ctx.fillStyle = '#666';
    ctx.font = Math.round(10 * dpr) + 'px sans-serif';
    ctx.textBaseline = 'top';
    const steps = [0.04, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800];
    const wanted = duration / Math.max(1, width / (90 * dpr));
    const step = steps.find(s => s >= wanted) || 3600;
    for (let t = 0; t <= duration + 1e-9; t += step) {
      const x = Math.round(t / duration * width);
      ctx.fillRect(Math.min(x, width - 1), y, 1, Math.round(3 * dpr));
      const text = fmt(t);
      const w = ctx.measureText(text).width;
      ctx.fillText(text, Math.max(0, Math.min(width - w, x - w / 2)), y + Math.round(4 * dpr));
    }
  }

  function xOfTime(panel, t) {
    return Math.min(panel.width - 1, Math.max(0, Math.round(t / duration * panel.width)));
  }

  function drawCursor(panel) {
    const ctx = panel.overlay.getContext('2d');
    ctx.clearRect(0, 0, panel.overlay.width, panel.overlay.height);
    const x = xOfTime(panel, cursorTime), w = Math.max(2, Math.round(2 * panel.dpr));
    ctx.fillStyle = '#000';
    ctx.fillRect(x - w / 2, 0, w, panel.overlay.height - Math.round(AXIS_H * panel.dpr));
    panel.track.dataset.cursorX = String(x / panel.dpr);
  }

  function setCursor(t) {
    const start = performance.now();
    cursorTime = t;
    panels.forEach(drawCursor);
    timings.cursor_ms = performance.now() - start;
  }

  function drawAll() {
    const start = performance.now();
    panels.forEach(draw);
    timings.draw_ms = performance.now() - start;
  }

  // ------------------------------------------------------------------ interaction
  function timeAt(panel, clientX) {
    const r = panel.track.getBoundingClientRect();
    const frac = Math.min(1, Math.max(0, (clientX - r.left) / r.width));
    return frac * duration;
  }

  function seek(t) {
    setCursor(t);
    if (video.readyState > 0 && !video.error) video.currentTime = Math.min(t, video.duration || t);
  }

  function describeFrame(panel, t) {
    const p = panel.p, K = classes.length;
    const f = Math.min(p.frames - 1, Math.floor(t * data.fps + 1e-6));
    const lab = p.labels[f];
    const face = p.probs[f * K] !== NO;
    const lines = ['frame ' + (f + 1) + ' · ' + fmt(f / data.fps, 2),
                   'label ' + (lab === NO ? '?' : classes[lab]) + (face ? '' : ' (no face: nearest face frame\'s)')];
    if (p.truth) lines.push('truth ' + (p.truth[f] === NO ? 'not annotated' : classes[p.truth[f]]));
    if (face) {
      const order = classes.map((_, k) => k).sort((a, b) => p.probs[f * K + b] - p.probs[f * K + a]);
      for (const k of order) lines.push((p.probs[f * K + k] / data.prob_scale).toFixed(3) + '  ' + classes[k]);
    }
    return lines.join('\n');
  }

  panels.forEach(function (panel) {
    const track = panel.track;
    track.addEventListener('pointerdown', function (e) {
      track.setPointerCapture(e.pointerId);
      seek(timeAt(panel, e.clientX));
    });
    track.addEventListener('pointermove', function (e) {
      const t = timeAt(panel, e.clientX);
      if (e.buttons & 1) seek(t);
      tooltip.hidden = false;
      tooltip.textContent = describeFrame(panel, t);
      const right = e.clientX + 14 + tooltip.offsetWidth > window.innerWidth;
      tooltip.style.left = (right ? e.clientX - 14 - tooltip.offsetWidth : e.clientX + 14) + 'px';
      tooltip.style.top = Math.max(0, e.clientY - tooltip.offsetHeight - 8) + 'px';
    });
    track.addEventListener('pointerleave', function () { tooltip.hidden = true; });
  });

  let following = false;
  function follow() {
    if (video.currentTime !== cursorTime) setCursor(video.currentTime);
    if (following) requestAnimationFrame(follow);
  }
  video.addEventListener('play', function () { if (!following) { following = true; requestAnimationFrame(follow); } });
  video.addEventListener('pause', function () { following = false; setCursor(video.currentTime); });
  for (const name of ['seeking', 'seeked', 'timeupdate', 'loadedmetadata']) {
    video.addEventListener(name, function () { if (!following) setCursor(video.currentTime); });
  }
  let pending = false;
  window.addEventListener('resize', function () {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; drawAll(); });
  });

  // ------------------------------------------------------------------ summary table and links
  function summaryTable() {
    const table = el('table');
    const head = el('tr');
    for (const name of ['person', 'face time', 'dominant']) head.appendChild(el('th', {}, name));
    classes.forEach(function (name, c) {
      const th = el('th', {title: 'share of the face frames · longest run'});
      th.appendChild(swatch(c));
      th.appendChild(document.createTextNode(name));
      head.appendChild(th);
    });
    table.appendChild(head);
    for (const p of people) {
      const s = p.info.summary, row = el('tr');
      row.appendChild(el('td', {class: 'name'}, p.info.number === null ? '-' : String(p.info.number)));
      row.appendChild(el('td', {}, fmt(s.seconds, 1)));
      row.appendChild(el('td', {class: 'dominant'}, s.dominant < 0 ? '-' : classes[s.dominant]));
      classes.forEach(function (_, c) {
        const text = s.shares === null || s.shares[c] === 0 ? '' :
          (100 * s.shares[c]).toFixed(0) + '% · ' + fmt(s.longest_s[c], duration < 60 ? 2 : 0);
        row.appendChild(el('td', {}, text));
      });
      table.appendChild(row);
    }
    document.getElementById('summary-table').appendChild(table);
    const links = document.getElementById('links');
    links.appendChild(document.createTextNode('Data: '));
    data.links.forEach(function (link, i) {
      if (i) links.appendChild(document.createTextNode(' · '));
      links.appendChild(el('a', {href: link.href}, link.text));
    });
  }

  summaryTable();
  drawAll();
  window.REPORT = {timings: timings, redraw: drawAll, setCursor: setCursor, duration: duration};
  document.body.dataset.ready = '1';
})();
