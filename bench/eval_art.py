#!/usr/bin/env python3
"""The ART side of bench/eval.sh: attack an ONNX digits model with IBM ART (torch, CPU) and print JSON.

The torch module is built from the ONNX file's own weights (Gemm, Relu, Conv, MaxPool, Reshape, Flatten), so ART
and Rampart attack the same model. Inputs are given to ART as [N, 1, 8, 8] images (ART's Square Attack refuses flat
inputs); the module flattens them again where the graph expects [N, 64].

    python3 bench/eval_art.py MODEL.onnx TEST.csv
"""
import json
import sys
import time

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent, SquareAttack
from art.estimators.classification import PyTorchClassifier


class OnnxModule(torch.nn.Module):
    """Runs the digits graphs' operators in torch, with the ONNX initializers as weights."""

    def __init__(self, path):
        super().__init__()
        model = onnx.load(path)
        self.graph = model.graph
        self.consts = {}
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            t = torch.from_numpy(arr.copy())
            if arr.dtype == np.float32:
                p = torch.nn.Parameter(t, requires_grad=False)
                self.register_parameter(init.name.replace(".", "_"), p)
                self.consts[init.name] = p
            else:
                self.consts[init.name] = t
        self.input = model.graph.input[0].name
        self.output = model.graph.output[0].name

    def forward(self, x):
        env = dict(self.consts)
        env[self.input] = x.reshape(x.shape[0], -1)
        for node in self.graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            ins = [env[i] for i in node.input if i]
            op = node.op_type
            if op == "Gemm":
                a, b = ins[0], ins[1]
                if attrs.get("transA", 0):
                    a = a.t()
                if attrs.get("transB", 0):
                    b = b.t()
                y = attrs.get("alpha", 1.0) * (a @ b)
                if len(ins) > 2:
                    y = y + attrs.get("beta", 1.0) * ins[2]
            elif op == "Relu":
                y = torch.relu(ins[0])
            elif op == "Reshape":
                y = ins[0].reshape([int(v) for v in ins[1]])
            elif op == "Flatten":
                y = ins[0].flatten(attrs.get("axis", 1))
            elif op == "Conv":
                pads = attrs.get("pads", [0, 0, 0, 0])
                y = torch.nn.functional.conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None,
                                               stride=attrs.get("strides", [1, 1]), padding=(pads[0], pads[1]),
                                               dilation=attrs.get("dilations", [1, 1]))
            elif op == "MaxPool":
                pads = attrs.get("pads", [0, 0, 0, 0])
                y = torch.nn.functional.max_pool2d(ins[0], attrs["kernel_shape"], attrs.get("strides", [1, 1]),
                                                   padding=(pads[0], pads[1]))
            elif op == "Softmax":
                y = torch.softmax(ins[0], dim=-1)
            else:
                raise SystemExit(f"unsupported operator {op}")
            env[node.output[0]] = y
        return env[self.output]


def main():
    model_path, data_path = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    np.random.seed(0)
    data = np.loadtxt(data_path, delimiter=",", skiprows=1, dtype=np.float32)
    x = data[:, :64].reshape(-1, 1, 8, 8)
    y = data[:, 64].astype(np.int64)
    module = OnnxModule(model_path).eval()
    clf = PyTorchClassifier(model=module, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    clean = float((clf.predict(x).argmax(1) == y).mean())
    out = {"clean_accuracy": clean, "examples": int(len(y)), "attacks": {}}
    attacks = {
        "fgsm": FastGradientMethod(clf, norm=np.inf, eps=0.1, batch_size=128),
        "pgd": ProjectedGradientDescent(clf, norm=np.inf, eps=0.1, eps_step=0.01, max_iter=40, num_random_init=0,
                                        batch_size=128, verbose=False),
        "square": SquareAttack(clf, norm=np.inf, eps=0.1, max_iter=1000, p_init=0.8, nb_restarts=1, batch_size=128,
                               verbose=False),
    }
    for name, attack in attacks.items():
        start = time.perf_counter()
        adv = attack.generate(x=x, y=y)  # always the true labels
        seconds = time.perf_counter() - start
        acc = float((clf.predict(adv).argmax(1) == y).mean())
        out["attacks"][name] = {"robust_accuracy": acc, "seconds": seconds}
        print(f"art: {name} robust accuracy {acc:.4f} in {seconds:.2f} s", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
