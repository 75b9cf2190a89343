"""Node cases beyond onnx's own backend tests, in their layout (model.onnx and
test_data_set_0/{input,output}_N.pb) with an index.tsv like the conformance harness's.
Expected outputs are onnx's reference implementation's (onnx.reference.ReferenceEvaluator).
Usage: python3 make_cases.py   (writes next to itself; needs numpy and onnx==1.23.2)
"""
import os
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(7)


def conv(name, x_shape, w_shape, with_bias, **attrs):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
              helper.make_tensor_value_info("w", TensorProto.FLOAT, w_shape)]
    feeds = {"x": rng.standard_normal(x_shape).astype(np.float32),
             "w": rng.standard_normal(w_shape).astype(np.float32)}
    names = ["x", "w"]
    if with_bias:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [w_shape[0]]))
        feeds["b"] = rng.standard_normal(w_shape[0]).astype(np.float32)
        names.append("b")
    node = helper.make_node("Conv", names, ["y"], **attrs)
    graph = helper.make_graph([node], name, inputs, [helper.make_empty_tensor_value_info("y")])
    return name, "Conv", helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), feeds


CASES = [
    # Two groups of two input channels, each making three output channels; padded, biased.
    conv("conv_group_2", [1, 4, 5, 5], [6, 2, 3, 3], True, group=2, pads=[1, 1, 1, 1]),
    # Depthwise (MobileNet's layer): one group per channel, strided, no bias.
    conv("conv_depthwise_strided", [2, 3, 6, 6], [3, 1, 3, 3], False, group=3, strides=[2, 2]),
    # Depthwise with a channel multiplier of 2, 1-D.
    conv("conv1d_depthwise_multiplier", [1, 3, 9], [6, 1, 4], True, group=3, pads=[2, 1]),
]

with open(os.path.join(HERE, "index.tsv"), "w") as index:
    for name, op, model, feeds in CASES:
        outs = ReferenceEvaluator(model).run(None, feeds)
        for o, v in zip(model.graph.output, outs):  # typed as onnx's own cases are
            o.CopyFrom(helper.make_tensor_value_info(o.name, TensorProto.FLOAT, list(v.shape)))
        onnx.checker.check_model(model)
        d = os.path.join(HERE, name)
        os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
        onnx.save(model, os.path.join(d, "model.onnx"))
        for i, (k, v) in enumerate(feeds.items()):
            t = numpy_helper.from_array(v, k)
            open(os.path.join(d, "test_data_set_0", f"input_{i}.pb"), "wb").write(t.SerializeToString())
        for i, v in enumerate(outs):
            t = numpy_helper.from_array(v, model.graph.output[i].name)
            open(os.path.join(d, "test_data_set_0", f"output_{i}.pb"), "wb").write(t.SerializeToString())
        # name, op, in issue 3's lists, opset, rtol, atol, written, note
        index.write(f"{name}\t{op}\t1\t21\t0.001\t1e-06\t1\t\n")
