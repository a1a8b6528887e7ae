"""gigagpt.cirh on a real cirh.mlir, without cstorch.

tests/data/tiny_cirh.mlir is one CSX training step lowered with validate_only (cerebras-pytorch 2.10.0, gigagpt
at commit 105cb3d): width 32, depth 1, 2 heads, vocabulary 65, batch 2 x 16 tokens, dtype auto (CSX: bf16 matmuls,
f32 weights), AdamW with gradient clipping and the warmup + cosine schedule of configs/shakespeare_char.yaml.
Made in .venv-cerebras, from /tmp/x (any folder), with
  gigagpt prepare /work/main/data/tinyshakespeare.txt --tokenizer char --out /tmp/x/data
  gigagpt train /work/main/configs/shakespeare_char.yaml --backend CSX --validate_only true --width 32 --depth 1
      --heads 2 --vocab_size 65 --max_position_embeddings 16 --sequence_length 16 --batch_size 2 --num_steps 1
      --dataset /tmp/x/data --out_dir /tmp/x/out --artifact_dir /tmp/x/art
and copied from /tmp/x/art/executors/000001/cirh.mlir. Its source locations hold that machine's paths.
"""
from itertools import groupby

import pytest

from gigagpt import GigaGPTError
from gigagpt.cirh import compiled_graph, graph_summary, phase_of, tensor_type

from conftest import REPO

SAMPLE = REPO / "tests" / "data" / "tiny_cirh.mlir"
PARAMETERS = 16  # tensors: wte/lm_head (tied), wpe, ln_1, ln_2, ln_f (weight, bias), qkv, proj, fc, mlp.proj (weight, bias)


@pytest.fixture(scope="module")
def graph():
    return graph_summary(SAMPLE)


def test_op_counts(graph):
    ops, phases = graph["ops"], graph["phases"]
    assert sum(ops.values()) == 730
    # one matmul per linear layer forward (qkv, attn.proj, mlp.fc, mlp.proj, lm_head), two per layer backward
    assert ops["cirh.MatMul"] == 15
    assert phases["forward", "cirh.MatMul"] == 5 and phases["backward", "cirh.MatMul"] == 10
    # attention: scores and weighted values forward, two gradients each backward
    assert phases["forward", "cirh.DotGeneral"] == 2 and phases["backward", "cirh.DotGeneral"] == 4
    assert ops["cirh.SparseSoftmaxCrossEntropyWithLogits"] == 1
    assert phases["forward", "cirh.SparseSoftmaxCrossEntropyWithLogits"] == 1
    assert phases["forward", "cirh.LayerNorm"] == 3 and phases["backward", "cirh.LayerNormGrad"] == 3
    # clipping takes the norm of every gradient, then the norm of those norms
    assert phases["gradient clipping", "cirh.L2Norm"] == PARAMETERS + 1
    assert ops["cirh.Sqrt"] == phases["optimizer", "cirh.Sqrt"] == 2 * PARAMETERS
    assert phases["lr schedule", "cirh.Cos"] == 2  # the cosine decay, for this step's rate and the next


def test_the_whole_step_is_one_graph(graph):
    assert {phase for phase, _ in graph["phases"]} == {
        "forward", "backward", "gradient clipping", "optimizer", "lr schedule"}
    assert len(graph["order"]) == sum(graph["ops"].values())


def test_program_order(graph):
    # The constants (of every phase) are hoisted to the top; the program proper follows them.
    body = graph["order"][graph["ops"]["cirh.Const"]:]
    first = {phase: body.index(phase) for phase in set(body)}
    last = {phase: len(body) - 1 - body[::-1].index(phase) for phase in set(body)}
    assert first["forward"] == 0 and last["forward"] < first["backward"]
    # the norm of each gradient is taken as soon as the backward pass produces it
    assert first["backward"] < first["gradient clipping"] < last["backward"]
    assert last["backward"] < first["optimizer"] and last["backward"] < first["lr schedule"]
    # the schedule runs twice: this step's rate just before the AdamW updates use it, and at the very end
    # the schedule advancing to the next step's rate
    runs = [(phase, len(list(ops))) for phase, ops in groupby(body)]
    assert [n for phase, n in runs if phase == "lr schedule"] == [17, 22] and runs[-1] == ("lr schedule", 22)
    assert first["lr schedule"] < len(body) // 2 < last["optimizer"] < len(body) - 22


def test_graph_inputs(graph):
    state = {name: (shape, dtype, nbytes) for name, shape, dtype, nbytes in graph["state"]}
    assert len(state) == len(graph["state"]) == 85
    assert state["model.blocks.0.attn.qkv.weight"] == ((96, 32), "f32", 96 * 32 * 4)
    assert state["model.lm_head.weight"] == ((65, 32), "f32", 65 * 32 * 4)
    assert state["input_0"] == state["input_1"] == ((2, 16), "i64", 2 * 16 * 8)  # the batch: tokens and targets
    weights = [v for k, v in state.items() if k.startswith("model.")]
    exp_avg_sq = [v for k, v in state.items() if k.startswith("optimizer.state.") and k.endswith(".exp_avg_sq")]
    assert len(weights) == len(exp_avg_sq) == PARAMETERS
    assert sorted(exp_avg_sq) == sorted(weights)  # one second moment per weight, same shape
    assert {dtype for _, dtype, _ in weights} == {"f32"}  # CSX stores weights in float32
    assert sum(nbytes for _, _, nbytes in weights) == 4 * 15360  # the model's 15,360 parameters
    assert state["optimizer.state.0.beta2_power"] == ((), "f32", 4)
    assert state["schedulers.0.last_epoch"] == ((), "i64", 8)


def test_matmuls_run_in_bf16(graph):
    tensors = {(t["shape"], t["dtype"]): t for t in graph["tensors"]}
    assert {t["dtype"] for t in graph["tensors"] if "cirh.MatMul" in t["ops"]} == {"bf16"}
    assert {t["dtype"] for t in graph["tensors"] if "cirh.DotGeneral" in t["ops"]} == {"bf16"}
    logits = tensors[(32, 65), "bf16"]
    assert logits["bytes"] == 32 * 65 * 2 and logits["scope"] == "lm_head.fwd/aten::mm"
    assert tensors[(96, 32), "bf16"]["ops"] == {"cirh.Cast": 1, "cirh.MatMul": 1}  # the qkv weight, cast to bf16
    sizes = [t["bytes"] for t in graph["tensors"]]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 32 * 128 * 4


def test_tensor_type():
    assert tensor_type("tensor<f32>") == ((), "f32", 4)
    assert tensor_type("tensor<i64>") == ((), "i64", 8)
    assert tensor_type("tensor<2x16xi64>") == ((2, 16), "i64", 256)
    assert tensor_type("12288x12288xbf16") == ((12288, 12288), "bf16", 12288 * 12288 * 2)
    assert tensor_type("tensor<1472x96x2048x2048xbf16>")[2] == 1472 * 96 * 2048 * 2048 * 2
    assert tensor_type("tensor<10xi1>") == ((10,), "i1", 10)


def test_phase_of_takes_the_innermost_known_file():
    def loc(scope, *files):
        stack = "".join(f'callsite("f"("{f}":1:0) at ' for f in files) + '"main"("gigagpt/cli.py":1:0)'
        return f'"{scope}"({stack}{")" * len(files)}'

    # cstorch runs optimizer.step inside the schedule's wrapper: the optimizer is the innermost
    assert phase_of(loc("wte.bwd/aten::add", "cerebras/pytorch/optim/AdamBase.py", "torch/optim/optimizer.py",
                        "cerebras/pytorch/optim/scheduler.py", "gigagpt/train.py")) == "optimizer"
    assert phase_of(loc("aten::mul", "cerebras/pytorch/optim/lr_scheduler.py", "gigagpt/train.py")) == "lr schedule"
    assert phase_of(loc("aten::mul", "torch/nn/utils/clip_grad.py", "gigagpt/train.py")) == "gradient clipping"
    assert phase_of(loc("blocks.0.mlp.fc.bwd/aten::mm", "torch/autograd/graph.py")) == "backward"
    assert phase_of(loc("blocks.0.mlp.fc.fwd/aten::addmm", "torch/nn/modules/module.py")) == "forward"
    assert phase_of("unknown") == "forward"


def test_compiled_graph_picks_the_newest_executor(tmp_path):
    with pytest.raises(GigaGPTError, match=r"no executors/<n>/cirh\.mlir under .*validate_only"):
        compiled_graph(tmp_path)
    for n in ("000001", "000002", "000003"):
        (tmp_path / "executors" / n).mkdir(parents=True)
    (tmp_path / "executors" / "latest").symlink_to("000001")
    with pytest.raises(GigaGPTError, match="run a CSX validate_only step first"):
        compiled_graph(tmp_path)
    for n in ("000001", "000002"):
        (tmp_path / "executors" / n / "cirh.mlir").write_text(SAMPLE.read_text())
    # 000003 has no graph (a compile that failed): the newest graph is 000002's
    assert compiled_graph(tmp_path) == tmp_path / "executors" / "000002" / "cirh.mlir"
    assert graph_summary(compiled_graph(tmp_path))["ops"]["cirh.MatMul"] == 15
