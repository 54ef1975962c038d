"""The cleanlab side of bench/data.sh: noisy digits, out-of-fold probabilities, cleanlab's find_label_issues.

Usage: data_labels.py prepare TRAIN_CSV WORKDIR   -> noisy.csv, truth.txt; then computes probs.csv and times cleanlab
       data_labels.py score WORKDIR RAMPART_JSON  -> precision and recall of Rampart's issues
"""
import json
import sys
import time

import numpy as np


def load(path):
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    return data[:, :-1], data[:, -1].astype(int)


def pr(found, truth):
    found = set(int(i) for i in found)
    truth = set(int(i) for i in truth)
    tp = len(found & truth)
    return tp / max(len(found), 1), tp / max(len(truth), 1), len(found)


def prepare(train, work):
    x, y = load(train)
    rng = np.random.default_rng(2024)
    n = len(y)
    flip = rng.choice(n, size=n // 10, replace=False)
    noisy = y.copy()
    noisy[flip] = (y[flip] + rng.integers(1, 10, size=len(flip))) % 10
    header = ",".join([f"px{i}" for i in range(x.shape[1])] + ["label"])
    np.savetxt(f"{work}/noisy.csv", np.column_stack([x, noisy]), delimiter=",", header=header, comments="", fmt="%.10g")
    np.savetxt(f"{work}/truth.txt", np.sort(flip), fmt="%d")
    t0 = time.perf_counter()
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from cleanlab.filter import find_label_issues

    t1 = time.perf_counter()
    probs = cross_val_predict(LogisticRegression(max_iter=200), x, noisy, cv=5, method="predict_proba")
    t2 = time.perf_counter()
    mask = find_label_issues(noisy, probs)
    t3 = time.perf_counter()
    np.savetxt(f"{work}/probs.csv", probs, delimiter=",", header=",".join(f"p{k}" for k in range(10)), comments="", fmt="%.17g")
    p, r, k = pr(np.flatnonzero(mask), flip)
    json.dump(
        {"precision": p, "recall": r, "issues": k, "import_s": t1 - t0, "cv_s": t2 - t1, "cleanlab_s": t3 - t2},
        open(f"{work}/cleanlab.json", "w"),
    )


def score(work, report):
    truth = np.loadtxt(f"{work}/truth.txt", dtype=int)
    rows = [i["row"] for i in json.load(open(report))["labels"]["issues"]]
    p, r, k = pr(rows, truth)
    print(json.dumps({"precision": p, "recall": r, "issues": k}))


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2], sys.argv[3])
    else:
        score(sys.argv[2], sys.argv[3])
