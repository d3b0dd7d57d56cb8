"""A clbench stream as an avalanche-lib benchmark, so that avalanche users can run their own
strategies on clbench's data and model.

    from cl_bench.interop.avalanche import avalanche_benchmark, avalanche_parts
    bench = avalanche_benchmark(stream, model)           # a TaskStream and a MultimodalLM
    module, criterion = avalanche_parts(model)
    strategy = avalanche.training.EWC(module, optimizer, criterion, ewc_lambda=1e4, evaluator=...)
    for exp in bench.train_stream:
        strategy.train(exp)

Experience i of each stream (train, valid, test) is task i of the stream: the base text task
first, then the new modalities in order; its task label is the task's column in the accuracy
matrix, its targets the answer's index in the task's answer set. Items are tokenized and
featurized for `model` once; batches are clbench's (a MixedBatch), the module returns
next-token logits and the criterion is the answer tokens' cross-entropy, as clbench's own
avalanche strategies use them (cl_bench.interop.avalanche_data says what was adapted).
"""

from __future__ import annotations


def avalanche_benchmark(stream, model, *, limit: int | None = None, base: bool = True):
    """The avalanche CLScenario of `stream` (a TaskStream) for `model` (a MultimodalLM with an encoder per
    modality of the stream): streams train_stream, valid_stream and test_stream, one experience per task.

    `limit`: only the first `limit` items of each split (quick looks, tests). `base`: include the base
    text task as experience 0 (its training split is what the base model was pre-trained on).
    """
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    from cl_bench.api.training import TaskData
    from cl_bench.streams.experience import column
    from cl_bench.interop.avalanche_data import Collate, make_dataset

    missing = sorted({e.modality for e in stream.experiences} - set(model.encoders))
    if missing:
        raise ValueError(f"the model has no encoder for {', '.join(missing)}; build it with one per modality of "
                         f"stream {stream.name!r}")
    collate = Collate()
    streams: dict[str, list] = {"train": [], "valid": [], "test": []}
    tasks = stream.tasks if base else stream.experiences
    for t in tasks:
        label = stream.tasks.index(t)
        for name, split in (("train", t.train), ("valid", t.val), ("test", t.test)):
            if limit is not None:
                split = split.select(range(min(limit, len(split))))
            answers = [t.answer_set.index(a) for a in column(split, "answer")]
            data = TaskData(split, model, t.modality)
            streams[name].append(make_dataset(collate, f"{t.name}/{name}", data, answers, label))
    return with_task_labels(benchmark_from_datasets(**streams))


def avalanche_parts(model, router_aux_loss: bool = True):
    """(module, criterion) for avalanche's strategies: `model` wrapped to take clbench's batches, and the
    loss over answer tokens (plus the MoE router loss while training)."""
    from cl_bench.interop.avalanche_data import LMModule, answer_loss

    return LMModule(model, router_aux_loss=router_aux_loss), answer_loss
