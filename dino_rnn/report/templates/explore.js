// explore.html: each model's forward pass in plain JavaScript, the next character's
// probabilities as bars, and the greedy names a-z. No library, no request: the weights are the
// JSON in #models-data. Numbers are float64 here; float32 weights are rounded back to float32
// (Math.fround) so that they are exactly PyTorch's.
"use strict";
(function () {
  const MAX_LENGTH = 40;  // as dino_rnn.sample.generate
  const sigmoid = a => 1 / (1 + Math.exp(-a));

  // out[r] += sum_k W[r, off + k] * v[k], for W (rows x cols) stored row by row
  function addMatVec(out, W, cols, off, v) {
    for (let r = 0; r < out.length; r++) {
      let s = 0;
      const base = r * cols + off;
      for (let k = 0; k < v.length; k++) s += W[base + k] * v[k];
      out[r] += s;
    }
  }
  // out[r] += W[r, off + x]: the product with the one-hot row of symbol x
  function addColumn(out, W, cols, off, x) {
    for (let r = 0; r < out.length; r++) out[r] += W[r * cols + off + x];
  }
  // out[r] += W x for x a symbol (one-hot) or a vector
  function addInput(out, W, cols, off, x) {
    if (typeof x === "number") addColumn(out, W, cols, off, x); else addMatVec(out, W, cols, off, x);
  }
  const plus = (...bs) => { const o = new Float64Array(bs[0].length); for (const b of bs) for (let i = 0; i < o.length; i++) o[i] += b[i]; return o; };
  const map = (a, f) => a.map(f);

  // Each cell: init() -> state; step(state, x) -> [state, logits] (x: the symbol's index).
  const CELLS = {
    // dino_rnn.models.ScratchRNN: h_t = tanh(i2h([x_t; h_{t-1}])), o_t = i2o([x_t; h_{t-1}]), logits = o2o([h_t; o_t])
    scratch(w, V, H, act) {
      return {
        init: () => new Float64Array(H),
        step(h, x) {
          const a = plus(w["i2h.bias"]);
          addColumn(a, w["i2h.weight"], V + H, 0, x); addMatVec(a, w["i2h.weight"], V + H, V, h);
          const hn = act === "tanh" ? map(a, Math.tanh) : a;
          const o = plus(w["i2o.bias"]);
          addColumn(o, w["i2o.weight"], V + H, 0, x); addMatVec(o, w["i2o.weight"], V + H, V, h);
          const logits = plus(w["o2o.bias"]);
          addMatVec(logits, w["o2o.weight"], H + V, 0, hn); addMatVec(logits, w["o2o.weight"], H + V, H, o);
          return [hn, logits];
        },
      };
    },
    // nn.RNN: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), layer by layer; then fc
    rnn(w, V, H, act, L) {
      return torchCell(w, V, H, L, 1, (l, x, [h]) => {
        const a = plus(w[`rnn.bias_ih_l${l}`], w[`rnn.bias_hh_l${l}`]);
        addInput(a, w[`rnn.weight_ih_l${l}`], l ? H : V, 0, x); addMatVec(a, w[`rnn.weight_hh_l${l}`], H, 0, h);
        return [act === "relu" ? map(a, v => Math.max(v, 0)) : map(a, Math.tanh)];
      });
    },
    // nn.LSTM: gates = W_ih x + b_ih + W_hh h + b_hh, in the order i, f, g, o;
    // c_t = f c_{t-1} + i g, h_t = o tanh(c_t)
    lstm(w, V, H, act, L) {
      return torchCell(w, V, H, L, 2, (l, x, [h, c]) => {
        const a = plus(w[`rnn.bias_ih_l${l}`], w[`rnn.bias_hh_l${l}`]);
        addInput(a, w[`rnn.weight_ih_l${l}`], l ? H : V, 0, x); addMatVec(a, w[`rnn.weight_hh_l${l}`], H, 0, h);
        const cn = new Float64Array(H), hn = new Float64Array(H);
        for (let j = 0; j < H; j++) {
          const i = sigmoid(a[j]), f = sigmoid(a[H + j]), g = Math.tanh(a[2 * H + j]), o = sigmoid(a[3 * H + j]);
          cn[j] = f * c[j] + i * g;
          hn[j] = o * Math.tanh(cn[j]);
        }
        return [hn, cn];
      });
    },
    // nn.GRU: r, z, n in that order; r = σ(W_ir x + b_ir + W_hr h + b_hr), z likewise,
    // n = tanh(W_in x + b_in + r (W_hn h + b_hn)), h_t = (1 - z) n + z h_{t-1}
    gru(w, V, H, act, L) {
      return torchCell(w, V, H, L, 1, (l, x, [h]) => {
        const gi = plus(w[`rnn.bias_ih_l${l}`]), gh = plus(w[`rnn.bias_hh_l${l}`]);
        addInput(gi, w[`rnn.weight_ih_l${l}`], l ? H : V, 0, x); addMatVec(gh, w[`rnn.weight_hh_l${l}`], H, 0, h);
        const hn = new Float64Array(H);
        for (let j = 0; j < H; j++) {
          const r = sigmoid(gi[j] + gh[j]), z = sigmoid(gi[H + j] + gh[H + j]);
          const n = Math.tanh(gi[2 * H + j] + r * gh[2 * H + j]);
          hn[j] = (1 - z) * n + z * h[j];
        }
        return [hn];
      });
    },
    // dino_rnn.numpy_nets.rnn_forward: h_t = tanh(U x_t + V h_{t-1} + b_h), o_t = W h_t + b_o
    numpy_rnn(w, V, H) {
      return {
        init: () => new Float64Array(H),
        step(h, x) {
          const a = plus(w.b_h);
          addColumn(a, w.U, V, 0, x); addMatVec(a, w.V, H, 0, h);
          const hn = map(a, Math.tanh), logits = plus(w.b_o);
          addMatVec(logits, w.W, H, 0, hn);
          return [hn, logits];
        },
      };
    },
    // dino_rnn.numpy_nets.lstm_forward: z_t = [h_{t-1}; x_t]; f, i, g, o each W_k z_t + b_k;
    // c_t = f c_{t-1} + i g, h_t = o tanh(c_t), v_t = W_v h_t + b_v
    numpy_lstm(w, V, H) {
      const gate = (k, h, x) => { const a = plus(w[`b_${k}`]); addMatVec(a, w[`W_${k}`], H + V, 0, h); addColumn(a, w[`W_${k}`], H + V, H, x); return a; };
      return {
        init: () => [new Float64Array(H), new Float64Array(H)],
        step([h, c], x) {
          const f = gate("f", h, x), i = gate("i", h, x), g = gate("g", h, x), o = gate("o", h, x);
          const cn = new Float64Array(H), hn = new Float64Array(H);
          for (let j = 0; j < H; j++) {
            cn[j] = sigmoid(f[j]) * c[j] + sigmoid(i[j]) * Math.tanh(g[j]);
            hn[j] = sigmoid(o[j]) * Math.tanh(cn[j]);
          }
          const logits = plus(w.b_v);
          addMatVec(logits, w.W_v, H, 0, hn);
          return [[hn, cn], logits];
        },
      };
    },
  };

  // A PyTorch recurrent layer stack (nParts state vectors per layer) and its Linear read-out fc.
  function torchCell(w, V, H, L, nParts, layer) {
    return {
      init: () => Array.from({ length: L }, () => Array.from({ length: nParts }, () => new Float64Array(H))),
      step(state, x) {
        const next = [];
        let input = x;
        for (let l = 0; l < L; l++) {
          next.push(layer(l, input, state[l]));
          input = next[l][0];
        }
        const logits = plus(w["fc.bias"]);
        addMatVec(logits, w["fc.weight"], H, 0, input);
        return [next, logits];
      },
    };
  }

  function load(m) {
    const w = {};
    for (const [k, t] of Object.entries(m.weights)) {
      const a = Float64Array.from(t.data);
      if (m.float32) for (let i = 0; i < a.length; i++) a[i] = Math.fround(a[i]);
      w[k] = a;
    }
    const V = m.vocab.length, H = m.hidden;
    const cell = CELLS[m.kind](w, V, H, m.nonlinearity, m.layers);
    const stoi = new Map(m.vocab.map((c, i) => [c, i]));
    return { ...m, cell, stoi, V };
  }

  // The logits after reading `ids` (and the state to go on from)
  function read(model, ids) {
    let state = model.cell.init(), logits = null;
    for (const x of ids) [state, logits] = model.cell.step(state, x);
    return [state, logits];
  }
  const argmax = a => { let best = 0; for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i; return best; };

  // A name from `start`: the likeliest next character each time (pick = argmax), or drawn by `pick`
  function complete(model, start, pick) {
    const ids = [...start].map(c => model.stoi.get(c));
    let [state, logits] = read(model, ids);
    const out = [...start];
    while (out.length < MAX_LENGTH) {
      const next = pick(logits);
      if (next === model.end) break;
      out.push(model.vocab[next]);
      [state, logits] = model.cell.step(state, next);
    }
    return out.join("");
  }

  // softmax(logits / T), the k likeliest kept and renormalised
  function probabilities(logits, T, k) {
    const z = Array.from(logits, v => v / T), top = Math.max(...z);
    let p = z.map(v => Math.exp(v - top));
    if (k < p.length) {
      const cut = [...p].sort((a, b) => b - a)[k - 1];
      let kept = 0;
      p = p.map(v => (v >= cut && kept++ < k ? v : 0));
    }
    const sum = p.reduce((a, b) => a + b, 0);
    return p.map(v => v / sum);
  }
  function draw(p) {
    let u = Math.random(), i = 0;
    for (; i < p.length - 1; i++) { u -= p[i]; if (u < 0) break; }
    return i;
  }

  const $ = id => document.getElementById(id);
  const models = JSON.parse($("models-data").textContent).map(load);
  const byArch = new Map(models.map(m => [m.arch, m]));
  const ui = { model: $("model"), prefix: $("prefix"), temperature: $("temperature"), topk: $("topk") };

  function settings() {
    const model = byArch.get(ui.model.value);
    const T = Number(ui.temperature.value), k = Math.min(Number(ui.topk.value), model.V);
    return { model, T, k };
  }

  // The prefix as the model's symbols, or the message saying what is wrong with it
  function parse(model) {
    let text = ui.prefix.value;
    if (!model.stoi.has("A") && model.stoi.has("a")) text = text.toLowerCase();
    if (!text) return [null, "Type the start of a name."];
    const bad = [...new Set([...text].filter(c => !model.stoi.has(c) || model.stoi.get(c) === model.end))];
    if (bad.length) return [null, `Not among the model's symbols: ${bad.map(c => JSON.stringify(c)).join(", ")}.`];
    return [text, ""];
  }

  function update() {
    const { model, T, k } = settings();
    $("temperature-value").textContent = T.toFixed(2);
    $("topk-value").textContent = k >= model.V ? "all" : String(k);
    const [text, message] = parse(model);
    const bars = $("bars");
    bars.replaceChildren();
    $("message").textContent = message;
    bars.dataset.prefix = text || "";
    if (!text) return;
    const [, logits] = read(model, [...text].map(c => model.stoi.get(c)));
    const p = probabilities(logits, T, k);
    const order = p.map((v, i) => i).sort((a, b) => p[b] - p[a] || a - b);
    $("message").textContent = `After “${text}”, ${model.label} expects:`;
    for (const i of order) bars.append(bar(model.vocab[i], p[i], p[order[0]], i === model.end));
    bars.dataset.model = model.arch;
  }

  // One character's bar, its length relative to the likeliest (`top`), its value in data-p
  function bar(symbol, p, top, isEnd) {
    const row = document.createElement("div");
    row.className = "bar" + (p === 0 ? " cut" : "");
    row.setAttribute("role", "listitem");
    row.dataset.char = symbol;
    row.dataset.p = String(p);
    const label = document.createElement("span");
    label.className = "sym";
    label.textContent = isEnd ? "end" : symbol;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * p / top).toFixed(2) + "%";
    track.append(fill);
    const value = document.createElement("span");
    value.className = "val";
    value.textContent = (100 * p).toFixed(1) + "%";
    row.append(label, track, value);
    return row;
  }

  function sample(greedy) {
    const { model, T, k } = settings();
    const [text, message] = parse(model);
    if (!text) { $("sampled").textContent = message; return; }
    const pick = greedy ? argmax : logits => draw(probabilities(logits, T, k));
    $("sampled").textContent = complete(model, text, pick);
  }

  // On load: every model's greedy names a-z, beside the ones its run recorded
  function greedyTable() {
    const letters = "abcdefghijklmnopqrstuvwxyz";
    const body = $("greedy-table").tBodies[0];
    let same = 0, total = 0;
    for (const c of letters) {
      const row = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row"; th.textContent = c;
      row.append(th);
      for (const m of models) {
        const td = document.createElement("td");
        td.dataset.model = m.arch; td.dataset.start = c;
        if (m.stoi.has(c)) {
          const name = complete(m, c, argmax);
          const recorded = (m.greedy.find(r => r.start === c) || {}).name;
          td.textContent = name;
          if (recorded !== undefined) {
            total++;
            if (recorded === name) same++; else { td.className = "differs"; td.title = `the run recorded ${recorded}`; }
          }
        }
        row.append(td);
      }
      body.append(row);
    }
    const check = $("check");
    check.textContent = total === same ? `All ${total} are the names the runs recorded (samples.greedy of their metrics).`
      : `${total - same} of ${total} differ from the names the runs recorded (marked).`;
    check.className = "small " + (total === same ? "yes" : "no");
  }

  for (const el of Object.values(ui)) el.addEventListener("input", update);
  $("sample").addEventListener("click", () => sample(false));
  $("greedy").addEventListener("click", () => sample(true));
  update();
  greedyTable();
  document.body.dataset.ready = "yes";
})();
