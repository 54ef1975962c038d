#!/usr/bin/env python3
"""Show that retraining with `rampart eval --emit-adversarial` raises the CNN's PGD robust accuracy.

    pip install numpy onnx onnxruntime torch
    cargo build --release -p rampart
    python3 examples/digits/retrain_adversarial.py [--rampart target/release/rampart] [--rounds 2]

Each round: `rampart eval` runs PGD-40 (L-inf, eps 0.1, step 0.01) on the training rows against the current model
and writes the adversarial rows with their true labels; the CNN is retrained from scratch (same seed, same
schedule as make_cnn.py) on the clean rows plus every adversarial row emitted so far; then `rampart eval` measures
clean and PGD robust accuracy on test.csv. Nothing in the example's directory is overwritten: the retrained models
live in a temporary directory. Prints one JSON line per model.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_cnn  # noqa: E402

HERE = make_cnn.HERE
PGD = ["--attacks", "pgd", "--eps", "0.1", "--step", "0.01", "--steps", "40"]


def evaluate(rampart, model):
    out = subprocess.run([rampart, "eval", "--model", model, "--data", os.path.join(HERE, "test.csv"), *PGD,
                          "--format", "json"], check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    return report["clean_accuracy"], report["attacks"][0]["robust_accuracy"]


def emit(rampart, model, path):
    subprocess.run([rampart, "eval", "--model", model, "--data", os.path.join(HERE, "train.csv"), *PGD,
                    "--format", "json", "--emit-adversarial", path], check=True, capture_output=True)
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
    return data[:, :64], data[:, 64].astype(np.int64)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rampart", default=os.environ.get("RAMPART", "target/release/rampart"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x_train, y_train = make_cnn.load("train.csv")
    model = os.path.join(HERE, "model_cnn", "model.onnx")
    clean, robust = evaluate(args.rampart, model)
    print(json.dumps({"round": 0, "model": "model_cnn/model.onnx", "clean_accuracy": clean, "pgd_robust_accuracy": robust}))
    extra_x, extra_y = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(1, args.rounds + 1):
            adv_x, adv_y = emit(args.rampart, model, os.path.join(tmp, f"adv{r}.csv"))
            extra_x.append(adv_x)
            extra_y.append(adv_y)
            torch.manual_seed(make_cnn.SEED)
            net = make_cnn.train(make_cnn.Cnn(), x_train, y_train,
                                 extra=(np.concatenate(extra_x), np.concatenate(extra_y))).eval()
            model = os.path.join(tmp, f"round{r}.onnx")
            make_cnn.to_onnx(net, model)
            clean, robust = evaluate(args.rampart, model)
            print(json.dumps({"round": r, "adversarial_rows": int(sum(len(y) for y in extra_y)),
                              "clean_accuracy": clean, "pgd_robust_accuracy": robust}))


if __name__ == "__main__":
    main()
