"""Every metric for many runs at once: the batched functions against per-run loops.

Usage: python bench/metrics.py [--runs 10000] [--stages 4] [--repeats 5] [--device cpu] [--threads 1]

R is [runs, stages+1, stages+1] of random accuracies, with chance levels and a joint
reference per run. Three ways to the same numbers: one call of metrics.all_metrics on the
whole batch; a Python loop calling all_metrics on each run's matrix; a Python loop over
plain floats implementing the definitions again (an independent check of the numbers).
Timings are medians over repeats, after one warm-up call. torch runs on one CPU thread by
default, like the loops: on a loaded machine, intra-op threads that wait for a busy core
cost more than the work itself (--threads 0 keeps torch's default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

SCALARS = ("acc", "bwt", "fwt", "fwt_vs_chance", "forgetting", "intransigence", "text_retention",
           "mean_retention", "mean_plasticity")
PER_TASK = ("retention", "plasticity", "forgetting_per_task", "intransigence_per_task", "transfer_matrix")


def plain_metrics(R: list[list[float]], chance: list[float], joint: list[float]) -> dict:
    """The definitions of cl_bench/metrics.py over one run's matrix as nested lists (T >= 2)."""
    nan = float("nan")
    T = len(R) - 1
    mean = lambda xs: sum(xs) / len(xs) if xs else nan  # noqa: E731
    diag = [R[j][j] for j in range(T + 1)]
    ret = [R[T][j] / diag[j] * 100 if diag[j] != 0 else nan for j in range(T + 1)]
    forget = [max(R[l][j] for l in range(T)) - R[T][j] for j in range(T)]
    intr = [joint[k - 1] - R[k][k] for k in range(1, T + 1)]
    M = [[(R[i][j] - diag[j]) / (diag[j] - chance[j]) if diag[j] != chance[j] else nan for j in range(T + 1)]
         for i in range(T + 1)]
    kept = [r for r in ret[:T] if r == r]
    return {
        "acc": mean(R[T]),
        "bwt": mean([R[T][j] - diag[j] for j in range(T)]),
        "fwt": mean([R[j - 1][j] - R[0][j] for j in range(2, T + 1)]),
        "fwt_vs_chance": mean([R[j - 1][j] - chance[j] for j in range(1, T + 1)]),
        "forgetting": mean(forget),
        "intransigence": mean(intr),
        "text_retention": ret[0],
        "mean_retention": mean(kept),
        "mean_plasticity": mean(diag[1:]),
        "retention": ret,
        "plasticity": diag[1:],
        "forgetting_per_task": forget,
        "intransigence_per_task": intr,
        "transfer_matrix": M,
    }


def median_seconds(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--stages", type=int, default=4, help="new modalities T (>= 2); R is [runs, T+1, T+1]")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of the batched call (loops: 3)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0 keeps torch's default")
    args = ap.parse_args()
    if args.stages < 2:
        ap.error("--stages must be >= 2")

    import torch

    from cl_bench.analysis import metrics

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    N, T = args.runs, args.stages
    R = torch.rand(N, T + 1, T + 1, generator=g, dtype=torch.float64).to(dev)
    chance = (torch.rand(T + 1, generator=g, dtype=torch.float64) * 0.2).to(dev)
    joint = torch.rand(N, T, generator=g, dtype=torch.float64).to(dev)

    print("command: python " + " ".join(sys.argv))
    print(f"R {tuple(R.shape)} float64 on {dev}; torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")

    batched = metrics.all_metrics(R, chance=chance, joint_diag=joint)
    t_batched = median_seconds(lambda: metrics.all_metrics(R, chance=chance, joint_diag=joint), args.repeats, sync)

    def torch_loop():
        return [metrics.all_metrics(R[r], chance=chance, joint_diag=joint[r]) for r in range(N)]

    per_run = torch_loop()
    t_loop = median_seconds(torch_loop, 3, sync)

    R_l, chance_l, joint_l = R.tolist(), chance.tolist(), joint.tolist()  # conversion not timed

    def plain_loop():
        return [plain_metrics(R_l[r], chance_l, joint_l[r]) for r in range(N)]

    plain = plain_loop()
    t_plain = median_seconds(plain_loop, 3, lambda: None)

    # the same numbers three ways
    for k in SCALARS + PER_TASK:
        got = batched[k].cpu()
        torch.testing.assert_close(torch.stack([m[k] for m in per_run]).cpu(), got, equal_nan=True, msg=k)
        torch.testing.assert_close(torch.tensor([m[k] for m in plain], dtype=torch.float64), got,
                                   equal_nan=True, msg=k)
    print(f"same numbers: batched == per-run torch loop == plain-Python loop on {len(SCALARS + PER_TASK)} keys")

    print(f"{'method':<34}{'median ms':>12}{'runs/s':>14}{'batched faster by':>19}")
    for name, t in (("all_metrics on the batch", t_batched),
                    ("per-run loop of all_metrics", t_loop),
                    ("per-run loop, plain Python", t_plain)):
        print(f"{name:<34}{t * 1e3:>12.1f}{N / t:>14,.0f}{t / t_batched:>18.0f}x")


if __name__ == "__main__":
    main()
