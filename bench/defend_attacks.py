#!/usr/bin/env python3
"""Attacks and baselines for bench/defend.sh, in numpy only (no torch): FGSM, PGD-40 (step 0.01) and the
Square Attack (L-inf, 1,000 iterations) at eps 0.1 against the digits MLP, whose Gemm/Relu weights are read from the
ONNX file so the gradients are exact. Also trains the surrogates and independent models for the watermark benchmark.

Usage: defend_attacks.py attacks MODEL.onnx TEST.csv OUTDIR
       defend_attacks.py jbda MODEL.onnx TEST.csv OUT.csv [--seeds N] [--rounds R]
       defend_attacks.py train IN.csv OUT.onnx --label-column COL --seed S [--hidden H]
       defend_attacks.py squeeze-baseline MODEL.onnx TEST.csv ATTACKDIR
       defend_attacks.py thief-queries TRAIN.csv OUT.csv [--count N]
       defend_attacks.py extract URL QUERIES.csv OUT.csv   (API key in $RAMPART_API_KEY)
       defend_attacks.py sanitise-time HxWxC DIR RAMPART_TIMES
"""
import argparse
import csv
import os
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EPS = 0.1


def load_csv(path, label_column="label"):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    li = header.index(label_column) if label_column in header else None
    feats = [i for i, h in enumerate(header) if i != li and h != "answer"]
    x = np.array([[float(r[i]) for i in feats] for r in body], dtype=np.float32)
    y = np.array([int(r[li]) for r in body]) if li is not None else None
    return x, y


def write_csv(path, x, y=None, label="label"):
    with open(path + ".tmp", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"px{i}" for i in range(x.shape[1])] + ([label] if y is not None else []))
        for i, row in enumerate(x):
            w.writerow([repr(float(v)) for v in row] + ([int(y[i])] if y is not None else []))
    os.replace(path + ".tmp", path)


class Mlp:
    """Gemm(transB=1)/Relu chain read from the ONNX graph."""

    def __init__(self, path):
        m = onnx.load(path)
        init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        self.layers = []
        for node in m.graph.node:
            if node.op_type == "Gemm":
                self.layers.append((init[node.input[1]].astype(np.float64), init[node.input[2]].astype(np.float64)))

    def forward(self, x, keep=False):
        acts, h = [], x.astype(np.float64)
        for i, (w, b) in enumerate(self.layers):
            z = h @ w.T + b
            if i < len(self.layers) - 1:
                acts.append((h, z))
                h = np.maximum(z, 0)
            else:
                acts.append((h, z))
                h = z
        return (h, acts) if keep else h

    def grad_ce(self, x, y):
        logits, acts = self.forward(x, keep=True)
        p = softmax(logits)
        g = p.copy()
        g[np.arange(len(y)), y] -= 1.0
        for i in range(len(self.layers) - 1, -1, -1):
            w, _ = self.layers[i]
            g = g @ w
            if i > 0:
                g = g * (acts[i - 1][1] > 0)
        return g

    def grad_class(self, x, cls):
        """Jacobian row of the logit of `cls` (for JBDA)."""
        logits, acts = self.forward(x, keep=True)
        g = np.zeros_like(logits)
        g[np.arange(len(cls)), cls] = 1.0
        for i in range(len(self.layers) - 1, -1, -1):
            w, _ = self.layers[i]
            g = g @ w
            if i > 0:
                g = g * (acts[i - 1][1] > 0)
        return g


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fgsm(m, x, y):
    return np.clip(x + EPS * np.sign(m.grad_ce(x, y)), 0, 1)


def pgd(m, x, y, steps=40, step=0.01, seed=0):
    rng = np.random.default_rng(seed)
    adv = np.clip(x + rng.uniform(-EPS, EPS, x.shape), 0, 1)
    for _ in range(steps):
        adv = adv + step * np.sign(m.grad_ce(adv, y))
        adv = np.clip(np.clip(adv, x - EPS, x + EPS), 0, 1)
    return adv


def margin_loss(m, x, y):
    logits = m.forward(x)
    true = logits[np.arange(len(y)), y]
    other = logits.copy()
    other[np.arange(len(y)), y] = -np.inf
    return true - other.max(axis=1)


def square(m, x, y, iters=1000, p_init=0.3, seed=0):
    """Square Attack (Andriushchenko et al. 2020), L-inf, on 8x8 single-channel images, score-based."""
    rng = np.random.default_rng(seed)
    n, h = len(x), 8
    img = x.reshape(n, h, h)
    adv = np.clip(img + EPS * rng.choice([-1, 1], size=(n, 1, h)), 0, 1)
    loss = margin_loss(m, adv.reshape(n, -1), y)
    for it in range(iters):
        active = loss > 0
        if not active.any():
            break
        p = p_init * (0.5 ** int(np.log2(1 + it * 10 / iters * 2)))
        s = max(1, int(round(np.sqrt(p * h * h))))
        s = min(s, h - 1)
        idx = np.where(active)[0]
        cand = adv[idx].copy()
        for j, k in enumerate(idx):
            r, c = rng.integers(0, h - s + 1, size=2)
            cand[j, r:r + s, c:c + s] = np.clip(img[k, r:r + s, c:c + s] + EPS * rng.choice([-1, 1]), 0, 1)
        new_loss = margin_loss(m, cand.reshape(len(idx), -1), y[idx])
        better = new_loss < loss[idx]
        adv[idx[better]] = cand[better]
        loss[idx[better]] = new_loss[better]
    return adv.reshape(n, -1)


def cmd_attacks(a):
    m = Mlp(a.model)
    x, y = load_csv(a.test)
    os.makedirs(a.out, exist_ok=True)
    clean_pred = m.forward(x).argmax(1)
    print(f"clean accuracy {np.mean(clean_pred == y):.4f}", file=sys.stderr)
    for name, fn in [("fgsm", fgsm), ("pgd", pgd), ("square", square)]:
        adv = fn(m, x, y).astype(np.float32)
        acc = np.mean(m.forward(adv).argmax(1) == y)
        print(f"{name}: robust accuracy {acc:.4f}", file=sys.stderr)
        write_csv(os.path.join(a.out, f"{name}.csv"), adv, y)


def cmd_jbda(a):
    """Papernot's Jacobian-based augmentation against the label-only oracle (the original model), recording every
    query in order: seeds first, then each augmentation round."""
    m = Mlp(a.model)
    x, y = load_csv(a.test)
    rng = np.random.default_rng(a.seed)
    seeds = []
    for c in range(10):
        idx = np.where(y == c)[0]
        seeds.extend(rng.choice(idx, a.seeds // 10, replace=False))
    sub = x[np.array(seeds)]
    queries = [sub]
    for r in range(a.rounds):
        labels = m.forward(sub).argmax(1)
        # Substitute = the oracle here (an upper bound on the attacker's Jacobian quality).
        new = np.clip(sub + 0.1 * np.sign(m.grad_class(sub, labels)), 0, 1)
        queries.append(new)
        sub = np.concatenate([sub, new])
    q = np.concatenate(queries)[: a.limit]
    write_csv(a.out, q.astype(np.float32))


def mlp_onnx(layers, path):
    nodes, inits, prev = [], [], "input"
    for i, (w, b) in enumerate(layers):
        wn, bn = f"fc{i}.weight", f"fc{i}.bias"
        inits.append(numpy_helper.from_array(w.T.astype(np.float32), wn))
        inits.append(numpy_helper.from_array(b.astype(np.float32), bn))
        last = i == len(layers) - 1
        out = "logits" if last else f"fc{i}"
        nodes.append(helper.make_node("Gemm", [prev, wn, bn], [out], transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"]))
            out = f"relu{i}"
        prev = out
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def cmd_train(a):
    from sklearn.neural_network import MLPClassifier
    x, y = load_csv(a.data, a.label_column)
    clf = MLPClassifier(hidden_layer_sizes=(a.hidden,), max_iter=a.max_iter, random_state=a.seed)
    clf.fit(x, y)
    # Pad to 10 classes if some class never appeared.
    w_last, b_last = clf.coefs_[-1], clf.intercepts_[-1]
    if len(clf.classes_) != 10 or w_last.shape[1] == 1:
        full_w = np.zeros((w_last.shape[0], 10))
        full_b = np.full(10, -1e3)
        for j, c in enumerate(clf.classes_):
            full_w[:, c], full_b[c] = w_last[:, j], b_last[j]
        clf.coefs_[-1], clf.intercepts_[-1] = full_w, full_b
    mlp_onnx(list(zip(clf.coefs_, clf.intercepts_)), a.out)
    print(f"train accuracy {clf.score(x, y):.4f}", file=sys.stderr)


def cmd_squeeze_baseline(a):
    """The classic feature-squeezing detector (Xu et al. 2018: max L1 over a bit-depth and a median squeezer,
    threshold from clean data), the peer the issue names, run by onnxruntime on the same cross-fitted split as the Rust
    harness (calibrate on one half of the test rows, score the other, then swap)."""
    import onnxruntime as ort
    from scipy import ndimage
    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x, y = load_csv(a.test)
    n = len(y)
    order = xorshift_order(n, 0x9E3779B97F4A7C15)
    halves = [(order[: n // 2], order[n // 2:]), (order[n // 2:], order[: n // 2])]

    def probs(z):
        return softmax(sess.run(None, {name: z.astype(np.float32)})[0].astype(np.float64))

    def score(z):
        p = probs(z)
        bit = np.round(z * 3) / 3
        med = np.stack([ndimage.median_filter(r.reshape(8, 8), size=2).reshape(64) for r in z])
        return np.maximum(np.abs(p - probs(bit)).sum(1), np.abs(p - probs(med)).sum(1))

    names = [s for s in a.names.split(",") if s]
    attacked = {}
    for s in names:
        adv, labels = load_csv(os.path.join(a.attacks, f"{s}.csv"))
        attacked[s] = (adv, probs(adv).argmax(1) != labels)
    t0 = time.perf_counter()
    for fpr in (0.02, 0.05):
        fp, caught, won = 0, {s: 0 for s in names}, {s: 0 for s in names}
        for cal, held in halves:
            t = np.quantile(score(x[cal]), 1 - fpr)
            fp += int(np.sum(score(x[held]) > t))
            for s in names:
                adv, ok = attacked[s]
                idx = [i for i in held if ok[i]]
                won[s] += len(idx)
                if idx:
                    caught[s] += int(np.sum(score(adv[idx]) > t))
        line = f"feature squeezing (classic, peer) target FPR {fpr:.2f}, measured FPR {fp / n:.4f} ({fp}/{n})"
        for s in names:
            line += f"  {s} {caught[s] / max(won[s], 1):.4f} ({caught[s]}/{won[s]})"
        print(line)
    print(f"feature squeezing (classic, peer): {time.perf_counter() - t0:.2f} s", file=sys.stderr)


def xorshift_order(n, seed):
    """The same deterministic shuffle as the Rust harness."""
    order = list(range(n))
    mask = (1 << 64) - 1
    for i in range(n - 1, 0, -1):
        seed ^= (seed << 13) & mask
        seed ^= seed >> 7
        seed ^= (seed << 17) & mask
        j = seed % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def cmd_fidelity(a):
    """Surrogates trained on what each hardening policy returns, at several query budgets (what a quota allows),
    and how often they agree with the victim on the test rows (fidelity)."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    victim = Mlp(a.model)
    xt, yt = load_csv(a.test)
    truth = victim.forward(xt).argmax(1)
    fidelity = {}
    for name in a.served:
        with open(os.path.join(a.dir, name + ".csv")) as f:
            r = csv.reader(f)
            header = next(r)
            data = np.array([[float(v) for v in row] for row in r])
        probs = [i for i, h in enumerate(header) if h.startswith("p") and not h.startswith("px")]
        for budget in a.budgets:
            x, rows = data[:budget, :64], data[:budget]
            if probs:
                # Distillation: regress the returned probabilities (withheld ones are zeros), predict the largest.
                m = MLPRegressor(hidden_layer_sizes=(a.hidden,), max_iter=a.max_iter, random_state=a.seed)
                m.fit(x, rows[:, probs])
                pred = m.predict(xt).argmax(1)
            else:
                m = MLPClassifier(hidden_layer_sizes=(a.hidden,), max_iter=a.max_iter, random_state=a.seed)
                m.fit(x, rows[:, -1].astype(int))
                pred = m.predict(xt)
            fidelity[(name, budget)] = (float((pred == truth).mean()), float((pred == yt).mean()))
    print("natural extraction: fidelity (accuracy) of a surrogate trained on the answers, by queries answered")
    print(f"  {'outputs':<12}" + "".join(f"{b:>18}" for b in a.budgets))
    for name in a.served:
        print(f"  {name:<12}" + "".join(f"{fidelity[(name, b)][0]:>10.4f} ({fidelity[(name, b)][1]:.3f})"
                                        for b in a.budgets))
    if "full" in a.served and "label_only" in a.served:
        taken = [(fidelity[("full", b)][0] - fidelity[("label_only", b)][0]) * 100 for b in a.budgets]
        print("  fidelity label-only outputs take away, against full probabilities: "
              + ", ".join(f"{t:+.1f} points at {b}" for t, b in zip(taken, a.budgets)))


def cmd_thief_queries(a):
    """5,000 natural-looking queries: training rows with small noise (distinct inputs, as a thief with data has)."""
    x, _ = load_csv(a.data)
    rng = np.random.default_rng(a.seed)
    idx = rng.integers(0, len(x), size=a.count)
    q = np.clip(x[idx] + rng.normal(0, 0.05, size=(a.count, x.shape[1])), 0, 1).astype(np.float32)
    write_csv(a.out, q)


def cmd_extract(a):
    """The thief's side of extraction through a live gateway (KServe v2 over HTTP): asks QUERIES in batches and writes
    each row with the label answered (a hardened `label` output, else the argmax of the first output)."""
    import json
    import urllib.request
    x, _ = load_csv(a.queries)
    key = os.environ["RAMPART_API_KEY"]
    labels = []
    for start in range(0, len(x), a.batch):
        chunk = x[start:start + a.batch]
        body = json.dumps({"inputs": [{"name": "input", "shape": list(chunk.shape), "datatype": "FP32",
                                       "data": [float(v) for v in chunk.ravel()]}]}).encode()
        req = urllib.request.Request(a.url, data=body, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            outputs = json.load(r)["outputs"]
        named = {o["name"]: o for o in outputs}
        if "label" in named:
            labels.extend(int(v) for v in named["label"]["data"])
        else:
            scores = np.array(outputs[0]["data"], dtype=np.float32).reshape(len(chunk), -1)
            labels.extend(int(v) for v in scores.argmax(axis=1))
    write_csv(a.out, x, np.array(labels))
    print(f"extract: {len(labels)} answers from {a.url}", file=sys.stderr)


def cmd_sanitise_time(a):
    """The peer of Rampart's sanitisers: scipy.ndimage (median, Gaussian) and numpy (bit depth, FFT low-pass) on the
    image `defend_bench sanitise-time` used, timed the same way (best of 7), each output compared with Rampart's."""
    from scipy import ndimage
    h, w, c = (int(v) for v in a.shape.split("x"))
    image = ((np.arange(h * w * c) * 7919 % 1000) / 1000).astype(np.float32).reshape(h, w, c)

    def low_pass(x, cutoff):
        fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
        keep = np.sqrt(fy * fy + fx * fx) <= cutoff
        out = np.empty_like(x)
        for k in range(c):
            out[:, :, k] = np.clip(np.fft.ifft2(np.fft.fft2(x[:, :, k].astype(np.float64)) * keep).real, 0, 1)
        return out

    peers = {
        "bit_depth_4": lambda x: np.round(np.clip(x, 0, 1) * np.float32(15)) / np.float32(15),
        "median_2": lambda x: ndimage.median_filter(x, size=(2, 2, 1), mode="reflect"),
        "median_3": lambda x: ndimage.median_filter(x, size=(3, 3, 1), mode="reflect"),
        "median_5": lambda x: ndimage.median_filter(x, size=(5, 5, 1), mode="reflect"),
        "gaussian_1": lambda x: ndimage.gaussian_filter(x.astype(np.float64), sigma=(1, 1, 0), mode="reflect"),
        "low_pass_0.25": lambda x: low_pass(x, 0.25),
    }
    ours = dict(line.split() for line in open(a.times) if line.strip())
    print(f"{'sanitiser':<16}{'Rampart ms':>12}{'scipy ms':>12}{'ratio':>9}{'max |diff|':>13}")
    for name, peer in peers.items():
        best = float("inf")
        for _ in range(7):
            started = time.perf_counter()
            out = peer(image)
            best = min(best, time.perf_counter() - started)
        theirs = np.asarray(out, dtype=np.float32).reshape(-1)
        mine = np.fromfile(os.path.join(a.dir, f"{name}.f32"), dtype="<f4")
        diff = float(np.max(np.abs(mine.astype(np.float64) - theirs))) if mine.size == theirs.size else float("nan")
        rampart = float(ours[name])
        print(f"{name:<16}{rampart:>12.3f}{best * 1e3:>12.3f}{best * 1e3 / rampart:>8.1f}x{diff:>13.2e}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("attacks"); s.add_argument("model"); s.add_argument("test"); s.add_argument("out")
    s = sub.add_parser("jbda"); s.add_argument("model"); s.add_argument("test"); s.add_argument("out")
    s.add_argument("--seeds", type=int, default=100); s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--limit", type=int, default=1000); s.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("train"); s.add_argument("data"); s.add_argument("out")
    s.add_argument("--label-column", default="label"); s.add_argument("--seed", type=int, default=0)
    s.add_argument("--hidden", type=int, default=128); s.add_argument("--max-iter", type=int, default=400)
    s = sub.add_parser("squeeze-baseline"); s.add_argument("model"); s.add_argument("test"); s.add_argument("attacks")
    s.add_argument("--names", default="fgsm,pgd,pgd-early,square,pgd-lattice")
    s = sub.add_parser("fidelity"); s.add_argument("model"); s.add_argument("test"); s.add_argument("dir")
    s.add_argument("--served", nargs="+", default=["full", "top_k", "label_only"])
    s.add_argument("--budgets", nargs="+", type=int, default=[100, 300, 1000, 5000])
    s.add_argument("--seed", type=int, default=1); s.add_argument("--hidden", type=int, default=256)
    s.add_argument("--max-iter", type=int, default=1000)
    s = sub.add_parser("thief-queries"); s.add_argument("data"); s.add_argument("out")
    s.add_argument("--count", type=int, default=5000); s.add_argument("--seed", type=int, default=1)
    s = sub.add_parser("extract"); s.add_argument("url"); s.add_argument("queries"); s.add_argument("out")
    s.add_argument("--batch", type=int, default=50)
    s = sub.add_parser("sanitise-time"); s.add_argument("shape"); s.add_argument("dir"); s.add_argument("times")
    a = p.parse_args()
    {"attacks": cmd_attacks, "jbda": cmd_jbda, "train": cmd_train, "squeeze-baseline": cmd_squeeze_baseline,
     "thief-queries": cmd_thief_queries, "extract": cmd_extract, "fidelity": cmd_fidelity, "sanitise-time": cmd_sanitise_time}[a.cmd](a)


if __name__ == "__main__":
    main()
