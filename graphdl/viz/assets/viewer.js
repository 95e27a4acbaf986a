/* graphdl graph viewer: lays out only the expanded level of the graph with dagre and
   draws it as SVG. Groups (spec layers, repeated blocks, fused kernels, scans) expand and
   collapse; clicking a node shows its details; two stages can be compared side by side.
   A scan (a loop over time) is one node, drawn as a stack, that opens to a box holding
   its body, laid out on its own: a caption (direction, steps, its forward/BPTT pair), the
   body's inputs on top named by role (carry, step slice, invariant; gradient carries and
   saved values in a backward scan), its ops, and its outputs at the bottom (next carry,
   per-step output); the scan's edges run to and from those ports.

   The view is drawn to be read without zooming: the forward pass flows top to bottom, a
   training graph's backward pass beside it as its mirror (bottom to top, so a layer's
   gradient sits level with the layer), the optimiser updates in rows below both.
   Parameters, optimiser state, constants and scalar inputs (learning rate, step seed) are
   written inside the nodes that read them, name and shape; "weights as nodes" draws them
   as nodes. The page opens at a zoom where node text is at least 11 px on screen,
   scrolled to the inputs; "fit" shows the whole drawing.

   URL hash commands (also for tests): #expand=<group-fused-or-scan-id>[,...]&collapse=...
   &select=<node-id> (or b:<node-id> for the right-hand panel; sb:<scan-id>:<body-node-id>
   for a node of a scan's body, so:<scan-id>:<output>)&color=phase|group|flops|memory
   &expandall=1&collapseall=1&sources=nodes|inline&view=fit (open as the fit button shows it). After every render <body> gets data-rendered="1" and
   data-render-ms (the first render counts from navigation start). */
(function () {
  "use strict";

  var DOC = JSON.parse(document.getElementById("graphdl-data").textContent);
  var SMALL = 120;      // graphs up to this size open with every group expanded; larger
                        // ones open folded (above 300 nodes mostly folded, see BUDGET)
  var BUDGET = 150;     // units laid out when opening a large graph
  var WORK_BUDGET = 2500;  // ... and units + edges + 2 x edge dummies (see estimate)
  var HARD_LIMIT = 15000;  // views estimated above this are refused
  var PHASE = {
    forward: ["#dce9f7", "#3b6ea8"],
    backward: ["#fbe2cc", "#c0622b"],
    update: ["#dcefd3", "#4a8a3a"]
  };
  var OTHER = ["#eeeeee", "#777777"];
  var SOURCE_OPS = { input: 1, param: 1, state: 1, const: 1 };
  var state = { color: "phase", sel: null, renders: 0, inline: true };
  var LEGIBLE_ZOOM = 1;    // node text is 11 px and more at zoom 1 (see viewer.css)
  var MAX_ZOOM_OPEN = 1.3; // a small graph opens at most this large
  var COL_GAP = 90;        // between the forward and the backward column
  var ROW_GAP = 56;        // above the updates
  var MAX_WEIGHT_LINES = 4;
  var panels = [];
  var measureCtx = document.createElement("canvas").getContext("2d");
  var widthCache = {};

  function textWidth(text, px) {
    var key = px + "|" + text;
    var w = widthCache[key];
    if (w === undefined) {
      measureCtx.font = px + 'px "DejaVu Sans", Helvetica, Arial, sans-serif';
      w = measureCtx.measureText(text).width;
      widthCache[key] = w;
    }
    return w;
  }

  function esc(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }

  function human(n) {
    if (n === null || n === undefined) return "?";
    var units = [["G", 1e9], ["M", 1e6], ["k", 1e3]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(n) >= units[i][1]) return (n / units[i][1]).toPrecision(3).replace(/\.?0+$/, "") + units[i][0];
    }
    return String(n);
  }

  function shorten(s, n) {
    n = n || 44;
    return s.length <= n ? s : s.slice(0, n - 1) + "\u2026";
  }

  function mix(a, b, t) {
    t = Math.max(0, Math.min(1, t));
    var out = "#";
    for (var i = 1; i < 7; i += 2) {
      var x = parseInt(a.substr(i, 2), 16), y = parseInt(b.substr(i, 2), 16);
      var v = Math.round(x + (y - x) * t).toString(16);
      out += v.length < 2 ? "0" + v : v;
    }
    return out;
  }

  function hslHex(h, s, l) {
    var a = s * Math.min(l, 1 - l);
    function f(n) {
      var k = (n + h * 12) % 12;
      var c = l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
      var v = Math.round(c * 255).toString(16);
      return v.length < 2 ? "0" + v : v;
    }
    return "#" + f(0) + f(8) + f(4);
  }

  function groupColor(k) {
    var h = (k * 0.618033988749895) % 1;
    return [hslHex(h, 0.6, 0.84), hslHex(h, 0.6, 0.35)];
  }

  // ------------------------------------------------------------------ one stage's panel

  function Panel(stage, index, compare) {
    var self = this;
    this.stage = stage;
    this.index = index;
    this.byId = {};
    this.groups = {};
    this.children = {};   // group id -> {groups: [], nodes: []}
    this.topGroups = [];
    this.expanded = {};   // group id, "f:<nid>" (fused) or "s:<nid>" (scan) -> true
    this.bodyById = {};   // scan node id -> body node id -> body node
    this.fusedOrder = {};
    this.marks = {};
    this.expIndex = {};   // original id -> node ids of this stage standing for it
    this.consumers = {};  // node id -> ids of the nodes reading it
    stage.groups.forEach(function (g) {
      self.groups[g.id] = g;
      self.children[g.id] = { groups: [], nodes: [] };
    });
    stage.groups.forEach(function (g) {
      if (g.parent) self.children[g.parent].groups.push(g.id);
      else self.topGroups.push(g.id);
    });
    var k = 0;
    stage.nodes.forEach(function (n) {
      self.byId[n.id] = n;
      if (n.group) self.children[n.group].nodes.push(n.id);
      if (n.fused) self.fusedOrder[n.id] = k++;
      if (n.scan) {
        var body = self.bodyById[n.id] = {};
        n.scan.body.nodes.forEach(function (b) { body[b.id] = b; });
      }
      expansion(n).forEach(function (i) {
        (self.expIndex[i] = self.expIndex[i] || []).push(n.id);
      });
      n.inputs.forEach(function (inp) {
        var c = self.consumers[inp[0]] = self.consumers[inp[0]] || [];
        if (c.indexOf(n.id) < 0) c.push(n.id);
      });
    });
    // parameters, state, constants and scalar inputs are written inside their readers
    this.inlinable = {};
    stage.nodes.forEach(function (n) {
      var scalarInput = n.op === "input" && /\[\]$/.test(n.types[0] || "");
      if ((SOURCE_OPS[n.op] && n.op !== "input" || scalarInput) && (self.consumers[n.id] || []).length) {
        self.inlinable[n.id] = true;
      }
    });
    // ancestor chains, outermost first
    this.chainOfGroup = {};
    stage.groups.forEach(function (g) {
      var chain = [], cur = g.id;
      while (cur) { chain.unshift(cur); cur = self.groups[cur].parent; }
      self.chainOfGroup[g.id] = chain;
    });
    if (compare) {
      var list = index === 0 ? compare.removed : compare.added;
      var mark = index === 0 ? "removed" : "added";
      list.forEach(function (i) { self.marks[i] = mark; });
    }
    this.groupCounts = {};  // group id -> {removed: n, added: n}
    stage.nodes.forEach(function (n) {
      if (!self.marks[n.id] || !n.group) return;
      self.chainOfGroup[n.group].forEach(function (g) {
        var c = self.groupCounts[g] = self.groupCounts[g] || { removed: 0, added: 0 };
        c[self.marks[n.id]] += 1;
      });
    });
    this.defaultExpansion();
  }

  Panel.prototype.inlined = function (nid) {
    return state.inline && !!this.inlinable[nid];
  };

  // "name [shape]" of a source written inside the node reading it
  Panel.prototype.sourceLine = function (nid, index) {
    var s = this.byId[nid], t = s.types[index] || "?";
    t = t.indexOf("float32[") === 0 ? t.slice(7) : t;
    var name = s.name || s.op;
    if (s.op === "const" && typeof s.attrs.value === "number") name = "const " + s.attrs.value;
    return name + " " + t;
  };

  // the lines drawn inside a unit: the inlined sources its nodes read
  Panel.prototype.unitWeights = function (key, u) {
    if (!state.inline) return [];
    var self = this, lines = [], seen = {};
    function add(inp) {
      var k = inp[0] + ":" + inp[1];
      if (!self.inlined(inp[0]) || seen[k]) return;
      seen[k] = 1;
      lines.push(self.sourceLine(inp[0], inp[1]));
    }
    if (u.kind === "member") {
      var n = this.byId[u.nid];
      n.fused.members[u.i].inputs.forEach(function (r) { if (r[0] === "input") add(n.inputs[r[1]]); });
    } else if (u.kind === "node") {
      this.byId[u.nid].inputs.forEach(add);
    } else if (u.kind === "group") {
      this.unitNodes(key).forEach(function (nid) { self.byId[nid].inputs.forEach(add); });
    }
    if (lines.length > MAX_WEIGHT_LINES) {
      var more = lines.length - (MAX_WEIGHT_LINES - 1);
      lines = lines.slice(0, MAX_WEIGHT_LINES - 1).concat(["+ " + more + " more"]);
    }
    return lines;
  };

  function expansion(n) {
    var ids = [n.id];
    if (n.fused) n.fused.members.forEach(function (m) {
      if (m.orig_id !== null && m.orig_id !== undefined && ids.indexOf(m.orig_id) < 0) ids.push(m.orig_id);
    });
    return ids;
  }

  Panel.prototype.defaultExpansion = function () {
    var self = this;
    this.expanded = {};
    if (this.stage.nodes.length <= SMALL) {
      this.stage.groups.forEach(function (g) { self.expanded[g.id] = true; });
      this.cost = this.estimate();
      if (this.cost.work <= HARD_LIMIT) return;
      this.expanded = {};
    }
    // A large graph opens collapsed, then its outer groups open breadth first while the
    // layout stays cheap: few units, and few layer crossings by long edges (a training
    // graph's forward-to-backward edges make dagre slow long before the node count does).
    // optimiser updates (a state and an update op per parameter) stay folded
    var queue = this.topGroups.filter(function (g) { return self.groups[g].phase !== "update"; });
    this.cost = this.estimate();
    while (queue.length) {
      var g = queue.shift();
      this.expanded[g] = true;
      var c = this.estimate();
      if (c.units > BUDGET || c.work > WORK_BUDGET) {
        delete this.expanded[g];
        continue;
      }
      this.cost = c;
      queue = queue.concat(this.children[g].groups);
    }
  };

  // units and layout work (units plus edge dummies over longest-path layers) of the view
  Panel.prototype.estimate = function () {
    var self = this, unitOf = {}, index = {}, keys = [];
    this.stage.nodes.forEach(function (n) {
      if (self.inlined(n.id)) return;
      var k = self.rep(n.id);
      unitOf[n.id] = k;
      if (index[k] === undefined) { index[k] = keys.length; keys.push(k); }
    });
    var m = keys.length, succ = [], indeg = [], seen = {}, edges = [];
    for (var i = 0; i < m; i++) { succ.push([]); indeg.push(0); }
    this.stage.nodes.forEach(function (n) {
      if (unitOf[n.id] === undefined) return;
      var b = index[unitOf[n.id]];
      n.inputs.forEach(function (inp) {
        var ku = unitOf[inp[0]];
        if (ku === undefined) return;
        var a = index[ku];
        if (a === b || seen[a * m + b]) return;
        seen[a * m + b] = 1;
        succ[a].push(b); indeg[b] += 1; edges.push([a, b]);
      });
    });
    var rank = [], queue = [], hasPred = [];
    for (i = 0; i < m; i++) { rank.push(0); hasPred.push(indeg[i] > 0); if (!indeg[i]) queue.push(i); }
    var order = [];
    while (queue.length) {
      var v = queue.pop();
      order.push(v);
      succ[v].forEach(function (w) {
        rank[w] = Math.max(rank[w], rank[v] + 1);
        if (--indeg[w] === 0) queue.push(w);
      });
    }
    // sources sit just above their first consumer, as a ranker would put them
    order.forEach(function (v) {
      if (!hasPred[v] && succ[v].length) {
        var lo = Infinity;
        succ[v].forEach(function (w) { lo = Math.min(lo, rank[w]); });
        rank[v] = lo - 1;
      }
    });
    var dummies = 0;
    edges.forEach(function (e) { dummies += Math.max(0, Math.abs(rank[e[1]] - rank[e[0]]) - 1); });
    // an open scan adds its body (nodes, output ports) and the body's edges, laid out apart
    var extraUnits = 0, extraEdges = 0;
    this.stage.nodes.forEach(function (n) {
      if (!self.scanOpen(n.id)) return;
      extraUnits += n.scan.body.nodes.length + n.scan.outputs.length;
      n.scan.body.nodes.forEach(function (b) { extraEdges += b.inputs.length + (b.inputs.length ? 0 : 1); });
      extraEdges += n.scan.outputs.length;
    });
    m += extraUnits;
    return { units: m, edges: edges.length + extraEdges, dummies: dummies, work: m + edges.length + extraEdges + 2 * dummies };
  };

  Panel.prototype.chainOf = function (nid) {
    var n = this.byId[nid];
    return n.group ? this.chainOfGroup[n.group] : [];
  };

  // the visible unit standing for a node: its outermost collapsed group, or itself
  Panel.prototype.rep = function (nid) {
    var chain = this.chainOf(nid);
    for (var i = 0; i < chain.length; i++) {
      if (!this.expanded[chain[i]]) return "g:" + chain[i];
    }
    return "n:" + nid;
  };

  Panel.prototype.fusedOpen = function (nid) {
    var n = this.byId[nid];
    return !!(n && n.fused && this.expanded["f:" + nid] && this.rep(nid) === "n:" + nid);
  };

  Panel.prototype.scanOpen = function (nid) {
    var n = this.byId[nid];
    return !!(n && n.scan && this.expanded["s:" + nid] && this.rep(nid) === "n:" + nid);
  };

  Panel.prototype.reveal = function (nid) {
    var self = this;
    this.chainOf(nid).forEach(function (g) { self.expanded[g] = true; });
  };

  Panel.prototype.expandId = function (id, open) {
    id = String(id);
    if (id.indexOf("g:") === 0) id = id.slice(2);
    if (id.indexOf("f:") === 0 || id.indexOf("s:") === 0) id = id.slice(2);
    if (this.groups[id]) {
      if (open) {
        var self = this;
        this.chainOfGroup[id].forEach(function (g) { self.expanded[g] = true; });
      } else {
        delete this.expanded[id];
      }
      return true;
    }
    var n = this.byId[id];
    if (n && (n.fused || n.scan)) {
      var key = (n.fused ? "f:" : "s:") + n.id;
      if (open) { this.reveal(n.id); this.expanded[key] = true; }
      else delete this.expanded[key];
      return true;
    }
    return false;
  };

  Panel.prototype.unitNodes = function (key) {
    // node ids under a unit key
    if (key.indexOf("n:") === 0) return [Number(key.slice(2))];
    if (key.indexOf("m:") === 0) return [Number(key.split(":")[1])];
    if (key.indexOf("sb:") === 0 || key.indexOf("so:") === 0) return [];
    if (key.indexOf("s:") === 0) return [Number(key.slice(2))];
    var gid = key.slice(2), out = [], self = this;
    (function walk(g) {
      self.children[g].nodes.forEach(function (n) { out.push(n); });
      self.children[g].groups.forEach(walk);
    })(gid);
    return out;
  };

  // ------------------------------------------------------------------ colours

  Panel.prototype.metric = function (n, mode) {
    if (mode === "flops") return n.flops;
    if (n.mem) return n.mem.bytes;
    if (SOURCE_OPS[n.op]) return 0;
    var s = 0;
    n.bytes.forEach(function (b) { s += b || 0; });
    return s;
  };

  Panel.prototype.colorOf = function (ids, top) {
    var mode = state.color, self = this;
    if (mode === "phase") {
      var phase = null;
      for (var i = 0; i < ids.length; i++) {
        var p = this.byId[ids[i]].phase;
        if (phase === null) phase = p; else if (phase !== p) return OTHER;
      }
      return PHASE[phase] || OTHER;
    }
    if (mode === "group") {
      if (ids.length === 1 && this.byId[ids[0]].fused) return groupColor(this.fusedOrder[ids[0]]);
      return ["#f4f4f4", "#999999"];
    }
    var v = 0, known = false;
    ids.forEach(function (i) {
      var x = self.metric(self.byId[i], mode);
      if (x !== null && x !== undefined) { v += x; known = true; }
    });
    if (!known) return ["#ffffff", "#bbbbbb"];
    var t = top > 0 ? Math.log1p(v) / Math.log1p(top) : 0;
    if (mode === "flops") return [mix("#fff8e1", "#e4572e", t), mix("#c9a227", "#8c1c13", t)];
    return [mix("#f1f0fb", "#6a51a3", t), mix("#9e9ac8", "#3f007d", t)];
  };

  // ------------------------------------------------------------------ layout

  Panel.prototype.build = function () {
    var self = this, stage = this.stage;
    var units = {}, order = [], clusters = {};
    var edges = {}, edgeList = [];
    this.bodies = {};

    function addUnit(key, u) {
      if (!units[key]) { units[key] = u; order.push(key); }
    }
    // Expanded layer groups are not dagre clusters: a compound layout keeps every
    // cluster contiguous, which stretches a training graph (a layer's forward and backward
    // ops sit far apart) into long tangled edges. Groups open and close from the tree in
    // the side bar and from a collapsed group's + box; fused kernels are clusters. An open
    // scan is one big unit, a box holding its body laid out on its own (see layout), so
    // the body stays compact however far apart the scan's neighbours are.
    stage.nodes.forEach(function (n) {
      if (self.inlined(n.id)) return;
      var key = self.rep(n.id);
      if (key.indexOf("g:") === 0) {
        addUnit(key, { kind: "group", gid: key.slice(2), parent: null });
        return;
      }
      if (self.scanOpen(n.id)) {
        addUnit("s:" + n.id, { kind: "scanbox", nid: n.id, parent: null });
        self.bodies[n.id] = self.buildBody(n);
        return;
      }
      if (self.fusedOpen(n.id)) {
        clusters["f:" + n.id] = { kind: "fused", nid: n.id, parent: null };
        n.fused.members.forEach(function (m, i) {
          addUnit("m:" + n.id + ":" + i, { kind: "member", nid: n.id, i: i, parent: "f:" + n.id });
        });
      } else {
        addUnit(key, { kind: "node", nid: n.id, parent: null });
      }
    });

    // an edge into (out of) an open scan ends (starts) at the port of its slot (output):
    // such edges stay one per value, the others merge per pair of units
    function addEdge(src, dst, text, bytes, srcPort, dstPort) {
      if (src === dst) return;
      var k = src + "|" + dst + "|" + (srcPort || "") + "|" + (dstPort || ""), e = edges[k];
      if (!e) {
        e = edges[k] = { src: src, dst: dst, text: text, bytes: bytes || 0, count: 1, name: k,
                         srcPort: srcPort || null, dstPort: dstPort || null };
        edgeList.push(e);
        return;
      }
      e.count += 1;
      e.bytes += bytes || 0;
    }
    function outUnit(nid) {
      if (self.fusedOpen(nid)) return "m:" + nid + ":" + (self.byId[nid].fused.members.length - 1);
      if (self.scanOpen(nid)) return "s:" + nid;
      return self.rep(nid);
    }
    stage.nodes.forEach(function (n) {
      if (self.inlined(n.id)) return;
      var open = self.fusedOpen(n.id), scanOpen = self.scanOpen(n.id);
      n.inputs.forEach(function (inp, slot) {
        var src = self.byId[inp[0]];
        if (!src || self.inlined(inp[0])) return;
        var text = src.types[inp[1]] || "?";
        var bytes = src.bytes[inp[1]];
        var from = outUnit(inp[0]);
        var srcPort = self.scanOpen(inp[0]) ? "so:" + inp[0] + ":" + inp[1] : null;
        if (scanOpen) {
          var port = n.scan.inputs[slot];
          addEdge(from, "s:" + n.id, text, bytes, srcPort, port && port.body !== null ? "sb:" + n.id + ":" + port.body : null);
        } else if (open) {
          n.fused.members.forEach(function (m, i) {
            m.inputs.forEach(function (r) {
              if (r[0] === "input" && r[1] === slot) addEdge(from, "m:" + n.id + ":" + i, text, bytes, srcPort, null);
            });
          });
        } else {
          addEdge(from, self.rep(n.id), text, bytes, srcPort, null);
        }
      });
      if (open) {
        n.fused.members.forEach(function (m, i) {
          m.inputs.forEach(function (r) {
            if (r[0] === "member") {
              var src = n.fused.members[r[1]];
              addEdge("m:" + n.id + ":" + r[1], "m:" + n.id + ":" + i, src.type || "?", src.bytes);
            }
          });
        });
      }
    });
    this.units = units;
    this.order = order;
    this.clusters = clusters;
    this.edges = edgeList;
  };

  // the units and edges of an open scan's body: its nodes (the inputs named by role) and
  // one port per scan output
  Panel.prototype.buildBody = function (n) {
    var body = this.bodyById[n.id], pre = "sb:" + n.id + ":";
    var units = {}, order = [], edges = {}, list = [];
    function addEdge(src, dst, text, bytes) {
      var k = src + "|" + dst, e = edges[k];
      if (!e) { e = edges[k] = { src: src, dst: dst, text: text, bytes: bytes || 0, count: 1 }; list.push(e); return; }
      e.count += 1;
      e.bytes += bytes || 0;
    }
    n.scan.body.nodes.forEach(function (b) {
      units[pre + b.id] = { kind: "body", nid: n.id, bid: b.id };
      order.push(pre + b.id);
    });
    n.scan.outputs.forEach(function (o) {
      units["so:" + n.id + ":" + o.index] = { kind: "bout", nid: n.id, i: o.index };
      order.push("so:" + n.id + ":" + o.index);
    });
    n.scan.body.nodes.forEach(function (b) {
      b.inputs.forEach(function (inp) {
        var bs = body[inp[0]];
        if (bs) addEdge(pre + inp[0], pre + b.id, bs.types[inp[1]] || "?", bs.bytes[inp[1]]);
      });
    });
    n.scan.outputs.forEach(function (o) {
      var bs = body[o.value[0]];
      addEdge(pre + o.value[0], "so:" + n.id + ":" + o.index, bs ? bs.types[o.value[1]] || "?" : "?", bs ? bs.bytes[o.value[1]] : 0);
    });
    return { units: units, order: order, edges: list };
  };

  Panel.prototype.unitLabel = function (key, u) {
    if (u.kind === "group") {
      var g = this.groups[u.gid];
      var sub = g.size + " ops" + (g.line ? " \u00b7 line " + g.line : "");
      return ["\u25b8 " + g.label, sub];
    }
    if (u.kind === "member") {
      var m = this.byId[u.nid].fused.members[u.i];
      return [m.op, m.orig_id !== null && m.orig_id !== undefined ? "was %" + m.orig_id : ""];
    }
    if (u.kind === "scanbox") {
      var sn = this.byId[u.nid], sc = sn.scan;
      var order = sc.direction === "forward" ? "t = 0 \u2192 " + sc.steps + "\u22121" : "t = " + sc.steps + "\u22121 \u2192 0";
      var pair = sc.pair !== null && sc.pair !== undefined ? (sc.bptt ? " \u00b7 the gradient of %" : " \u00b7 its gradient: %") + sc.pair : "";
      return ["\u25be %" + sn.id + " " + (sc.bptt ? "backward (BPTT) scan" : "scan") + " \u00b7 " + sc.direction + ", " + order,
        "the body below runs " + sc.steps + " times" + pair + (sn.sub ? " \u00b7 " + sn.sub : "")];
    }
    if (u.kind === "body") {
      var b = this.bodyById[u.nid][u.bid];
      return [shorten(b.title), b.sub ? shorten(b.sub, 52) : ""];
    }
    if (u.kind === "bout") {
      var o = this.byId[u.nid].scan.outputs[u.i];
      return ["\u2192 " + o.role, o.detail];
    }
    var n = this.byId[u.nid];
    return [shorten(n.title), n.sub];
  };

  var BOX_HEAD = 44, BOX_PAD = 12;

  // a unit's box: its title (13 px), subtitle (11 px) and inlined sources (11 px each)
  var HEAD1 = 26, LINE = 14;
  Panel.prototype.unitSize = function (key, u) {
    var lab = this.unitLabel(key, u);
    u.label = lab;
    u.weights = this.unitWeights(key, u);
    var w = Math.max(textWidth(lab[0], 13), lab[1] ? textWidth(lab[1], 11) : 0);
    u.weights.forEach(function (t) { w = Math.max(w, textWidth(t, 11) + 8); });
    w += 24;
    if (this.hasToggle(u)) w += 16;
    if (u.kind === "node" && this.byId[u.nid].scan) w += 6;  // the stack drawn behind it
    u.head = HEAD1 + (lab[1] ? LINE : 0);
    return { width: Math.max(w, 50), height: u.head + (u.weights.length ? u.weights.length * LINE + 6 : 0) };
  };

  // an open scan's body on its own: its inputs on the top row, its output ports on the
  // bottom row (two invisible nodes pull them there), coordinates from (0, 0)
  Panel.prototype.layoutBody = function (nid) {
    var self = this, b = this.bodies[nid];
    var g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "TB", nodesep: 14, ranksep: 24, edgesep: 8, marginx: 0, marginy: 0 });
    g.setDefaultEdgeLabel(function () { return {}; });
    g.setNode("__top", { width: 1, height: 1 });
    g.setNode("__bottom", { width: 1, height: 1 });
    b.order.forEach(function (key) {
      var u = b.units[key];
      g.setNode(key, self.unitSize(key, u));
      if (u.kind === "bout") g.setEdge(key, "__bottom", { weight: 20 });
      else if (!self.bodyById[nid][u.bid].inputs.length) g.setEdge("__top", key, { weight: 20 });
    });
    b.edges.forEach(function (e) {
      e.label = e.count > 1 ? e.count + " values" : e.text;
      g.setEdge(e.src, e.dst, { width: textWidth(e.label, 10) + 6, height: 13, labelpos: "c" });
    });
    dagre.layout(g);
    var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    function grow(x, y, w, h) {
      x0 = Math.min(x0, x - w / 2); x1 = Math.max(x1, x + w / 2);
      y0 = Math.min(y0, y - h / 2); y1 = Math.max(y1, y + h / 2);
    }
    b.order.forEach(function (key) { var nd = g.node(key); grow(nd.x, nd.y, nd.width, nd.height); });
    b.edges.forEach(function (e) {
      var ed = g.edge(e.src, e.dst);
      (ed.points || []).forEach(function (p) { grow(p.x, p.y, 0, 0); });
      if (ed.x !== undefined && ed.width) grow(ed.x, ed.y, ed.width, 12);
    });
    if (x0 === Infinity) { x0 = y0 = 0; x1 = y1 = 40; }
    b.g = g;
    b.ox = -x0;  // body coordinates + (ox, oy) = coordinates inside the box's content
    b.oy = -y0;
    b.width = x1 - x0;
    b.height = y1 - y0;
  };

  // the column a unit is drawn in: 0 the forward pass (top to bottom), 1 the backward
  // pass (bottom to top, beside it), 2 the optimiser updates (rows below both)
  var COLUMN = { backward: 1, update: 2 };
  Panel.prototype.columnOf = function (u) {
    var phase = u.kind === "group" ? this.groups[u.gid].phase : this.byId[u.nid].phase;
    return COLUMN[phase] || 0;
  };

  // one column laid out by dagre: its units, its open fused kernels (clusters) and the
  // edges between its units
  Panel.prototype.layoutColumn = function (keys, rankdir) {
    var self = this, inside = {};
    var g = new dagre.graphlib.Graph({ compound: true, multigraph: true });
    g.setGraph({ rankdir: rankdir, nodesep: 22, ranksep: 30, edgesep: 10, marginx: 0, marginy: 0 });
    g.setDefaultEdgeLabel(function () { return {}; });
    keys.forEach(function (key) {
      inside[key] = true;
      var u = self.units[key];
      if (u.kind === "scanbox") {
        self.layoutBody(u.nid);
        var b = self.bodies[u.nid], lab = self.unitLabel(key, u);
        u.label = lab;
        u.weights = [];
        var head = Math.max(textWidth(lab[0], 13), textWidth(lab[1], 11)) + 48;
        var w = Math.max(b.width + 2 * BOX_PAD, head);
        b.left = (w - b.width) / 2;  // the body's offset inside the box
        b.top = BOX_HEAD;
        g.setNode(key, { width: w, height: BOX_HEAD + b.height + BOX_PAD });
        return;
      }
      g.setNode(key, self.unitSize(key, u));
    });
    keys.forEach(function (key) {
      var p = self.units[key].parent;
      if (!p) return;
      if (!g.hasNode(p)) g.setNode(p, {});
      g.setParent(key, p);
    });
    var labels = this.edges.length <= 1500;
    this.edges.forEach(function (e) {
      if (!inside[e.src] || !inside[e.dst]) return;
      var lab = labels ? { width: textWidth(e.label, 10) + 6, height: 13, labelpos: "c" } : {};
      g.setEdge(e.src, e.dst, lab, e.name);
    });
    dagre.layout(g);
    var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    g.nodes().forEach(function (key) {
      var nd = g.node(key);
      if (nd.width === undefined) return;
      x0 = Math.min(x0, nd.x - nd.width / 2); x1 = Math.max(x1, nd.x + nd.width / 2);
      y0 = Math.min(y0, nd.y - nd.height / 2); y1 = Math.max(y1, nd.y + nd.height / 2);
    });
    g.edges().forEach(function (ed) {
      (g.edge(ed).points || []).forEach(function (q) {
        x0 = Math.min(x0, q.x); x1 = Math.max(x1, q.x); y0 = Math.min(y0, q.y); y1 = Math.max(y1, q.y);
      });
    });
    if (x0 === Infinity) { x0 = y0 = 0; x1 = y1 = 0; }
    return { g: g, keys: keys, x0: x0, y0: y0, width: x1 - x0, height: y1 - y0 };
  };

  // the optimiser updates: one row per step of their own dependencies (the step count
  // before the updates that read it), each row ordered like the gradients above it and
  // wrapped at ``maxWidth``
  Panel.prototype.layoutRows = function (keys, maxWidth, xOf) {
    var self = this, inside = {}, rank = {}, preds = {};
    keys.forEach(function (key) { inside[key] = true; rank[key] = 0; preds[key] = []; });
    this.edges.forEach(function (e) {
      if (inside[e.dst]) preds[e.dst].push(e.src);
    });
    for (var pass = 0; pass < keys.length; pass++) {
      var moved = false;
      keys.forEach(function (key) {
        preds[key].forEach(function (p) {
          if (inside[p] && rank[p] + 1 > rank[key] && rank[p] + 1 <= keys.length) { rank[key] = rank[p] + 1; moved = true; }
        });
      });
      if (!moved) break;
    }
    function anchor(key) {
      var xs = preds[key].map(xOf).filter(function (x) { return x !== null; });
      if (!xs.length) return Infinity;
      return xs.reduce(function (a, b) { return a + b; }, 0) / xs.length;
    }
    var byRank = {};
    keys.forEach(function (key) { (byRank[rank[key]] = byRank[rank[key]] || []).push(key); });
    var pos = {}, y = 0, width = 0, gap = 22;
    Object.keys(byRank).map(Number).sort(function (a, b) { return a - b; }).forEach(function (r) {
      var list = byRank[r].slice().sort(function (a, b) { return anchor(a) - anchor(b); });
      var rows = [[]], w = 0;
      list.forEach(function (key) {
        var size = self.unitSize(key, self.units[key]);
        var row = rows[rows.length - 1];
        if (row.length && w + gap + size.width > maxWidth) { rows.push([]); row = rows[rows.length - 1]; w = 0; }
        w += (row.length ? gap : 0) + size.width;
        row.push({ key: key, size: size });
      });
      rows.forEach(function (row) {
        var h = 0, x = 0;
        row.forEach(function (c) { h = Math.max(h, c.size.height); });
        row.forEach(function (c) {
          pos[c.key] = { x: x + c.size.width / 2, y: y + h / 2, width: c.size.width, height: c.size.height };
          x += c.size.width + gap;
        });
        row.width = x - gap;
        width = Math.max(width, row.width);
        row.forEach(function (c) { pos[c.key].rowWidth = row.width; });
        y += h + 34;
      });
    });
    // each row centred under the widest
    keys.forEach(function (key) { pos[key].x += (width - pos[key].rowWidth) / 2; });
    return { pos: pos, width: width, height: Math.max(0, y - 34) };
  };

  // the mean y of each spec layer's units in a column, for matching forward and backward
  function layerLevels(panel, part) {
    var sums = {};
    part.keys.forEach(function (key) {
      var u = panel.units[key], nd = part.g.node(key);
      var layer = u.kind === "group" ? panel.groups[u.gid].path : panel.byId[u.nid].layer;
      if (!layer) return;
      var s = sums[layer] = sums[layer] || [0, 0];
      s[0] += nd.y; s[1] += 1;
    });
    var out = {};
    Object.keys(sums).forEach(function (k) { out[k] = sums[k][0] / sums[k][1]; });
    return out;
  }

  Panel.prototype.layout = function () {
    var self = this, cols = [[], [], []];
    this.edges.forEach(function (e) { e.label = e.count > 1 ? e.count + " values" : e.text; });
    this.order.forEach(function (key) { cols[self.columnOf(self.units[key])].push(key); });
    // with no forward pass drawn (a lone backward graph), the backward column leads
    var parts = [null, null];
    if (cols[0].length) parts[0] = this.layoutColumn(cols[0], "TB");
    // the backward pass flows up, beside the forward pass; an open scan keeps top to
    // bottom (its body's inputs are on top)
    var openScan = cols[1].some(function (key) { return self.units[key].kind === "scanbox"; });
    if (cols[1].length) parts[1] = this.layoutColumn(cols[1], openScan || !parts[0] ? "TB" : "BT");
    var G = new dagre.graphlib.Graph({ compound: true, multigraph: true });
    G.setDefaultEdgeLabel(function () { return {}; });
    var M = 16, offsets = [null, null];
    var fx = M, fw = parts[0] ? parts[0].width : 0;
    if (parts[0]) offsets[0] = { x: fx - parts[0].x0, y: M - parts[0].y0 };
    if (parts[1]) {
      var bx = parts[0] ? fx + fw + COL_GAP : M, dy = null;
      if (parts[0]) {
        // level the backward column with the forward one: the mean offset between a
        // layer's forward units and its gradient's; else bottoms aligned
        var lf = layerLevels(this, parts[0]), lb = layerLevels(this, parts[1]), diffs = [];
        Object.keys(lb).forEach(function (k) { if (lf[k] !== undefined) diffs.push(lf[k] - lb[k]); });
        if (diffs.length) {
          dy = diffs.reduce(function (a, b) { return a + b; }, 0) / diffs.length + offsets[0].y;
        } else {
          dy = offsets[0].y + parts[0].y0 + parts[0].height - (parts[1].y0 + parts[1].height);
        }
      } else {
        dy = M - parts[1].y0;
      }
      offsets[1] = { x: bx - parts[1].x0, y: dy };
      // neither column above the top margin
      var top1 = parts[1].y0 + dy;
      if (top1 < M) {
        var shift = M - top1;
        offsets[1].y += shift;
        if (offsets[0]) offsets[0].y += shift;
      }
    }
    var bottom = M, right = M;
    parts.forEach(function (part, c) {
      if (!part) return;
      var o = offsets[c];
      part.g.nodes().forEach(function (key) {
        var nd = part.g.node(key);
        if (nd.width === undefined) return;
        G.setNode(key, { x: nd.x + o.x, y: nd.y + o.y, width: nd.width, height: nd.height, column: c });
        bottom = Math.max(bottom, nd.y + o.y + nd.height / 2);
        right = Math.max(right, nd.x + o.x + nd.width / 2);
      });
    });
    if (cols[2].length) {
      var xOf = function (key) { return G.hasNode(key) ? G.node(key).x : null; };
      // rows as wide as the columns above (at least 700 px), never wider than the window
      var window_ = this.canvas ? this.canvas.getBoundingClientRect().width - 2 * M - 8 : Infinity;
      var rows = this.layoutRows(cols[2], Math.max(300, Math.min(Math.max(right - M, 700), window_)), xOf);
      var ux = M + Math.max(0, (right - M - rows.width) / 2), uy = bottom + ROW_GAP;
      cols[2].forEach(function (key) {
        var q = rows.pos[key];
        G.setNode(key, { x: q.x + ux, y: q.y + uy, width: q.width, height: q.height, column: 2 });
        right = Math.max(right, q.x + ux + q.width / 2);
      });
      bottom = uy + rows.height;
    }
    // edges: inside a column as dagre routed them; between columns a curve from side to
    // side (forward to backward) or from bottom to top (to the updates)
    this.edges.forEach(function (e) {
      if (!G.hasNode(e.src) || !G.hasNode(e.dst)) return;
      var a = G.node(e.src), b = G.node(e.dst), c = a.column;
      if (c === b.column && c < 2 && parts[c] && parts[c].g.hasEdge(e.src, e.dst, e.name)) {
        var ed = parts[c].g.edge(e.src, e.dst, e.name), o = offsets[c];
        var lab = { points: (ed.points || []).map(function (q) { return { x: q.x + o.x, y: q.y + o.y }; }) };
        if (ed.x !== undefined) { lab.x = ed.x + o.x; lab.y = ed.y + o.y; lab.width = ed.width; }
        G.setEdge(e.src, e.dst, lab, e.name);
        return;
      }
      var pts;
      if (b.y - b.height / 2 > a.y + a.height / 2 + 8) {
        pts = [{ x: a.x, y: a.y + a.height / 2 }, { x: b.x, y: b.y - b.height / 2 }];
        G.setEdge(e.src, e.dst, { points: pts, curve: "v", cross: true }, e.name);
      } else {
        var right2 = b.x > a.x;
        pts = [{ x: a.x + (right2 ? 1 : -1) * a.width / 2, y: a.y }, { x: b.x + (right2 ? -1 : 1) * b.width / 2, y: b.y }];
        G.setEdge(e.src, e.dst, { points: pts, curve: "h", cross: true }, e.name);
      }
    });
    G.setGraph({ width: right + M, height: bottom + M });
    this.g = G;
  };

  // where a unit is drawn: {x, y (centre), width, height} in the panel's coordinates,
  // for a unit of an open scan's body too
  Panel.prototype.posOf = function (key) {
    if (!this.g) return null;
    if (this.g.hasNode(key)) return this.g.node(key);
    if (key.indexOf("sb:") === 0 || key.indexOf("so:") === 0) {
      var nid = Number(key.split(":")[1]), b = this.bodies[nid];
      if (!b || !b.g || !b.g.hasNode(key) || !this.g.hasNode("s:" + nid)) return null;
      var box = this.g.node("s:" + nid), nd = b.g.node(key);
      return { x: box.x - box.width / 2 + b.left + b.ox + nd.x, y: box.y - box.height / 2 + b.top + b.oy + nd.y,
               width: nd.width, height: nd.height };
    }
    return null;
  };

  // units with a +/- box: a closed group, a fused node, a scan node, an open scan
  Panel.prototype.hasToggle = function (u) {
    if (u.kind === "group" || u.kind === "scanbox") return true;
    return u.kind === "node" && !!(this.byId[u.nid].fused || this.byId[u.nid].scan);
  };

  // the colour of a unit inside an open scan: its body node's, or the scan's
  Panel.prototype.bodyColor = function (u) {
    var sn = this.byId[u.nid], mode = state.color;
    if (u.kind !== "body") {
      var pc = PHASE[sn.phase] || OTHER;
      return u.kind === "bout" ? ["#ffffff", pc[1]] : pc;
    }
    var b = this.bodyById[u.nid][u.bid];
    if (mode === "phase") return PHASE[b.phase] || OTHER;
    if (mode === "group") return b.fused ? groupColor(u.bid) : ["#f4f4f4", "#999999"];
    var self = this, top = 0;
    sn.scan.body.nodes.forEach(function (x) { top = Math.max(top, self.metric(x, mode) || 0); });
    var v = this.metric(b, mode);
    if (v === null || v === undefined) return ["#ffffff", "#bbbbbb"];
    var t = top > 0 ? Math.log1p(v) / Math.log1p(top) : 0;
    if (mode === "flops") return [mix("#fff8e1", "#e4572e", t), mix("#c9a227", "#8c1c13", t)];
    return [mix("#f1f0fb", "#6a51a3", t), mix("#9e9ac8", "#3f007d", t)];
  };

  // ------------------------------------------------------------------ drawing

  function pathOf(points) {
    var d = "M" + points[0].x.toFixed(1) + "," + points[0].y.toFixed(1);
    if (points.length === 2) return d + " L" + points[1].x.toFixed(1) + "," + points[1].y.toFixed(1);
    for (var i = 1; i < points.length - 1; i++) {
      var p = points[i], q = points[i + 1];
      var mx = (p.x + q.x) / 2, my = (p.y + q.y) / 2;
      d += " Q" + p.x.toFixed(1) + "," + p.y.toFixed(1) + " " + (i === points.length - 2 ? q.x : mx).toFixed(1) + "," + (i === points.length - 2 ? q.y : my).toFixed(1);
    }
    return d;
  }

  function edgeWidth(bytes, maxBytes) {
    // at most 2.5 px: a thick edge hides the labels and nodes it passes
    return bytes > 1 ? 0.8 + 1.7 * Math.log1p(bytes) / Math.log1p(maxBytes) : 0.8;
  }

  // a curve between two columns: leaving and entering level ("h") or upright ("v")
  function curvePath(points, curve) {
    var a = points[0], b = points[points.length - 1], c1, c2;
    if (curve === "h") {
      var dx = (b.x - a.x) / 2;
      c1 = { x: a.x + dx, y: a.y }; c2 = { x: b.x - dx, y: b.y };
    } else {
      var dy = Math.max(30, (b.y - a.y) / 2);
      c1 = { x: a.x, y: a.y + dy }; c2 = { x: b.x, y: b.y - dy };
    }
    return "M" + a.x.toFixed(1) + "," + a.y.toFixed(1) + " C" + c1.x.toFixed(1) + "," + c1.y.toFixed(1) + " " +
      c2.x.toFixed(1) + "," + c2.y.toFixed(1) + " " + b.x.toFixed(1) + "," + b.y.toFixed(1);
  }

  function edgeSvg(points, w, k, label, bytes, arrow, index, curve) {
    return '<path class="edge' + (curve ? " cross" : "") + '" data-edge="' + k + '" d="' + (curve ? curvePath(points, curve) : pathOf(points)) + '" stroke-width="' + w.toFixed(2) + '"' +
      (arrow ? ' marker-end="url(#arrow' + index + ')"' : "") + '><title>' + esc(label + (bytes ? ", " + human(bytes) + "B" : "")) + '</title></path>';
  }

  function elabelSvg(ed, label) {
    return '<rect class="elabel" x="' + (ed.x - ed.width / 2).toFixed(1) + '" y="' + (ed.y - 6.5).toFixed(1) + '" width="' + ed.width.toFixed(1) + '" height="13"/>' +
      '<text class="elabel" x="' + ed.x.toFixed(1) + '" y="' + (ed.y + 3.5).toFixed(1) + '" text-anchor="middle">' + esc(label) + '</text>';
  }

  // one unit's markup (nd: its box from the layout)
  Panel.prototype.unitSvg = function (key, u, nd, ids, top) {
    var self = this;
    var x = nd.x - nd.width / 2, y = nd.y - nd.height / 2;
    var col;
    if (u.kind === "member") {
      col = state.color === "phase" ? ["#ffffff", PHASE[self.byId[u.nid].phase] ? PHASE[self.byId[u.nid].phase][1] : "#777"] : ["#ffffff", self.colorOf([u.nid], top)[1]];
    } else if (u.kind === "body" || u.kind === "bout") {
      col = self.bodyColor(u);
    } else if (u.kind === "scanbox") {
      col = PHASE[self.byId[u.nid].phase] || OTHER;
    } else {
      col = self.colorOf(ids, top);
    }
    var cls = "unit " + u.kind;
    var attrs = ' data-key="' + esc(key) + '"';
    if (u.kind === "node" || u.kind === "scanbox") {
      var n = self.byId[u.nid];
      attrs += ' data-id="' + n.id + '" data-op="' + esc(n.op) + '"' + (n.layer ? ' data-layer="' + esc(n.layer) + '"' : "");
      if (self.marks[n.id]) cls += " " + self.marks[n.id];
      if (n.fused) cls += " fused";
      if (n.scan) {
        cls += u.kind === "node" ? " scan" : "";
        attrs += ' data-direction="' + n.scan.direction + '"' + (n.scan.bptt ? ' data-bptt="1"' : "") + ' data-steps="' + esc(n.scan.steps) + '"';
      }
    } else if (u.kind === "body") {
      var bn = self.bodyById[u.nid][u.bid];
      attrs += ' data-scan="' + u.nid + '" data-body-id="' + u.bid + '" data-op="' + esc(bn.op) + '"' +
        (bn.scan_input ? ' data-role="' + esc(bn.title) + '" data-slot="' + bn.scan_input.slot + '"' : "");
      if (bn.scan_input) cls += " port";
      if (bn.fused) cls += " fused";
    } else if (u.kind === "bout") {
      var bo = self.byId[u.nid].scan.outputs[u.i];
      attrs += ' data-scan="' + u.nid + '" data-out="' + u.i + '" data-role="' + esc(bo.role) + '"';
    } else if (u.kind === "member") {
      var m = self.byId[u.nid].fused.members[u.i];
      attrs += ' data-member-of="' + u.nid + '" data-op="' + esc(m.op) + '" data-orig="' + (m.orig_id === null || m.orig_id === undefined ? "" : m.orig_id) + '"';
    } else {
      attrs += ' data-group="' + esc(u.gid) + '"';
    }
    var rx = (u.kind === "node" && SOURCE_OPS[self.byId[u.nid].op]) || (u.kind === "body" && SOURCE_OPS[self.bodyById[u.nid][u.bid].op]) || u.kind === "bout" ? 12 : u.kind === "scanbox" ? 8 : 4;
    var s = '<g class="' + cls + '"' + attrs + '>';
    var bw = nd.width;
    if (u.kind === "node" && self.byId[u.nid].scan) {
      // a scan is drawn as a stack of steps: two cards peek out behind it
      bw -= 6;
      for (var sk = 2; sk >= 1; sk--) {
        s += '<rect class="stack" x="' + (x + 3 * sk).toFixed(1) + '" y="' + (y - 3 * sk).toFixed(1) + '" width="' + bw.toFixed(1) + '" height="' + nd.height.toFixed(1) + '" rx="4" fill="' + col[0] + '" stroke="' + col[1] + '"/>';
      }
    }
    s += '<rect class="box" x="' + x.toFixed(1) + '" y="' + y.toFixed(1) + '" width="' + bw.toFixed(1) + '" height="' + nd.height.toFixed(1) + '" rx="' + rx + '" fill="' + col[0] + '" stroke="' + col[1] + '"/>';
    if (u.kind === "scanbox") {
      // the top band of the box; its caption is drawn with the body, over the leads
      s += '<rect class="head" x="' + x.toFixed(1) + '" y="' + y.toFixed(1) + '" width="' + bw.toFixed(1) + '" height="' + (BOX_HEAD - 8) + '" rx="8" fill="' + col[0] + '" stroke="none"/>';
    } else {
      var cx = x + bw / 2 - (self.hasToggle(u) ? 8 : 0);
      s += '<text class="t1" x="' + cx.toFixed(1) + '" y="' + (y + 18).toFixed(1) + '" text-anchor="middle">' + esc(u.label[0]) + '</text>';
      if (u.label[1]) s += '<text class="t2" x="' + cx.toFixed(1) + '" y="' + (y + 32).toFixed(1) + '" text-anchor="middle">' + esc(u.label[1]) + '</text>';
      var ws = u.weights || [];
      if (ws.length) {
        // the sources it reads, on a white band under the title (as Netron draws weights)
        var wy = y + u.head;
        s += '<rect class="weights" x="' + (x + 2).toFixed(1) + '" y="' + wy.toFixed(1) + '" width="' + (bw - 4).toFixed(1) + '" height="' + (nd.height - u.head - 2).toFixed(1) + '" rx="2"/>';
        ws.forEach(function (t, i) {
          s += '<text class="tw" x="' + (x + 8).toFixed(1) + '" y="' + (wy + 12 + i * LINE).toFixed(1) + '">' + esc(t) + '</text>';
        });
      }
    }
    if (self.hasToggle(u)) {
      var tk = u.kind === "group" ? "g:" + u.gid : self.byId[u.nid].scan ? "s:" + u.nid : "f:" + u.nid;
      var tx = x + bw - 16, ty = y + 3;
      s += '<g class="toggle" data-toggle="' + esc(tk) + '"><rect x="' + tx.toFixed(1) + '" y="' + ty.toFixed(1) + '" width="13" height="13" rx="2"/><text x="' + (tx + 6.5).toFixed(1) + '" y="' + (ty + 10.5).toFixed(1) + '" text-anchor="middle">' + (u.kind === "scanbox" ? "\u2212" : "+") + '</text></g>';
    }
    if (u.kind === "group" && self.groupCounts[u.gid]) {
      var gc = self.groupCounts[u.gid], badge = gc.removed ? "\u2212" + gc.removed : "+" + gc.added;
      s += '<text class="badge ' + (gc.removed ? "removed" : "added") + '" x="' + (x + 4).toFixed(1) + '" y="' + (y + 11).toFixed(1) + '">' + badge + '</text>';
    }
    s += '<title>' + esc(self.tooltip(key, u, ids)) + '</title></g>';
    return s;
  };

  Panel.prototype.draw = function () {
    var self = this, g = this.g, out = [];
    var graph = g.graph();
    this.width = graph.width || 100;
    this.height = graph.height || 100;
    var top = 0, maxBytes = 1;
    var unitIds = {};
    this.order.forEach(function (key) {
      var ids = self.unitNodes(key);
      unitIds[key] = ids;
      if (state.color === "flops" || state.color === "memory") {
        var v = 0;
        ids.forEach(function (i) { v += self.metric(self.byId[i], state.color) || 0; });
        top = Math.max(top, v);
      }
    });
    this.edges.forEach(function (e) { maxBytes = Math.max(maxBytes, e.bytes); });
    Object.keys(this.bodies).forEach(function (nid) {
      self.bodies[nid].edges.forEach(function (e) { maxBytes = Math.max(maxBytes, e.bytes); });
    });
    out.push('<defs><marker id="arrow' + this.index + '" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>');
    out.push('<g class="viewport">');
    // clusters, outermost first
    var ckeys = Object.keys(this.clusters).sort(function (a, b) { return self.depth(a) - self.depth(b); });
    ckeys.forEach(function (key) {
      var c = self.clusters[key], nd = g.node(key);
      if (!nd || nd.width === undefined) return;
      var x = nd.x - nd.width / 2, y = nd.y - nd.height / 2;
      var col, label, cls;
      if (c.kind === "fused") {
        col = self.colorOf([c.nid], top);
        var n = self.byId[c.nid];
        label = "\u25be %" + n.id + " fused (" + n.fused.kind + ")";
        cls = "cluster fusedc";
      } else {
        var grp = self.groups[c.gid];
        col = PHASE[grp.phase] || OTHER;
        label = "\u25be " + grp.label;
        cls = "cluster";
      }
      out.push('<g class="' + cls + '" data-key="' + esc(key) + '"><rect x="' + x.toFixed(1) + '" y="' + y.toFixed(1) + '" width="' + nd.width.toFixed(1) + '" height="' + nd.height.toFixed(1) + '" rx="6" fill="' + col[0] + '" stroke="' + col[1] + '"/>' +
        '<text class="ctoggle" data-toggle="' + esc(key) + '" x="' + (x + 5).toFixed(1) + '" y="' + (y + 11).toFixed(1) + '">' + esc(label) + '</text></g>');
    });
    // an edge at an open scan runs to the top (from the bottom) of the box above (below)
    // its port; the box draws the last stretch to the port
    var leads = {};
    out.push('<g class="edges">');
    this.edges.forEach(function (e, k) {
      var ed = g.edge(e.src, e.dst, e.name);
      if (!ed || !ed.points) return;
      var pts = ed.points.slice();
      if (e.dstPort) {
        var p = self.posOf(e.dstPort), box = g.node(e.dst);
        if (p) {
          pts[pts.length - 1] = { x: p.x, y: box.y - box.height / 2 };
          (leads[e.dst] = leads[e.dst] || []).push({ x: p.x, y0: box.y - box.height / 2, y1: p.y - p.height / 2, arrow: true, w: edgeWidth(e.bytes, maxBytes), label: e.label, bytes: e.bytes });
        }
      }
      if (e.srcPort) {
        var q = self.posOf(e.srcPort), sbox = g.node(e.src);
        if (q) {
          pts[0] = { x: q.x, y: sbox.y + sbox.height / 2 };
          (leads[e.src] = leads[e.src] || []).push({ x: q.x, y0: q.y + q.height / 2, y1: sbox.y + sbox.height / 2, arrow: false, w: edgeWidth(e.bytes, maxBytes), label: e.label, bytes: e.bytes });
        }
      }
      out.push(edgeSvg(pts, edgeWidth(e.bytes, maxBytes), k, e.label, e.bytes, !e.dstPort, self.index, ed.curve));
    });
    out.push('</g><g class="elabels">');
    this.edges.forEach(function (e) {
      var ed = g.edge(e.src, e.dst, e.name);
      if (!ed || ed.x === undefined || !ed.width) return;
      out.push(elabelSvg(ed, e.label));
    });
    out.push('</g><g class="units">');
    this.order.forEach(function (key) {
      var u = self.units[key], nd = g.node(key);
      out.push(self.unitSvg(key, u, nd, unitIds[key], top));
      if (u.kind === "scanbox") out.push(self.bodySvg(u.nid, nd, leads[key] || [], maxBytes));
    });
    out.push("</g></g>");
    this.svg.innerHTML = out.join("");
    this.viewport = this.svg.querySelector("g.viewport");
    this.applyTransform();
  };

  // an open scan's body, drawn over its box (nd), and the leads from the box's edge to
  // the ports
  Panel.prototype.bodySvg = function (nid, nd, leads, maxBytes) {
    var self = this, b = this.bodies[nid], bg = b.g, out = [];
    var dx = nd.x - nd.width / 2 + b.left + b.ox, dy = nd.y - nd.height / 2 + b.top + b.oy;
    out.push('<g class="body" data-scan="' + nid + '">');
    leads.forEach(function (l) {
      out.push('<path class="edge lead" d="M' + l.x.toFixed(1) + "," + l.y0.toFixed(1) + " L" + l.x.toFixed(1) + "," + l.y1.toFixed(1) + '" stroke-width="' + l.w.toFixed(2) + '"' +
        (l.arrow ? ' marker-end="url(#arrow' + self.index + ')"' : "") + '><title>' + esc(l.label + (l.bytes ? ", " + human(l.bytes) + "B" : "")) + '</title></path>');
    });
    var u = this.units["s:" + nid], x = nd.x - nd.width / 2, y = nd.y - nd.height / 2;
    var halo = (PHASE[this.byId[nid].phase] || OTHER)[0];
    out.push('<g class="caption" style="stroke:' + halo + '"><text class="t1" x="' + (x + 10).toFixed(1) + '" y="' + (y + 16).toFixed(1) + '">' + esc(u.label[0]) + '</text>' +
      '<text class="t2" x="' + (x + 10).toFixed(1) + '" y="' + (y + 30).toFixed(1) + '">' + esc(u.label[1]) + '</text></g>');
    out.push('<g transform="translate(' + dx.toFixed(1) + "," + dy.toFixed(1) + ')">');
    b.edges.forEach(function (e, k) {
      var ed = bg.edge(e.src, e.dst);
      if (!ed || !ed.points) return;
      out.push(edgeSvg(ed.points, edgeWidth(e.bytes, maxBytes), "b" + k, e.label, e.bytes, true, self.index));
    });
    b.edges.forEach(function (e) {
      var ed = bg.edge(e.src, e.dst);
      if (ed && ed.x !== undefined && ed.width) out.push(elabelSvg(ed, e.label));
    });
    b.order.forEach(function (key) {
      out.push(self.unitSvg(key, b.units[key], bg.node(key), [], 0));
    });
    out.push("</g></g>");
    return out.join("");
  };

  Panel.prototype.depth = function (key) {
    var d = 0, c = this.clusters[key];
    while (c && c.parent) { d += 1; c = this.clusters[c.parent]; }
    return d;
  };

  Panel.prototype.tooltip = function (key, u, ids) {
    if (u.kind === "group") return this.groups[u.gid].label + ": " + ids.length + " nodes (click + to expand)";
    if (u.kind === "scanbox") return "%" + u.nid + " " + this.byId[u.nid].title + ": click for its details, \u2212 to close it";
    if (u.kind === "body") {
      var b = this.bodyById[u.nid][u.bid];
      return "%" + b.id + " " + b.title + " in the body of scan %" + u.nid + (b.sub ? "\n" + b.sub : "") + "\nout: " + b.types.join(", ");
    }
    if (u.kind === "bout") {
      var o = this.byId[u.nid].scan.outputs[u.i];
      return o.role + " (" + o.detail + ")\nout " + o.index + " of scan %" + u.nid + ": " + o.outer;
    }
    if (u.kind === "member") {
      var m = this.byId[u.nid].fused.members[u.i];
      return m.op + " in fused %" + u.nid + (m.type ? "\n" + m.type : "");
    }
    var n = this.byId[u.nid];
    var t = "%" + n.id + " " + n.title + (n.sub ? "\n" + n.sub : "") + "\nphase: " + n.phase + "\nout: " + n.types.join(", ");
    if (n.scan) t += "\na loop: its body runs " + n.scan.steps + " times (click + to open it)";
    if (state.color === "flops" || state.color === "memory") t += "\n" + state.color + ": " + human(this.metric(n, state.color));
    return t;
  };

  // ------------------------------------------------------------------ pan and zoom

  Panel.prototype.fit = function () {
    // the whole graph when it fits at 25 % or more; else 25 % from the top
    var r = this.canvas.getBoundingClientRect();
    var cw = r.width || 800, ch = r.height || 600;
    var all = Math.min((cw - 10) / this.width, (ch - 10) / this.height);
    var k = Math.min(1, Math.max(all, 0.25));
    this.k = k;
    this.tx = this.width * k < cw ? (cw - this.width * k) / 2 : 5;
    this.ty = 5;
    this.applyTransform();
  };

  // Layer groups close, widest first, while the drawing is wider than the window at a
  // legible zoom (TensorBoard's rule: a scope stays folded when opening it would shrink
  // the text). ``deadline``: performance.now() after which it stops trying.
  Panel.prototype.foldToWindow = function (deadline) {
    var r = this.canvas.getBoundingClientRect(), cw = (r.width || 800) - 8, self = this;
    this.folded = [];
    var keep = {};  // the groups holding a node selected from the URL stay open
    if (state.sel && state.sel.panel === this.index) {
      var parts = state.sel.key.split(":"), nid = Number(parts[1]);
      if (this.byId[nid]) this.chainOf(nid).forEach(function (g) { keep[g] = true; });
    }
    // ... and so do those holding a loop (a scan), the part of a recurrent graph to see
    this.stage.nodes.forEach(function (n) {
      if (n.scan) self.chainOf(n.id).forEach(function (g) { keep[g] = true; });
    });
    while (this.g.graph().width * LEGIBLE_ZOOM > cw && performance.now() < deadline) {
      var extent = {}, count = {};
      this.order.forEach(function (key) {
        var nd = self.g.node(key);
        if (!nd) return;
        var seen = {};
        self.unitNodes(key).forEach(function (nid) {
          self.chainOf(nid).forEach(function (gid) {
            // the update rows wrap to the window already
            if (!self.expanded[gid] || seen[gid] || keep[gid] || self.groups[gid].phase === "update") return;
            seen[gid] = 1;
            var e = extent[gid] = extent[gid] || [Infinity, -Infinity];
            e[0] = Math.min(e[0], nd.x - nd.width / 2);
            e[1] = Math.max(e[1], nd.x + nd.width / 2);
            count[gid] = (count[gid] || 0) + 1;
          });
        });
      });
      var best = null, bestWidth = 0;
      Object.keys(extent).forEach(function (gid) {
        var w = extent[gid][1] - extent[gid][0];
        if (count[gid] >= 2 && (w > bestWidth || (w === bestWidth && gid < best))) { best = gid; bestWidth = w; }
      });
      if (best === null) return;
      this.folded.push(best + "@" + Math.round(this.g.graph().width));
      delete this.expanded[best];
      this.build();
      this.layout();
    }
  };

  // the first view: node text at least 11 px on screen (zoom 1 or more), the whole
  // drawing when it fits at that zoom, else scrolled to the inputs (the top left, where
  // the forward pass starts); never shrunk to fit
  Panel.prototype.home = function () {
    var r = this.canvas.getBoundingClientRect();
    var cw = r.width || 800, ch = r.height || 600;
    var all = Math.min((cw - 20) / this.width, (ch - 20) / this.height);
    var k = Math.max(LEGIBLE_ZOOM, Math.min(all, MAX_ZOOM_OPEN));
    this.k = k;
    this.tx = this.width * k <= cw ? (cw - this.width * k) / 2 : 4;
    this.ty = this.height * k <= ch ? (ch - this.height * k) / 2 : 4;
    this.applyTransform();
  };

  Panel.prototype.applyTransform = function () {
    if (this.viewport) this.viewport.setAttribute("transform", "translate(" + this.tx.toFixed(1) + "," + this.ty.toFixed(1) + ") scale(" + this.k.toFixed(4) + ")");
  };

  // zoom to a drawn unit or cluster (an opened scan): as large as fits, at most 100 %
  Panel.prototype.focus = function (key) {
    var nd = this.posOf(key);
    if (!nd) return;
    var r = this.canvas.getBoundingClientRect();
    var cw = r.width || 800, ch = r.height || 600;
    this.k = Math.max(0.3, Math.min(1, (cw - 30) / (nd.width || 1), (ch - 30) / (nd.height || 1)));
    this.tx = cw / 2 - nd.x * this.k;
    this.ty = nd.height * this.k <= ch - 30 ? ch / 2 - nd.y * this.k : 15 - (nd.y - nd.height / 2) * this.k;
    this.applyTransform();
  };

  Panel.prototype.centerOn = function (key) {
    var nd = this.posOf(key);
    if (!nd) return;
    var r = this.canvas.getBoundingClientRect();
    this.tx = (r.width || 800) / 2 - nd.x * this.k;
    this.ty = (r.height || 600) / 2 - nd.y * this.k;
    this.applyTransform();
  };

  Panel.prototype.attach = function (container) {
    var self = this;
    var el = document.createElement("div");
    el.className = "panel";
    var marks = "";
    if (DOC.compare) {
      var c = DOC.compare;
      marks = this.index === 0 ? c.removed.length + " nodes only here (dashed red)" : c.added.length + " nodes only here (dashed green)";
    }
    el.innerHTML = '<h2>' + esc(this.stage.title) + ' \u2014 ' + this.stage.nodes.length + ' nodes<span class="marks">' + esc(marks) + '</span></h2><div class="canvas"><svg id="svg-' + this.index + '" data-stage="' + esc(this.stage.name) + '"></svg></div>';
    container.appendChild(el);
    this.canvas = el.querySelector(".canvas");
    this.svg = el.querySelector("svg");
    this.k = 1; this.tx = 0; this.ty = 0;
    var drag = null;
    this.canvas.addEventListener("mousedown", function (ev) {
      var hit = ev.target.closest && ev.target.closest("g.unit, g.toggle, .ctoggle");
      if (hit && !hit.classList.contains("scanbox")) return;  // an open scan's box pans
      drag = { x: ev.clientX, y: ev.clientY, tx: self.tx, ty: self.ty };
      self.canvas.classList.add("dragging");
    });
    window.addEventListener("mousemove", function (ev) {
      if (!drag) return;
      self.tx = drag.tx + ev.clientX - drag.x;
      self.ty = drag.ty + ev.clientY - drag.y;
      self.applyTransform();
    });
    window.addEventListener("mouseup", function () { drag = null; self.canvas.classList.remove("dragging"); });
    this.canvas.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var r = self.canvas.getBoundingClientRect();
      var mx = ev.clientX - r.left, my = ev.clientY - r.top;
      var f = Math.exp(-ev.deltaY * 0.0015);
      var k = Math.max(0.03, Math.min(4, self.k * f));
      self.tx = mx - (mx - self.tx) * (k / self.k);
      self.ty = my - (my - self.ty) * (k / self.k);
      self.k = k;
      self.applyTransform();
    }, { passive: false });
    this.svg.addEventListener("click", function (ev) {
      var t = ev.target.closest("[data-toggle]");
      if (t) {
        var key = t.getAttribute("data-toggle");
        var id = key.slice(2);
        var open = true;
        if (key.indexOf("c:") === 0) open = false;
        else if (key.indexOf("f:") === 0) open = !self.units["m:" + id + ":0"];
        else if (key.indexOf("s:") === 0) open = !self.scanOpen(Number(id));
        self.expandId(key.indexOf("c:") === 0 ? id : key, open);
        renderAll();
        if (open && key.indexOf("s:") === 0) self.focus(key);
        return;
      }
      var u = ev.target.closest("g.unit");
      if (!u) return;
      var k = u.getAttribute("data-key");
      if (k.indexOf("g:") === 0) { self.expandId(k, true); renderAll(); return; }
      if (k.indexOf("s:") === 0) k = "n:" + k.slice(2);  // an open scan's box: the scan
      select(self.index, k);
    });
  };

  // ------------------------------------------------------------------ selection

  function selectionIds(panel, key) {
    if (key.indexOf("m:") === 0) {
      var p = key.split(":"), m = panel.byId[Number(p[1])].fused.members[Number(p[2])];
      return m.orig_id === null || m.orig_id === undefined ? [] : [m.orig_id];
    }
    if (key.indexOf("n:") === 0) return expansion(panel.byId[Number(key.slice(2))]);
    return [];
  }

  function select(pi, key, center) {
    var panel = panels[pi];
    if (!panel) return;
    if (key.indexOf("n:") === 0 && !panel.byId[Number(key.slice(2))]) return;
    if (key.indexOf("n:") === 0) {
      var nid = Number(key.slice(2));
      if (panel.rep(nid) !== key) { panel.reveal(nid); renderAll(); }
    }
    if (key.indexOf("sb:") === 0 || key.indexOf("so:") === 0) {
      var sid = Number(key.split(":")[1]);
      if (!panel.byId[sid] || !panel.byId[sid].scan) return;
      if (!panel.scanOpen(sid)) { panel.expandId(sid, true); renderAll(); }
    }
    state.sel = { panel: pi, key: key };
    highlight(center);
    showDetails();
  }

  function linkedIn(panel, ids) {
    // units of ``panel`` standing for the given original ids
    var keys = [], seen = {};
    function add(k) { if (!seen[k]) { seen[k] = 1; keys.push(k); } }
    ids.forEach(function (i) {
      (panel.expIndex[i] || []).forEach(function (nid) {
        if (panel.fusedOpen(nid)) {
          var hit = false;
          panel.byId[nid].fused.members.forEach(function (m, j) {
            if (ids.indexOf(m.orig_id) >= 0) { add("m:" + nid + ":" + j); hit = true; }
          });
          if (!hit || ids.indexOf(nid) >= 0) add("f:" + nid);
        } else if (panel.scanOpen(nid)) {
          add("s:" + nid);
        } else {
          add(panel.rep(nid));
        }
      });
    });
    return keys;
  }

  function highlight(center) {
    panels.forEach(function (p) {
      p.svg.querySelectorAll(".selected, .linked").forEach(function (el) { el.classList.remove("selected", "linked"); });
    });
    var sel = state.sel;
    if (!sel) return;
    var panel = panels[sel.panel];
    var el = panel.svg.querySelector('[data-key="' + cssEsc(shownKey(panel, sel.key)) + '"]');
    if (el) el.classList.add("selected");
    if (panels.length < 2) return;
    var other = panels[1 - sel.panel];
    var keys = linkedIn(other, selectionIds(panel, sel.key));
    keys.forEach(function (k) {
      var e = other.svg.querySelector('[data-key="' + cssEsc(k) + '"]');
      if (e) e.classList.add("linked");
    });
    if (center !== false && keys.length) other.centerOn(keys[0]);
  }

  // the drawn element of a selection: an open fused node is drawn as its cluster
  function shownKey(panel, key) {
    if (key.indexOf("n:") === 0) {
      var nid = Number(key.slice(2));
      if (panel.fusedOpen(nid)) return "f:" + nid;
      if (panel.scanOpen(nid)) return "s:" + nid;
      return panel.rep(nid);
    }
    return key;
  }

  function cssEsc(s) { return String(s).replace(/["\\]/g, "\\$&"); }

  function table(rows) {
    return "<table>" + rows.filter(function (r) { return r[1] !== null && r[1] !== undefined && r[1] !== ""; }).map(function (r) {
      return "<tr><th>" + esc(r[0]) + "</th><td>" + r[1] + "</td></tr>";
    }).join("") + "</table>";
  }

  function nodeLink(pi, nid) {
    return '<a data-goto="' + pi + ":" + nid + '">%' + nid + "</a>";
  }

  function specLine(line) {
    if (line === null || line === undefined) return null;
    var path = DOC.info.spec_path;
    return esc((path ? path + ":" : "line ") + line);
  }

  function showDetails() {
    var box = document.getElementById("details");
    var sel = state.sel;
    if (!sel) { box.innerHTML = '<p class="hint">Click a node for its attributes, types, spec line and, for a fused kernel, the generated source. Click + on a group, a fused node or a scan (a loop, drawn as a stack) to open it.</p>'; return; }
    var panel = panels[sel.panel], key = sel.key, html = "";
    if (key.indexOf("m:") === 0) {
      var p = key.split(":"), fn = panel.byId[Number(p[1])], m = fn.fused.members[Number(p[2])];
      html += "<h3>" + esc(m.op) + " <span class=\"hint\">member " + p[2] + " of fused " + nodeLink(sel.panel, fn.id) + "</span></h3>";
      html += table([["original node", m.orig_id === null || m.orig_id === undefined ? null : "%" + m.orig_id],
        ["output", esc(m.type || "?") + (m.bytes ? " (" + human(m.bytes) + "B)" : "")],
        ["layer", esc(m.layer || "")], ["spec line", specLine(m.line)],
        ["inputs", m.inputs.map(function (r) { return r[0] === "input" ? "fused input " + r[1] : "member " + r[1]; }).join(", ")]]);
      html += "<h4>attributes</h4><pre>" + esc(JSON.stringify(m.attrs, null, 1)) + "</pre>";
      if (fn.source) html += "<h4>generated source of the fused kernel</h4><pre class=\"source\">" + esc(fn.source) + "</pre>";
    } else if (key.indexOf("n:") === 0) {
      html += nodeDetails(panel, sel.panel, panel.byId[Number(key.slice(2))], null);
    } else if (key.indexOf("sb:") === 0) {
      var q = key.split(":"), sid = Number(q[1]), body = panel.bodyById[sid];
      if (body && body[Number(q[2])]) html += nodeDetails(panel, sel.panel, body[Number(q[2])], sid);
    } else if (key.indexOf("so:") === 0) {
      var r = key.split(":"), sn = panel.byId[Number(r[1])], o = sn && sn.scan.outputs[Number(r[2])];
      if (o) {
        var bsrc = panel.bodyById[sn.id][o.value[0]];
        html += "<h3>" + esc(o.role) + ' <span class="hint">output ' + o.index + " of scan " + nodeLink(sel.panel, sn.id) + "</span></h3>";
        html += table([["each step", esc(o.detail)], ["body value", bodyLink(sel.panel, sn.id, o.value[0]) + " " + esc(bsrc ? bsrc.title : "?")],
          ["per step", esc(bsrc ? bsrc.types[o.value[1]] || "?" : "?")],
          ["the scan gives", esc(o.outer) + " : " + esc(sn.types[o.index] || "?")]]);
      }
    }
    box.innerHTML = html;
  }

  function bodyLink(pi, sid, bid) {
    return '<a data-goto="' + pi + ":sb:" + sid + ":" + bid + '">%' + bid + "</a>";
  }

  // the details of a node; ``sid`` names the scan whose body holds it (null: the graph's)
  function nodeDetails(panel, pi, n, sid) {
    var html = "", inBody = sid !== null;
    var lookup = inBody ? panel.bodyById[sid] : panel.byId;
    var link = function (id) { return inBody ? bodyLink(pi, sid, id) : nodeLink(pi, id); };
    html += "<h3>%" + n.id + " " + esc(n.title) + (inBody ? ' <span class="hint">in the body of scan ' + nodeLink(pi, sid) + "</span>" : "") + "</h3>";
    html += table([["op", esc(n.op)], ["what it does", n.doc ? esc(n.doc) : null],
      ["name", n.name ? esc(n.name) : null], ["phase", esc(n.phase)],
      ["scan input", n.scan_input ? esc(n.sub) + " (scan input " + n.scan_input.slot + ")" : null],
      ["spec layer", n.layer ? esc(n.layer) : null], ["spec line", specLine(n.line)],
      ["stage", esc(panel.stage.title)],
      ["FLOPs", n.flops === null || n.flops === undefined ? null : n.flops.toLocaleString("en") + (inBody ? " per step" : "") + " (batch " + batchText(panel) + ")"],
      ["role", n.roots.length ? esc(n.roots.join("; ")) : null]]);
    html += "<h4>inputs</h4>" + (n.inputs.length ? table(n.inputs.map(function (inp, i) {
      var src = lookup[inp[0]];
      return ["#" + i, link(inp[0]) + (src && src.types.length > 1 ? "." + inp[1] : "") + " " + esc(src ? src.title : "?") + " : " + esc(n.in_types[i] || "?")];
    })) : '<p class="hint">none</p>');
    html += "<h4>outputs</h4>" + table(n.types.map(function (t, i) {
      var role = n.scan ? ' <span class="hint">' + esc(n.scan.outputs[i] ? n.scan.outputs[i].outer : "") + "</span>" : "";
      return ["#" + i, esc(t || "?") + (n.bytes[i] !== null ? " (" + human(n.bytes[i]) + "B)" : "") + role];
    }));
    if (n.scan) {
      var sc = n.scan;
      html += "<h4>loop</h4>" + table([["direction", esc(sc.direction) + (sc.bptt ? " (the backward, BPTT, scan)" : "")],
        ["steps", "the body runs " + esc(sc.steps) + " times"],
        ["truncated BPTT", sc.truncate ? String(sc.truncate) + " steps" : null],
        [sc.bptt ? "gradient of" : "its gradient", sc.pair !== null && sc.pair !== undefined ? nodeLink(pi, sc.pair) : null],
        ["inputs", [[sc.num_carry, "carry", "carries"], [sc.num_seq, "sequence", "sequences"], [sc.num_inv, "invariant", "invariants"]].map(function (c) { return c[0] + " " + (c[0] === 1 ? c[1] : c[2]); }).join(", ")]]);
      html += "<h4>inputs by role</h4>" + table(sc.inputs.map(function (e) {
        return ["#" + e.slot, esc(e.role) + ' <span class="hint">' + esc(e.detail) + "</span> \u2192 " + bodyLink(pi, n.id, e.body)];
      }));
      html += "<h4>outputs by role</h4>" + table(sc.outputs.map(function (e) {
        return ["#" + e.index, esc(e.outer) + ' <span class="hint">from ' + esc(e.role) + "</span> \u2190 " + bodyLink(pi, n.id, e.value[0])];
      }));
      html += '<p class="hint">Click + on the scan to open its body (' + sc.body.nodes.length + " nodes).</p>";
    }
    if (n.mem) html += "<h4>memory plan</h4>" + table([["new bytes", n.mem.bytes.toLocaleString("en")]].concat(n.mem.plan.map(function (s) { return ["", esc(s)]; })));
    html += "<h4>attributes</h4><pre>" + esc(JSON.stringify(n.attrs, null, 1)) + "</pre>";
    if (n.fused) {
      html += "<h4>fused members (" + esc(n.fused.kind) + ")</h4>" + table(n.fused.members.map(function (m, i) {
        return [String(i), esc(m.op) + " : " + esc(m.type || "?") + (m.orig_id !== null && m.orig_id !== undefined ? ' <span class="hint">was %' + m.orig_id + "</span>" : "") + (m.layer ? ' <span class="hint">' + esc(m.layer) + (m.line ? ":" + m.line : "") + "</span>" : "")];
      }));
    }
    if (n.source) html += "<h4>generated " + (n.fused ? "kernel " : "") + "source</h4><pre class=\"source\">" + esc(n.source) + "</pre>";
    else if (n.fused && !inBody) html += '<p class="hint">no generated source for this stage</p>';
    if (panels.length > 1 && !inBody) {
      var other = panels[1 - pi], ids = expansion(n), hits = [];
      ids.forEach(function (i) { (other.expIndex[i] || []).forEach(function (t) { if (hits.indexOf(t) < 0) hits.push(t); }); });
      html += "<h4>in " + esc(other.stage.title) + "</h4>" + (hits.length ? hits.map(function (t) { return nodeLink(1 - pi, t); }).join(" ") : '<p class="hint">' + (pi === 0 ? "removed: no counterpart" : "added: no counterpart") + "</p>");
    }
    return html;
  }

  function batchText(panel) {
    var b = panel.stage.bindings, keys = Object.keys(b);
    return keys.length ? keys.map(function (k) { return k + "=" + b[k]; }).join(", ") : "N=" + panel.stage.default_batch;
  }

  // ------------------------------------------------------------------ group tree

  function treeData() {
    var groups = {}, order = [];
    panels.forEach(function (p) {
      p.stage.groups.forEach(function (g) {
        if (!groups[g.id]) { groups[g.id] = { id: g.id, label: g.label, parent: g.parent, sizes: [], kids: [] }; order.push(g.id); }
        groups[g.id].sizes[p.index] = g.size;
      });
    });
    var roots = [];
    order.forEach(function (id) {
      var g = groups[id];
      if (g.parent && groups[g.parent]) groups[g.parent].kids.push(id); else roots.push(id);
    });
    return { groups: groups, roots: roots };
  }

  function isOpen(gid) {
    for (var i = 0; i < panels.length; i++) if (panels[i].expanded[gid]) return true;
    return false;
  }

  function renderTree() {
    var el = document.getElementById("tree");
    var t = treeData(), rows = [];
    if (!t.roots.length) { el.innerHTML = ""; return; }
    (function walk(ids, depth) {
      ids.forEach(function (id) {
        var g = t.groups[id], open = isOpen(id);
        var size = g.sizes.map(function (x) { return x === undefined ? "-" : x; }).join(" / ");
        rows.push('<div class="tree-row' + (open ? " open" : "") + '" data-tree="' + esc(id) + '" style="padding-left:' + (depth * 12 + 2) + 'px">' +
          (open ? "\u25be " : "\u25b8 ") + esc(g.label) + ' <span class="hint">' + size + "</span></div>");
        if (open) walk(g.kids, depth + 1);
      });
    })(t.roots, 0);
    el.innerHTML = "<h4>groups: spec layers and blocks</h4>" + rows.join("");
  }

  // ------------------------------------------------------------------ page

  function legend() {
    var el = document.getElementById("legend"), rows = [];
    if (state.color === "phase") rows = [["forward", PHASE.forward], ["backward", PHASE.backward], ["update", PHASE.update]];
    else if (state.color === "group") rows = [["fused kernel (one colour each)", groupColor(0)], ["not fused", ["#f4f4f4", "#999999"]]];
    else if (state.color === "flops") rows = [["few FLOPs", ["#fff8e1", "#c9a227"]], ["many FLOPs (log scale)", ["#e4572e", "#8c1c13"]]];
    else rows = [["0 bytes planned", ["#f1f0fb", "#9e9ac8"]], ["most bytes (log scale)", ["#6a51a3", "#3f007d"]]];
    el.innerHTML = rows.map(function (r) {
      return '<span><span class="sw" style="background:' + r[1][0] + ";border-color:" + r[1][1] + '"></span>' + esc(r[0]) + "</span>";
    }).join("");
  }

  var firstRender = true;
  var lastGood = null;  // expansions of the last view that laid out

  function renderAll() {
    var t0 = performance.now();
    var count = 0;
    var tb = 0, tl = 0, td = 0;
    var msg = document.getElementById("message");
    msg.textContent = "";
    // refuse views whose layout would freeze the page for long (dagre's cost grows with
    // the edge bends of long edges, see estimate), and go back to the last good one
    var worst = 0;
    panels.forEach(function (p) { worst = Math.max(worst, p.estimate().work); });
    if (worst > HARD_LIMIT) {
      panels.forEach(function (p, i) {
        if (lastGood) p.expanded = Object.assign({}, lastGood[i]); else p.defaultExpansion();
      });
      msg.textContent = "that view is too large to lay out at once (about " + worst +
        " layout units); open groups one at a time";
    }
    try {
      panels.forEach(function (p) {
        var a = performance.now();
        p.build();
        var b = performance.now();
        p.layout();
        if (firstRender && !state.explicit) p.foldToWindow(a + 800);
        var c = performance.now();
        p.draw();
        var d = performance.now();
        tb += b - a; tl += c - b; td += d - c;
        if (firstRender) p.home();
        count += p.order.length;
      });
    } catch (err) {
      // dagre can run out of stack on very large flat views: go back to the last view
      msg.textContent = "could not lay out this view (" + (err && err.message ? err.message : err) + "); open fewer groups";
      if (lastGood) {
        panels.forEach(function (p, i) { p.expanded = Object.assign({}, lastGood[i]); });
        lastGood = null;
        renderAll();
      }
      return;
    }
    lastGood = panels.map(function (p) { return Object.assign({}, p.expanded); });
    highlight(false);
    showDetails();
    legend();
    renderTree();
    var t1 = performance.now();
    var ms = firstRender ? t1 : t1 - t0;
    firstRender = false;
    state.renders += 1;
    document.body.dataset.renderMs = String(Math.round(ms));
    document.body.dataset.layoutMs = String(Math.round(t1 - t0));
    document.body.dataset.phasesMs = [tb, tl, td].map(Math.round).join(",");
    document.body.dataset.visibleUnits = String(count);
    document.body.dataset.work = panels.map(function (p) { var c = p.estimate(); return c.units + "/" + c.edges + "/" + c.dummies; }).join(" ");
    document.body.dataset.renderCount = String(state.renders);
    document.body.dataset.folded = panels.map(function (p) { return (p.folded || []).join(","); }).join(" ");
    document.body.setAttribute("data-rendered", "1");
  }

  function applyHash() {
    var h = decodeURIComponent((location.hash || "").replace(/^#/, ""));
    if (!h) return false;
    var changed = false, selectCmd = null;
    h.split("&").forEach(function (part) {
      var eq = part.indexOf("=");
      var k = eq < 0 ? part : part.slice(0, eq), v = eq < 0 ? "" : part.slice(eq + 1);
      if (k === "expand" || k === "collapse" || k === "expandall" || k === "collapseall") state.explicit = true;
      if (k === "view" && v === "fit") state.fitFirst = true;
      if (k === "expand" || k === "collapse") {
        v.split(",").forEach(function (id) {
          if (!id) return;
          panels.forEach(function (p, pi) {
            if (!p.expandId(id, k === "expand")) return;
            changed = true;
            var sid = String(id).replace(/^s:/, "");
            if (k === "expand" && p.byId[sid] && p.byId[sid].scan) state.focus = { panel: pi, key: "s:" + sid };
          });
        });
      } else if (k === "expandall") {
        panels.forEach(function (p) { p.stage.groups.forEach(function (g) { p.expanded[g.id] = true; }); });
        changed = true;
      } else if (k === "collapseall") {
        panels.forEach(function (p) { p.expanded = {}; });
        changed = true;
      } else if (k === "color" && ["phase", "group", "flops", "memory"].indexOf(v) >= 0) {
        state.color = v;
        document.getElementById("color").value = v;
        changed = true;
      } else if (k === "sources" && (v === "nodes" || v === "inline")) {
        state.inline = v === "inline";
        document.getElementById("sources").checked = !state.inline;
        changed = true;
      } else if (k === "select") {
        selectCmd = v;
      }
    });
    if (selectCmd) {
      var pi = 0, id = selectCmd;
      if (/^[ab]:/.test(id)) { pi = id[0] === "a" ? 0 : 1; id = id.slice(2); }
      var key = id.indexOf(":") >= 0 ? id : "n:" + id;
      var panel = panels[pi];
      if (panel && key.indexOf("n:") === 0 && panel.byId[Number(key.slice(2))]) {
        panel.reveal(Number(key.slice(2)));
        state.sel = { panel: pi, key: key };
        changed = true;
      } else if (panel && key.indexOf("m:") === 0) {
        var parts = key.split(":");
        panel.expandId(parts[1], true);
        state.sel = { panel: pi, key: key };
        changed = true;
      } else if (panel && (key.indexOf("sb:") === 0 || key.indexOf("so:") === 0)) {
        if (panel.expandId(key.split(":")[1], true)) {
          state.sel = { panel: pi, key: key };
          changed = true;
        }
      }
    }
    return changed;
  }

  function init() {
    var info = DOC.info || {};
    document.getElementById("title").textContent = DOC.title;
    var total = DOC.stages.map(function (s) { return s.nodes.length; }).join(" / ");
    document.getElementById("stats").textContent = total + " nodes" + (info.mode ? " \u00b7 " + info.mode + " program" : "") + (info.batch ? " \u00b7 sizes at batch " + info.batch : "");
    var container = document.getElementById("panels");
    DOC.stages.forEach(function (s, i) {
      var p = new Panel(s, i, DOC.compare);
      p.attach(container);
      panels.push(p);
    });
    document.getElementById("color").addEventListener("change", function (ev) {
      state.color = ev.target.value;
      renderAll();
    });
    document.getElementById("fit").addEventListener("click", function () { panels.forEach(function (p) { p.fit(); }); });
    document.getElementById("expandall").addEventListener("click", function () {
      panels.forEach(function (p) { p.stage.groups.forEach(function (g) { p.expanded[g.id] = true; }); });
      renderAll();
      panels.forEach(function (p) { p.home(); });
    });
    document.getElementById("collapseall").addEventListener("click", function () {
      panels.forEach(function (p) { p.expanded = {}; });
      renderAll();
      panels.forEach(function (p) { p.home(); });
    });
    document.getElementById("sources").addEventListener("change", function (ev) {
      state.inline = !ev.target.checked;
      renderAll();
      panels.forEach(function (p) { p.home(); });
    });
    document.getElementById("details").addEventListener("click", function (ev) {
      var a = ev.target.closest("[data-goto]");
      if (!a) return;
      var parts = a.getAttribute("data-goto").split(":");
      var pi = Number(parts[0]);
      var key = parts.length > 2 ? parts.slice(1).join(":") : "n:" + Number(parts[1]);
      select(pi, key, false);
      panels[pi].centerOn(shownKey(panels[pi], key));
    });
    document.getElementById("tree").addEventListener("click", function (ev) {
      var row = ev.target.closest("[data-tree]");
      if (!row) return;
      var gid = row.getAttribute("data-tree"), open = !isOpen(gid);
      panels.forEach(function (p) { p.expandId(gid, open); });
      renderAll();
    });
    window.addEventListener("hashchange", function () {
      if (!applyHash()) return;
      renderAll();
      if (state.focus) panels[state.focus.panel].focus(state.focus.key);
      state.focus = null;
    });
    applyHash();
    renderAll();
    if (state.sel) {
      var p = panels[state.sel.panel];
      p.k = Math.max(p.k, 0.9);  // a selection from the URL opens readable, centred on it
      p.centerOn(shownKey(p, state.sel.key));
      highlight(true);
    } else if (state.focus) {
      panels[state.focus.panel].focus(state.focus.key);  // a scan opened from the URL
    } else if (state.fitFirst) {
      panels.forEach(function (p) { p.fit(); });
    }
    state.focus = null;
  }

  init();
})();
