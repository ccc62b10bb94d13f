"""A paper model of --distribute on 1 to 64 GPUs: where the all-reduce of the gradients starts to
cost more than the devices save. Nothing here is timed: the step time is an assumption, stated.

    python -m bench.scaling_model                              # alpha 1.0, 128 pixels, the defaults below
    python -m bench.scaling_model --images-per-second 5000 --between-hosts 12.5

Each step, every device computes the gradient of its slice of the global batch (time t_c, the same
on 1 or N devices when each keeps --batch-size images), then the devices sum the gradients with a
ring all-reduce, each sending and receiving 2(n-1)/n of the gradient's bytes per ring: first
inside each host of --gpus-per-host at --within-host GB/s, then between the hosts at
--between-hosts GB/s. Speed-up = N t_c / (t_c + t_all-reduce); nothing overlaps (pessimistic:
XLA can overlap part of the all-reduce with the backward pass). The gradient's size is counted
from the real model: stage 2's (the default --unfreeze) and stage 1's head.
"""

from __future__ import annotations

import argparse
import math

from bench.common import save


def trainable_bytes(alpha: float, image_size: int) -> dict[str, int]:
    """float32 bytes of the gradients each stage all-reduces: the blocks head, and stage 2's
    default unfreezing (block_3 up, BatchNormalization frozen)."""
    from tinynet.model import build_model, count_weights, first_trainable_layer, unfreeze

    model = build_model(10, image_size, alpha, None, "blocks")
    head, _ = count_weights(model)
    unfreeze(model, first_trainable_layer("block_3"))
    finetune, _ = count_weights(model)
    return {"stage1_head": 4 * head, "stage2": 4 * finetune}


def all_reduce_seconds(gradient: int, gpus: int, per_host: int, within: float, between: float) -> float:
    """Ring all-reduce inside each host, then between hosts (bandwidths in bytes per second)."""
    local, hosts = min(gpus, per_host), math.ceil(gpus / per_host)
    return 2 * (local - 1) / local * gradient / within + 2 * (hosts - 1) / hosts * gradient / between


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128, help="images per device per step")
    parser.add_argument("--images-per-second", type=float, default=2000.0,
                        help="one GPU's stage-2 training speed (assumed: a mid-range GPU at 128 pixels)")
    parser.add_argument("--gpus-per-host", type=int, default=8)
    parser.add_argument("--within-host", type=float, default=100.0, help="GB/s between GPUs of a host (NVLink-class)")
    parser.add_argument("--between-hosts", type=float, nargs="+", default=[1.25, 3.125, 12.5],
                        help="GB/s between hosts (default: 10, 25 and 100 Gbit Ethernet)")
    args = parser.parse_args()

    sizes = trainable_bytes(args.alpha, args.image_size)
    step = args.batch_size / args.images_per_second
    rows = []
    for gpus in (1, 2, 4, 8, 16, 32, 64):
        reduce = [all_reduce_seconds(sizes["stage2"], gpus, args.gpus_per_host, args.within_host * 1e9, between * 1e9)
                  for between in args.between_hosts]
        rows.append({"gpus": gpus, "all_reduce_ms": [round(1000 * r, 1) for r in reduce],
                     "speed_up": [round(gpus * step / (step + r), 1) for r in reduce]})
    bends = {f"{between} GB/s": next((row["gpus"] for row in rows if row["speed_up"][i] < 0.8 * row["gpus"]), None)
             for i, between in enumerate(args.between_hosts)}
    print(f"stage 2 gradient {sizes['stage2'] / 2**20:.1f} MiB, stage 1 head {sizes['stage1_head'] / 2**20:.1f} MiB; "
          f"step on one GPU {1000 * step:.0f} ms (assumed)\n")
    speeds = " / ".join(f"{b:g}" for b in args.between_hosts) + " GB/s between hosts"
    print(f"| GPUs | all-reduce ms at {speeds} | speed-up at {speeds} |\n| --- | --- | --- |")
    for row in rows:
        print(f"| {row['gpus']} | {' / '.join(map(str, row['all_reduce_ms']))} "
              f"| {' / '.join(f'{s}x' for s in row['speed_up'])} |")
    print(f"\nefficiency below 0.8 from (GPUs): {bends}")
    save("scaling_model", {"assumptions": vars(args), "gradient_bytes": sizes, "rows": rows,
                           "efficiency_below_0.8_from": bends})


if __name__ == "__main__":
    main()
