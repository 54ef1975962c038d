#!/usr/bin/env python3
"""Build the digits example: scikit-learn's digits data set as CSV splits and a small MLP exported to ONNX.

Run from anywhere with numpy, scikit-learn and onnx installed (`pip install numpy scikit-learn onnx onnxruntime`):

    python3 examples/digits/make.py

It rewrites train.csv, test.csv, model/model.onnx and model/metrics.json next to this script. Every step is seeded, so
the outputs are the same on every run with the same library versions. The ONNX graph is written by hand from the trained
weights (Gemm and Relu only), so it needs no exporter and any ONNX runtime can run it.
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

SEED = 0
HERE = os.path.dirname(os.path.abspath(__file__))
FEATURES = [f"px{i}" for i in range(64)]


def write_csv(path, x, y):
    with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as out:
        out.write(",".join(FEATURES + ["label"]) + "\n")
        for row, label in zip(x, y):
            # Pixels are k/16: every value has an exact short decimal form.
            out.write(",".join(f"{v:.4g}" for v in row) + f",{int(label)}\n")
    os.replace(path + ".tmp", path)


def mlp_to_onnx(clf, path):
    """Gemm/Relu graph: input `input` float32 [N, 64] -> output `logits` float32 [N, 10]."""
    nodes, inits = [], []
    prev = "input"
    layers = list(zip(clf.coefs_, clf.intercepts_))
    for i, (w, b) in enumerate(layers):
        wn, bn = f"fc{i}.weight", f"fc{i}.bias"
        inits.append(numpy_helper.from_array(w.T.astype(np.float32), wn))
        inits.append(numpy_helper.from_array(b.astype(np.float32), bn))
        last = i == len(layers) - 1
        out = "logits" if last else f"fc{i}"
        nodes.append(helper.make_node("Gemm", [prev, wn, bn], [out], transB=1, name=f"fc{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"relu{i}"))
            out = f"relu{i}"
        prev = out
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, producer_name="rampart-examples", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path + ".tmp")
    os.replace(path + ".tmp", path)


def main():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=SEED)
    write_csv(os.path.join(HERE, "train.csv"), x_train, y_train)
    write_csv(os.path.join(HERE, "test.csv"), x_test, y_test)

    clf = MLPClassifier(hidden_layer_sizes=(128, 64), activation="relu", max_iter=500, random_state=SEED)
    clf.fit(x_train, y_train)
    os.makedirs(os.path.join(HERE, "model"), exist_ok=True)
    onnx_path = os.path.join(HERE, "model", "model.onnx")
    mlp_to_onnx(clf, onnx_path)

    # Check the exported graph against scikit-learn on the test split.
    sk_acc = float((clf.predict(x_test) == y_test).mean())
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        logits = sess.run(None, {"input": x_test})[0]
        onnx_acc = float((logits.argmax(axis=1) == y_test).mean())
        if np.any(logits.argmax(axis=1) != clf.predict(x_test)):
            sys.exit("the ONNX export disagrees with scikit-learn")
    except ImportError:
        onnx_acc = None
    metrics = {
        "model": "model/model.onnx",
        "architecture": "MLP 64-128-64-10, ReLU, logits output",
        "input": {"name": "input", "datatype": "FP32", "shape": [-1, 64], "range": [0.0, 1.0]},
        "output": {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        "train_rows": int(len(y_train)),
        "test_rows": int(len(y_test)),
        "split": {"test_size": 0.25, "stratify": "label", "random_state": SEED},
        "clean_test_accuracy": round(onnx_acc if onnx_acc is not None else sk_acc, 4),
    }
    with open(os.path.join(HERE, "model", "metrics.json"), "w", encoding="utf-8") as out:
        json.dump(metrics, out, indent=2)
        out.write("\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
