// The tree viewer. Model text is untrusted: it only ever reaches the page through textContent
// (never innerHTML), so markup in it shows as text.
//
// Rows are one flat list in depth-first order, indented by level, not nested elements: a
// token-level tree is hundreds of levels deep, and nested blocks made every expand/collapse
// restyle whole subtrees. Collapsing hides rows; visibility is recomputed in one O(n) pass that
// touches only rows whose state changed.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("tree-data").textContent);
  var n = D.parent.length;
  var INDENT = 16; // px per level
  var OPEN_ALL_BELOW = 200; // small trees open fully; larger ones show two levels + chosen path

  var onPath = new Uint8Array(n);
  if (D.chosen !== null) {
    for (var p = D.chosen; p >= 0; p = D.parent[p]) onPath[p] = 1;
  }
  var level = new Int32Array(n); // parents precede children in a saved tree
  for (var i = 1; i < n; i++) level[i] = level[D.parent[i]] + 1;
  var open = new Uint8Array(n);
  var shown = new Uint8Array(n); // what the DOM currently shows
  var rows = new Array(n); // node id -> its row element
  var order = []; // depth-first order, children most visited first
  var maxVisits = Math.max(1, D.visits[0]);
  var selected = -1;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function num(x) {
    return x === null || x === undefined ? "\u2014" : Number(x).toFixed(3);
  }
  function oneLine(s) {
    return s.replace(/\n/g, "\u23ce").replace(/\t/g, "\u21e5");
  }

  // ---- header
  document.getElementById("question").textContent = D.title || "";
  var stats = document.getElementById("stats");
  D.header.forEach(function (kv) {
    var box = el("div", kv[0] === "ORACLE" ? "oracle" : "");
    box.appendChild(el("dt", "", kv[0]));
    box.appendChild(el("dd", "", kv[1]));
    stats.appendChild(box);
  });
  document.getElementById("config").textContent = D.config;

  // ---- one row per node
  function row(id) {
    var kids = D.kids[id];
    var r = el("div", "node" + (onPath[id] ? " path" : "") + (id === D.chosen ? " chosen" : ""));
    r.dataset.id = id;
    r.setAttribute("role", "treeitem");
    r.setAttribute("aria-level", String(level[id] + 1));
    var indent = level[id] * INDENT;
    r.style.paddingLeft = indent + 4 + "px";
    r.style.backgroundSize = indent + "px 100%";
    var tog = el("button", "tog");
    tog.type = "button";
    tog.tabIndex = -1;
    tog.disabled = !kids.length;
    tog.setAttribute("aria-label", "expand or collapse");
    r.appendChild(tog);
    var label = id === 0 ? "(root)" : D.text[id];
    var txt = el("span", "txt" + (label === "" || id === 0 ? " empty" : ""), label === "" ? "\u2205" : oneLine(label));
    txt.title = id === 0 ? "the prompt" : "tokens " + D.tokens[id].join(" ");
    r.appendChild(txt);
    if (id !== 0) {
      var acts = D.actions[id];
      r.appendChild(el("span", "acts", "a" + acts[0] + (acts.length > 1 ? " +" + (acts.length - 1) : "")));
    }
    var bar = el("span", "bar");
    var fill = el("i");
    fill.style.width = Math.round((100 * D.visits[id]) / maxVisits) + "%";
    bar.appendChild(fill);
    r.appendChild(bar);
    var parts = [["N", String(D.visits[id])], ["V", num(D.value[id])]];
    if (id !== 0) parts.push(["Q", num(D.q[id])], ["P", num(D.prior[id])]);
    parts.push(["R", num(D.reward[id])]);
    parts.forEach(function (kv) {
      var s = el("span", "st", kv[0] + " ");
      s.appendChild(el("b", "", kv[1]));
      r.appendChild(s);
    });
    if (D.terminal[id]) r.appendChild(el("span", "term", "end"));
    rows[id] = r;
    return r;
  }

  // Iterative depth-first build (no recursion limit on deep trees) into one fragment.
  var list = el("div", "rows");
  list.setAttribute("role", "tree");
  var frag = document.createDocumentFragment();
  var stack = [0];
  while (stack.length) {
    var id = stack.pop();
    order.push(id);
    frag.appendChild(row(id));
    var kids = D.kids[id];
    for (var k = kids.length - 1; k >= 0; k--) stack.push(kids[k]);
  }
  for (i = 0; i < n; i++) {
    open[i] = D.kids[i].length && (n < OPEN_ALL_BELOW || level[i] < 2 || onPath[i]) ? 1 : 0;
    shown[i] = 1;
  }
  refresh();
  list.appendChild(frag);
  var treeBox = document.getElementById("tree");
  treeBox.appendChild(list);

  // Bring the DOM in line with `open`: a row shows iff every ancestor is open.
  function refresh() {
    for (var j = 0; j < n; j++) {
      var id = order[j];
      var vis = id === 0 || (shown[D.parent[id]] && open[D.parent[id]]) ? 1 : 0;
      var r = rows[id];
      if (vis !== shown[id]) {
        shown[id] = vis;
        r.hidden = !vis;
      }
      if (D.kids[id].length) {
        var want = open[id] ? "\u25be" : "\u25b8";
        if (r.firstChild.textContent !== want) {
          r.firstChild.textContent = want;
          r.setAttribute("aria-expanded", open[id] ? "true" : "false");
        }
      }
    }
  }
  function toggle(id) {
    open[id] = open[id] ? 0 : 1;
    refresh();
  }

  // ---- details of the selected node: statistics, full prefix, rollout
  function detail(id) {
    var box = document.getElementById("detail");
    box.textContent = "";
    box.appendChild(el("h2", "", "node " + id + (id === D.chosen ? " (chosen)" : onPath[id] ? " (on chosen path)" : "")));
    var t = el("table");
    function line(k, v) {
      var tr = el("tr");
      tr.appendChild(el("td", "", k));
      tr.appendChild(el("td", "", v));
      t.appendChild(tr);
    }
    line("level / depth", level[id] + " / " + D.depth[id] + " tokens");
    if (id !== 0) {
      line("latent actions", D.actions[id].join(", "));
      line("edge tokens", D.tokens[id].join(" "));
      line("edge text", JSON.stringify(D.text[id]));
    }
    line("visits", String(D.visits[id]));
    line("value V", num(D.value[id]));
    if (id !== 0) {
      line("Q (edge)", num(D.q[id]));
      line("prior P", num(D.prior[id]));
    }
    line("reward R", num(D.reward[id]));
    if (D.judge && D.judge[id] !== null && D.judge[id] !== undefined) line("judge said", D.judge[id]);
    line("terminal", D.terminal[id] ? "yes" : "no");
    line("children", String(D.kids[id].length));
    box.appendChild(t);

    box.appendChild(el("h3", "", "Prefix (prompt, then one shaded segment per edge)"));
    var pre = el("pre", "text");
    pre.appendChild(el("span", "prompt", D.prompt));
    var path = [];
    for (var q = id; q > 0; q = D.parent[q]) path.push(q);
    path.reverse().forEach(function (m) {
      var s = el("span", "seg" + (m === id ? " here" : "") + (onPath[m] ? " path" : ""), D.text[m]);
      s.title = "node " + m + ", actions " + D.actions[m].join(", ");
      pre.appendChild(s);
    });
    box.appendChild(pre);
    if (D.rollout[id] !== null) {
      box.appendChild(el("h3", "", "Rollout after this prefix"));
      box.appendChild(el("pre", "text", D.rollout[id]));
    }
  }
  function select(id) {
    if (selected >= 0) rows[selected].classList.remove("selected");
    selected = id;
    rows[id].classList.add("selected");
    rows[id].setAttribute("aria-selected", "true");
    detail(id);
  }
  function reveal(id) {
    for (var a = D.parent[id]; a >= 0; a = D.parent[a]) open[a] = 1;
    refresh();
    select(id);
    rows[id].scrollIntoView({ block: "nearest" });
  }

  treeBox.addEventListener("click", function (ev) {
    var r = ev.target.closest(".node");
    if (!r) return;
    var id = Number(r.dataset.id);
    if (ev.target.closest(".tog")) toggle(id);
    else select(id);
  });
  treeBox.addEventListener("dblclick", function (ev) {
    var r = ev.target.closest(".node");
    if (r && !ev.target.closest(".tog") && D.kids[Number(r.dataset.id)].length) toggle(Number(r.dataset.id));
  });
  // Keyboard: up/down move between shown rows, left/right collapse/expand, Enter toggles.
  document.addEventListener("keydown", function (ev) {
    if (selected < 0 || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    var next = -1;
    var kids = D.kids[selected];
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      var step = ev.key === "ArrowDown" ? 1 : -1;
      for (var j = order.indexOf(selected) + step; j >= 0 && j < n; j += step) {
        if (shown[order[j]]) {
          next = order[j];
          break;
        }
      }
    } else if (ev.key === "ArrowRight") {
      if (kids.length && !open[selected]) toggle(selected);
      else if (kids.length) next = kids[0];
    } else if (ev.key === "ArrowLeft") {
      if (kids.length && open[selected]) toggle(selected);
      else if (D.parent[selected] >= 0) next = D.parent[selected];
    } else if (ev.key === "Enter") {
      if (kids.length) toggle(selected);
    } else return;
    ev.preventDefault();
    if (next >= 0) {
      select(next);
      rows[next].scrollIntoView({ block: "nearest" });
    }
  });

  document.getElementById("expand-all").addEventListener("click", function () {
    for (var j = 0; j < n; j++) open[j] = D.kids[j].length ? 1 : 0;
    refresh();
  });
  document.getElementById("collapse-all").addEventListener("click", function () {
    open.fill(0);
    open[0] = 1;
    refresh();
  });
  document.getElementById("show-chosen").addEventListener("click", function () {
    if (D.chosen === null) return;
    open.set(onPath);
    reveal(D.chosen);
  });

  select(D.chosen !== null ? D.chosen : 0);
  // Tests and scripts wait for this marker.
  document.documentElement.dataset.rendered = String(n);
})();
