#!/usr/bin/env python3
"""Build the backdoored digits model that `rampart data check --model` is tested against.

A small trigger patch (the 2x2 bottom-right pixels px54, px55, px62, px63 set to 1.0) is planted in 3% of the training
rows whose label is not 0, and those rows are relabelled to 0. The same MLP as make.py (64-128-64-10) is trained on
the poisoned split, so its penultimate layer really carries the backdoor. Run from anywhere with numpy, scikit-learn
and onnx installed (`pip install numpy scikit-learn onnx`):

    python3 examples/digits/make_backdoor.py

It writes, next to this script:
- backdoor/poisoned_rows.txt: the 0-based data rows of train.csv that were poisoned (the tests plant the same trigger
  in the same rows, so the poisoned CSV itself is not committed);
- backdoor/model.onnx: the model trained on the poisoned split (input `input` FP32 [N, 64], output `logits`);
- backdoor/metrics.json: its clean test accuracy and the attack success rate (test rows not labelled 0, with the
  trigger, classified as 0), which show that the backdoor took.
Every step is seeded, so the outputs are the same on every run with the same library versions.
"""
import json
import os

import numpy as np
from sklearn.neural_network import MLPClassifier

from make import mlp_to_onnx

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "backdoor")
TRIGGER = [54, 55, 62, 63]
TARGET = 0
SHARE = 0.03
SEED = 42


def load(name):
    data = np.loadtxt(os.path.join(HERE, name), delimiter=",", skiprows=1, dtype=np.float64)
    return data[:, :-1].astype(np.float32), data[:, -1].astype(np.int64)


def plant(x, y, rows):
    x, y = x.copy(), y.copy()
    x[np.ix_(rows, TRIGGER)] = 1.0
    y[rows] = TARGET
    return x, y


def main():
    x_train, y_train = load("train.csv")
    x_test, y_test = load("test.csv")
    rng = np.random.default_rng(SEED)
    candidates = np.flatnonzero(y_train != TARGET)
    rows = np.sort(rng.choice(candidates, size=int(len(y_train) * SHARE), replace=False))
    x_poisoned, y_poisoned = plant(x_train, y_train, rows)

    clf = MLPClassifier(hidden_layer_sizes=(128, 64), activation="relu", max_iter=500, random_state=0)
    clf.fit(x_poisoned, y_poisoned)

    os.makedirs(OUT, exist_ok=True)
    mlp_to_onnx(clf, os.path.join(OUT, "model.onnx"))
    with open(os.path.join(OUT, "poisoned_rows.txt.tmp"), "w", encoding="utf-8", newline="\n") as out:
        out.write("".join(f"{r}\n" for r in rows))
    os.replace(os.path.join(OUT, "poisoned_rows.txt.tmp"), os.path.join(OUT, "poisoned_rows.txt"))

    others = np.flatnonzero(y_test != TARGET)
    x_triggered, _ = plant(x_test, y_test, others)
    metrics = {
        "model": "backdoor/model.onnx",
        "architecture": "MLP 64-128-64-10, ReLU, logits output (as model/model.onnx)",
        "trigger": {"pixels": [f"px{p}" for p in TRIGGER], "value": 1.0, "target_label": TARGET},
        "poisoned_rows": int(len(rows)),
        "train_rows": int(len(y_train)),
        "clean_test_accuracy": round(float((clf.predict(x_test) == y_test).mean()), 4),
        "attack_success_rate": round(float((clf.predict(x_triggered[others]) == TARGET).mean()), 4),
    }
    with open(os.path.join(OUT, "metrics.json"), "w", encoding="utf-8") as out:
        json.dump(metrics, out, indent=2)
        out.write("\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
