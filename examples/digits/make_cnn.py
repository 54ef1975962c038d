#!/usr/bin/env python3
"""Add a small CNN to the digits example: trained with torch (CPU) on train.csv, exported to ONNX by hand.

    pip install numpy onnx onnxruntime torch && python3 examples/digits/make_cnn.py

Writes model_cnn/model.onnx and model_cnn/metrics.json next to this script. The graph takes the same flat input as
the MLP (`input` FP32 [N, 64]) and reshapes it to [N, 1, 8, 8]:
Reshape -> Conv 3x3 (16 channels, pad 1) -> Relu -> MaxPool 2x2 -> Flatten -> Gemm 256x64 -> Relu -> Gemm 64x10.
Every step is seeded and runs on one thread, so the outputs are the same on every run with the same versions.
"""
import json
import os
import sys

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

SEED = 0
HERE = os.path.dirname(os.path.abspath(__file__))


def load(name):
    data = np.loadtxt(os.path.join(HERE, name), delimiter=",", skiprows=1, dtype=np.float32)
    return data[:, :64], data[:, 64].astype(np.int64)


class Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.fc0 = torch.nn.Linear(256, 64)
        self.fc1 = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = x.reshape(-1, 1, 8, 8)
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc1(torch.relu(self.fc0(x.flatten(1))))


def train(model, x, y, epochs=40, extra=None):
    """Adam, batches of 32, seeded. `extra` is an optional (x, y) pair added to every epoch (adversarial training)."""
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if extra is not None:
        xt = torch.cat([xt, torch.from_numpy(extra[0])])
        yt = torch.cat([yt, torch.from_numpy(extra[1])])
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(order), 32):
            batch = order[i : i + 32]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[batch]), yt[batch])
            loss.backward()
            opt.step()
    return model


def to_onnx(model, path):
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    inits = [
        numpy_helper.from_array(np.array([-1, 1, 8, 8], dtype=np.int64), "image_shape"),
        numpy_helper.from_array(sd["conv.weight"], "conv.weight"),
        numpy_helper.from_array(sd["conv.bias"], "conv.bias"),
        numpy_helper.from_array(sd["fc0.weight"], "fc0.weight"),
        numpy_helper.from_array(sd["fc0.bias"], "fc0.bias"),
        numpy_helper.from_array(sd["fc1.weight"], "fc1.weight"),
        numpy_helper.from_array(sd["fc1.bias"], "fc1.bias"),
    ]
    nodes = [
        helper.make_node("Reshape", ["input", "image_shape"], ["image"], name="image"),
        helper.make_node("Conv", ["image", "conv.weight", "conv.bias"], ["conv"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["conv"], ["conv_relu"], name="conv_relu"),
        helper.make_node("MaxPool", ["conv_relu"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flat", axis=1),
        helper.make_node("Gemm", ["flat", "fc0.weight", "fc0.bias"], ["fc0"], name="fc0", transB=1),
        helper.make_node("Relu", ["fc0"], ["fc0_relu"], name="fc0_relu"),
        helper.make_node("Gemm", ["fc0_relu", "fc1.weight", "fc1.bias"], ["logits"], name="fc1", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    proto = helper.make_model(graph, producer_name="rampart-examples", opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, path + ".tmp")
    os.replace(path + ".tmp", path)


def onnx_accuracy(path, x, y, reference=None):
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": x})[0]
    if reference is not None and np.any(logits.argmax(1) != reference):
        sys.exit("the ONNX export disagrees with torch")
    return float((logits.argmax(1) == y).mean())


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    x_train, y_train = load("train.csv")
    x_test, y_test = load("test.csv")
    model = train(Cnn(), x_train, y_train).eval()
    os.makedirs(os.path.join(HERE, "model_cnn"), exist_ok=True)
    path = os.path.join(HERE, "model_cnn", "model.onnx")
    to_onnx(model, path)
    with torch.no_grad():
        reference = model(torch.from_numpy(x_test)).argmax(1).numpy()
    acc = onnx_accuracy(path, x_test, y_test, reference)
    metrics = {
        "model": "model_cnn/model.onnx",
        "architecture": "CNN: Reshape [N,1,8,8], Conv 3x3x16 pad 1, ReLU, MaxPool 2x2, Gemm 256-64, ReLU, Gemm 64-10",
        "input": {"name": "input", "datatype": "FP32", "shape": [-1, 64], "range": [0.0, 1.0]},
        "output": {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        "train_rows": int(len(y_train)),
        "test_rows": int(len(y_test)),
        "training": {"optimizer": "Adam", "lr": 0.002, "batch": 32, "epochs": 40, "seed": SEED},
        "clean_test_accuracy": round(acc, 4),
        "torch": torch.__version__,
    }
    with open(os.path.join(HERE, "model_cnn", "metrics.json"), "w", encoding="utf-8") as out:
        json.dump(metrics, out, indent=2)
        out.write("\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
